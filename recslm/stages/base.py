"""What a pipeline stage is: a name, the config fields that decide its result, and a body.

Each stage module (``recslm.stages.<name>``) defines one :class:`Stage`. The orchestration
(``tasks/``) knows nothing of what a stage computes: it takes the stage's ``key`` (plus the
keys of its inputs) as the content key, skips the stage when the store holds that key,
and otherwise runs ``body`` into a fresh folder and publishes it. So adding a field that
changes a stage's result is one line in that stage's ``key``, next to its body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from recslm.store import ArtifactRef


class StageContext(Protocol):
    """What a running body may use besides its inputs: its folders and its tracking run."""

    out: Path  # the artifact being written (published only if the body returns)
    work: Path  # checkpoints of this key, kept across attempts until the artifact is published
    key: str

    def log_curve(self, step: int, values: Mapping[str, float]) -> None:
        """Training curves, live (loss, learning rate), under ``train/``."""

    def log_metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        """Any other series (per-layer errors over depth)."""

    def log_artifact(self, path: str) -> None:
        """Attach a file (a figure, a report) to the stage's tracking run."""


Key = Callable[..., Any]
Body = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    """One stage. ``key(config, **params)`` returns (as JSON) exactly what decides the result
    besides the inputs; ``body(config, ctx, inputs, **params)`` computes it into ``ctx.out``
    and returns its metrics. ``params`` name which instance runs (a student, a scheme)."""

    name: str
    key: Key
    body: Body
    computes: bool = True  # torch numerics: runs under ``config.runtime``, which joins the key
    uses: Callable[..., set[str]] | None = None  # input roles the result depends on (default: all given)
    label: Callable[..., str] | None = None  # the tracking run's name (default: the stage's)

    def used_inputs(self, config: Any, inputs: Mapping[str, ArtifactRef | None], params: Mapping[str, Any]) -> dict[str, ArtifactRef]:
        """The inputs the result depends on, without absent ones: only their keys join the key."""
        wanted = self.uses(config, **params) if self.uses is not None else set(inputs)
        return {role: ref for role, ref in inputs.items() if ref is not None and role in wanted}

    def run_name(self, params: Mapping[str, Any]) -> str:
        return self.label(**params) if self.label is not None else self.name


def dump(section: Any) -> Any:
    """JSON form of a config section (a pydantic model) or of plain data."""
    return section.model_dump(mode="json") if hasattr(section, "model_dump") else section


def without_later_defaults(section: Any, later: tuple[str, ...]) -> Any:
    """``dump(section)`` without the fields in ``later`` (added after stores were filled) while
    they hold their defaults: adding a setting must not invalidate every stored artifact."""
    out = dump(section)
    fields = type(section).model_fields
    for name in later:
        if name in out and out[name] == dump(fields[name].get_default(call_default_factory=True)):
            out.pop(name)
    return out
