"""The compress pipeline: the paper's checklist as one Prefect flow.

data -> baselines -> teacher -> evaluate -> [SFT baselines -> evaluate each] -> teacher gate ->
[teacher_logits] -> distill (each student) -> evaluate each -> select (on val) -> [profile -> prune -> evaluate] -> [quantize ->
evaluate, per scheme] -> [deploy + bench] -> [register: every candidate a registry
version, the release candidate champion or challenger]. Heavy stages run here, as Slurm
jobs or on a work pool (``execution.backend``). A config whose settings cannot work together
(a student folder that is not there, a pruning schedule or a quantization group size the
model does not allow) stops before any work.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path

from prefect import flow, get_run_logger

import recslm
from recslm.config import PipelineConfig
from recslm.select import NoQualifyingStudentError, Selection, TeacherGateError, teacher_gate
from recslm.stages import distill, teacher_logits
from recslm.store import ArtifactRef
from recslm.summary import ModelRecord, RunSummary, StageRecord, TeacherAUC, derived_record, model_record, write_summary
from tasks.baselines import baselines_task
from tasks.data import data_task
from tasks.distill import distill_task, select_task, teacher_logits_task
from tasks.evaluate import evaluate_task
from tasks.options import with_retries
from tasks.prune import profile_task, prune_task
from tasks.quantize import quantize_task
from tasks.register import register_task
from tasks.serve import deploy_task
from tasks.teacher import teacher_task
from tasks.tracking import Tracker, TrackingHandle, artifact_location_for


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def _start_tracking(config: PipelineConfig, run_id: str) -> Tracker:
    if not config.tracking.enabled:
        return Tracker(TrackingHandle(enabled=False))
    config.run.root.mkdir(parents=True, exist_ok=True)
    uri = config.tracking_uri()
    return Tracker.start_pipeline(
        uri=uri,
        artifact_location=artifact_location_for(uri, config.run.root),
        experiment=config.tracking.experiment or config.run.name,
        run_name=run_id,
        params=config.model_dump(mode="json"),
        tags={"recslm.run_id": run_id, "recslm.config_hash": config.config_hash(), "recslm.version": recslm.__version__, "host": socket.gethostname(),
              **source_tags()},  # fmt: skip
    )


def source_tags() -> dict[str, str]:
    """Where the run came from, in MLflow's own source tags: the flow, the Prefect deployment
    (a scheduled or UI-started run) and the project's git commit."""
    from prefect.runtime import deployment, flow_run

    tags = {"mlflow.source.type": "JOB", "mlflow.source.name": "flows/compress.py:compress"}
    if deployment.name:  # the deployment that started the run (the pipeline may run as its subflow)
        tags["recslm.prefect.deployment"] = deployment.name
    if flow_run.id:
        tags["recslm.prefect.flow_run_id"] = str(flow_run.id)
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def publish_results(summary: RunSummary, config: PipelineConfig, tracker: Tracker) -> str:
    """The results where the run was started: a Markdown artifact on the Prefect flow run (its
    Artifacts tab) and the MLflow parent run's description, both linking to each other's side."""
    from prefect.artifacts import create_markdown_artifact

    from recslm.report import mlflow_run_url, summary_markdown

    uri = config.tracking_uri() if config.tracking.enabled else ""
    markdown = summary_markdown(summary.model_dump(mode="json"), mlflow_url=mlflow_run_url(uri, tracker.handle.experiment_id, summary.mlflow_run_id))
    tracker.describe(summary.mlflow_run_id, markdown)
    create_markdown_artifact(markdown=markdown, key="recslm-results", description=f"recslm run {summary.run_id}: models, stages, winner, registry verdict")
    return markdown


def _stage_record(ref: ArtifactRef) -> StageRecord:
    return StageRecord(key=ref.key, uri=ref.uri, cached=ref.cached, wall_s=round(ref.wall_s, 3), metrics=ref.metrics, worker=ref.worker)


