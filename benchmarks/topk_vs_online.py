"""Benchmark: teacher logits online vs stored top-k, for 3 students, through the real pipeline.

    .venv/bin/python benchmarks/topk_vs_online.py [--config configs/smoke.yaml --k 8 --root /tmp/topk-bench --json out.json]

Two ``recslm run`` invocations of the same config in one run root, differing only in
``distill.teacher_logits`` (point ``--root`` at a root where the config already ran, e.g.
``runs`` after ``make demo``, and the data, teacher and any student already trained come
from the store):

1. ``topk``: data, teacher, evaluation, the ``teacher_logits`` stage (the teacher's top-k
   log-probs over the training data, computed once), then 3 students distilled from the
   stored targets (no teacher forward during training);
2. ``online``: the same run root, so data, teacher and its evaluation come from the cache;
   the same 3 students distilled with the teacher run at every step.

Students are the config's first two plus a third (the first with one more layer); the
SFT baseline is off (it does not use the teacher). Times are what each stage measured
and stored in its metrics (so they hold for stages reused from the store too): online =
the 3 students' training time; top-k = the teacher_logits computation + the 3 students'
training time. AUCs are each student's test AUC mean from the same summaries.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def third_student(first: dict[str, Any]) -> dict[str, Any]:
    """The config's first student with one more layer: a third size from the same family."""
    arch = dict(first["arch"])
    arch["num_layers"] = int(arch["num_layers"]) + 1
    return {"name": f"{first['name']}-deeper", "arch": arch}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "smoke.yaml")
    parser.add_argument("--k", type=int, default=8, help="distill.topk")
    parser.add_argument("--root", type=Path, default=Path("/tmp/recslm-topk-bench"), help="run root (teacher cached across both runs)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


def write_config(args: argparse.Namespace, mode: str) -> Path:
    cfg = yaml.safe_load(args.config.read_text())
    students = cfg.get("students", [])[:2]
    if len(students) < 2 or any("arch" not in s for s in students):
        raise SystemExit(f"{args.config}: needs at least 2 students built from an arch spec")
    cfg["students"] = students + [third_student(students[0])]
    cfg["run"] = {**cfg.get("run", {}), "root": str(args.root), "name": "topk-bench"}
    cfg["distill"] = {**cfg.get("distill", {}), "teacher_logits": mode, "topk": args.k, "sft_baseline": False}
    cfg["select"] = {"max_auc_drop_pct": 100}  # the benchmark compares modes; selection is not the point
    path = args.root / f"{mode}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(config: Path, run_id: str) -> dict[str, Any]:
    cmd = [str(Path(sys.executable).with_name("recslm")), "run", str(config), "--run-id", run_id]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"recslm run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads((config.parent / run_id / "summary.json").read_text())


def distill_rows(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    models = {m["name"]: m for m in summary["models"] if m["role"] == "student"}
    rows = {}
    for name, stage in summary["stages"].items():
        if stage.get("metrics", {}).get("role") == "student":
            student = stage["metrics"]["student"]
            rows[student] = {"wall_s": stage["metrics"]["train_wall_s"], "cached": stage["cached"],
                             "auc_mean": models[student]["auc_mean"], "params": models[student]["params"]}
    return rows


def main() -> int:
    args = parse()
    load = os.getloadavg()[0]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    topk = run(write_config(args, "topk"), f"topk-{stamp}")
    online = run(write_config(args, "online"), f"online-{stamp}")
    tk_rows, on_rows = distill_rows(topk), distill_rows(online)
    logits_stage = topk["stages"]["teacher_logits"]
    logits_s = float(logits_stage["metrics"]["wall_s"])
    print(f"\nteacher AUC mean {next(m['auc_mean'] for m in topk['models'] if m['role'] == 'teacher'):.4f}; "
          f"top-k store: k={args.k}, {logits_stage['metrics'].get('bytes', 0) / 1e6:.1f} MB, computed in {logits_s:.1f} s")
    print(f"{'student':<20}{'params':>9}{'AUC online':>12}{'AUC top-k':>11}{'diff':>9}{'online s':>10}{'top-k s':>9}")
    for name in on_rows:
        o, t = on_rows[name], tk_rows[name]
        print(f"{name:<20}{o['params']:>9}{o['auc_mean']:>12.4f}{t['auc_mean']:>11.4f}{t['auc_mean'] - o['auc_mean']:>+9.4f}{o['wall_s']:>10.1f}{t['wall_s']:>9.1f}{'  (from the store)' if o['cached'] or t['cached'] else ''}")
    online_s = sum(r["wall_s"] for r in on_rows.values())
    topk_s = logits_s + sum(r["wall_s"] for r in tk_rows.values())
    mean_diff = sum(tk_rows[n]["auc_mean"] - on_rows[n]["auc_mean"] for n in on_rows) / len(on_rows)
    print(f"\n{len(on_rows)} students: online {online_s:.1f} s; top-k {topk_s:.1f} s (teacher_logits {logits_s:.1f} s "
          f"+ distill {topk_s - logits_s:.1f} s); ratio top-k/online {topk_s / online_s:.2f}x; "
          f"mean AUC difference (top-k - online) {mean_diff:+.4f}")
    print(f"command: {' '.join(sys.argv)}; machine: {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()}; "
          f"load average at start {load:.1f}; date {time.strftime('%Y-%m-%d %H:%M')}")
    if args.json:
        args.json.write_text(json.dumps({"online": on_rows, "topk": tk_rows, "teacher_logits_s": logits_s,
                                         "online_s": online_s, "topk_s": topk_s, "mean_auc_diff": mean_diff}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
