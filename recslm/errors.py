"""Error types that decide what the orchestrator may retry.

A *deterministic* error (bad config, bad data, a missing checkpoint, a tokenizer
mismatch) fails the same way every time, so retrying it only wastes a GPU hour.
A *transient* error (a lost worker, a network blip, an unreachable store) may pass
on the next attempt. Tasks retry only the latter (``tasks/retry.py``). Every error recslm raises on purpose
is a ``RecslmError``, so that policy can classify it.
"""

from __future__ import annotations


class RecslmError(Exception):
    """Base class: every error recslm raises on purpose carries a message for humans."""

    transient = False


class ConfigError(RecslmError):
    """The pipeline config is invalid: names the field (and file) and what was expected."""


class DataError(RecslmError):
    """Input data is malformed: names the file, the rows and what was expected."""


class CheckpointError(RecslmError):
    """A model or tokenizer directory is missing, incomplete or incompatible."""


class TokenizerError(RecslmError):
    """A tokenizer cannot serve recslm (e.g. an answer word is not one token)."""


class TransientError(RecslmError):
    """Something outside recslm failed in a way that may pass on retry."""

    transient = True
