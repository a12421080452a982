"""``recslm reproduce``: the study as a Prefect flow over the pipeline's own flow.

Every arm × seed is one :func:`flows.compress.compress` run (a subflow) on the base
config's store, so the data, the teacher and every stage two arms share are computed once
and a second reproduction is served from the store. The findings, the report and its
figure are then computed from the runs' summaries (:mod:`recslm.reproduce`), written to
``<run.root>/reproduce/<study id>/`` and logged to MLflow.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from recslm.config import PipelineConfig, load_config
from recslm.errors import ConfigError
from recslm.reproduce.findings import Finding
from recslm.reproduce.generative import generative_arms, generative_findings
from recslm.reproduce.report import findings_table, write_report
from recslm.reproduce.serving import serving_row
from recslm.reproduce.study import ARM_BASE, arms, findings, prune_arm
from recslm.reproduce.study_config import StudyConfig
from tasks.tracking import Tracker, artifact_location_for

# a generative arm keeps its student whatever its val loss (the rows compare arms, not the bar)
GENERATIVE_ARM_BASE = [*ARM_BASE, "select.max_val_loss_increase_pct=100000"]


def planned_arms(study: StudyConfig) -> dict[str, tuple[Path, list[str]]]:
    """Every arm of the rows asked for: name -> (its base config, the overrides before the seed)."""
    out = {arm: (study.base, [*study.set, *ARM_BASE, *overrides]) for arm, overrides in arms(study).items()}
    gen = study.generative
    if gen is not None and study.generative_rows():
        base = load_config(gen.base, [*gen.set, *GENERATIVE_ARM_BASE])
        for arm, overrides in generative_arms(gen, study.generative_rows(), base).items():
            out[arm] = (gen.base, [*gen.set, *GENERATIVE_ARM_BASE, *overrides])
    return out


@flow(name="recslm-reproduce", log_prints=True)
def reproduce(study: StudyConfig, *, quick: bool = False, study_id: str | None = None, name: str = "reproduce") -> dict[str, Any]:
    """Run every arm at every seed, compute the findings, write and log the report; return its JSON."""
    from flows.compress import compress, new_run_id

    logger = get_run_logger()
    study_id = study_id or new_run_id()
    study = study.for_quick() if quick else study
    seeds = study.seeds
    started = time.perf_counter()
    models: dict[str, list[dict[str, dict[str, Any]]]] = {}
    stages: dict[str, list[dict[str, dict[str, Any]]]] = {}
    uris: dict[str, list[dict[str, str]]] = {}
    cached: dict[str, int] = {}
    first_config: PipelineConfig | None = None
    for arm, (base, overrides) in planned_arms(study).items():
        for seed in seeds:
            config = load_config(base, [*overrides, f"distill.seed={seed}"])
            first_config = first_config or config
            summary = compress(config, run_id=f"{study_id}-{arm}-s{seed}")
            models.setdefault(arm, []).append({m.name: m.model_dump(mode="json") for m in summary.models})
            stages.setdefault(arm, []).append({stage: dict(record.metrics) for stage, record in summary.stages.items()})
            uris.setdefault(arm, []).append({stage: record.uri for stage, record in summary.stages.items()})
            cached[f"{arm}-s{seed}"] = sum(1 for s in summary.stages.values() if s.cached)
    if first_config is None:
        raise ConfigError("the study plans no arms: give it rows")
    rows = findings(study, models, stages=stages)
    if "serving" in study.rows:
        rows += serving_row(study.student.name, uris[prune_arm(study, max(study.prune_ratios))], study.serving_members)
    if study.generative is not None:
        rows += generative_findings(study.generative, study.generative_rows(), models, stages)
    out_dir = Path(first_config.run.root) / "reproduce" / study_id
    header = {"study": name, "study_id": study_id, "base": str(study.base), "seeds": seeds, "quick": quick, "rows": list(study.rows),
              "wall_s": round(time.perf_counter() - started, 1), "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    if study.generative is not None and study.generative_rows():
        header["generative_base"] = str(study.generative.base)
    paths = write_report(rows, out_dir, header)
    _track(first_config, study_id, name, rows, paths)
    logger.info("findings:\n%s", findings_table(rows))
    return {"header": header, "findings": [f.model_dump(mode="json") for f in rows], "dir": str(out_dir), "stages_cached": cached}


def _track(config: PipelineConfig, study_id: str, name: str, rows: list[Finding], paths: dict[str, Path]) -> None:
    """The report in MLflow (the base config's tracking URI, whether or not the arms' runs were
    tracked): one run in ``<experiment>-reproduce`` with each finding's effect and interval and the three files."""
    uri = config.tracking_uri()
    tracker = Tracker.start_pipeline(uri=uri, artifact_location=artifact_location_for(uri, config.run.root),
                                     experiment=f"{config.tracking.experiment or config.run.name}-reproduce", run_name=study_id,
                                     params={"study": name}, tags={"recslm.study_id": study_id})  # fmt: skip
    run_id = tracker.handle.parent_run_id or None
    for i, f in enumerate(rows):
        key = f"{i:02d}_{f.row}"
        tracker.log_metrics(run_id, {f"{key}.effect": f.effect, f"{key}.ci95_low": f.ci95[0], f"{key}.ci95_high": f.ci95[1]})
    for path in paths.values():
        tracker.log_artifact(run_id, str(path))
    tracker.end(run_id)

