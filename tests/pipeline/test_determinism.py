"""recslm's determinism promise: the same config (seeds and ``runtime`` included) on the same
kind of machine gives bit-identical artifacts, whatever the machine's core count.

The pipeline-level checks: a stage run twice in fresh processes (one of them confined to a
single CPU) publishes byte-identical files; the one-node Slurm run is compared with an
in-process run in ``test_slurm.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recslm.config import PipelineConfig, RuntimeConfig, load_config
from tests.helpers import file_digests, trimmed_smoke

REPO = Path(__file__).resolve().parents[2]


def _teacher_only_config(path: Path) -> Path:
    """The smoke data and teacher (40 steps), nothing after it, no tracking."""
    raw = trimmed_smoke(path.parent / "unused")
    raw["students"] = []
    raw["teacher"]["train"].update(max_steps=40, save_steps=20, eval_steps=20)
    raw["tracking"] = {"enabled": False}
    raw["registry"] = {"enabled": False}
    raw["distill"]["teacher_logits"] = "online"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run_stages(config: Path, root: Path, *overrides: str, one_cpu: bool = False) -> dict:
    """data + teacher in a fresh Python process; ``one_cpu`` confines it to one core."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)  # the process gets its threads from the config, not from us
    cpus = sorted(os.sched_getaffinity(0))
    preexec = (lambda: os.sched_setaffinity(0, {cpus[0]})) if one_cpu else None
    proc = subprocess.run(
        [sys.executable, "-m", "tests.stage_worker", str(config), f"run.root={root}", *overrides],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, preexec_fn=preexec,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_stage_run_twice_in_fresh_processes_publishes_identical_bytes(tmp_path):
    config = _teacher_only_config(tmp_path / "teacher.yaml")
    first = _run_stages(config, tmp_path / "a")
    second = _run_stages(config, tmp_path / "b", one_cpu=True)  # same threads on one core

    for stage in ("data", "teacher"):
        assert first[stage]["key"] == second[stage]["key"], stage
        assert not first[stage]["cached"] and not second[stage]["cached"], "each process must compute, not reuse"
        a, b = file_digests(Path(first[stage]["uri"])), file_digests(Path(second[stage]["uri"]))
        assert a and a.keys() == b.keys(), stage
        assert a == b, {name: (a[name][:12], b[name][:12]) for name in a if a[name] != b[name]}
    assert any(name.endswith(".safetensors") for name in file_digests(Path(first["teacher"]["uri"])))
    assert first["teacher"]["metrics"]["val_loss"] == second["teacher"]["metrics"]["val_loss"]

    # another thread count is another computation: another key, never the cached artifact
    other = _run_stages(config, tmp_path / "a", "runtime.threads=1")
    assert other["data"]["cached"] and other["data"]["key"] == first["data"]["key"]
    assert other["teacher"]["key"] != first["teacher"]["key"] and not other["teacher"]["cached"]


def test_run_stage_keys_the_runtime_and_runs_the_body_under_it(tmp_path):
    import torch

    from recslm.stages import Stage
    from tasks.stage import run_stage
    from tasks.tracking import TrackingHandle

    seen: list[int] = []

    def body(config, ctx, inputs):
        seen.append(torch.get_num_threads())
        (ctx.out / "weights.bin").write_bytes(torch.rand(4).numpy().tobytes())  # draws from the seeded global generator
        return {}

    def run(threads: int, root: Path, *, computes: bool = True):
        config = PipelineConfig.model_validate({"run": {"root": str(root)}, "runtime": {"threads": threads}})
        return run_stage(Stage("probe", lambda config: {"x": 1}, body, computes=computes), config, TrackingHandle(enabled=False), {})

    two, one = run(2, tmp_path / "a"), run(1, tmp_path / "a")
    assert seen == [2, 1] and two.key != one.key, "thread count is part of the key"
    again = run(2, tmp_path / "b")
    assert again.key == two.key and not again.cached
    assert (again.path / "weights.bin").read_bytes() == (two.path / "weights.bin").read_bytes()
    assert run(3, tmp_path / "c", computes=False).key == run(1, tmp_path / "d", computes=False).key, "stages without torch numerics ignore it"
    assert PipelineConfig().runtime.threads == 2, "the default must not depend on the machine's cores"


def test_device_and_precision_join_the_key_only_when_set():
    """A stage computed in bf16 is a different artifact; an fp32 run keys exactly as before
    these settings existed (``{"threads", "deterministic"}``), so existing stores stay valid."""
    assert RuntimeConfig().key() == {"threads": 2, "deterministic": True}
    assert RuntimeConfig(dtype="bf16", gradient_checkpointing=True).key() == {"threads": 2, "deterministic": True, "dtype": "bf16", "gradient_checkpointing": True}


def test_trainers_and_loaded_models_follow_the_stages_runtime(tmp_path):
    """The device and precision a stage's runtime names reach the Trainer's arguments and the
    models a stage loads to read (teacher, evaluated model), with no argument threaded through."""
    import torch

    from recslm.config import TrainConfig
    from recslm.errors import ConfigError
    from recslm.models.factory import save_model
    from recslm.models.placement import load_placed, stage_device
    from recslm.runtime import current_runtime, pinned_runtime
    from recslm.train.runner import training_arguments
    from tests.helpers import synthetic_records, tiny_model, tiny_tokenizer

    tok = tiny_tokenizer(synthetic_records(members=3))
    save_model(tiny_model(tok, "llama", seed=0), tok, tmp_path / "m")
    plain = training_arguments(TrainConfig(), tmp_path / "a", n_items=8, seed=0)
    assert not plain.bf16 and not plain.gradient_checkpointing and load_placed(tmp_path / "m").dtype == torch.float32
    with pinned_runtime(RuntimeConfig(threads=1, dtype="bf16", gradient_checkpointing=True, device="cpu"), seed=0):
        assert current_runtime().dtype == "bf16"
        args = training_arguments(TrainConfig(), tmp_path / "b", n_items=8, seed=0)
        assert args.bf16 and args.use_cpu and args.gradient_checkpointing and not args.fp16
        model = load_placed(tmp_path / "m")
        assert model.dtype == torch.bfloat16 and model.device.type == "cpu"
    assert current_runtime() == RuntimeConfig(), "the stage's runtime ends with the stage"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="runtime.device: cuda, but torch sees no CUDA device"):
            stage_device("cuda")
    with pytest.raises(ValueError, match="fp16 mixed precision needs a GPU"):
        PipelineConfig.model_validate({"runtime": {"dtype": "fp16", "device": "cpu"}})


