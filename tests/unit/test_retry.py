"""Stages retry transient failures only."""

from __future__ import annotations

import pytest
from prefect import flow, task

from recslm.errors import ConfigError, DataError, TransientError
from tasks.options import TASK_DEFAULTS
from tasks.retry import is_transient


@pytest.mark.parametrize(
    "exc, expected",
    [
        (TransientError("store unreachable"), True),
        (ConnectionResetError("peer reset"), True),
        (TimeoutError("slow"), True),
        (ConfigError("bad field"), False),
        (DataError("bad rows"), False),
        (ValueError("bad value"), False),
        (FileNotFoundError("missing"), False),
        (None, False),
    ],
)
def test_classification(exc, expected):
    assert is_transient(exc) is expected


def test_prefect_retries_transient_but_not_deterministic_errors(prefect_harness):
    attempts = {"transient": 0, "config": 0}

    @task(retries=2, retry_delay_seconds=0, **TASK_DEFAULTS)
    def flaky(kind: str) -> str:
        attempts[kind] += 1
        if kind == "transient" and attempts[kind] < 3:
            raise TransientError("worker lost")
        if kind == "config":
            raise ConfigError("teacher.train.lr: expected a number")
        return "ok"

    @flow
    def pipeline(kind: str) -> str:
        return flaky(kind)

    assert pipeline("transient") == "ok" and attempts["transient"] == 3
    with pytest.raises(ConfigError):
        pipeline("config")
    assert attempts["config"] == 1


def test_a_collective_whose_peer_died_is_transient_and_other_runtime_errors_are_not():
    import torch.distributed as dist

    gloo = RuntimeError(
        "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:49028: Connection reset by peer."
    )  # what rank 0 of a 2-rank distill raised when rank 1 was SIGKILLed (measured)
    assert is_transient(gloo)
    assert is_transient(dist.DistNetworkError("connect() timed out"))
    assert not is_transient(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x8)"))
