"""A distillation run in its own process, for the kill-and-resume test.

Usage: python -m tests.distill_worker WORK_DIR [--step-sleep S]
Writes WORK_DIR/result.json with each phase's report and a digest of the final weights.
``--step-sleep`` slows each optimizer step so the test can kill the run mid-way.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

from transformers import TrainerCallback

from recslm.config import DistillConfig, DistillPhase, TrainConfig
from recslm.models.prefix import make_groups
from recslm.train.distill import distill_student
from tests.helpers import synthetic_records, tiny_model, tiny_tokenizer


class Sleep(TrainerCallback):
    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(self.seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--step-sleep", type=float, default=0.0)
    args = parser.parse_args()
    records = synthetic_records(members=8, k=3)
    tok = tiny_tokenizer(records)
    groups = make_groups(records, tok)
    teacher = tiny_model(tok, "mixtral", seed=1)
    student = tiny_model(tok, "llama", seed=2)
    train = TrainConfig(max_steps=16, learning_rate=5e-3, groups_per_batch=4, save_steps=4, save_total_limit=2, logging_steps=4)
    cfg = DistillConfig(phases=[DistillPhase(train=train), DistillPhase(loss="reverse_kl", train=train)])
    on_step = None
    if args.step_sleep:
        import recslm.train.runner as runner

        original = runner.callbacks
        runner_callbacks = lambda on_log, on_step, cfg=None: original(on_log, on_step, cfg) + [Sleep(args.step_sleep)]  # noqa: E731
        import recslm.train.distill as distill

        distill.callbacks = runner_callbacks
    model, reports = distill_student(student, teacher, tok, groups, cfg, args.work_dir, seed=0, on_step=on_step)
    digest = hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in model.state_dict().values())).hexdigest()
    (args.work_dir / "result.json").write_text(json.dumps({"reports": [asdict(r) for r in reports], "digest": digest}))


if __name__ == "__main__":
    main()
