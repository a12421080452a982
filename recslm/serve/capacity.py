"""Fleet sizing from benchmark results: replicas and GPUs for a target load and a p99 SLO.

A replica's capacity is the highest offered load (members/s) among the benchmark runs
whose p99 member latency met the SLO and which kept up with the offered rate (achieved
≥ 95 % of it: beyond that the queue grows and the p99 only looks fine because the run
ended). The fleet then needs ``ceil(target × burst / capacity)`` replicas to carry the
load, plus ``spare`` replicas so it still does with one lost (a node drain, a crash).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from recslm.errors import RecslmError


class CapacityError(RecslmError):
    """No benchmark run meets the SLO, so no fleet size can be derived."""


@dataclass(frozen=True)
class Plan:
    target_members_per_s: float
    slo_p99_ms: float
    burst: float
    replica_capacity: float
    replicas_for_load: int
    spare: int
    tensor_parallel: int

    @property
    def replicas(self) -> int:
        return self.replicas_for_load + self.spare

    @property
    def gpus(self) -> int:
        return self.replicas * self.tensor_parallel

    def describe(self) -> str:
        return (
            f"{self.replicas} replicas ({self.replicas_for_load} for {self.target_members_per_s:g} members/s x burst {self.burst:g} "
            f"at {self.replica_capacity:.2f} members/s each within p99 {self.slo_p99_ms:g} ms, + {self.spare} spare) = "
            f"{self.gpus} GPUs at tensor parallel {self.tensor_parallel}"
        )


class _Rate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    members_per_s: float = Field(ge=0, allow_inf_nan=False)


class _Latency(BaseModel):
    model_config = ConfigDict(extra="ignore")
    p99: float = Field(ge=0, allow_inf_nan=False)


class _BenchRun(BaseModel):
    """The fields of one ``recslm bench --json`` result that sizing reads."""

    model_config = ConfigDict(extra="ignore")
    workload: _Rate
    throughput: _Rate
    errors: int = Field(ge=0)
    member_latency_ms: _Latency


_RESULTS = TypeAdapter(list[_BenchRun])


def parse_results(document: Any, source: str) -> list[dict[str, Any]]:
    """The ``results`` of a bench JSON document, checked; errors name the JSON path."""
    if not isinstance(document, dict) or "results" not in document:
        raise CapacityError(f"{source}: not a recslm bench result (expected a JSON object with a 'results' list)")
    try:
        runs = _RESULTS.validate_python(document["results"])
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in ('results', *e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise CapacityError(f"{source}: not a recslm bench result ({problems})") from None
    if not runs:
        raise CapacityError(f"{source}: 'results' is empty; run `recslm bench --json` with at least one load")
    return [run.model_dump() for run in runs]


def replica_capacity(results: list[dict[str, Any]], slo_p99_ms: float, keep_up: float = 0.95) -> float:
    ok = []
    for r in results:
        offered = r["workload"]["members_per_s"]
        achieved = r["throughput"]["members_per_s"]
        if r["errors"] or r["member_latency_ms"]["p99"] > slo_p99_ms:
            continue
        ok.append(achieved if offered == 0 else (offered if achieved >= keep_up * offered else 0.0))
    best = max(ok, default=0.0)
    if best <= 0:
        measured = ", ".join(f"{r['workload']['members_per_s'] or 'max'}/s: p99 {r['member_latency_ms']['p99']:.0f} ms" for r in results)
        raise CapacityError(f"no benchmark run meets p99 <= {slo_p99_ms:g} ms while keeping up with its load ({measured}); benchmark lower rates or relax the SLO")
    return best


def plan(results: list[dict[str, Any]], target_members_per_s: float, slo_p99_ms: float, *, burst: float = 1.5, spare: int = 1, tensor_parallel: int = 1) -> Plan:
    if target_members_per_s <= 0 or slo_p99_ms <= 0 or burst < 1 or spare < 0 or tensor_parallel < 1:
        raise ValueError("plan: target and SLO must be > 0, burst >= 1, spare >= 0, tensor_parallel >= 1")
    capacity = replica_capacity(results, slo_p99_ms)
    needed = max(1, math.ceil(target_members_per_s * burst / capacity - 1e-9))
    return Plan(target_members_per_s, slo_p99_ms, burst, capacity, needed, spare, tensor_parallel)
