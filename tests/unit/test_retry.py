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
