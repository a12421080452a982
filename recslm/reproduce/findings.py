"""Findings: a measured effect over paired seeds, its 95 % interval, and a verdict.

Every arm of a study runs once per seed, and arms that share a seed share the student's
initialization and data order (``distill.seed``) and the teacher, so the difference
between two arms at one seed is a *paired* difference. The effect is the mean of the
paired differences and its interval the Student-t interval over them (n seeds, n - 1
degrees of freedom): with 3 seeds it is wide, on purpose; it widens with the seed
spread and narrows with more seeds (``seeds`` in the study's config).

The verdict is computed, never written down:
- ``direction: positive`` (or ``negative``): the paper says the effect is above (below)
  zero. ``holds`` when the interval lies on that side of zero, ``does not hold`` when it
  lies on the other side, ``no signal at this scale`` when it contains zero (the interval
  is wider than the effect).
- ``direction: different``: the paper says the change matters, without a side. ``holds``
  when the interval excludes zero, ``no signal at this scale`` otherwise (with a ``margin``,
  ``does not hold`` when the interval lies inside [-margin, +margin]).
- ``direction: equivalent`` with a ``margin``: the paper says the change is negligible.
  ``holds`` when the interval lies inside [-margin, +margin], ``does not hold`` when it lies
  entirely outside, ``no signal at this scale`` otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field
from scipy import stats

Direction = Literal["positive", "negative", "different", "equivalent"]
Verdict = Literal["holds", "does not hold", "no signal at this scale"]
LEVEL = 0.95


class Interval(BaseModel):
    """The mean paired difference and its interval."""

    effect: float
    low: float
    high: float
    n: int
    sd: float


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of ``b[i] - a[i]`` over seeds and its Student-t interval (needs at least 2 seeds, paired)."""
    if len(a) != len(b):
        raise ValueError(f"paired arms need one value per seed each, got {len(a)} and {len(b)}")
    diffs = [float(y) - float(x) for x, y in zip(a, b)]
    if len(diffs) < 2:
        raise ValueError("an interval over seeds needs at least 2 seeds")
    if not all(math.isfinite(d) for d in diffs):
        raise ValueError(f"paired differences must be finite, got {diffs}")
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(effect=mean, low=mean - half, high=mean + half, n=n, sd=sd)


def verdict(interval: Interval, direction: Direction, margin: float | None = None) -> Verdict:
    """What the interval says about the claim (see the module docstring)."""
    if direction == "equivalent":
        if margin is None or margin <= 0:
            raise ValueError("an equivalence claim needs a positive margin")
        if -margin <= interval.low and interval.high <= margin:
            return "holds"
        if interval.low > margin or interval.high < -margin:
            return "does not hold"
        return "no signal at this scale"
    if direction == "different":
        if interval.low > 0 or interval.high < 0:
            return "holds"
        if margin is not None and -margin <= interval.low and interval.high <= margin:
            return "does not hold"
        return "no signal at this scale"
    if interval.low > 0:
        return "holds" if direction == "positive" else "does not hold"
    if interval.high < 0:
        return "holds" if direction == "negative" else "does not hold"
    return "no signal at this scale"


class Finding(BaseModel):
    """One row of the report: the paper's claim, what was measured, and the verdict."""

    row: str
    claim: str
    paper: str = Field(description="The paper's number or wording for this claim, with its table or figure.")
    metric: str
    a: str  # the reference arm
    b: str  # the arm compared with it: effect = b - a
    direction: Direction
    margin: float | None = None
    effect: float
    ci95: tuple[float, float]
    n_seeds: int
    verdict: Verdict
    per_seed: dict[str, list[float]]  # arm -> its value at each seed, in seed order
    note: str = ""


def finding(row: str, claim: str, paper: str, metric: str, a: str, b: str, values: dict[str, list[float]], direction: Direction,
            margin: float | None = None, note: str = "") -> Finding:  # fmt: skip
    """The finding of arm ``b`` against arm ``a`` on ``values`` (arm -> per-seed values)."""
    interval = paired_interval(values[a], values[b])
    return Finding(
        row=row, claim=claim, paper=paper, metric=metric, a=a, b=b, direction=direction, margin=margin, effect=interval.effect,
        ci95=(interval.low, interval.high), n_seeds=interval.n, verdict=verdict(interval, direction, margin),
        per_seed={a: list(values[a]), b: list(values[b])}, note=note,
    )  # fmt: skip
