"""Test-wide setup: isolated Prefect and MLflow state, offline Hugging Face, tiny models."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="recslm-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["RECSLM_PROGRESS"] = "0"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def prefect_harness():
    """One ephemeral Prefect API for the whole session (its first start takes ~25 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=240):
        yield


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture
def one_thread():
    """torch on one thread: tiny models gain nothing from intra-op threads, and on a busy
    2-core machine the hand-offs cost more than the math."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def records():
    """Synthetic ranking records (12 members, 4 candidates each), shared by the scoring-level tests."""
    from tests.helpers import synthetic_records

    return synthetic_records()


@pytest.fixture(scope="module")
def tokenizer(records):
    """A small BPE tokenizer trained on ``records`` (modules that need another one define their own)."""
    from tests.helpers import tiny_tokenizer

    return tiny_tokenizer(records)