@flow(name="recslm-compress", log_prints=True)
def compress(config: PipelineConfig, run_id: str | None = None) -> RunSummary:
    """Run the pipeline for ``config``; write and return ``<run.root>/<run_id>/summary.json``."""
    distill.check_student_paths(config)  # a student folder that is not there stops before any work
    if config.prune.enabled:
        from recslm.prune.schedule import plan

        plan(config.prune)  # a meaningless schedule stops here, before any training
    if config.quantize.enabled:
        from recslm.quantize.plan import check_quantizable

        check_quantizable(config)  # so does a group size the final student's widths do not allow
    if config.serve.enabled:
        from recslm.quantize.plan import check_shardable

        check_shardable(config)  # and a tensor-parallel degree the fleet could not shard them over
    logger = get_run_logger()
    run_id = run_id or new_run_id()
    run_dir = Path(config.run.root) / run_id
    started = time.perf_counter()
    tracker = _start_tracking(config, run_id)
    parent = tracker.handle.parent_run_id or None
    logger.info("run %s: run folder %s, MLflow run %s", run_id, run_dir, parent)
    try:
        data = with_retries(data_task, config)(config, tracker.handle)
        tracker.log_dataset(parent, f"{config.data.source} records", data.uri, data.key)  # the run's Dataset column in MLflow
        distill.check_sources(config, data.path)  # a student with another tokenizer stops before the teacher trains
        stages: dict[str, ArtifactRef] = {"data": data}
        references = with_retries(baselines_task, config)(config, tracker.handle, data) if config.baselines.enabled else None
        if references is not None:
            stages["baselines"] = references
        teacher = with_retries(teacher_task, config)(config, tracker.handle, data)
        teacher_eval = with_retries(evaluate_task, config)(config, tracker.handle, teacher, data, "teacher", references)
        stages.update({"teacher": teacher, "evaluate": teacher_eval})
        teacher_auc = TeacherAUC.of(teacher_eval.metrics)
        models = [model_record("teacher", "teacher", teacher_eval.metrics, teacher.key, teacher_auc), *baseline_records(references, teacher_auc)]
        selection = None
        release = None
        gate = None

        def summary_now() -> RunSummary:
            return RunSummary(
                run_id=run_id, config_hash=config.config_hash(), wall_s=round(time.perf_counter() - started, 3),
                stages={name: _stage_record(ref) for name, ref in stages.items()}, models=models,
                winner=selection.winner if selection else None, recslm_version=recslm.__version__, mlflow_run_id=parent,
                run_dir=str(run_dir.resolve()), teacher_gate=gate.model_dump(mode="json") if gate else None,
            )  # fmt: skip

        def check_gate() -> None:
            """Record the teacher gate on what has been evaluated; stop the run when it is required and fails."""
            nonlocal gate
            gate = teacher_gate(models, teacher_eval.metrics.get("vs_baselines"))
            logger.info("teacher gate:\n%s", gate.table())
            if config.select.require_teacher_gate and not gate.passed:
                write_summary(summary_now(), run_dir)  # the error loses nothing already done
                publish_results(summary_now(), config, tracker)
                raise TeacherGateError(gate)

        if config.students:
            check_gate()  # against the baselines, before any student trains
            topk, trained = distill_students(config, tracker, data, teacher, models, teacher_auc, stages, check_gate)
            if topk is not None:
                stages["teacher_logits"] = topk
            student_evals = {name: ev for (name, role), (_, ev) in trained.items() if role == "student"}
            selected = with_retries(select_task, config)(config, tracker.handle, teacher_eval, student_evals)
            stages["select"] = selected
            selection = Selection.model_validate(selected.metrics)
            if config.task == "ranking":
                figure = _delta_figure(config, models, run_dir)
                tracker.log_artifact(parent, str(figure))
            if selection.winner is not None:
                final = trained[(selection.winner, "student")][0]
                final_record = next(m for m in models if m.name == selection.winner)
                if config.prune.enabled:
                    pruned_stages, final, final_record = prune_winner(config, tracker, data, final, final_record, teacher_auc, teacher)
                    stages.update(pruned_stages)
                    models.append(final_record)
                if config.quantize.enabled:
                    quantized_stages, variants = quantize_final(config, tracker, data, final, final_record, teacher_auc, run_dir, teacher)
                    stages.update(quantized_stages)
                    models += variants
                release = final_record.name if config.serve.model == "final" else f"{final_record.name}-{config.serve.model}"
                if config.serve.enabled:
                    served = final if config.serve.model == "final" else stages[f"quantize.{config.serve.model}"]
                    stages["deploy"] = with_retries(deploy_task, config)(config, tracker.handle, data, served, release, run_id)
                    _report_deploy(stages["deploy"], release)
        else:
            gate = teacher_gate(models, teacher_eval.metrics.get("vs_baselines"))
        summary = summary_now()
        if release is not None and config.registry.enabled:
            registration = with_retries(register_task, config)(config, tracker.handle, summary, release, _bench_ttft_p99(stages))
            summary = summary.model_copy(update={"registry": registration.model_dump(mode="json")})
        path = write_summary(summary, run_dir)
        tracker.log_metrics(parent, {m.name: quality_metrics(m) for m in models})
        tracker.log_metrics(parent, {"wall_s": summary.wall_s})
        tracker.log_artifact(parent, str(path))
        publish_results(summary, config, tracker)
        if selection is not None:
            logger.info("selection:\n%s", selection.table())
            tracker.set_tags(parent, {"recslm.winner": selection.winner or ""})
            if selection.winner is None:  # the summary is written: the error loses nothing already done
                raise NoQualifyingStudentError(selection)
    except BaseException:
        tracker.end(parent, status="FAILED")
        raise
    tracker.end(parent)
    logger.info("run %s finished in %.1f s: %s", run_id, summary.wall_s, path)
    return summary


