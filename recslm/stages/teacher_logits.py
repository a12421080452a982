"""The teacher_logits stage: the teacher's top-k log-probs over the training prompts, computed
once (prefix-shared) and reused by every student (``distill.teacher_logits: topk``), or read
once from a server running the teacher (``served``: neither this stage nor the students
load it)."""

from __future__ import annotations

from typing import Any

from recslm.progress import progress_bar
from recslm.stages.base import Stage, StageContext
from recslm.store import ArtifactRef


def key(config: Any) -> Any:
    """k; and where the numbers came from when served (equal to the in-process ones to float16
    rounding, not bit for bit). Not the URL: the same teacher behind another address is the
    same computation."""
    if config.distill.teacher_logits == "served":
        return {"topk": config.distill.topk, "source": "served"}
    return {"topk": config.distill.topk}


def body(config: Any, ctx: StageContext, inputs: dict[str, ArtifactRef]) -> dict[str, Any]:
    from recslm.train.student import make_served_topk, make_teacher_topk  # torch: only when the stage runs

    if config.distill.teacher_logits == "served":
        with progress_bar(f"teacher top-{config.distill.topk} from {config.distill.teacher_url}") as on_progress:
            return make_served_topk(inputs["data"].path, config.distill.teacher_url, ctx.out, config.distill.topk, on_progress=on_progress)
    with progress_bar(f"teacher top-{config.distill.topk}") as on_progress:
        return make_teacher_topk(
            inputs["data"].path, inputs["teacher"].path, ctx.out, config.distill.topk,
            groups_per_batch=config.evaluate.groups_per_batch, trust_remote_code=config.teacher.trust_remote_code, on_progress=on_progress,
        )  # fmt: skip


def wanted(config: Any) -> bool:
    """Whether a run needs it: top-k targets, and some phase that distils from the teacher."""
    return config.distill.teacher_logits in ("topk", "served") and any(p.loss != "sft" for p in config.distill.phases)


STAGE = Stage("teacher_logits", key, body)
