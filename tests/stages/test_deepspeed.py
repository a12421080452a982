"""DeepSpeed ZeRO: the config recslm hands the Trainer, and real two-rank runs on the CPU.

The two-rank runs start ``tests/ds_worker.py`` under torchrun with DeepSpeed's CPU
accelerator (gloo), train a few steps of a tiny model with ZeRO-2 / ZeRO-3 through the
library's own SFT entry point, save it, and check the saved model with plain transformers.
DeepSpeed is a test requirement (``make test`` installs ``recslm[deepspeed]``): if it is
missing these tests fail, they never skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from recslm.config import DeepSpeedConfig, TrainConfig
from recslm.errors import ConfigError
from recslm.models.factory import save_model
from recslm.train.deepspeed import deepspeed_config, require_deepspeed
from recslm.train.sft import train_answer_model
from tests.ds_worker import GROUPS_PER_RANK, WORLD_SIZE, checksum, train_config, training_groups
from tests.helpers import synthetic_records, tiny_model, tiny_tokenizer

WORKER = Path(__file__).resolve().parents[1] / "ds_worker.py"


# --- the config dict -------------------------------------------------------------------


def test_disabled_means_no_deepspeed():
    assert deepspeed_config(DeepSpeedConfig(), TrainConfig()) is None


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_stage_and_what_the_trainer_fills_in(stage):
    cfg = deepspeed_config(DeepSpeedConfig(enabled=True, zero_stage=stage), TrainConfig(logging_steps=7))
    assert cfg is not None
    zero = cfg["zero_optimization"]
    assert zero["stage"] == stage
    assert "offload_optimizer" not in zero and "offload_param" not in zero
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert cfg[key] == "auto"  # one source of truth: TrainConfig via TrainingArguments
    assert "optimizer" not in cfg and "scheduler" not in cfg  # the Trainer's AdamW + cosine, as without DeepSpeed
    assert cfg["zero_allow_untested_optimizer"] is True
    assert zero.get("stage3_gather_16bit_weights_on_model_save", False) is (stage == 3)
    assert cfg["steps_per_print"] == 7
    if not torch.cuda.is_available():
        assert cfg["bf16"] == {"enabled": False} and cfg["fp16"] == {"enabled": False}
    json.dumps(cfg)  # DeepSpeed also accepts it as a JSON file


def test_offload_of_optimizer_and_params_with_zero3():
    cfg = deepspeed_config(DeepSpeedConfig(enabled=True, zero_stage=3, offload_optimizer=True, offload_params=True), TrainConfig())
    zero = cfg["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert cfg["zero_force_ds_cpu_optimizer"] is False  # torch AdamW on offloaded state, no CPU-Adam build


@pytest.mark.parametrize("stage", [1, 2])
def test_optimizer_offload_without_zero3(stage):
    zero = deepspeed_config(DeepSpeedConfig(enabled=True, zero_stage=stage, offload_optimizer=True), TrainConfig())["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "cpu" and "offload_param" not in zero


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_param_offload_needs_zero3(stage):
    with pytest.raises(ConfigError, match=r"distill\.deepspeed\.offload_params.*ZeRO stage 3"):
        deepspeed_config(DeepSpeedConfig(enabled=True, zero_stage=stage, offload_params=True), TrainConfig())


def test_missing_deepspeed_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # makes `import deepspeed` raise ImportError
    with pytest.raises(ConfigError, match=r"pip install .*recslm\[deepspeed\]"):
        require_deepspeed()
    # and an enabled config stops there, before any data or model is loaded
    with pytest.raises(ConfigError, match=r"distill\.deepspeed\.enabled .* not installed"):
        deepspeed_config(DeepSpeedConfig(enabled=True), TrainConfig())


def test_recslm_does_not_import_deepspeed():
    code = "import sys, recslm, recslm.cli, recslm.train.sft, recslm.train.deepspeed; print('deepspeed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- real runs: 2 ranks, gloo, DeepSpeed CPU accelerator -------------------------------


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",  # two ranks share the machine's cores
        "PYTHONWARNINGS": "ignore::FutureWarning",  # torch's collective-rename warnings, once per call
    }


@pytest.fixture(scope="module")
def deepspeed_ready() -> None:
    """DeepSpeed imports, and its CPU communication op is built before the timed runs.

    DeepSpeed's CPU backend JIT-compiles a shared-memory op (a C++ build, 2-3 min) the first
    time any process initializes it, into torch's extension cache (~/.cache/torch_extensions,
    or $TORCH_EXTENSIONS_DIR), and reuses it afterwards. Building it here, once, in one
    process, keeps that cost out of the two-rank runs (and their two ranks from racing for
    the build lock).
    """
    code = (
        "import time; t = time.perf_counter()\n"
        "from recslm.train.deepspeed import require_deepspeed\n"
        "ds = require_deepspeed()\n"
        "from deepspeed.comm.torch import build_shm_op\n"
        "op = build_shm_op()\n"
        "print(ds.__version__, op is not None, round(time.perf_counter() - t, 1))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"DeepSpeed is not usable here (CI installs it: `make test`):\n{proc.stderr[-3000:]}")
    print(f"deepspeed ready (version, shm op, seconds): {proc.stdout.strip().splitlines()[-1]}")


@pytest.fixture(scope="module")
def initial(tmp_path_factory) -> Path:
    """Initial model and tokenizer, written once so every rank and the reference start identical."""
    folder = tmp_path_factory.mktemp("ds") / "init"
    tokenizer = tiny_tokenizer(synthetic_records(members=8, k=4))
    save_model(tiny_model(tokenizer, "llama"), tokenizer, folder)
    save_model(tiny_model(tokenizer, "mixtral", seed=1), tokenizer, folder / "teacher")
    return folder


@pytest.fixture(scope="module")
def reference(initial, tmp_path_factory) -> dict[str, torch.Tensor]:
    """Weights after the same steps in one process with the two ranks' global batch.

    The Trainer shards each global batch of shuffled groups across ranks in order, and all
    groups have the same number of candidates, so two ranks × 2 groups take exactly the
    steps one process takes with 4 groups per batch.
    """
    tokenizer = AutoTokenizer.from_pretrained(str(initial))
    model = AutoModelForCausalLM.from_pretrained(str(initial))
    cfg = train_config(groups_per_batch=GROUPS_PER_RANK * WORLD_SIZE)
    train_answer_model(model, tokenizer, training_groups(tokenizer), cfg, tmp_path_factory.mktemp("ref"), seed=0)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _safetensors_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as f:
            shapes.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
    return shapes


def _two_ranks(initial: Path, out: Path, stage: int, *, offload: bool = False, recipe: str = "sft") -> list[dict]:
    """Run tests/ds_worker.py on 2 ranks; return each rank's result after checking they agree."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD_SIZE),
           str(WORKER), str(initial), str(out), "--stage", str(stage), "--recipe", recipe] + (["--offload"] if offload else [])
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(), cwd=out.parent, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, f"torchrun exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    print(f"{recipe} ZeRO-{stage}{' offload' if offload else ''}: 2 ranks in {wall:.1f} s")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]
    assert [r["world_size"] for r in ranks] == [WORLD_SIZE] * WORLD_SIZE
    assert len({r["checksum"] for r in ranks}) == 1, "ranks ended with different weights"
    return ranks


