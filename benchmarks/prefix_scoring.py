"""Benchmark: prefix-shared vs naive scoring of the same test set, same model, same process.

    .venv/bin/python benchmarks/prefix_scoring.py [--config configs/demo.yaml] [--model DIR] [--repeats 3]

The baseline batches each member's k full prompts (prefix repeated) exactly as the
shared path batches its k suffixes, so the measured ratio isolates prefix reuse. The
ideal ratio comes from token counts, sum k(P+S) / sum (P + kS); the target is a
measured ratio of at least 0.7x that ideal. Without --model the teacher spec of the
config is initialized randomly: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from recslm.config import load_config
from recslm.data.build import build_data_artifact, load_split, tokenizer_path
from recslm.data.tokenizer import load_tokenizer
from recslm.evaluate.scoring import score_records
from recslm.models.factory import build_model, load_model
from recslm.models.prefix import make_groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--model", type=Path, default=None, help="trained model directory (default: random init of teacher.arch)")
    parser.add_argument("--data", type=Path, default=None, help="data artifact folder (default: build from the config)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--groups-per-batch", type=int, default=16)
    parser.add_argument("--max-groups", type=int, default=600, help="score the first N member groups of the test split")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    cfg = load_config(args.config)
    data_dir = args.data
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="recslm-bench-data-"))
        build_data_artifact(cfg.data, data_dir)
    records = load_split(data_dir, "test")
    if args.model is not None:
        tokenizer, model = load_tokenizer(args.model), load_model(args.model)
    else:
        tokenizer = load_tokenizer(tokenizer_path(data_dir))
        model = build_model(cfg.teacher.arch, tokenizer, seed=0)
    model.eval()
    groups = make_groups(records, tokenizer)[: args.max_groups]
    records = [records[i] for g in groups for i in g.record_index]
    groups = make_groups(records, tokenizer)
    naive_tokens = sum(g.tokens_naive for g in groups)
    shared_tokens = sum(g.tokens_shared for g in groups)
    ideal = naive_tokens / shared_tokens

    score_records(model, tokenizer, records[:64], prefix_sharing=True)  # warm-up
    timings: dict[str, list[float]] = {"naive": [], "shared": []}
    for _ in range(args.repeats):
        for mode in ("naive", "shared"):  # interleaved, so drift hits both alike
            start = time.perf_counter()
            score_records(model, tokenizer, records, prefix_sharing=(mode == "shared"), groups=groups, groups_per_batch=args.groups_per_batch)
            timings[mode].append(time.perf_counter() - start)
    best = {mode: min(ts) for mode, ts in timings.items()}
    eps = {mode: len(records) / s for mode, s in best.items()}
    ratio = eps["shared"] / eps["naive"]
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} torch threads".strip(),
        "torch": torch.__version__,
        "records": len(records),
        "groups": len(groups),
        "mean_prefix_tokens": sum(len(g.prefix_ids) for g in groups) / len(groups),
        "mean_candidate_tokens": sum(len(c) for g in groups for c in g.candidate_ids) / len(records),
        "mean_k": len(records) / len(groups),
        "examples_per_s": eps,
        "ratio": ratio,
        "ideal_ratio": ideal,
        "fraction_of_ideal": ratio / ideal,
        "target_fraction_of_ideal": 0.7,
    }
    print(f"prefix-shared scoring, {len(records)} records in {len(groups)} groups "
          f"(P={result['mean_prefix_tokens']:.0f}, S={result['mean_candidate_tokens']:.0f}, k={result['mean_k']:.1f})")
    print(f"  naive : {eps['naive']:8.1f} examples/s")
    print(f"  shared: {eps['shared']:8.1f} examples/s")
    print(f"  ratio {ratio:.2f}x vs ideal {ideal:.2f}x from token counts = {ratio / ideal:.2f} of ideal (target >= 0.70)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
