"""Benchmark: distillation-training throughput, recslm's prefix-shared DistillTrainer vs TRL's GKDTrainer.

    .venv/bin/python benchmarks/kd_throughput.py [--config configs/demo.yaml --groups-per-batch 4 --steps 20 --warmup 2 --threads 1 --json out.json]

Needs TRL (``pip install -e '.[bench]'``). Three variants, each in its own fresh process
(no shared allocator state or warm caches), on the same teacher and student (the config's
``teacher.arch`` and first student, randomly initialized: speed does not depend on the
weights), the same training groups (built from the config's data section; only groups
with exactly the modal k candidates, so every step holds exactly groups x k examples),
the same optimizer, schedule and clipping, fp32, the same torch threads:

- ``gkd``: ``trl.experimental.gkd.GKDTrainer``. TRL has no prefix sharing, so every
  candidate is written out in full (prefix + candidate + answer token) with labels -100
  except the answer token: GKD's completion-only loss is then KD on the answer token.
  ``lmbda=0`` (never samples from the student), ``seq_kd=False``, ``beta=0``: in TRL 1.16's
  ``generalized_jsd_loss`` that branch is ``F.kl_div(student_logp, teacher_logp,
  log_target=True)`` = KL(teacher || student), the forward KL recslm uses. The loss
  temperature is 1 in both (``GKDConfig.temperature`` only affects sampling). TRL's
  configs default to ``gradient_checkpointing=True`` and ``bf16=True``; both are turned
  off here, as recslm uses neither.
- ``recslm``: ``distill_student`` with the config's recipe (by default 0.9 forward KL on
  the answer token + 0.1 CE + 0.05 KD over every prompt token); teacher and student run
  the prefix-shared forward: each member's prefix once, its KV cache serving all k.
- ``recslm-noprompt``: the same with ``prompt_weight=0``, the closest to GKD's loss (it
  keeps the 0.1 CE, which costs one LM-head row per candidate).

So the losses differ: the ``loss`` column is each trainer's own objective. ``answer KD``
has the same definition in all three (mean forward KL per answer token), but each run
draws its own random batches and recslm's student also follows the CE (and prompt) terms,
so the values track each other only roughly; they are a sanity check, not a quality result.

The clock runs from the end of the last warmup step to the end of the last step (an
``on_step_end`` callback), so it covers collation, teacher forward, student forward and
backward, the optimizer step and logging. Prompt tokens (prefix + candidate per example,
the answer excluded: the same definition for both) and student positions (what the
student's decoder actually ran, padding included) are counted exactly from the student's
decoder inputs in the timed steps. The "forward-token ideal" k(P+S)/(P+kS) is the ratio
from token counts alone; GKD also materializes B x T x V logits of both models and
recslm never does, so the measured ratio can exceed it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

VARIANTS = ("gkd", "recslm", "recslm-noprompt")


def select_groups(data: Path, config: str, n: int) -> tuple[Any, Any, list[Any], int]:
    """Config, tokenizer, the first ``n`` training groups with the modal k, and k (same in every process)."""
    from recslm.config import load_config
    from recslm.data.build import load_split, tokenizer_path
    from recslm.data.tokenizer import load_tokenizer
    from recslm.models.prefix import make_groups

    cfg = load_config(config)
    tokenizer = load_tokenizer(tokenizer_path(data))
    groups = make_groups(load_split(data, "train"), tokenizer)
    k = Counter(len(g.labels) for g in groups).most_common(1)[0][0]
    groups = [g for g in groups if len(g.labels) == k]
    if len(groups) < n:
        raise SystemExit(f"only {len(groups)} training groups with k={k}; need {n}: raise --max-train-groups")
    return cfg, tokenizer, groups[:n], k


class Meter:
    """Clock and exact token counts of the student's decoder inputs, read at every optimizer-step end."""

    def __init__(self, student: Any, pad_id: int, k: int, shared: bool):
        self.pad_id, self.k, self.shared = pad_id, k, shared
        self.prompt = self.positions = 0
        self.marks: list[tuple[float, int, int]] = []
        self.logs: list[tuple[int, dict[str, float]]] = []
        student.get_decoder().register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        real = int((ids != self.pad_id).sum())
        self.positions += ids.numel()
        if not self.shared:
            self.prompt += real - ids.shape[0]  # full rows: the last real token is the answer
        elif kwargs.get("position_ids") is None:
            self.prompt += self.k * real  # shared_forward's prefix batch: each prefix stands for k prompts
        else:
            self.prompt += real  # the suffix batch: candidate tokens, the answer is not an input

    def step(self, global_step: int, max_steps: int = 0) -> None:
        self.marks.append((time.perf_counter(), self.prompt, self.positions))

    def log(self, step: int, values: dict[str, float]) -> None:
        self.logs.append((step, dict(values)))


