"""The evaluate stage: AUC per task and mean, answer loss, size and scoring speed of one model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from recslm.data.records import RankingRecord
from recslm.data.tokenizer import load_tokenizer, same_vocabulary
from recslm.errors import TokenizerError
from recslm.evaluate.metrics import auc_per_task, mean_auc
from recslm.evaluate.scoring import score_records
from recslm.models.factory import count_non_embedding_parameters, count_parameters, directory_bytes
from recslm.models.placement import load_placed
from recslm.models.prefix import make_groups
from recslm.progress import counter


def evaluate_records(
    model_dir: Path,
    records: Sequence[RankingRecord],
    *,
    prefix_sharing: bool = True,
    groups_per_batch: int = 16,
    data_tokenizer_dir: Path | None = None,
    scores_out: Path | None = None,
    trust_remote_code: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Score ``records`` with the model in ``model_dir`` and return its metrics.

    When the records were tokenized for training by a data-stage tokenizer, pass its
    folder: a model with a different vocabulary would score garbage, so that is an error.
    """
    tokenizer = load_tokenizer(model_dir, trust_remote_code)
    if data_tokenizer_dir is not None and not same_vocabulary(tokenizer, load_tokenizer(data_tokenizer_dir)):
        raise TokenizerError(f"{model_dir}: the model's tokenizer differs from the data's tokenizer in {data_tokenizer_dir}")
    model = load_placed(model_dir, trust_remote_code)
    groups = make_groups(records, tokenizer)
    tick = counter(on_progress, len(groups))

    result = score_records(model, tokenizer, records, prefix_sharing=prefix_sharing, groups=groups, groups_per_batch=groups_per_batch, on_group=tick)
    auc = auc_per_task(result.tasks, result.labels, result.scores)
    if scores_out is not None:
        scores_out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {
                "member_id": [r.member_id for r in records],
                "task": result.tasks,
                "item_id": [r.item_id for r in records],
                "label": result.labels,
                "score": result.scores,
            }
        ).to_parquet(scores_out, index=False)
    return {
        "auc": auc,
        "auc_mean": mean_auc(auc),
        "loss": result.loss,
        "examples": len(records),
        "groups": result.groups,
        "positives": {t: int(sum(1 for r in records if r.task == t and r.label == 1)) for t in sorted(auc)},
        "examples_per_s": len(records) / result.seconds,
        "tokens_per_s": result.tokens_computed / result.seconds,
        "params": count_parameters(model),
        "params_non_embedding": count_non_embedding_parameters(model),
        "bytes": directory_bytes(model_dir),
        "prefix_sharing": prefix_sharing,
    }
