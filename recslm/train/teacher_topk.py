"""Teacher log-probabilities computed once, as top-k, and reused by every student.

Online distillation runs the teacher forward in every student's every step; with n
students that is n teacher passes over the data. Precomputing the teacher's top-k
log-probs once (stored under the teacher's key) replaces them with one pass and a file
read. The divergence is then taken over the kept support, renormalized on both sides
(``recslm.train.losses.topk_divergence``).

Stored per group, in the row order of ``SharedForward``: the answer row of every
candidate, the prefix rows, and the non-answer suffix rows of every candidate.
Log-probs are float16 (their rounding, ~1e-3 relative, is far below the top-k
truncation error); ids int32. A digest of the groups' token ids guards against
pairing targets with different data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from recslm.errors import CheckpointError
from recslm.models.prefix import Group, batches, shared_forward
from recslm.models.vocabulary import tokenizer_logits

FILE = "teacher_topk.safetensors"
PARTS = ("answer", "prefix", "suffix")
METADATA_KEY = "recslm"


def groups_digest(groups: Sequence[Group]) -> str:
    """sha256 over the token ids of ``groups`` in order: identifies the data the targets belong to."""
    h = hashlib.sha256()
    for g in groups:
        h.update(repr((g.prefix_ids, g.candidate_ids)).encode())
    return h.hexdigest()


@dataclass
class TopkTargets:
    """One group's (or a batch's) stored teacher top-k: ids and log-probs per row kind."""

    answer_ids: torch.Tensor
    answer_logprobs: torch.Tensor
    prefix_ids: torch.Tensor
    prefix_logprobs: torch.Tensor
    suffix_ids: torch.Tensor
    suffix_logprobs: torch.Tensor

    @staticmethod
    def concat(parts: Sequence[TopkTargets]) -> TopkTargets:
        """A batch's targets in ``SharedForward`` row order (groups' rows one after another)."""
        return TopkTargets(*(torch.cat([getattr(p, f) for p in parts]) for f in TopkTargets.__dataclass_fields__))

    def prompt(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt rows as ``SharedForward.prompt_rows`` orders them: all prefixes, then all suffixes."""
        return torch.cat([self.prefix_ids, self.suffix_ids]), torch.cat([self.prefix_logprobs, self.suffix_logprobs])


class TopkStore:
    """Teacher top-k targets for a list of groups, addressable by group index."""

    def __init__(self, tensors: dict[str, torch.Tensor], digest: str, k: int):
        self.tensors = tensors
        self.digest = digest
        self.k = k

    def __len__(self) -> int:
        return int(self.tensors["answer_offsets"].shape[0]) - 1

    def targets(self, index: int) -> TopkTargets:
        fields = []
        for part in PARTS:
            off = self.tensors[f"{part}_offsets"]
            lo, hi = int(off[index]), int(off[index + 1])
            fields += [self.tensors[f"{part}_ids"][lo:hi], self.tensors[f"{part}_logprobs"][lo:hi]]
        return TopkTargets(*fields)

    def save(self, path: Path) -> None:
        # one metadata entry: safetensors writes its metadata map in a hash order that changes
        # from call to call, so two entries made the same targets a different file each time
        save_file(self.tensors, str(path), metadata={METADATA_KEY: json.dumps({"digest": self.digest, "k": self.k}, sort_keys=True)})

    @classmethod
    def load(cls, path: Path, groups: Sequence[Group] | None = None) -> TopkStore:
        """Load targets; with ``groups``, check they were computed for exactly these groups."""
        if not path.is_file():
            raise CheckpointError(f"{path}: teacher top-k file missing; re-run the teacher_logits stage")
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        meta = json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else meta  # files written before one entry
        store = cls(load_file(str(path)), str(meta.get("digest", "")), int(meta.get("k", 0)))
        if groups is not None and store.digest != groups_digest(groups):
            raise CheckpointError(
                f"{path}: teacher top-k targets were computed for different training data "
                "(digest mismatch); re-run the teacher_logits stage"
            )
        return store


def _topk(head: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    logprobs = torch.log_softmax(head(rows).float(), dim=-1)
    values, ids = logprobs.topk(k, dim=-1)
    return ids.to(torch.int32).cpu(), values.to(torch.float16).cpu()  # the store lives on the CPU, whatever the teacher's device


@torch.inference_mode()
def compute_teacher_topk(
    teacher: PreTrainedModel,
    groups: Sequence[Group],
    pad_id: int,
    k: int,
    *,
    groups_per_batch: int = 8,
    on_groups: Callable[[int], None] | None = None,
    vocab_size: int | None = None,
) -> TopkStore:
    """Run the teacher once over ``groups`` (prefix-shared) and keep its top-k log-probs per
    row, over the tokenizer's ``vocab_size`` tokens (a padded output layer's extra rows are
    never a target)."""
    vocab = min(teacher.get_output_embeddings().weight.shape[0], vocab_size or 1 << 62)
    k = min(k, vocab)
    teacher.eval()
    head = tokenizer_logits(teacher.get_output_embeddings(), vocab_size)
    per_group: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    index_of = {id(g): i for i, g in enumerate(groups)}
    for batch in batches(groups, groups_per_batch):
        fwd = shared_forward(teacher, batch, pad_id)
        prefix_mask, suffix_mask = fwd.prompt_mask()
        answer = _topk(head, fwd.answer_rows(), k)
        start = 0
        for gi, g in enumerate(batch):
            n = len(g.candidate_ids)
            cand = slice(start, start + n)
            start += n
            prefix = _topk(head, fwd.prefix_hidden[gi][prefix_mask[gi]], k)
            suffix = _topk(head, fwd.suffix_hidden[cand][suffix_mask[cand]], k)
            per_group[index_of[id(g)]] = {"answer": (answer[0][cand], answer[1][cand]), "prefix": prefix, "suffix": suffix}
        if on_groups is not None:
            on_groups(len(batch))
    return assemble(per_group, groups, k)


def assemble(per_group: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]], groups: Sequence[Group], k: int) -> TopkStore:
    """The store from each group's (ids, log-probs) per part, whoever computed them (the
    teacher in-process, or a teacher server: :mod:`recslm.train.served_topk`)."""
    tensors: dict[str, torch.Tensor] = {}
    for part in PARTS:
        ids = [per_group[i][part][0] for i in range(len(groups))]
        lps = [per_group[i][part][1] for i in range(len(groups))]
        tensors[f"{part}_ids"] = torch.cat(ids).contiguous()
        tensors[f"{part}_logprobs"] = torch.cat(lps).contiguous()
        tensors[f"{part}_offsets"] = torch.tensor([0] + [len(x) for x in ids], dtype=torch.int64).cumsum(0)
    return TopkStore(tensors, groups_digest(groups), k)
