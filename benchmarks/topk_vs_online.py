"""Benchmark: teacher logits online vs stored top-k, for 3 students, through the real pipeline.

    .venv/bin/python benchmarks/topk_vs_online.py [--config configs/smoke.yaml --k 8 --root /tmp/topk-bench --json out.json]

Two ``recslm run`` invocations of the same config in one run root, differing only in
``distill.teacher_logits``:

1. ``topk``: data, teacher, evaluation, the ``teacher_logits`` stage (the teacher's top-k
   log-probs over the training data, computed once), then 3 students distilled from the
   stored targets (no teacher forward during training);
2. ``online``: the same run root, so data, teacher and its evaluation come from the cache;
   the same 3 students distilled with the teacher run at every step.

Students are the config's first two plus a third (``--third``); the SFT baseline is off
(it does not use the teacher). Times are the stages' own wall clocks from each run's
summary.json: online = the 3 distill stages; top-k = the teacher_logits stage + the 3
distill stages. AUCs are each student's test AUC mean from the same summaries.
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
THIRD = {"name": "mid-llama", "arch": {"family": "llama", "hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
                                      "intermediate_size": 128, "max_position_embeddings": 512}}


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
    if len(students) < 2:
        raise SystemExit(f"{args.config}: needs at least 2 students (has {len(students)})")
    cfg["students"] = students + [THIRD]
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
            if stage["cached"]:
                raise SystemExit(f"stage {name} came from the cache: use a fresh --root")
            rows[student] = {"wall_s": stage["wall_s"], "auc_mean": models[student]["auc_mean"], "params": models[student]["params"]}
    return rows


def main() -> int:
    args = parse()
    load = os.getloadavg()[0]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    topk = run(write_config(args, "topk"), f"topk-{stamp}")
    online = run(write_config(args, "online"), f"online-{stamp}")
    tk_rows, on_rows = distill_rows(topk), distill_rows(online)
    logits_stage = next(s for n, s in topk["stages"].items() if n == "teacher_logits")
    print(f"\nteacher AUC mean {next(m['auc_mean'] for m in topk['models'] if m['role'] == 'teacher'):.4f}; "
          f"top-k store: k={args.k}, {logits_stage['metrics'].get('bytes', 0) / 1e6:.1f} MB, computed in {logits_stage['wall_s']:.1f} s")
    print(f"{'student':<14}{'params':>9}{'AUC online':>12}{'AUC top-k':>11}{'diff':>9}{'online s':>10}{'top-k s':>9}")
    for name in on_rows:
        o, t = on_rows[name], tk_rows[name]
        print(f"{name:<14}{o['params']:>9}{o['auc_mean']:>12.4f}{t['auc_mean']:>11.4f}{t['auc_mean'] - o['auc_mean']:>+9.4f}{o['wall_s']:>10.1f}{t['wall_s']:>9.1f}")
    online_s = sum(r["wall_s"] for r in on_rows.values())
    topk_s = logits_stage["wall_s"] + sum(r["wall_s"] for r in tk_rows.values())
    mean_diff = sum(tk_rows[n]["auc_mean"] - on_rows[n]["auc_mean"] for n in on_rows) / len(on_rows)
    print(f"\n{len(on_rows)} students: online {online_s:.1f} s; top-k {topk_s:.1f} s (teacher_logits {logits_stage['wall_s']:.1f} s "
          f"+ distill {topk_s - logits_stage['wall_s']:.1f} s); ratio top-k/online {topk_s / online_s:.2f}x; "
          f"mean AUC difference (top-k - online) {mean_diff:+.4f}")
    print(f"command: {' '.join(sys.argv)}; machine: {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()}; "
          f"load average at start {load:.1f}; date {time.strftime('%Y-%m-%d %H:%M')}")
    if args.json:
        args.json.write_text(json.dumps({"online": on_rows, "topk": tk_rows, "teacher_logits_s": logits_stage["wall_s"],
                                         "online_s": online_s, "topk_s": topk_s, "mean_auc_diff": mean_diff}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
