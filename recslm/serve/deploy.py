"""Deploy a model version, verify it, move traffic, and roll back on any failure.

The decision logic is one function over a :class:`Target`, so the same steps run against
the local engine (processes on this machine; what the tests exercise) and a Kubernetes
SGLang fleet:

1. start the new version beside the one serving (no traffic yet) and wait until it is
   ready (``/health_generate``);
2. smoke-test it directly: it must score known prompts as the model scored them offline;
3. move traffic to it (the local "router" is the active-version record; on Kubernetes the
   router's worker selector);
4. smoke-test again through the traffic endpoint;
5. stop the previous version.

A failure before step 3 stops the new version; a failure after it moves traffic back
first. Either way the previous version keeps serving and :class:`DeployError` says what
failed; the caller moves the registry alias only after a successful deploy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from recslm.errors import RecslmError
from recslm.jsonfile import write_json
from recslm.serve.client import is_router, prefill_body, scores_from_prefill
from recslm.serve.limits import ServeLimits, limit_flags
from recslm.serve.server import free_port


class DeployError(RecslmError):
    """A deploy failed; traffic stays on (or went back to) the previous version."""


@dataclass(frozen=True)
class Release:
    version: str
    endpoint: str  # the version's own endpoint (direct, not through the router)
    handle: dict[str, Any]  # what the target needs to stop it (pid, object names)


class Target(Protocol):
    def active(self) -> Release | None: ...
    def start(self, version: str, model: str) -> Release: ...
    def wait_ready(self, release: Release, timeout_s: float) -> None: ...
    def route(self, release: Release) -> str: ...
    def stop(self, release: Release) -> None: ...


@dataclass
class DeployResult:
    version: str
    traffic_endpoint: str
    previous: str | None
    smoke_direct: dict[str, Any]
    smoke_routed: dict[str, Any]

    def dump(self) -> dict[str, Any]:
        return asdict(self)


SmokeTest = Callable[[str], dict[str, Any]]


def deploy(target: Target, version: str, model: str, smoke: SmokeTest, *, ready_timeout_s: float = 600.0) -> DeployResult:
    """Roll ``model`` out as ``version`` on ``target``; see the module docstring for the steps."""
    previous = target.active()
    keeps = previous.version if previous else "nothing"
    if previous is not None and previous.version == version:
        raise DeployError(f"version {version} is already the active version; deploy a new version")
    release: Release | None = None
    try:
        release = target.start(version, model)
        target.wait_ready(release, ready_timeout_s)
        endpoints = release.handle.get("endpoints") or [release.endpoint]  # a fleet's version: every worker, directly
        checks = [smoke(endpoint) for endpoint in endpoints]
        direct = {**checks[0], "endpoints": len(checks)}
        if all("max_abs_diff" in c for c in checks):  # the worst endpoint stands for the version
            direct["max_abs_diff"] = max(c["max_abs_diff"] for c in checks)
    except Exception as exc:
        if release is not None:
            target.stop(release)
        raise DeployError(f"version {version} failed before it got traffic ({exc}); {keeps} keeps serving") from exc
    traffic = target.route(release)
    try:
        routed = smoke(traffic)
    except Exception as exc:
        if previous is not None:
            target.route(previous)
        target.stop(release)
        raise DeployError(f"version {version} failed its smoke test through {traffic} ({exc}); traffic is back on {keeps}") from exc
    if previous is not None:
        target.stop(previous)
    return DeployResult(version, traffic, previous.version if previous else None, direct, routed)


# --------------------------------------------------------------------------- smoke test
def score_smoke_test(queries: list[list[int]], items: list[list[list[int]]], label_token_ids: list[int], expected: list[list[float]], tolerance: float = 1e-3) -> SmokeTest:
    """A smoke test that scores known prompts and compares with the offline scores of the
    same model: a server that loads the wrong weights, tokenizes differently or has a
    broken cache fails it even though it answers ``/health``."""

    def check(endpoint: str) -> dict[str, Any]:
        worst, cursor, started = 0.0, 0, time.perf_counter()
        with httpx.Client(base_url=endpoint, timeout=60) as http:
            routed = is_router(http.get("/workers"))  # a router has no /v1/score: score through prefill-only /generate
            for query, group in zip(queries, items):
                if routed:
                    reply = http.post("/generate", json=prefill_body(query, group, label_token_ids))
                else:
                    reply = http.post("/v1/score", json={"query": query, "items": group, "label_token_ids": label_token_ids, "apply_softmax": True})
                if reply.status_code != 200:
                    raise DeployError(f"{endpoint}{'/generate' if routed else '/v1/score'} answered HTTP {reply.status_code}: {reply.text[:300]}")
                scores = scores_from_prefill(reply.json(), label_token_ids, True)[0] if routed else reply.json()["scores"]
                for got in scores:
                    worst = max(worst, abs(got[0] - expected[cursor][0]))
                    cursor += 1
        if worst > tolerance:
            raise DeployError(f"{endpoint}: scores differ from the offline scores by up to {worst:.3g} (tolerance {tolerance:g})")
        return {"requests": len(queries), "scores": cursor, "max_abs_diff": worst, "seconds": time.perf_counter() - started, "via": "router" if routed else "server"}

    return check


# --------------------------------------------------------------------------- local target
class LocalTarget:
    """Versions as ``recslm serve`` processes on this machine; ``fleet.json`` in ``state_dir``
    records the active version (the traffic endpoint clients read) and every running one."""

    def __init__(
        self, state_dir: Path, *, cache_tokens: int = 200_000, threads: int | None = None, python: str = sys.executable, limits: ServeLimits | None = None,
    ):  # fmt: skip
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.cache_tokens, self.threads, self.python, self.limits = cache_tokens, threads, python, limits

    @property
    def state_file(self) -> Path:
        return self.state_dir / "fleet.json"

    def _state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text()) if self.state_file.is_file() else {"active": None, "releases": {}}

    def _save(self, state: dict[str, Any]) -> None:
        write_json(self.state_file, state)

    def active(self) -> Release | None:
        state = self._state()
        name = state["active"]
        if name is None:
            return None
        r = state["releases"][name]
        return Release(name, r["endpoint"], {"pid": r["pid"]})

    def start(self, version: str, model: str) -> Release:
        port = free_port()
        pid = spawn_engine(model, port, self.state_dir / f"{version}.log", cache_tokens=self.cache_tokens, threads=self.threads, python=self.python, limits=self.limits)
        release = Release(version, f"http://127.0.0.1:{port}", {"pid": pid})
        state = self._state()
        state["releases"][version] = {"endpoint": release.endpoint, "pid": pid, "model": str(model)}
        self._save(state)
        return release

    def wait_ready(self, release: Release, timeout_s: float) -> None:
        wait_engine(release.endpoint, release.handle["pid"], self.state_dir / f"{release.version}.log", timeout_s, f"version {release.version}")

    def route(self, release: Release) -> str:
        state = self._state()
        state["active"] = release.version
        self._save(state)
        return release.endpoint

    def stop(self, release: Release) -> None:
        terminate(release.handle["pid"])
        state = self._state()
        state["releases"].pop(release.version, None)
        if state["active"] == release.version:
            state["active"] = None
        self._save(state)


# --------------------------------------------------------------------------- engine processes
def spawn_engine(
    model: str, port: int, log_path: Path, *, cache_tokens: int = 200_000, threads: int | None = None, python: str = sys.executable,
    limits: ServeLimits | None = None,
) -> int:  # fmt: skip
    """Start ``recslm serve MODEL --port PORT`` in its own session, logging to ``log_path``; its pid."""
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it
    command = [python, "-m", "recslm.cli", "serve", str(model), "--port", str(port), "--cache-tokens", str(cache_tokens)]
    if threads:
        command += ["--threads", str(threads)]
    if limits is not None:
        command += limit_flags(limits)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "RECSLM_PROGRESS": "0"})
    return process.pid


def wait_engine(endpoint: str, pid: int, log_path: Path, timeout_s: float, what: str) -> None:
    """Wait until the engine answers ``/health_generate``; a process that exits meanwhile is an
    error quoting the end of its log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            tail = log_path.read_text(errors="replace")[-600:] if log_path.is_file() else ""
            raise DeployError(f"{what} exited while starting; its log ends with:\n{tail}")
        try:
            if httpx.get(f"{endpoint}/health_generate", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise DeployError(f"{what} was not ready within {timeout_s:g} s")


def terminate(pid: int, grace_s: float = 30.0) -> None:
    """SIGTERM (the server finishes in-flight requests), SIGKILL after ``grace_s``."""
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)  # reap our own child if it exited
        if finished == pid:
            return False
    except ChildProcessError:
        pass  # not our child (an earlier process): fall back to a signal probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
