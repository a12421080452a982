"""Unit tests: one algorithm or rule at a time, on synthetic inputs (seconds each)."""

import pytest


@pytest.fixture(scope="session")
def ml():
    """The bundled MovieLens 100K, read once for every data test."""
    from recslm.data.movielens import load_movielens

    return load_movielens(None)
