"""How much do results move with the thread count, and with the seed? (README "Determinism")

recslm promises bit-identical artifacts for the same config on the same kind of machine;
``runtime.threads`` is part of that config because parallel reductions split work by thread
count. This runs one pipeline config for every (threads, seed) pair, each in its own
``recslm run`` process on one store (the data stage is shared, everything after it is not),
and prints each model's mean test AUC per run, the spread across thread counts at a fixed
seed, and the spread across seeds at a fixed thread count, so a user knows which
differences are noise.

    .venv/bin/python benchmarks/determinism_spread.py [--config configs/smoke.yaml --threads 1 2 --seeds 0 1 2 --root runs/determinism --json out.json]

By default it trims the config to data -> teacher -> students (+ SFT baselines) -> select
(no prune, quantize, deploy, MLflow); ``--full`` keeps the config as it is.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRIM = ["prune.enabled=false", "quantize.enabled=false", "serve.enabled=false", "bench.enabled=false", "tracking.enabled=false", "registry.enabled=false"]


def run_once(config: Path, root: Path, threads: int, seed: int, extra: list[str]) -> dict:
    """One pipeline run in a fresh process; its summary.json."""
    run_id = f"threads{threads}-seed{seed}"
    sets = [f"run.root={root}", f"run.seed={seed}", f"runtime.threads={threads}", *extra]
    command = [sys.executable, "-m", "flows.cli", "run", str(config), "--run-id", run_id]
    for item in sets:
        command += ["--set", item]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "RECSLM_PROGRESS": "0"})
    if proc.returncode != 0:
        sys.exit(f"run {run_id} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads((root / run_id / "summary.json").read_text())


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "max": max(values), "range": max(values) - min(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "smoke.yaml")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root", type=Path, default=REPO / "runs" / "determinism")
    parser.add_argument("--full", action="store_true", help="run the config as it is (prune, quantize, deploy...)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra override, as recslm run --set")
    parser.add_argument("--json", type=Path, help="write the runs and spreads here")
    args = parser.parse_args()
    extra = ([] if args.full else TRIM) + args.sets

    runs: dict[tuple[int, int], dict[str, float]] = {}
    for threads in args.threads:
        for seed in args.seeds:
            summary = run_once(args.config.resolve(), args.root.resolve(), threads, seed, extra)
            runs[threads, seed] = {m["name"]: m["auc_mean"] for m in summary["models"]}
            print(f"threads {threads} seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in runs[threads, seed].items()), flush=True)

    models = list(next(iter(runs.values())))
    report = {"by_threads": {}, "by_seed": {}}
    print(f"\n{'model':<22}{'|Δ| across threads (mean over seeds, max)':>44}{'seed std at each thread count':>34}")
    for model in models:
        thread_gaps = [spread([runs[t, s][model] for t in args.threads])["range"] for s in args.seeds]
        seed_spreads = {t: spread([runs[t, s][model] for s in args.seeds]) for t in args.threads}
        report["by_threads"][model] = {"mean_range": statistics.mean(thread_gaps), "max_range": max(thread_gaps)}
        report["by_seed"][model] = {str(t): v for t, v in seed_spreads.items()}
        seeds_text = ", ".join(f"{t} thr: {v['std']:.4f}" for t, v in seed_spreads.items())
        print(f"{model:<22}{statistics.mean(thread_gaps):>30.4f}{max(thread_gaps):>14.4f}{seeds_text:>34}")
    machine = f"{platform.machine()} {os.cpu_count()} cores (affinity {len(os.sched_getaffinity(0))}), python {platform.python_version()}"
    print(f"\n{len(runs)} runs of {args.config.name}, {datetime.date.today()}, {machine}")
    if args.json:
        payload = {"config": str(args.config), "extra": extra, "machine": machine, "date": str(datetime.date.today()),
                   "runs": {f"threads{t}-seed{s}": v for (t, s), v in runs.items()}, **report}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
