"""The ``fleet`` deploy target: SGLang's own router in front of N workers on this machine.

The router is the real one (``python -m sglang_router.launch_router``, the Rust binary of
the ``sglang-router`` wheel), run with the policy of ``serve.router_policy``; the workers
are ``recslm serve`` processes standing in for SGLang servers on GPUs (the same API subset
and launch contract). One router serves every version; a version is its N workers.

Blue/green goes through the router's own worker API, so traffic never stops:

- ``start`` launches the new version's workers (no traffic: the router does not know them);
- ``wait_ready`` waits for each worker's ``/health_generate``; :func:`~recslm.serve.deploy.deploy`
  then smoke-tests every worker directly;
- ``route`` registers the new workers (``POST /workers``), waits until the router reports
  them healthy, then deregisters every other version's workers (``DELETE /workers/{id}``):
  the router drains to the new version; rolling back is routing the old version again;
- ``stop`` terminates a version's workers. ``shutdown`` stops the router as well.

The router health-checks workers every ``health_interval_s``: a worker that dies is marked
unhealthy after ``health_failures`` failed checks and gets no more traffic;
:meth:`FleetTarget.status` reports a fleet below its declared size as degraded.
``fleet.json`` in ``state_dir`` records the router, the active version and every running
worker, so a later process (``deploy_champion``, the next run) finds them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from recslm.jsonfile import write_json
from recslm.serve.deploy import DeployError, Release, _alive, spawn_engine, terminate, wait_engine
from recslm.serve.limits import ServeLimits
from recslm.serve.server import free_port
from recslm.serve.sglang import ROUTER_HEALTH_FAILURES, ROUTER_HEALTH_INTERVAL_S, ROUTER_POLICY_ARGS, router_policy_args


def router_command(port: int, policy: str, *, health_interval_s: int = ROUTER_HEALTH_INTERVAL_S, health_failures: int = ROUTER_HEALTH_FAILURES, python: str = sys.executable) -> list[str]:
    """The local router's command: the Kubernetes router's policy and health checks
    (:func:`~recslm.serve.sglang.router_policy_args`), but no workers at start: they are
    added per version through its API instead of discovered from pod labels."""
    return [
        python, "-m", "sglang_router.launch_router",
        "--host", "127.0.0.1", "--port", str(port),
        *router_policy_args(policy, health_interval_s=health_interval_s, health_failures=health_failures),
        "--worker-startup-timeout-secs", "120",
        "--prometheus-port", str(free_port()),
    ]  # fmt: skip


class FleetTarget:
    """Versions as N ``recslm serve`` workers behind one SGLang router on this machine."""

    def __init__(
        self, state_dir: Path, *, workers: int = 2, policy: str = "cache_aware", cache_tokens: int = 200_000, threads: int | None = None,
        python: str = sys.executable, router_timeout_s: float = 240.0, health_interval_s: int = 1, health_failures: int = 2, limits: ServeLimits | None = None,
    ):  # fmt: skip
        if workers < 1:
            raise ValueError(f"serve.replicas: a fleet needs at least one worker, got {workers}")
        if policy not in ROUTER_POLICY_ARGS:
            raise ValueError(f"serve.router_policy: expected one of {', '.join(ROUTER_POLICY_ARGS)}, got {policy!r}")
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.workers, self.policy, self.cache_tokens, self.threads, self.python = workers, policy, cache_tokens, threads, python
        self.router_timeout_s, self.health_interval_s, self.health_failures = router_timeout_s, health_interval_s, health_failures
        self.limits = limits

    # ------------------------------------------------------------------ state
    @property
    def state_file(self) -> Path:
        return self.state_dir / "fleet.json"

    def _state(self) -> dict[str, Any]:
        if self.state_file.is_file():
            return json.loads(self.state_file.read_text())
        return {"router": None, "active": None, "releases": {}}

    def _save(self, state: dict[str, Any]) -> None:
        write_json(self.state_file, state)

    # ------------------------------------------------------------------ the router
    def router(self) -> str:
        """The router's URL, started (and waited for) if it is not running."""
        state = self._state()
        router = state.get("router")
        if router and _alive(router["pid"]) and self._answers(router["endpoint"]):
            return router["endpoint"]
        port = free_port()
        log = open(self.state_dir / "router.log", "ab")  # noqa: SIM115 - the child owns it
        command = router_command(port, self.policy, health_interval_s=self.health_interval_s, health_failures=self.health_failures, python=self.python)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.router_timeout_s
        while not self._answers(endpoint):
            if not _alive(process.pid):
                tail = (self.state_dir / "router.log").read_text(errors="replace")[-800:]
                raise DeployError(f"the SGLang router exited while starting; its log ends with:\n{tail}")
            if time.monotonic() > deadline:
                terminate(process.pid, grace_s=5)
                raise DeployError(f"the SGLang router did not answer GET /workers within {self.router_timeout_s:g} s")
            time.sleep(0.5)
        state = self._state()
        state["router"] = {"pid": process.pid, "endpoint": endpoint, "policy": self.policy}
        self._save(state)
        return endpoint

    @staticmethod
    def _answers(endpoint: str) -> bool:
        try:
            return httpx.get(f"{endpoint}/workers", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def registered(self) -> list[dict[str, Any]]:
        """The workers the router knows: url, id, is_healthy, load."""
        router = self.router()
        reply = httpx.get(f"{router}/workers", timeout=10)
        reply.raise_for_status()
        return list(reply.json().get("workers", []))

    # ------------------------------------------------------------------ the Target protocol
    def active(self) -> Release | None:
        state = self._state()
        name = state["active"]
        if name is None or name not in state["releases"]:
            return None
        return self._release(name, state["releases"][name])

    def _release(self, version: str, record: dict[str, Any]) -> Release:
        urls = [w["endpoint"] for w in record["workers"]]
        return Release(version, urls[0], {"endpoints": urls, "pids": [w["pid"] for w in record["workers"]]})

    def start(self, version: str, model: str) -> Release:
        self.router()  # up before any worker, so a router that cannot start fails the deploy first
        workers = []
        for i in range(self.workers):
            port = free_port()
            pid = spawn_engine(
                model, port, self.state_dir / f"{version}-{i}.log", cache_tokens=self.cache_tokens, threads=self.threads, python=self.python, limits=self.limits
            )
            workers.append({"endpoint": f"http://127.0.0.1:{port}", "pid": pid})
        state = self._state()
        state["releases"][version] = {"model": str(model), "workers": workers}
        self._save(state)
        return self._release(version, state["releases"][version])

    def wait_ready(self, release: Release, timeout_s: float) -> None:
        for i, (endpoint, pid) in enumerate(zip(release.handle["endpoints"], release.handle["pids"])):
            wait_engine(endpoint, pid, self.state_dir / f"{release.version}-{i}.log", timeout_s, f"version {release.version} worker {i}")

    def route(self, release: Release) -> str:
        """Register ``release``'s workers, wait until the router reports them healthy, then
        deregister every other worker: the router's traffic moves without a gap."""
        router = self.router()
        wanted = set(release.handle["endpoints"])
        known = {w["url"] for w in self.registered()}
        for url in sorted(wanted - known):
            reply = httpx.post(f"{router}/workers", json={"url": url}, timeout=30)
            if reply.status_code >= 300:
                raise DeployError(f"the router refused worker {url}: HTTP {reply.status_code} {reply.text[:300]}")
        deadline = time.monotonic() + 60
        while True:
            healthy = {w["url"] for w in self.registered() if w.get("is_healthy")}
            if wanted <= healthy:
                break
            if time.monotonic() > deadline:
                raise DeployError(f"the router did not report {sorted(wanted - healthy)} healthy within 60 s")
            time.sleep(0.3)
        self._deregister(router, lambda url: url not in wanted)
        state = self._state()
        state["active"] = release.version
        self._save(state)
        return router

    def _deregister(self, router: str, which: Callable[[str], bool], timeout_s: float = 60.0) -> None:
        """Remove the matching workers from the router and wait until it no longer lists them
        (removal is queued in the router): only then is no request sent their way."""
        for worker in self.registered():
            if which(worker["url"]):
                httpx.delete(f"{router}/workers/{worker['id']}", timeout=30).raise_for_status()
        deadline = time.monotonic() + timeout_s
        while any(which(w["url"]) for w in self.registered()):
            if time.monotonic() > deadline:
                raise DeployError(f"the router still lists workers it was told to remove after {timeout_s:g} s")
            time.sleep(0.2)

    def stop(self, release: Release) -> None:
        """Deregister (if the router still lists them) and terminate the version's workers."""
        urls = set(release.handle["endpoints"])
        router = self._state().get("router")
        if router and _alive(router["pid"]):
            self._deregister(router["endpoint"], lambda url: url in urls)
        for pid in release.handle["pids"]:
            terminate(pid)
        state = self._state()
        state["releases"].pop(release.version, None)
        if state["active"] == release.version:
            state["active"] = None
        self._save(state)

    def shutdown(self) -> None:
        """Stop every worker of every version and the router."""
        state = self._state()
        for version, record in list(state["releases"].items()):
            self.stop(self._release(version, record))
        router = self._state().get("router")
        if router:
            terminate(router["pid"], grace_s=10)
        self._save({"router": None, "active": None, "releases": {}})

    # ------------------------------------------------------------------ what the deploy stage reports
    def status(self) -> dict[str, Any]:
        """Router, policy, the active version's workers and their health; ``degraded`` when
        fewer workers are healthy than declared."""
        state = self._state()
        active = state["active"]
        urls = [w["endpoint"] for w in state["releases"].get(active, {}).get("workers", [])] if active else []
        health = {w["url"]: bool(w.get("is_healthy")) for w in self.registered()}
        healthy = sum(health.get(url, False) for url in urls)
        return {
            "router": state["router"]["endpoint"], "policy": self.policy, "version": active, "declared": self.workers,
            "workers": [{"endpoint": url, "healthy": health.get(url, False)} for url in urls], "healthy": healthy, "degraded": healthy < self.workers,
        }  # fmt: skip
