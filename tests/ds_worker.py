"""One rank of a real DeepSpeed ZeRO run on the CPU, started by tests/stages/test_deepspeed.py under torchrun.

Usage: ``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ds_worker.py
INIT_DIR OUT_DIR --stage {0,1,2,3} [--offload] [--recipe {sft,distill}]``. Every rank loads the
same initial model and tokenizer from INIT_DIR (written once by the test, so ranks cannot
start from different weights) and trains a few steps with the config from
``recslm.train.deepspeed.deepspeed_config``:

- ``sft``: ``recslm.train.sft.train_answer_model`` (the teacher's trainer);
- ``distill``: ``recslm.train.distill.distill_student``, the distill stage's own path, with
  two phases (forward KL, then reverse KL) and the teacher in INIT_DIR/teacher kept outside
  DeepSpeed (it is only run under no_grad).

It saves the model to OUT_DIR/model with ``save_trained_model`` and writes
OUT_DIR/rank<r>.json with a checksum of the full weights it ends with, so the test can
check that all ranks agree.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers, wherever torchrun starts

from transformers import AutoTokenizer, PreTrainedTokenizerBase  # noqa: E402

from recslm.config import DeepSpeedConfig, DistillConfig, DistillPhase, TrainConfig  # noqa: E402
from recslm.models.factory import load_model  # noqa: E402
from recslm.models.prefix import Group, make_groups  # noqa: E402
from recslm.train.deepspeed import deepspeed_config, full_state_dict, save_trained_model  # noqa: E402
from recslm.train.distill import distill_student  # noqa: E402
from recslm.train.sft import train_answer_model  # noqa: E402
from tests.helpers import synthetic_records  # noqa: E402

WORLD_SIZE = 2
GROUPS_PER_RANK = 2


def train_config(groups_per_batch: int = GROUPS_PER_RANK) -> TrainConfig:
    """A few steps with a large learning rate, so weights move well above float noise."""
    return TrainConfig(max_steps=4, groups_per_batch=groups_per_batch, learning_rate=1e-2, warmup_ratio=0.0, save_steps=1000, logging_steps=1)


def training_groups(tokenizer: PreTrainedTokenizerBase) -> list[Group]:
    """Equal-sized groups (k=4), so the mean loss over 2 ranks equals the mean over their union."""
    return make_groups(synthetic_records(members=8, k=4), tokenizer)


def checksum(state: dict[str, torch.Tensor]) -> str:
    """Digest of a state dict (names, shapes and float32 values), independent of key order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous().float()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("init_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--stage", type=int, required=True)
    parser.add_argument("--offload", action="store_true", help="offload optimizer state (and parameters with ZeRO-3) to CPU")
    parser.add_argument("--recipe", choices=["sft", "distill"], default="sft")
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(str(args.init_dir))
    model = load_model(args.init_dir)
    train = train_config()
    ds = DeepSpeedConfig(enabled=True, zero_stage=args.stage, offload_optimizer=args.offload, offload_params=args.offload and args.stage == 3)
    groups = training_groups(tokenizer)
    if args.recipe == "sft":
        steps = train_answer_model(model, tokenizer, groups, train, args.out_dir / "run", seed=0, deepspeed=deepspeed_config(ds, train)).steps
    else:
        teacher = load_model(args.init_dir / "teacher").eval()  # before the Trainer: a plain model, not partitioned
        cfg = DistillConfig(phases=[DistillPhase(loss="forward_kl", train=train), DistillPhase(loss="reverse_kl", train=train)])
        model, reports = distill_student(model, teacher, tokenizer, groups, cfg, args.out_dir / "run", seed=0, deepspeed=deepspeed_config(ds, train))
        steps = sum(r.steps for r in reports)

    state = full_state_dict(model, all_ranks=True)  # a collective: every rank takes part
    save_trained_model(model, tokenizer, args.out_dir / "model")  # also collective; rank 0 writes
    rank = torch.distributed.get_rank()
    result = {
        "rank": rank,
        "world_size": torch.distributed.get_world_size(),
        "steps": steps,
        "checksum": checksum(state),
    }
    (args.out_dir / f"rank{rank}.json").write_text(json.dumps(result))
    # Leave the process group before exit: a rank that exits while gloo's threads still run
    # can abort in the C++ runtime ("terminate called without an active exception").
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