def distill_students(
    config: PipelineConfig, tracker: Tracker, data: ArtifactRef, teacher: ArtifactRef, models: list[ModelRecord],
    teacher_auc: TeacherAUC, stages: dict[str, ArtifactRef], check_gate: Callable[[], None],
) -> tuple[ArtifactRef | None, dict[tuple[str, str], tuple[ArtifactRef, ArtifactRef]]]:  # fmt: skip
    """Train and evaluate the SFT baselines (if asked), check the teacher gate against them, then
    distill and evaluate every student; append their records to ``models`` and their stages to
    ``stages``, and return the teacher's stored top-k (if the run uses it) and each (name,
    role)'s model and evaluation.

    Students are independent: up to ``execution.parallel_stages`` run at once as Prefect
    task futures (on Slurm or Kubernetes each is its own job; locally they share the machine).
    """
    trained: dict[tuple[str, str], tuple[ArtifactRef, ArtifactRef]] = {}
    if config.distill.sft_baseline:
        _train_wave(config, tracker, data, teacher, [(spec, "sft_baseline") for spec in config.students], None, trained, models, teacher_auc, stages)
        check_gate()  # against the baselines and the SFT students, before any KD student trains
    topk = with_retries(teacher_logits_task, config)(config, tracker.handle, data, teacher) if teacher_logits.wanted(config) else None
    _train_wave(config, tracker, data, teacher, [(spec, "student") for spec in config.students], topk, trained, models, teacher_auc, stages)
    return topk, trained


def _train_wave(
    config: PipelineConfig, tracker: Tracker, data: ArtifactRef, teacher: ArtifactRef, jobs: list, topk: ArtifactRef | None,
    trained: dict[tuple[str, str], tuple[ArtifactRef, ArtifactRef]], models: list[ModelRecord], teacher_auc: TeacherAUC,
    stages: dict[str, ArtifactRef],
) -> None:  # fmt: skip
    """Train ``jobs`` ((spec, role) pairs) ``execution.parallel_stages`` at a time, evaluate each, record it."""
    distill_run = with_retries(distill_task, config)
    evaluate = with_retries(evaluate_task, config)
    width = config.execution.parallel_stages
    for start in range(0, len(jobs), width):
        wave = jobs[start : start + width]
        futures = [distill_run.submit(config, tracker.handle, data, teacher, spec, role, topk) for spec, role in wave]
        for (spec, role), future in zip(wave, futures):
            model = future.result()
            name = spec.model_name(role)
            evaluation = evaluate(config, tracker.handle, model, data, name, None, _teacher_for_evaluation(config, teacher))
            trained[(name, role)] = (model, evaluation)
            models.append(model_record(name, role, evaluation.metrics, model.key, teacher_auc))
            stages[f"distill.{name}"] = model
            stages[f"evaluate.{name}"] = evaluation
            _log_student(tracker, model, evaluation, models[-1])


def _teacher_for_evaluation(config: PipelineConfig, teacher: ArtifactRef | None) -> ArtifactRef | None:
    """A generative model's evaluation reads the teacher (its KL to it); a ranker's does not (so its key has no teacher)."""
    return teacher if config.task == "generative" else None


def baseline_records(ref: ArtifactRef | None, teacher_auc: TeacherAUC) -> list[ModelRecord]:
    """The baselines stage's reference models as summary lines (role ``baseline``, no weights file)."""
    if ref is None:
        return []
    from recslm.baselines.models import NAMES  # a stored artifact's metrics may come back with sorted keys: list them in one order

    found = ref.metrics["models"]
    return [model_record(name, "baseline", found[name], ref.key, teacher_auc, bytes_=0) for name in NAMES if name in found]


def prune_winner(
    config: PipelineConfig, tracker: Tracker, data: ArtifactRef, winner: ArtifactRef, winner_record: ModelRecord, teacher_auc: TeacherAUC,
    teacher: ArtifactRef | None = None,
) -> tuple[dict[str, ArtifactRef], ArtifactRef, ModelRecord]:
    """Profile the selected student, prune it on the configured schedule, evaluate the result;
    return the stages it ran (by summary name), the pruned model and its record. ``teacher``
    joins the evaluation of a generative model (its KL to the teacher)."""
    name = winner_record.name
    profile = with_retries(profile_task, config)(config, tracker.handle, winner, name)
    pruned = with_retries(prune_task, config)(config, tracker.handle, data, winner, profile, name)
    pruned_name = f"{name}-pruned"
    evaluation = with_retries(evaluate_task, config)(config, tracker.handle, pruned, data, pruned_name, None, _teacher_for_evaluation(config, teacher))
    record = derived_record(pruned_name, "pruned", evaluation.metrics, pruned.key, teacher_auc, winner_record)
    _log_student(tracker, pruned, evaluation, record)
    return {"profile": profile, "prune": pruned, f"evaluate.{pruned_name}": evaluation}, pruned, record


