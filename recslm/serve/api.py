"""Request and response bodies of the SGLang HTTP API subset the local engine speaks.

Field names are SGLang's (``/generate``: ``text`` / ``input_ids``, ``sampling_params``,
``return_logprob``, ``token_ids_logprob``, ``meta_info``; ``/v1/score``: ``query``,
``items``, ``label_token_ids``, ``apply_softmax``), so a client written against the local
engine runs unchanged against an SGLang server, and the other way round.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


def _encodable(text: str) -> str:
    """JSON may carry lone UTF-16 surrogates (``"\\ud800"``) that no tokenizer or response can
    encode: refuse them here, as a 400 naming the position, not deep in the engine as a 500."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"not valid Unicode: a lone surrogate {text[exc.start]!r} at character {exc.start}") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="ignore")  # SGLang has many more; unknown ones are not ours to refuse

    max_new_tokens: int = Field(128, ge=0)  # 0: prefill only (SGLang's scoring request), see GenerateRequest
    temperature: float = Field(1.0, ge=0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    stop_token_ids: list[int] = Field(default_factory=list)
    seed: int | None = Field(None, alias="sampling_seed", ge=0, le=2**64 - 1)  # what torch.Generator accepts


class GenerateRequest(BaseModel):
    """SGLang's ``/generate``. ``text`` / ``input_ids`` may be one prompt or a batch (a list),
    answered with one result or a list. ``max_new_tokens: 0`` is SGLang's prefill-only
    request, how its own ``/v1/score`` scores and how ranking traffic goes through the
    router (which has no ``/v1/score``): nothing is generated, and ``token_ids_logprob``
    returns the log-probabilities of those tokens at the next position, in
    ``meta_info.output_token_ids_logprobs[0]``."""

    model_config = ConfigDict(extra="ignore")

    text: Text | list[Text] | None = None
    input_ids: list[int] | list[list[int]] | None = None
    sampling_params: SamplingParams = Field(default_factory=SamplingParams)
    return_logprob: bool = False
    token_ids_logprob: list[int] | None = None
    logprob_start_len: int | list[int] = -1  # -1: no prompt logprobs; n >= 0: from prompt position n on; a list: one per prompt of a batch
    top_logprobs_num: int = Field(0, ge=0, le=1024)  # with return_logprob and logprob_start_len: top-k per prompt position
    stream: bool = False
    rid: Text | None = None

    @model_validator(mode="after")
    def _one_prompt(self) -> GenerateRequest:
        if (self.text is None) == (self.input_ids is None):
            raise ValueError("give exactly one of text or input_ids")
        if self.batched and not self.prompts:
            raise ValueError("the batch of prompts is empty")
        if self.sampling_params.max_new_tokens == 0:
            if self.stream:
                raise ValueError("max_new_tokens 0 (prefill only) cannot stream: there are no tokens to send")
            if not self.token_ids_logprob and not self.prompt_logprobs:
                raise ValueError(
                    "max_new_tokens 0 (prefill only) needs token_ids_logprob (the tokens whose log-probabilities to return), "
                    "or return_logprob with logprob_start_len >= 0 (the prompt's own log-probabilities)"
                )
        starts = self.logprob_start_len if isinstance(self.logprob_start_len, list) else [self.logprob_start_len]
        if any(start < -1 for start in starts):
            raise ValueError("logprob_start_len: expected -1 (none) or a prompt position >= 0")
        if isinstance(self.logprob_start_len, list) and (not self.batched or len(starts) != len(self.prompts)):
            raise ValueError("logprob_start_len: a list needs a batch of prompts, one start each")
        if len(set(start >= 0 for start in starts)) > 1:
            raise ValueError("logprob_start_len: either every prompt's start is >= 0 or none is")
        if starts[0] >= 0 and self.sampling_params.max_new_tokens != 0:
            raise ValueError("logprob_start_len: prompt log-probabilities are served with max_new_tokens 0 (prefill only) here")
        elif self.batched and self.stream:
            raise ValueError("stream a single prompt, not a batch")
        return self

    @property
    def prompt_logprobs(self) -> bool:
        """SGLang's prompt log-probabilities: ``meta_info.input_token_logprobs`` (and, with
        ``top_logprobs_num``, ``input_top_logprobs``) from ``logprob_start_len`` on."""
        return self.return_logprob and self.starts[0] >= 0

    @property
    def starts(self) -> list[int]:
        """``logprob_start_len`` per prompt."""
        if isinstance(self.logprob_start_len, list):
            return list(self.logprob_start_len)
        return [self.logprob_start_len] * max(1, len(self.prompts) if self.batched else 1)

    @property
    def batched(self) -> bool:
        """A list of prompts (answered with a list), not one prompt."""
        prompt = self.text if self.text is not None else self.input_ids
        return isinstance(prompt, list) and (self.text is not None or (bool(prompt) and isinstance(prompt[0], list)))

    @property
    def prompts(self) -> list:
        """The prompts as a list (one prompt is a list of one)."""
        prompt = self.text if self.text is not None else self.input_ids
        return list(prompt) if self.batched else [prompt]  # type: ignore[arg-type]


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: Text | list[int]
    items: Text | list[Text] | list[list[int]]
    label_token_ids: list[int] = Field(min_length=1)
    apply_softmax: bool = False
    model: Text | None = None

    @model_validator(mode="after")
    def _items_list(self) -> ScoreRequest:
        if isinstance(self.items, str):
            self.items = [self.items]
        if not self.items:
            raise ValueError("items is empty")
        return self


def generate_response(output_ids: list[int], text: str, meta: dict[str, Any]) -> dict[str, Any]:
    return {"text": text, "output_ids": output_ids, "meta_info": meta}


def score_response(scores: list[list[float]], model: str, prompt_tokens: int, cached_tokens: int) -> dict[str, Any]:
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 0, "total_tokens": prompt_tokens, "prompt_tokens_details": {"cached_tokens": cached_tokens}}
    return {"scores": scores, "model": model, "usage": usage, "object": "scoring"}
