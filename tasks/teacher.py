"""The teacher stage as a Prefect task."""

from __future__ import annotations

from prefect import task

from recslm.config import PipelineConfig
from recslm.progress import progress_bar
from recslm.store import ArtifactRef
from tasks.dispatch import dispatchable
from tasks.options import TASK_DEFAULTS
from tasks.stage import run_stage
from tasks.tracking import TrackingHandle


@task(name="teacher", **TASK_DEFAULTS)
@dispatchable
def teacher_task(config: PipelineConfig, tracking: TrackingHandle, data: ArtifactRef) -> ArtifactRef:
    """Train the teacher on the answer token (resuming from checkpoints), or load a trained one."""

    def body(out, work, run):
        from recslm.train.teacher import make_teacher  # heavy (torch, Trainer): only when the stage runs

        with progress_bar("teacher SFT steps") as on_step:
            return make_teacher(
                config.teacher, data.path, out, work / "checkpoints",
                seed=config.run.seed, on_log=run.log_curve, on_step=on_step,
            )

    stage_config = {"teacher": config.teacher.model_dump(mode="json"), "seed": config.run.seed}
    return run_stage("teacher", config, tracking, stage_config, {"data": data}, body, runtime=config.runtime)
