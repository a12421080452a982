"""Benchmark: off-policy vs on-policy vs two-phase distillation on the clothing-review generation task.

    .venv/bin/python benchmarks/onpolicy_reviews.py [--student-steps 150 --max-new-tokens 40 --threads 1 --json out.json]

One run: build review records (bundled subset by default), train a byte-level BPE and a
small teacher with response SFT, then distill the *same* student architecture from the
*same* initialization three ways, each with the same number of optimizer steps:

- ``off-policy``: forward KL on the reference responses;
- ``on-policy``: forward KL on student samples (on_policy_fraction = 1.0);
- ``two-phase``: half the steps off-policy, then half on-policy (each phase from the last;
  each phase has its own warmup and cosine decay, as separate stages would).

It prints, for the teacher and each student, the validation response loss (mean
cross-entropy per reference-response token; the generative validation loss), the
forward KL to the teacher on the validation responses, train wall time and on-policy
samples, with ratios against the off-policy student measured in the same run.

Reading the figures: both validation metrics are computed on *reference* responses,
i.e. off-policy data, which is what the off-policy student is trained on; on-policy
training aims at the student's own generations (exposure bias), which these metrics do
not see. A lower on-policy figure is therefore not expected; the numbers show what the
on-policy phase costs or gains on reference text, and what it costs in wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recslm.config import ArchSpec, DistillPhase, SamplingConfig, TrainConfig
from recslm.data.reviews import build_review_splits, texts_of
from recslm.data.tokenizer import train_bpe_tokenizer
from recslm.models.factory import build_model, count_parameters
from recslm.train.generative import distill_generative_phases, response_loss, teacher_divergence, train_response_model


@dataclass
class Row:
    name: str
    params: int
    val_loss: float
    val_kl: float
    wall_s: float
    steps: int
    generated: int
    mean_generated_tokens: float
    eos_share: float


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="reviews parquet/csv or folder (default: the bundled subset)")
    parser.add_argument("--train-records", type=int, default=800)
    parser.add_argument("--val-records", type=int, default=160)
    parser.add_argument("--max-response-chars", type=int, default=160)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--teacher-hidden", type=int, default=128)
    parser.add_argument("--teacher-layers", type=int, default=4)
    parser.add_argument("--teacher-steps", type=int, default=500)
    parser.add_argument("--student-hidden", type=int, default=64)
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--student-steps", type=int, default=150, help="optimizer steps of every student (two-phase: half each)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=1.0, help="on-policy sampling temperature")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads; 1 by default: these models are tiny, and with 2 threads on a busy 2-core machine "
        "steps measured 4-5x and sampling 10x slower (0 = torch's choice)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="checkpoint folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args()


def spec(hidden: int, layers: int) -> ArchSpec:
    heads = max(2, hidden // 32)
    return ArchSpec(family="llama", hidden_size=hidden, num_layers=layers, num_heads=heads, num_kv_heads=max(1, heads // 2), intermediate_size=hidden * 2)


def train_cfg(args: argparse.Namespace, steps: int) -> TrainConfig:
    return TrainConfig(max_steps=steps, groups_per_batch=args.batch, learning_rate=args.lr, warmup_ratio=0.05, save_steps=10_000, logging_steps=10_000)


def schedules(args: argparse.Namespace) -> dict[str, list[DistillPhase]]:
    half = args.student_steps // 2
    return {
        "off-policy": [DistillPhase(loss="forward_kl", train=train_cfg(args, args.student_steps))],
        "on-policy": [DistillPhase(loss="forward_kl", on_policy_fraction=1.0, train=train_cfg(args, args.student_steps))],
        "two-phase": [
            DistillPhase(loss="forward_kl", train=train_cfg(args, half)),
            DistillPhase(loss="forward_kl", on_policy_fraction=1.0, train=train_cfg(args, args.student_steps - half)),
        ],
    }


def run(args: argparse.Namespace, out: Path) -> tuple[list[Row], dict[str, Any]]:
    splits = build_review_splits(args.data, max_records=max(args.train_records, args.val_records), max_response_chars=args.max_response_chars, seed=args.seed)
    train, val = splits["train"][: args.train_records], splits["val"][: args.val_records]
    tokenizer = train_bpe_tokenizer(texts_of(train), vocab_size=args.vocab)
    teacher = build_model(spec(args.teacher_hidden, args.teacher_layers), tokenizer, args.seed)
    start = time.perf_counter()
    report = train_response_model(teacher, tokenizer, train, train_cfg(args, args.teacher_steps), out / "teacher", seed=args.seed)
    teacher.eval()
    rows = [Row("teacher (SFT)", count_parameters(teacher), response_loss(teacher, tokenizer, val), 0.0, time.perf_counter() - start, report.steps, 0, 0.0, 0.0)]
    sampling = SamplingConfig(temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    for name, phases in schedules(args).items():
        student = build_model(spec(args.student_hidden, args.student_layers), tokenizer, args.seed + 1)  # same init for all
        start = time.perf_counter()
        reports = distill_generative_phases(student, teacher, tokenizer, train, phases, output_dir=out / name, seed=args.seed, sampling=sampling)
        wall = time.perf_counter() - start
        generated = sum(r.generated_examples for r in reports)
        tokens = sum(r.generated_tokens for r in reports)
        eos = sum(r.generations_ended_with_eos for r in reports)
        rows.append(
            Row(name, count_parameters(student), response_loss(student, tokenizer, val), teacher_divergence(student, teacher, tokenizer, val),
                wall, sum(r.steps for r in reports), generated, tokens / generated if generated else 0.0, eos / generated if generated else 0.0)
        )  # fmt: skip
    sizes = {"train_records": len(train), "val_records": len(val), "vocab": len(tokenizer)}
    return rows, sizes


def table(rows: list[Row]) -> str:
    base = next(r for r in rows if r.name == "off-policy")
    head = f"{'model':15s} {'params':>8s} {'val loss':>9s} {'x off':>6s} {'val KL':>7s} {'x off':>6s} {'steps':>6s} {'train s':>8s} {'x off':>6s} {'samples':>8s} {'tok/sample':>10s} {'EOS':>5s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        student = r.name != "teacher (SFT)"
        kl = f"{r.val_kl:7.4f} {r.val_kl / base.val_kl:6.2f}" if student else f"{'-':>7s} {'-':>6s}"
        wall = f"{r.wall_s / base.wall_s:6.2f}" if student else f"{'-':>6s}"
        lines.append(
            f"{r.name:15s} {r.params:8d} {r.val_loss:9.4f} {r.val_loss / base.val_loss:6.3f} {kl} {r.steps:6d} "
            f"{r.wall_s:8.1f} {wall} {r.generated:8d} {r.mean_generated_tokens:10.1f} {r.eos_share:5.0%}"
        )
    return "\n".join(lines)


def main() -> int:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    load = os.getloadavg()[0]
    began = time.perf_counter()
    # the Trainer prints its log lines; keep them off stdout so stdout is the report
    with tempfile.TemporaryDirectory(prefix="recslm-onpolicy-") as tmp, contextlib.redirect_stdout(sys.stderr):
        rows, sizes = run(args, args.out or Path(tmp))
    total = time.perf_counter() - began
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), python {platform.python_version()}; "
        f"load average at start {load:.1f}; date: {time.strftime('%Y-%m-%d %H:%M')}"
    )
    print(
        f"data: clothing reviews ({'bundled subset' if args.data is None else args.data}), {sizes['train_records']} train / "
        f"{sizes['val_records']} val records (val products never in train), responses <= {args.max_response_chars} chars, "
        f"BPE vocab {sizes['vocab']}; sampling T={args.temperature}, max_new_tokens={args.max_new_tokens}"
    )
    print(table(rows))
    print("val loss: cross-entropy per reference-response token (lower is better); val KL: forward KL to the teacher per token;")
    print(
        "x off: ratio to the off-policy student of this run; samples: student generations used in training "
        f"(tok/sample: mean length, EOS: share that stopped before max_new_tokens). total {total:.0f} s"
    )
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": [r.__dict__ for r in rows], "total_s": total}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
