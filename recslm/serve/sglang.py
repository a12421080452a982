"""Command lines of an SGLang replica and of the SGLang router, built from ``ServeConfig``.

The fleet runs stock SGLang, so the only thing recslm owns is the argument list. That
list is checked by SGLang's own parser (``validate_launch_args``) before anything is
applied to a cluster: a typo in ``serve.attention_backend`` fails in CI with a message
naming the field, not as a CrashLoopBackOff on a GPU node twenty minutes later.

Choices that are not config fields, and why:

- ``--load-format safetensors``: recslm only writes safetensors, and refusing pickled
  ``.bin`` weights means a tampered checkpoint cannot execute code on the server.
- ``--enable-metrics``: Prometheus metrics (queue, cache hit rate, TTFT) on ``/metrics``.
- ``--enable-cache-report``: cached prompt tokens in the OpenAI-style usage, so the
  benchmark can see the prefix-cache hit rate from the client side.
- the radix (prefix) cache stays on: every candidate of a member shares the member's
  prefix, which is the whole point of ``--schedule-policy lpm``.
- no ``--skip-tokenizer-init`` (clients send text), no ``--trust-remote-code`` (pruned
  models are standard architectures), no ``--log-requests`` (prompts hold member
  histories), no ``--api-key`` (it would put a secret on the command line; restrict
  access with a NetworkPolicy instead).
- ``compressed-tensors`` checkpoints pass no ``--quantization``: SGLang reads the
  scheme from the checkpoint's ``quantization_config``.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping, Sequence

from recslm.config import ServeConfig
from recslm.errors import ConfigError

# SGLang's /health_generate waits this long for a token before answering 503
# (env SGLANG_HEALTH_CHECK_TIMEOUT); probes must wait a little longer than that, so the
# manifests set the env var and derive their timeouts from this one number.
HEALTH_CHECK_TIMEOUT_S = 20

# The router's `manual` policy pins each distinct value of this header to one worker.
# Read from the sglang-router 0.3.2 binary (no Python-level constant exposes it).
MEMBER_ROUTING_HEADER = "X-SMG-Routing-Key"

ROUTER_METRICS_PORT = 29000

# Router policy of each serve.router_policy. `member_hash` keeps every request of a member
# on the worker that holds that member's prefix in its radix cache. The router's Rust core
# has a consistent-hashing policy, but its CLI (sglang-router 0.3.2) only offers
# random|round_robin|cache_aware|power_of_two|manual, so member routing uses `manual`:
# sticky per routing-key header, new keys go to the least-loaded worker.
ROUTER_POLICY_ARGS: dict[str, list[str]] = {
    "cache_aware": ["--policy", "cache_aware"],
    "round_robin": ["--policy", "round_robin"],
    "member_hash": ["--policy", "manual", "--assignment-mode", "min_load"],
}

# SGLang flag -> the config field that sets it, so a rejected flag names the field.
_FLAG_FIELDS = {
    "--model-path": "model path",
    "--port": "serve.port",
    "--tp-size": "serve.tensor_parallel",
    "--quantization": "serve.quantization",
    "--attention-backend": "serve.attention_backend",
    "--mem-fraction-static": "serve.mem_fraction_static",
    "--schedule-policy": "serve.schedule_policy",
    "--max-running-requests": "serve.max_running_requests",
}


def launch_args(cfg: ServeConfig, model_path: str, *, host: str = "0.0.0.0", served_model_name: str | None = None) -> list[str]:
    """Arguments of ``python -m sglang.launch_server`` for one replica serving ``model_path``
    (a local Hugging Face directory). ``served_model_name`` is what ``/model_info`` and the
    OpenAI endpoints report; empty = the path."""
    if not model_path:
        raise ConfigError("model path: expected the local directory of the checkpoint, got an empty string")
    args = [
        "--model-path", model_path,
        "--host", host,
        "--port", str(cfg.port),
        "--tp-size", str(cfg.tensor_parallel),
        "--load-format", "safetensors",
        "--mem-fraction-static", str(cfg.mem_fraction_static),
        "--schedule-policy", cfg.schedule_policy,
        "--enable-metrics",
        "--enable-cache-report",
    ]  # fmt: skip
    if cfg.quantization == "fp8":
        args += ["--quantization", "fp8"]
    if cfg.attention_backend:
        args += ["--attention-backend", cfg.attention_backend]
    if cfg.max_running_requests is not None:
        args += ["--max-running-requests", str(cfg.max_running_requests)]
    if served_model_name:
        args += ["--served-model-name", served_model_name]
    return args


def launch_command(cfg: ServeConfig, model_path: str, *, served_model_name: str | None = None) -> list[str]:
    """The whole command of a replica container (listening on all interfaces)."""
    return ["python", "-m", "sglang.launch_server", *launch_args(cfg, model_path, served_model_name=served_model_name)]


def validate_launch_args(args: Sequence[str]) -> None:
    """Parse ``args`` with the installed SGLang's own parser and post-init checks, the
    same code ``launch_server`` runs first. Raises ``ConfigError`` naming the rejected
    flag (and the config field behind it) instead of argparse's exit."""
    try:
        from sglang.srt.server_args import prepare_server_args
    except ImportError as err:
        raise ModuleNotFoundError("validate_launch_args needs the sglang package (pip install sglang --no-deps is enough)") from err

    captured = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # prepare_server_args re-configures root logging
    try:
        with contextlib.redirect_stderr(captured):
            prepare_server_args(list(args))
    except SystemExit:
        raise ConfigError(_rejection(captured.getvalue())) from None
    except (ValueError, AssertionError) as err:
        raise ConfigError(f"sglang launch args: SGLang {_sglang_version()} rejects the combination {list(args)}: {err}") from err
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _rejection(stderr: str) -> str:
    """Turn argparse's usage dump into one line: the flag, its config field, the reason."""
    lines = [line for line in stderr.splitlines() if "error:" in line]
    reason = lines[-1].split("error:", 1)[1].strip() if lines else stderr.strip()[-500:] or "no reason given"
    field = next((f"{name} ({flag})" for flag, name in _FLAG_FIELDS.items() if f"argument {flag}" in reason), None)
    where = field or "sglang launch args"
    return f"{where}: SGLang {_sglang_version()} rejects it: {reason}"


