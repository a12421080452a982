"""The register stage: every candidate of a run becomes an MLflow model version; the
promotion policy (``recslm.select.decide_promotion``) decides whether the run's release
candidate takes the ``champion`` alias or the ``challenger`` one.

A version points at its artifact in the store (``source`` = the model folder's URI:
no copy of the weights) and carries its lineage and metrics as tags: the run, the config
hash, its content key, its parent's and its teacher's keys, AUC per task, size. A model
whose key is already registered is not registered again, so re-running a pipeline adds
no duplicate versions.

Concurrent runs: reading the champion, deciding and moving the alias happen under one
lock per registered model, a Prefect global concurrency limit of 1 (held by the Prefect
server, so it works across machines, and leased, so a crashed holder frees it). Without
it two runs could both beat the same old champion and the worse one could win the race.
"""

from __future__ import annotations

import time
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prefect import get_run_logger, task
from pydantic import BaseModel

from recslm.config import PipelineConfig
from recslm.errors import ConfigError
from recslm.select import Promotion, RegistryEntry, decide_promotion
from recslm.summary import ModelRecord, RunSummary
from tasks.options import TASK_DEFAULTS
from tasks.tracking import TrackingHandle

CANDIDATE_ROLES = ("student", "pruned", "quantized")
CHAMPION, CHALLENGER = "champion", "challenger"


class Registration(BaseModel):
    """What the register stage did: versions by model name, and the verdict on the release candidate."""

    model_name: str
    versions: dict[str, str]
    new_versions: list[str]
    candidate: str
    candidate_version: str
    promotion: Promotion
    previous_champion: str | None


def registered_name(config: PipelineConfig) -> str:
    return config.registered_model_name()


def lineage_tags(summary: RunSummary, model: ModelRecord, uri: str) -> dict[str, str]:
    """Tags of a version: where it came from (run, config, keys, the store artifact and the data
    it was evaluated on, which deploy-champion needs) and how good and big it is."""
    by_name = {m.name: m for m in summary.models}
    stage = next(name.split(".")[0] for name, record in summary.stages.items() if record.key == model.key)
    data = summary.stages.get("data")
    teacher = next((m for m in summary.models if m.role == "teacher"), None)
    parent = by_name.get(model.parent) if model.parent else None
    tags: dict[str, Any] = {
        "recslm.name": model.name, "recslm.role": model.role, "recslm.key": model.key, "recslm.stage": stage, "recslm.artifact": uri,
        "recslm.data_key": data.key if data else "",
        "recslm.run_id": summary.run_id, "recslm.config_hash": summary.config_hash, "recslm.version": summary.recslm_version,
        "recslm.teacher_key": teacher.key if teacher else "", "recslm.parent": model.parent or "", "recslm.parent_key": parent.key if parent else "",
        "auc_mean": model.auc_mean, "auc_delta_pct": model.auc_delta_pct, "params": model.params, "bytes": model.bytes,
        **{f"auc.{task_name}": value for task_name, value in model.auc.items()},
        "val_auc_mean": model.val_auc_mean, "val_auc_delta_pct": model.val_auc_delta_pct,
        **{f"val_auc.{task_name}": value for task_name, value in model.val_auc.items()},
    }  # fmt: skip
    if model.auc_delta_vs_parent_pct is not None:
        tags["auc_delta_vs_parent_pct"] = model.auc_delta_vs_parent_pct
    if model.task == "generative":  # what the policy reads for a generative model (lower is better)
        tags.update({"recslm.task": "generative", "val_loss": model.val_loss, "loss": model.loss, "val_loss_increase_pct": model.val_loss_increase_pct,
                     "sentiment": model.sentiment, "val_sentiment": model.val_sentiment, "val_loss_increase_vs_parent_pct": model.val_loss_increase_vs_parent_pct})  # fmt: skip
    return {k: str(v) for k, v in tags.items() if v is not None}


def entry(version: Any) -> RegistryEntry:
    """A registry version as the policy sees it (from the tags this stage wrote): its val AUC,
    the split decisions use. A version registered before val was recorded (recslm 0.1) has only
    its test AUC, which stands in for it."""
    tags = version.tags
    ttft = tags.get("ttft_p99_ms")
    if tags.get("recslm.task") == "generative":
        return RegistryEntry(
            version=str(version.version), name=tags.get("recslm.name", ""), auc_mean=float("nan"), auc_delta_pct=float("nan"), task="generative",
            val_loss=float(tags["val_loss"]), val_loss_increase_pct=float(tags["val_loss_increase_pct"]),
            params=int(tags["params"]), bytes=int(tags["bytes"]), ttft_p99_ms=float(ttft) if ttft else None,
        )  # fmt: skip
    auc_mean, delta = tags.get("val_auc_mean") or tags["auc_mean"], tags.get("val_auc_delta_pct") or tags["auc_delta_pct"]
    return RegistryEntry(
        version=str(version.version), name=tags.get("recslm.name", ""), auc_mean=float(auc_mean), auc_delta_pct=float(delta),
        params=int(tags["params"]), bytes=int(tags["bytes"]), ttft_p99_ms=float(ttft) if ttft else None,
    )  # fmt: skip


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name, description="recslm: distilled, pruned and quantized rankers; alias champion is served")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _version_with_key(client: MlflowClient, name: str, key: str) -> Any | None:
    found = client.search_model_versions(f"name = '{name}' and tags.`recslm.key` = '{key}'")
    return min(found, key=lambda v: int(v.version)) if found else None


