"""The one place recslm bridges transformers 5.x API renames.

Transformers renamed the KV-cache argument of the decoder forward from ``past_key_values``
to ``cache`` (5.2x; the old name is deprecated until 5.40), while llm-compressor 0.14 caps
transformers at 5.17. Passing the wrong name is silently swallowed by ``**kwargs`` and the
forward runs *without* the prefix cache, so the name is read from the signature instead.
"""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any

import torch


@cache
def _cache_parameter(forward_type: type) -> str:
    parameters = inspect.signature(forward_type.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def with_cache(module: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """``{<the module's cache argument>: cache}`` for a decoder or causal-LM forward call."""
    return {_cache_parameter(type(module)): cache}


def output_cache(output: Any) -> Any:
    """The KV cache a forward returned, under either attribute name."""
    value = getattr(output, "cache", None)
    return value if value is not None else output.past_key_values