def test_pinned_runtime_sets_threads_seeds_and_determinism_and_restores_them():
    import random

    import torch

    from recslm.runtime import pinned_runtime

    before_threads = torch.get_num_threads()
    before_det = torch.are_deterministic_algorithms_enabled()
    draws = []
    for _ in range(2):
        with pinned_runtime(RuntimeConfig(threads=3), seed=123):
            assert torch.get_num_threads() == 3
            assert torch.are_deterministic_algorithms_enabled()
            assert os.environ["OMP_NUM_THREADS"] == "3"
            draws.append((random.random(), torch.rand(3).tolist()))
    assert draws[0] == draws[1], "the global generators are seeded from the stage"
    assert torch.get_num_threads() == before_threads
    assert torch.are_deterministic_algorithms_enabled() == before_det
    assert os.environ.get("OMP_NUM_THREADS") != "3"


def test_old_per_stage_threads_fields_point_to_runtime_threads(tmp_path):
    from recslm.errors import ConfigError

    path = tmp_path / "old.yaml"
    path.write_text("teacher:\n  train:\n    threads: 4\n")
    with pytest.raises(ConfigError, match=r"teacher\.train\.threads: .*runtime\.threads"):
        load_config(path)


def test_slurm_jobs_export_the_runtime_thread_counts():
    from recslm.config import SlurmConfig
    from recslm.runtime import worker_env
    from recslm.slurm import sbatch_parameters

    params = sbatch_parameters(SlurmConfig(setup=["module load cuda"]), "recslm-x", worker_env(RuntimeConfig(threads=5)))
    assert params["setup"][:2] == ["export OMP_NUM_THREADS=5", "export MKL_NUM_THREADS=5"]
    assert params["setup"][-1] == "module load cuda"