def quantize_final(
    config: PipelineConfig, tracker: Tracker, data: ArtifactRef, base: ArtifactRef, base_record: ModelRecord, teacher_auc: TeacherAUC, run_dir: Path,
    teacher: ArtifactRef | None = None,
) -> tuple[dict[str, ArtifactRef], list[ModelRecord]]:  # fmt: skip
    """Quantize the final student with every configured scheme, evaluate each variant, and log
    the scheme × metric table (``quantization.md``) to the run and to MLflow; return the stages
    it ran (by summary name) and the variants' records."""
    from recslm.quantize.report import Variant, quantization_table

    quantize, evaluate = with_retries(quantize_task, config), with_retries(evaluate_task, config)
    variants: list[Variant] = []
    stages: dict[str, ArtifactRef] = {}
    for scheme in config.quantize.schemes:
        name = f"{base_record.name}-{scheme}"
        quantized = quantize(config, tracker.handle, data, base, base_record.name, scheme)
        evaluation = evaluate(config, tracker.handle, quantized, data, name, None, _teacher_for_evaluation(config, teacher))
        stages.update({f"quantize.{scheme}": quantized, f"evaluate.{name}": evaluation})
        record = derived_record(name, "quantized", evaluation.metrics, quantized.key, teacher_auc, base_record)
        _log_student(tracker, quantized, evaluation, record)
        variants.append(Variant(scheme, record, quantized.metrics))
    table = quantization_table(base_record, variants)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "quantization.md"
    path.write_text(table + "\n")
    tracker.log_artifact(tracker.handle.parent_run_id or None, str(path))
    get_run_logger().info("quantization of %s:\n%s", base_record.name, table)
    return stages, [v.record for v in variants]


def _bench_ttft_p99(stages: dict[str, ArtifactRef]) -> float | None:
    """p99 TTFT of the deployed release candidate's benchmark (the ``ttft_p99_ms`` objective)."""
    bench = stages["deploy"].metrics.get("bench") if "deploy" in stages else None
    return float(bench["ttft_ms"]["all"]["p99"]) if bench else None


def _report_deploy(ref: ArtifactRef, name: str) -> None:
    """The deploy stage's outcome in the run log: where it serves (or served) and the benchmark table."""
    logger = get_run_logger()
    record = ref.metrics["deploy"]
    state = "serving at" if ref.metrics["kept_running"] else "verified and stopped; served at"
    logger.info("deploy of %s (version %s): %s %s, smoke max |score diff| %.2g", name, record["version"], state, record["traffic_endpoint"], record["smoke_routed"]["max_abs_diff"])
    if (ref.path / "bench.txt").is_file():
        logger.info("bench of %s:\n%s", name, (ref.path / "bench.txt").read_text())


def _log_student(tracker: Tracker, model: ArtifactRef, evaluation: ArtifactRef, record: ModelRecord) -> None:
    """Put each student's quality beside its loss curves: one MLflow run per student has both."""
    tracker.log_metrics(model.tracking_run_id, {**quality_metrics(record), "params": record.params})


def quality_metrics(record: ModelRecord) -> dict[str, object]:
    """What a model's quality is, as MLflow metrics: AUCs (ranking), or losses, the sentiment
    task metric and the divergence to the teacher (generative)."""
    if record.task == "generative":
        return {"loss": record.loss, "val_loss": record.val_loss, "val_loss_increase_pct": record.val_loss_increase_pct, "sentiment": record.sentiment,
                "val_sentiment": record.val_sentiment, "divergence": record.divergence, "val_divergence": record.val_divergence}  # fmt: skip
    return {"auc": record.auc, "auc_mean": record.auc_mean, "auc_delta_pct": record.auc_delta_pct, "val_auc": record.val_auc, "val_auc_mean": record.val_auc_mean}


def _delta_figure(config: PipelineConfig, models: list[ModelRecord], run_dir: Path) -> Path:
    """The paper's Figure 2 for this run: mean-AUC delta per student, KD vs SFT."""
    from recslm.evaluate.figures import DeltaBar, auc_delta_figure

    sft = {m.name.removesuffix("-sft"): m.auc_delta_pct for m in models if m.role == "sft_baseline"}
    bars = [DeltaBar(m.name, m.params, m.auc_delta_pct, sft.get(m.name)) for m in models if m.role == "student"]
    return auc_delta_figure(bars, run_dir / "auc_delta.png", max_auc_drop_pct=config.select.max_auc_drop_pct)
