"""Multi-rank stages: the ranks' process group, the torchrun launcher (Kubernetes pods), the
Slurm job of several tasks, and what joins the key. The whole flow on two Slurm ranks is in
tests/production/test_slurm.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from recslm.config import PipelineConfig
from recslm.errors import TransientError
from recslm.slurm import sbatch_parameters
from recslm.stages import stage_named
from tasks.retry import is_transient
from tasks.stage import stage_key_params
from tasks.torchrun import run_ranks


def _config(**execution) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "students": [{"name": "s", "arch": {"family": "llama", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}}],
        "teacher": {"deepspeed": {"enabled": True}},
        "distill": {"deepspeed": {"enabled": True}},
        "execution": execution,
    })  # fmt: skip


def test_torchrun_ranks_share_one_gloo_group_and_rank_0_reports():
    out = run_ranks({"value": 2.0}, 2, "tests.rank_probe:allreduce", timeout_s=120)
    assert out == {"sum": 2.0 * 1 + 2.0 * 2, "world_size": 2, "backend": "gloo", "rank": 0}


def test_a_lost_torchrun_rank_is_a_transient_error():
    with pytest.raises(TransientError, match="without rank 0's result: a rank was lost") as lost:
        run_ranks({}, 2, "tests.rank_probe:lose_rank", timeout_s=120)
    assert is_transient(lost.value)


def test_ranks_per_stage_and_backend():
    slurm = _config(backend="slurm", slurm={"nodes": 2, "gpus": 4})
    assert slurm.execution.ranks("distill") == 8 and slurm.execution.ranks("teacher") == 8
    assert slurm.execution.ranks("evaluate") == 1  # scoring and pruning stay one process
    assert _config(backend="slurm", slurm={"ranks_per_node": 2}).execution.ranks("distill") == 2  # CPU ranks (gloo)
    assert _config(backend="slurm").execution.ranks("distill") == 1
    assert _config(backend="kubernetes", kubernetes={"gpus": 4}).execution.ranks("distill") == 4
    assert _config(backend="local", slurm={"ranks_per_node": 4}).execution.ranks("distill") == 1
    only = _config(backend="slurm", slurm={"gpus": 8}, multi_rank_stages=["distill"])
    assert only.execution.ranks("teacher") == 1 and only.execution.ranks("distill") == 8


def test_several_ranks_need_deepspeed_named_by_field():
    with pytest.raises(ValueError, match=r"distill stage runs on 8 ranks .*distill\.deepspeed\.enabled"):
        PipelineConfig.model_validate({"execution": {"backend": "slurm", "slurm": {"gpus": 8}}, "teacher": {"deepspeed": {"enabled": True}}})
    with pytest.raises(ValueError, match=r"teacher stage runs on 2 ranks .*teacher\.deepspeed\.enabled"):
        PipelineConfig.model_validate({"execution": {"backend": "kubernetes", "kubernetes": {"gpus": 2}}, "distill": {"deepspeed": {"enabled": True}}})
    # a teacher loaded as it is does not train: nothing to shard
    PipelineConfig.model_validate({
        "execution": {"backend": "slurm", "slurm": {"gpus": 8}, "multi_rank_stages": ["teacher"]},
        "teacher": {"path": "models/demo-teacher"}, "data": {"tokenizer": {"kind": "pretrained", "path": "models/demo-teacher"}},
    })  # fmt: skip


def test_the_rank_count_joins_the_key_of_multi_rank_stages_only():
    one, two = _config(backend="slurm"), _config(backend="slurm", slurm={"ranks_per_node": 2})
    distill, evaluate = stage_named("distill"), stage_named("evaluate")
    params = {"student": "s", "role": "student"}
    assert "ranks" not in stage_key_params(distill, one, params)
    assert stage_key_params(distill, two, params)["ranks"] == 2
    assert stage_key_params(distill, one, params) == stage_key_params(distill, _config(backend="local"), params)  # 1 rank: same key everywhere
    eval_params = {"model_name": "s"}
    assert stage_key_params(evaluate, one, eval_params) == stage_key_params(evaluate, two, eval_params)


def test_a_multi_rank_job_is_one_job_of_several_tasks_killed_together():
    cfg = _config(backend="slurm", slurm={"nodes": 2, "gpus": 4, "cpus": 8})
    params = sbatch_parameters(cfg.execution.slurm, "recslm-distill-x", nodes=2, tasks_per_node=4)
    assert params["nodes"] == 2 and params["ntasks_per_node"] == 4 and params["gpus_per_node"] == 4 and params["cpus_per_task"] == 8
    assert params["srun_args"] == ["--kill-on-bad-exit=1"]
    one = sbatch_parameters(cfg.execution.slurm, "recslm-evaluate-x")
    assert "srun_args" not in one and one["gpus_per_node"] == 1 and one["ntasks_per_node"] == 1  # one device: one GPU


def test_the_teacher_trains_on_two_torchrun_ranks_under_zero3_and_only_rank_0_publishes(tmp_path):
    """What a Kubernetes pod runs for a multi-rank stage (flows/stage.py): the teacher stage on 2
    torchrun ranks (gloo), ZeRO-3, through the real dispatch; rank 0's artifact holds full weights."""
    from transformers import AutoModelForCausalLM

    from recslm.stages import stage_named
    from recslm.store import store_for
    from tasks.dispatch import CallOutcome, StageCall
    from tasks.stage import run_stage
    from tasks.tracking import TrackingHandle
    from tests.helpers import trimmed_smoke

    raw = trimmed_smoke(tmp_path)
    raw["teacher"] = {
        "arch": {"family": "llama", "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64},
        "train": {"max_steps": 4, "groups_per_batch": 2, "save_steps": 1000, "eval_steps": 0, "warmup_ratio": 0.0},
        "deepspeed": {"enabled": True, "zero_stage": 3},
    }
    raw["data"].update(max_train_groups=64, max_eval_members=5)  # what is tested is where the weights go, not what they learn
    raw["execution"] = {"backend": "kubernetes", "kubernetes": {"ranks": 2}, "multi_rank_stages": ["teacher"]}
    raw["tracking"] = {"enabled": False}
    raw["registry"] = {"enabled": False}
    cfg = PipelineConfig.model_validate(raw)
    off = TrackingHandle(enabled=False)
    data = run_stage(stage_named("data"), cfg, off, {})
    call = StageCall(stage="teacher", config=cfg, tracking=off, inputs={"data": data}, params={})

    outcome = CallOutcome.model_validate(run_ranks(call.model_dump(mode="json"), 2, timeout_s=900))
    assert outcome.ref is not None, outcome.error
    store = store_for(cfg)
    assert store.lookup("teacher", outcome.ref.key) is not None
    assert stage_key_params(stage_named("teacher"), cfg, {})["ranks"] == 2
    assert outcome.ref.metrics["steps"] == 4
    model = AutoModelForCausalLM.from_pretrained(outcome.ref.path / "model")
    assert model.model.layers[0].mlp.up_proj.weight.shape == (64, 32)  # gathered from the ZeRO-3 shards, not a shard
    assert not list((Path(cfg.store_uri()) / "_staging").glob("teacher-*"))  # rank 1 published nothing and left nothing
