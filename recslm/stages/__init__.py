"""The pipeline's stages, one module each: the body and the config fields that decide its result.

``data``, ``baselines``, ``teacher``, ``teacher_logits``, ``distill``, ``evaluate``, ``select``, ``profile``,
``prune``, ``quantize`` and ``deploy`` (the registry's decision is :mod:`recslm.select`; the
registering itself is MLflow's and lives in ``tasks/register.py``). A stage module composes
the algorithms of ``data/``, ``train/``, ``evaluate/``, ``prune/``, ``quantize/`` and ``serve/``;
``tasks/`` runs it (key, cache, worker, publish, tracking) without knowing what it computes.
"""

from recslm.stages.base import Stage, StageContext

__all__ = ["NAMES", "Stage", "StageContext", "stage_named"]


NAMES = ("data", "baselines", "teacher", "teacher_logits", "distill", "evaluate", "select", "profile", "prune", "quantize", "deploy")


def stage_named(name: str) -> Stage:
    """The stage called ``name`` (how a worker finds the stage a dispatched call names)."""
    import importlib

    from recslm.errors import RecslmError

    if name not in NAMES:
        raise RecslmError(f"stage {name!r} does not exist in this recslm (known: {', '.join(NAMES)}); do the orchestrator's and the worker's versions differ?")
    return importlib.import_module(f"recslm.stages.{name}").STAGE