def _sglang_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sglang")
    except PackageNotFoundError:
        return "(unknown version)"


ROUTER_HEALTH_INTERVAL_S = 5  # a lost worker leaves rotation within interval x failures
ROUTER_HEALTH_FAILURES = 2


def router_policy_args(policy: str, *, health_interval_s: int = ROUTER_HEALTH_INTERVAL_S, health_failures: int = ROUTER_HEALTH_FAILURES) -> list[str]:
    """How the router routes and when it drops a worker: the part of its command the local
    fleet and the Kubernetes fleet share (they differ only in how they learn the workers).
    The router's own defaults (a check every 60 s, 3 failures) would keep sending to a dead
    worker for minutes."""
    return [
        *ROUTER_POLICY_ARGS[policy],
        "--health-check-interval-secs", str(health_interval_s),
        "--health-failure-threshold", str(health_failures),
        "--health-success-threshold", "1",
        "--health-check-timeout-secs", "5",
    ]  # fmt: skip


def router_args(cfg: ServeConfig, *, selector: Mapping[str, str], namespace: str, host: str = "0.0.0.0") -> list[str]:
    """Arguments of ``python -m sglang_router.launch_router``: the policy of
    ``cfg.router_policy`` over the worker pods that match ``selector`` in ``namespace``.

    Workers are discovered from the Kubernetes API by label rather than listed, so
    scaling or replacing a replica needs no router restart; watching one namespace keeps
    the router's RBAC to a namespaced Role."""
    if not selector:
        raise ConfigError("router selector: expected at least one worker label, got none (the router would adopt every pod)")
    return [
        "--host", host,
        "--port", str(cfg.router_port),
        *router_policy_args(cfg.router_policy),
        "--service-discovery",
        "--selector", *(f"{key}={value}" for key, value in selector.items()),
        "--service-discovery-port", str(cfg.port),
        "--service-discovery-namespace", namespace,
        "--worker-startup-timeout-secs", str(cfg.startup_timeout_s),
        "--prometheus-host", host,
        "--prometheus-port", str(ROUTER_METRICS_PORT),
    ]  # fmt: skip


def router_command(cfg: ServeConfig, *, selector: Mapping[str, str], namespace: str) -> list[str]:
    """The whole command of the router container."""
    return ["python", "-m", "sglang_router.launch_router", *router_args(cfg, selector=selector, namespace=namespace)]
