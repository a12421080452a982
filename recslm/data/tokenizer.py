"""Tokenizers for ranking prompts: train a small byte-level BPE, or load a pretrained one.

Whatever the tokenizer, recslm needs the two answers " yes" and " no" to be single
tokens: the score is read from one position's logits. ``answer_token_ids`` checks this
and fails with a message naming the tokenizer, before any training starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from recslm.data.records import ANSWERS
from recslm.errors import CheckpointError, TokenizerError

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (GPT-2 style pre-tokenization) on the record texts.

    The answers are fed in with enough weight that BPE always merges them into one token;
    ``answer_token_ids`` still verifies it.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def corpus() -> Iterator[str]:
        for _ in range(1000):
            yield " ".join(ANSWERS.values())
        yield from texts

    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS)
    fast.padding_side = "right"
    return fast


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a Hugging Face tokenizer directory with a clear error when it is not one."""
    if not Path(path).is_dir():
        raise CheckpointError(f"{path}: tokenizer directory not found")
    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a loadable Hugging Face tokenizer directory ({exc})") from exc
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def answer_token_ids(tokenizer: PreTrainedTokenizerBase, where: str = "tokenizer") -> dict[int, int]:
    """Map label (1 = yes, 0 = no) to its single answer token id, or raise TokenizerError."""
    ids: dict[int, int] = {}
    for label, text in ANSWERS.items():
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if len(encoded) != 1:
            raise TokenizerError(
                f"{where}: the answer {text!r} must be a single token, but it encodes to {len(encoded)} tokens "
                f"{tokenizer.convert_ids_to_tokens(encoded)}; use a tokenizer whose vocabulary has {text!r} as one token"
            )
        ids[label] = encoded[0]
    if ids[0] == ids[1]:
        raise TokenizerError(f"{where}: ' yes' and ' no' map to the same token id {ids[0]}")
    return ids


def encode_prefix(tokenizer: PreTrainedTokenizerBase, prefix: str) -> list[int]:
    """Token ids of a shared prefix, with the tokenizer's special start (e.g. BOS)."""
    return tokenizer.encode(prefix, add_special_tokens=True)


def encode_candidate(tokenizer: PreTrainedTokenizerBase, candidate: str) -> list[int]:
    """Token ids of a candidate suffix: no special tokens, it continues the prefix."""
    return tokenizer.encode(candidate, add_special_tokens=False)


def encode_parts(tokenizer: PreTrainedTokenizerBase, prefix: str, candidate: str) -> tuple[list[int], list[int]]:
    """Token ids of prefix and candidate, tokenized separately.

    recslm always tokenizes the two parts separately and concatenates them, so the shared
    prefix is token-for-token identical across a member's candidates, offline and in serving.
    """
    return encode_prefix(tokenizer, prefix), encode_candidate(tokenizer, candidate)


SPECIAL_ROLES = ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")


def same_vocabulary(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """True when two tokenizers map every token to the same id and give the special tokens
    the same roles (teacher/student compatibility: a different end-of-sequence or padding id
    would train the student to stop, or to ignore, where the teacher does not)."""
    return a.get_vocab() == b.get_vocab() and all(getattr(a, role, None) == getattr(b, role, None) for role in SPECIAL_ROLES)
