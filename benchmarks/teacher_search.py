"""Choose the teacher by measurement on val: size, context and prompt rendering.

Runs one pipeline config once per variant (a list of ``--set`` overrides), each trimmed to
data -> baselines -> teacher -> evaluate (no students, prune, quantize or deploy), in its own
``recslm run`` process on one store, and prints per variant the teacher's val AUC per task
and mean, the best non-LM baseline's val AUC on the same records, and the teacher's
training time. Only val is printed: the choice is made there; test is reported once, by
the run that uses the chosen teacher.

    .venv/bin/python benchmarks/teacher_search.py --config configs/demo.yaml --root runs/teacher-search \\
        --variant base= --variant recent=data.item_recent=true,data.member_summary=true [--json out.json]

A variant is ``name=override,override,...`` (an empty list keeps the config as it is).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRIM = ["students=[]", "prune.enabled=false", "quantize.enabled=false", "serve.enabled=false", "bench.enabled=false", "registry.enabled=false", "tracking.enabled=false"]


def run_variant(config: Path, root: Path, name: str, overrides: list[str]) -> dict:
    """One trimmed pipeline run in a fresh process; its summary.json."""
    command = [sys.executable, "-m", "flows.cli", "run", str(config), "--run-id", name]
    for item in [f"run.root={root}", *TRIM, *overrides]:
        command += ["--set", item]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "RECSLM_PROGRESS": "0"})
    if proc.returncode != 0:
        raise SystemExit(f"variant {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads((root / name / "summary.json").read_text())


def row(name: str, overrides: list[str], summary: dict) -> dict:
    """What the choice reads: val only."""
    teacher = next(m for m in summary["models"] if m["role"] == "teacher")
    baselines = [m for m in summary["models"] if m["role"] == "baseline"]
    best = max(baselines, key=lambda m: m["val_auc_mean"]) if baselines else None
    stage = summary["stages"]["teacher"]["metrics"]
    return {
        "variant": name,
        "overrides": overrides,
        "teacher_val_auc": teacher["val_auc"],
        "teacher_val_auc_mean": teacher["val_auc_mean"],
        "params": teacher["params"],
        "params_non_embedding": teacher["params_non_embedding"],
        "best_baseline": best["name"] if best else None,
        "best_baseline_val_auc_mean": best["val_auc_mean"] if best else None,
        "train_s": stage.get("train_wall_s", 0.0) + stage.get("foundation_wall_s", 0.0),
        "best_step": stage.get("best_step"),
        "steps": stage.get("steps"),
        "teacher_cached": summary["stages"]["teacher"]["cached"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    parser.add_argument("--root", type=Path, default=REPO / "runs" / "teacher-search")
    parser.add_argument("--variant", action="append", required=True, help="name=override,override,... (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        overrides = [item for item in rest.split(",") if item]
        rows.append(row(name, overrides, run_variant(args.config.resolve(), args.root.resolve(), name, overrides)))
        r = rows[-1]
        tasks = " ".join(f"{t} {v:.4f}" for t, v in sorted(r["teacher_val_auc"].items()))
        print(f"{name:<24} val mean {r['teacher_val_auc_mean']:.4f} ({tasks}); best baseline {r['best_baseline']} {r['best_baseline_val_auc_mean']:.4f}; "
              f"params {r['params']:,} ({r['params_non_embedding']:,} non-emb); train {r['train_s']:.0f} s; best step {r['best_step']} of {r['steps']}", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"date": datetime.date.today().isoformat(), "config": str(args.config), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
