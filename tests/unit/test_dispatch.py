"""How a stage call travels to a worker and how its outcome comes back (no backend needed)."""

from __future__ import annotations

import pytest

from recslm.config import PipelineConfig
from recslm.errors import RecslmError
from recslm.stages import NAMES, stage_named
from recslm.store import ArtifactRef
from tasks.dispatch import CallOutcome, RemoteStageError, StageCall, execute_call, outcome_ref, should_dispatch
from tasks.retry import is_transient
from tasks.tracking import TrackingHandle


def _ref(kind: str) -> ArtifactRef:
    return ArtifactRef(uri=f"/store/{kind}/{'a' * 64}", key="a" * 64, kind=kind, metrics={"auc": {"like": 0.7}})


def test_a_call_round_trips_through_json_with_its_types():
    config = PipelineConfig.model_validate(
        {"execution": {"backend": "slurm"}, "students": [{"name": "s", "arch": {"family": "llama", "hidden_size": 32, "num_layers": 1, "num_heads": 4}}]}
    )
    call = StageCall(stage="distill", config=config, tracking=TrackingHandle(enabled=False), inputs={"data": _ref("data"), "teacher": _ref("teacher")},
                     params={"student": "s", "role": "student"})  # fmt: skip
    wire = StageCall.model_validate_json(call.model_dump_json())
    assert wire == call and isinstance(wire.inputs["teacher"], ArtifactRef) and wire.config.student("s").arch.hidden_size == 32


def test_only_heavy_stages_with_a_remote_backend_dispatch():
    slurm = PipelineConfig.model_validate({"execution": {"backend": "slurm"}})
    assert should_dispatch(slurm, remote=True)
    assert not should_dispatch(slurm, remote=False)  # a light stage, or the worker running the call
    assert not should_dispatch(PipelineConfig(), remote=True)  # local backend


def test_every_stage_is_found_by_its_name_and_an_unknown_one_is_a_clear_error():
    assert [stage_named(name).name for name in NAMES] == list(NAMES)
    with pytest.raises(RecslmError, match="stage 'no_such_stage' does not exist"):
        stage_named("no_such_stage")


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


def test_a_call_the_worker_cannot_run_comes_back_as_a_deterministic_outcome(tmp_path):
    config = PipelineConfig.model_validate({"run": {"root": str(tmp_path)}, "tracking": {"enabled": False}, "registry": {"enabled": False}})
    call = StageCall(stage="no_such_stage", config=config, tracking=TrackingHandle(enabled=False), inputs={}, params={})
    outcome = CallOutcome.model_validate(execute_call(call.model_dump(mode="json")))
    assert outcome.ref is None and outcome.error_type == "RecslmError" and "no_such_stage" in outcome.error and not outcome.transient
