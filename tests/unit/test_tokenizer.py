"""Tokenizers: the answers must be single tokens; prompts split cleanly at the prefix."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from recslm.data.tokenizer import answer_token_ids, encode_parts, load_tokenizer, same_vocabulary
from recslm.errors import CheckpointError, TokenizerError
from tests.helpers import synthetic_records, tiny_tokenizer


def test_trained_bpe_has_single_token_answers(tmp_path):
    tok = tiny_tokenizer()
    ids = answer_token_ids(tok)
    assert set(ids) == {0, 1} and ids[0] != ids[1]
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert same_vocabulary(tok, again) and answer_token_ids(again) == ids
    # same tokens, but another token ends sequences: not the same tokenizer for distillation
    swapped = load_tokenizer(tmp_path)
    swapped.eos_token = swapped.pad_token
    assert swapped.get_vocab() == tok.get_vocab() and not same_vocabulary(tok, swapped)


def test_multi_token_answer_is_a_clear_error():
    # a byte-level tokenizer with no merges spells " yes" as four tokens
    raw = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(pre_tokenizers.ByteLevel.alphabet())}, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw)
    with pytest.raises(TokenizerError, match=r"my tokenizer: the answer ' yes' must be a single token.*4 tokens"):
        answer_token_ids(tok, where="my tokenizer")


def test_prefix_and_candidate_tokenize_independently():
    tok = tiny_tokenizer()
    records = synthetic_records(members=5)
    assert records
    for r in records:
        prefix, cand = encode_parts(tok, r.prefix, r.candidate)
        assert prefix + cand == tok.encode(r.prefix + r.candidate)


def test_missing_tokenizer_directory(tmp_path):
    with pytest.raises(CheckpointError, match="tokenizer directory not found"):
        load_tokenizer(tmp_path / "nope")