def _alias(client: MlflowClient, name: str, alias: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def registry_lock(name: str, timeout_s: float):
    """One holder at a time per registered model, across processes and machines (Prefect server)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectNotFound

    limit = f"recslm-registry-{name}"
    with get_client(sync_client=True) as client:
        for attempt in range(10):
            try:
                client.read_global_concurrency_limit_by_name(limit)
                break
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit, limit=1))
                    break
                except Exception:  # noqa: BLE001 - a concurrent run created it first: read it next time round
                    time.sleep(0.1 * (attempt + 1))
    return concurrency(limit, occupy=1, timeout_seconds=timeout_s, strict=True)


def register_models(config: PipelineConfig, tracking: TrackingHandle, summary: RunSummary, candidate: str, ttft_p99_ms: float | None = None) -> Registration:
    """Register every candidate model of ``summary`` and apply the promotion policy to ``candidate``."""
    name = registered_name(config)
    client = MlflowClient(tracking_uri=tracking.uri)
    uris = {record.key: record.uri for record in summary.stages.values()}
    models = [m for m in summary.models if m.role in CANDIDATE_ROLES]
    if candidate not in {m.name for m in models}:
        raise ConfigError(f"register: release candidate {candidate!r} is not among the run's models {[m.name for m in models]}")
    versions: dict[str, str] = {}
    new: list[str] = []
    with registry_lock(name, config.registry.lock_timeout_s):
        _ensure_registered_model(client, name)
        for model in models:
            existing = _version_with_key(client, name, model.key)
            if existing is None:
                source = f"{uris[model.key].rstrip('/')}/model"
                created = client.create_model_version(name, source=source, run_id=summary.mlflow_run_id, tags=lineage_tags(summary, model, uris[model.key]),
                                                      description=f"{model.name} ({model.role}) from run {summary.run_id}")  # fmt: skip
                existing = created
                new.append(str(created.version))
            versions[model.name] = str(existing.version)
        mine = client.get_model_version(name, versions[candidate])
        if ttft_p99_ms is not None:
            client.set_model_version_tag(name, mine.version, "ttft_p99_ms", str(ttft_p99_ms))
            mine = client.get_model_version(name, mine.version)
        current = _alias(client, name, CHAMPION)
        promotion = decide_promotion(
            entry(mine), entry(current) if current is not None else None,
            max_auc_drop_pct=config.select.max_auc_drop_pct, objective=config.registry.objective,
            quality_tolerance_pct=config.registry.quality_tolerance_pct, min_gain_pct=config.registry.min_gain_pct,
            max_val_loss_increase_pct=config.select.max_val_loss_increase_pct,
        )  # fmt: skip
        client.set_registered_model_alias(name, promotion.verdict, mine.version)
        challenger = _alias(client, name, CHALLENGER)
        if promotion.verdict == CHAMPION and challenger is not None and str(challenger.version) == str(mine.version):
            client.delete_registered_model_alias(name, CHALLENGER)  # promoted: no longer the challenger
        client.set_model_version_tag(name, mine.version, "recslm.verdict", promotion.verdict)
        client.set_model_version_tag(name, mine.version, "recslm.verdict_reason", promotion.reason)
    return Registration(
        model_name=name, versions=versions, new_versions=new, candidate=candidate, candidate_version=str(mine.version),
        promotion=promotion, previous_champion=str(current.version) if current is not None else None,
    )  # fmt: skip


@task(name="register", **TASK_DEFAULTS)
def register_task(config: PipelineConfig, tracking: TrackingHandle, summary: RunSummary, candidate: str, ttft_p99_ms: float | None = None) -> Registration:
    """Register the run's candidates and promote (or not) its release candidate."""
    registration = register_models(config, tracking, summary, candidate, ttft_p99_ms)
    get_run_logger().info(
        "registry %s: %s is v%s -> %s (%s)", registration.model_name, candidate, registration.candidate_version,
        registration.promotion.verdict, registration.promotion.reason,
    )  # fmt: skip
    return registration