@pytest.mark.timeout(900)  # the first run on a machine may include the op build of `deepspeed_ready`
@pytest.mark.parametrize(("stage", "offload"), [(2, False), (3, False), (3, True)], ids=["zero2", "zero3", "zero3-offload"])
def test_two_rank_zero_run_trains_and_saves_full_weights(stage, offload, deepspeed_ready, initial, reference, tmp_path):
    out = tmp_path / "out"
    ranks = _two_ranks(initial, out, stage, offload=offload)
    assert all(r["steps"] == 4 for r in ranks)

    # the saved folder is a plain Hugging Face model with full tensors (no ZeRO-3 shards)
    init_model = AutoModelForCausalLM.from_pretrained(str(initial))
    init_state = init_model.state_dict()
    full_shapes = _safetensors_shapes(initial)
    assert _safetensors_shapes(out / "model") == full_shapes
    assert _safetensors_shapes(out / "run" / "checkpoint-4") == full_shapes  # the Trainer's own save, too
    trained = AutoModelForCausalLM.from_pretrained(str(out / "model"))
    AutoTokenizer.from_pretrained(str(out / "model"))
    state = trained.state_dict()
    assert checksum(state) == ranks[0]["checksum"]  # what was saved is what the ranks hold

    moved = max((state[k] - init_state[k]).abs().max().item() for k in init_state)
    assert moved > 1e-3, "weights did not change: no training happened"
    # and it is the training one process does with the same global batch
    gap = max((state[k] - reference[k]).abs().max().item() for k in reference)
    assert gap < 1e-4, f"ZeRO-{stage} weights differ from the single-process run by {gap:.2e}"


@pytest.mark.timeout(900)
def test_two_rank_distillation_under_zero2_and_zero3_saves_the_same_plain_student(deepspeed_ready, initial, tmp_path):
    """The distill stage's own path (two phases, teacher outside DeepSpeed) under ZeRO-2 and ZeRO-3.

    Both stages shard the same global batch the same way, so they must end with the same
    weights; each phase's ``final`` folder and the saved model hold full tensors.
    """
    full_shapes = _safetensors_shapes(initial)
    init_state = AutoModelForCausalLM.from_pretrained(str(initial)).state_dict()
    states = {}
    for stage in (2, 3):
        out = tmp_path / f"zero{stage}"
        ranks = _two_ranks(initial, out, stage, recipe="distill")
        assert all(r["steps"] == 8 for r in ranks)  # 2 phases x 4 steps
        for folder in (out / "model", out / "run" / "phase-0" / "final", out / "run" / "phase-1" / "final"):
            assert _safetensors_shapes(folder) == full_shapes, folder
        state = AutoModelForCausalLM.from_pretrained(str(out / "model")).state_dict()
        assert checksum(state) == ranks[0]["checksum"]
        assert max((state[k] - init_state[k]).abs().max().item() for k in init_state) > 1e-3
        states[stage] = state
    gap = max((states[2][k] - states[3][k]).abs().max().item() for k in init_state)
    assert gap < 1e-4, f"ZeRO-2 and ZeRO-3 distillation differ by {gap:.2e}"
