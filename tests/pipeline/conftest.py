"""Pipeline-level tests: the flow end to end (the smoke config run twice), the CLI that starts it,
and what a run promises (determinism, resumption)."""

from __future__ import annotations

import time

import pytest


@pytest.fixture(scope="session")
def smoke(tmp_path_factory, prefect_harness, repo_root):
    """Run the smoke pipeline twice with the same config: the second run must reuse everything."""
    from flows.compress import compress
    from recslm.config import load_config

    root = tmp_path_factory.mktemp("runs")
    cfg = load_config(repo_root / "configs" / "smoke.yaml", [f"run.root={root}"])
    start = time.perf_counter()
    first = compress(cfg, run_id="first")
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    second = compress(cfg, run_id="second")
    second_s = time.perf_counter() - start
    return {"cfg": cfg, "root": root, "first": first, "second": second, "first_s": first_s, "second_s": second_s}
