"""How a stage call travels to a worker and how its outcome comes back (no backend needed)."""

from __future__ import annotations

import pytest

from recslm.config import PipelineConfig, StudentSpec
from recslm.store import ArtifactRef
from tasks.dispatch import IN_WORKER_ENV, CallOutcome, RemoteStageError, StageCall, outcome_ref, remote_call
from tasks.retry import is_transient
from tasks.tracking import TrackingHandle


def _ref(kind: str) -> ArtifactRef:
    return ArtifactRef(uri=f"/store/{kind}/{'a' * 64}", key="a" * 64, kind=kind, metrics={"auc": {"like": 0.7}})


def test_a_call_round_trips_through_json_with_its_types():
    from tasks.distill import distill_task

    config = PipelineConfig.model_validate({"execution": {"backend": "slurm"}})
    spec = StudentSpec.model_validate({"name": "s", "arch": {"family": "llama", "hidden_size": 32, "num_layers": 1, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 64}})
    args = (config, TrackingHandle(enabled=False), _ref("data"), _ref("teacher"), spec, "student")
    call = StageCall.of(distill_task.fn, args, {"topk": None})
    wire = StageCall.model_validate_json(call.model_dump_json())
    assert (wire.module, wire.task) == ("tasks.distill", "distill_task")
    bound = wire.bound_arguments()
    assert bound["config"] == config and bound["spec"] == spec and bound["data"] == args[2] and bound["topk"] is None
    assert isinstance(bound["teacher"], ArtifactRef) and bound["role"] == "student"


def test_only_remote_backends_outside_a_worker_dispatch(monkeypatch):
    from tasks import dispatch

    call = StageCall(module="tasks.teacher", task="teacher_task", arguments={})
    token = dispatch._current_call.set(call)
    try:
        assert remote_call(PipelineConfig()) is None  # local backend
        assert remote_call(PipelineConfig.model_validate({"execution": {"backend": "slurm"}})) == call
        monkeypatch.setenv(IN_WORKER_ENV, "1")  # on the worker the same call runs here
        assert remote_call(PipelineConfig.model_validate({"execution": {"backend": "slurm"}})) is None
    finally:
        dispatch._current_call.reset(token)


def test_a_worker_failure_keeps_its_retry_class():
    deterministic = CallOutcome(error_type="DataError", error="train.jsonl line 3: label must be 0 or 1", transient=False).model_dump(mode="json")
    with pytest.raises(RemoteStageError, match="DataError: train.jsonl line 3") as raised:
        outcome_ref(deterministic, "stage distill in Slurm job 7")
    assert not is_transient(raised.value)
    lost = CallOutcome(error_type="StoreError", error="s3 unreachable", transient=True).model_dump(mode="json")
    with pytest.raises(RemoteStageError) as raised:
        outcome_ref(lost, "stage distill in Slurm job 8")
    assert is_transient(raised.value) and "Slurm job 8" in str(raised.value)
    assert outcome_ref(CallOutcome(ref=_ref("distill")).model_dump(mode="json"), "x") == _ref("distill")


def test_an_unknown_task_on_the_worker_is_a_clear_error():
    from recslm.errors import RecslmError

    with pytest.raises(RecslmError, match="tasks.teacher.no_such_task does not exist"):
        StageCall(module="tasks.teacher", task="no_such_task", arguments={}).function()