def child(args: argparse.Namespace) -> None:
    """Train one variant for warmup + steps optimizer steps; print one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    from recslm.models.factory import build_model

    n = (args.warmup + args.steps) * args.groups_per_batch
    cfg, tok, groups, k = select_groups(args.data, args.config, n)
    if cfg.teacher.arch is None or not cfg.students or cfg.students[0].arch is None:
        raise SystemExit(f"{args.config}: needs teacher.arch and a first student with arch")
    teacher = build_model(cfg.teacher.arch, tok, seed=1)
    student = build_model(cfg.students[0].arch, tok, seed=0)
    meter = Meter(student, tok.pad_token_id, k, shared=args.variant != "gkd")
    train = cfg.distill.phases[0].train
    total = args.warmup + args.steps
    work = Path(tempfile.mkdtemp(prefix=f"kd-bench-{args.variant}-"))
    if args.variant == "gkd":
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl.experimental.gkd import GKDConfig, GKDTrainer
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        from recslm.data.tokenizer import answer_token_ids

        answers = answer_token_ids(tok)
        rows = [{"input_ids": g.prefix_ids + c + [answers[y]], "labels": [-100] * (len(g.prefix_ids) + len(c)) + [answers[y]]}
                for g in groups for c, y in zip(g.candidate_ids, g.labels)]

        class Marks(TrainerCallback):
            def on_step_end(self, a: Any, state: Any, control: Any, **kw: Any) -> None:
                meter.step(state.global_step)

            def on_log(self, a: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
                meter.log(state.global_step, logs or {})

        gkd_args = GKDConfig(
            output_dir=str(work), per_device_train_batch_size=args.groups_per_batch * k, max_steps=total,
            learning_rate=train.learning_rate, weight_decay=train.weight_decay, max_grad_norm=train.max_grad_norm,
            lr_scheduler_type="cosine", warmup_steps=0, logging_steps=1, logging_first_step=True, save_strategy="no",
            report_to="none", disable_tqdm=True, use_cpu=True, seed=0, data_seed=0, dataloader_num_workers=0,
            gradient_checkpointing=False, bf16=False, lmbda=0.0, beta=0.0, seq_kd=False, max_length=None,
        )
        trainer = GKDTrainer(model=student, teacher_model=teacher, args=gkd_args, train_dataset=Dataset.from_list(rows),
                             data_collator=DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id),
                             processing_class=tok, callbacks=[Marks()])
        trainer.train()
        optim = str(gkd_args.optim)
    else:
        from recslm.config import DistillPhase, TrainConfig
        from recslm.train.distill import distill_student
        from recslm.train.runner import training_arguments

        phase_train = TrainConfig(max_steps=total, learning_rate=train.learning_rate, weight_decay=train.weight_decay,
                                  max_grad_norm=train.max_grad_norm, warmup_ratio=0.0, groups_per_batch=args.groups_per_batch,
                                  save_steps=10**6, logging_steps=1, threads=args.threads)
        dcfg = cfg.distill.model_copy(update={"prompt_weight": 0.0} if args.variant == "recslm-noprompt" else {})
        distill_student(student, teacher, tok, groups, dcfg, work, seed=0,
                        phases=[DistillPhase(loss="forward_kl", train=phase_train)], on_log=meter.log, on_step=meter.step)
        optim = str(training_arguments(phase_train, work, n_items=len(groups), seed=0).optim)
    shutil.rmtree(work, ignore_errors=True)
    if len(meter.marks) != total:
        raise SystemExit(f"{args.variant}: expected {total} step marks, got {len(meter.marks)}")
    (t0, p0, s0), (t1, p1, s1) = meter.marks[args.warmup - 1], meter.marks[-1]
    timed = [v for step, v in meter.logs if args.warmup < step <= total and "loss" in v]

    def mean(key: str) -> float | None:
        return sum(v[key] for v in timed) / len(timed) if timed and key in timed[0] else None

    print(json.dumps({
        "variant": args.variant, "seconds": t1 - t0, "examples": args.steps * args.groups_per_batch * k,
        "prompt_tokens": p1 - p0, "student_positions": s1 - s0, "loss": mean("loss"),
        "answer_kd": mean("loss") if args.variant == "gkd" else mean("loss_kd"), "ce": mean("loss_ce"),
        "prompt_kd": mean("loss_prompt_kd"), "threads": torch.get_num_threads(), "optim": optim,
        "kd_weights": None if args.variant == "gkd" else [dcfg.kd_weight, dcfg.ce_weight, dcfg.prompt_weight],
    }))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--data", type=Path, default=None, help="data artifact folder (default: build from the config)")
    parser.add_argument("--max-train-groups", type=int, default=None, help="data.max_train_groups when building (default: 2x needed)")
    parser.add_argument("--groups-per-batch", type=int, default=4, help="member groups per step (x k examples)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads in every variant")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--variant", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1 (the clock starts at the end of the last warmup step)")
    if args.variant:
        child(args)
        return 0
    built = args.data is None
    n = (args.warmup + args.steps) * args.groups_per_batch
    if args.data is None:
        from recslm.config import load_config
        from recslm.data.build import build_data_artifact

        data_cfg = load_config(args.config).data.model_copy(update={"max_train_groups": args.max_train_groups or 2 * n + 20})
        args.data = Path(tempfile.mkdtemp(prefix="kd-bench-data-"))
        build_data_artifact(data_cfg, args.data)
    cfg, _, groups, k = select_groups(args.data, args.config, n)
    P = sum(len(g.prefix_ids) for g in groups) / len(groups)
    S = sum(len(c) for g in groups for c in g.candidate_ids) / (len(groups) * k)
    ideal = sum(len(g.prefix_ids) * k + sum(map(len, g.candidate_ids)) for g in groups) / sum(g.tokens_shared for g in groups)
    load = os.getloadavg()[0]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}
    base = [sys.executable, __file__, "--config", args.config, "--data", str(args.data), "--groups-per-batch",
            str(args.groups_per_batch), "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    results: dict[str, dict[str, Any]] = {}
    for variant in args.variants:
        proc = subprocess.run([*base, "--variant", variant], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"{variant} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r.update(examples_per_s=r["examples"] / r["seconds"], prompt_tokens_per_s=r["prompt_tokens"] / r["seconds"],
                 positions_per_example=r["student_positions"] / r["examples"])
        results[variant] = r
    base_eps = results["gkd"]["examples_per_s"] if "gkd" in results else None
    for r in results.values():
        r["ratio_vs_gkd"] = r["examples_per_s"] / base_eps if base_eps else None
    t, s = cfg.teacher.arch, cfg.students[0].arch
    print(f"KD training throughput, {args.config}: teacher {t.family} {t.hidden_size}x{t.num_layers} (experts {t.num_experts}), "
          f"student {cfg.students[0].name}; {args.groups_per_batch} groups x k={k} = {args.groups_per_batch * k} examples/step, "
          f"P={P:.0f} S={S:.0f} tokens; {args.steps} timed steps after {args.warmup} warmup; {args.threads} thread(s)")
    print(f"  {'variant':<17}{'examples/s':>11}{'prompt tok/s':>14}{'student pos/ex':>16}{'loss':>9}{'answer KD':>11}{'vs GKD':>8}")
    for name, r in results.items():
        ratio = f"{r['ratio_vs_gkd']:.2f}x" if r["ratio_vs_gkd"] else "-"
        kd = f"{r['answer_kd']:.4f}" if r["answer_kd"] is not None else "-"
        print(f"  {name:<17}{r['examples_per_s']:>11.1f}{r['prompt_tokens_per_s']:>14.0f}{r['positions_per_example']:>16.1f}"
              f"{r['loss']:>9.4f}{kd:>11}{ratio:>8}")
    print(f"  losses: gkd = forward KL on the answer token; recslm = {cfg.distill.kd_weight} answer KD + {cfg.distill.ce_weight} CE "
          f"+ {cfg.distill.prompt_weight} prompt KD; recslm-noprompt = the same without prompt KD. Forward-token ideal ratio {ideal:.2f}x")
    print(f"  command: {' '.join([sys.executable, *sys.argv])}; machine: {platform.machine()} {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}; load average at start {load:.2f}, at end {os.getloadavg()[0]:.2f}; "
          f"date {time.strftime('%Y-%m-%d %H:%M')}")
    if built:
        shutil.rmtree(args.data, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"command": sys.argv, "k": k, "prefix_tokens": P, "candidate_tokens": S,
                                         "ideal_ratio": ideal, "load_start": load, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
