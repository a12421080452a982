"""What one request may ask of the local engine, and what one forward may hold.

Without bounds, one request decides how much memory the engine allocates: the items of a
``/v1/score`` request are packed behind their query, so 10,000 short items became one
~70,000-token row whose attention mask alone asked for gigabytes. The limits are checked
in the cheapest order: body bytes before parsing, item count before tokenizing, tokens
after. A refused request gets a 413 (body) or 400 naming the limit and the flag that
raises it; the engine then splits what it accepts into rows and forwards of bounded size,
so a large but allowed request costs time, not a memory spike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServeLimits:
    """Per-request and per-forward bounds (the defaults fit the demo's traffic many times over)."""

    max_body_bytes: int = 1 << 20
    """Request body size; checked on the Content-Length header and on the bytes actually received."""
    max_items: int = 1024
    """Items in one ``/v1/score`` request."""
    max_request_tokens: int = 32_768
    """Tokens in one request: query plus all items (score), prompt plus ``max_new_tokens`` (generate)."""
    max_batch_tokens: int = 8192
    """Packed item tokens in one scoring forward; requests are split into rows of at most
    ``max_row_tokens`` and rows into forwards of at most this many tokens."""
    max_row_tokens: int = 512
    """Item tokens packed behind one copy of a query: attention cost grows with its square."""

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_items", "max_request_tokens", "max_batch_tokens", "max_row_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


FLAGS = {
    "max_body_bytes": "--max-body-bytes",
    "max_items": "--max-items",
    "max_request_tokens": "--max-request-tokens",
    "max_batch_tokens": "--max-batch-tokens",
}


def limits_of(serve: Any) -> ServeLimits:
    """The limits a ``serve`` config section sets (``ServeConfig``'s fields of the same names)."""
    return ServeLimits(max_body_bytes=serve.max_body_bytes, max_items=serve.max_items, max_request_tokens=serve.max_request_tokens, max_batch_tokens=serve.max_batch_tokens)


def limit_flags(limits: ServeLimits) -> list[str]:
    """``recslm serve`` flags that set ``limits`` (how a deploy target passes them to its workers)."""
    return [item for name, flag in FLAGS.items() for item in (flag, str(getattr(limits, name)))]


def over_limit(what: str, value: int, limit_name: str, limit: int) -> str:
    """The message a refused request gets: the value, the limit, and how to raise it."""
    return f"{what}: {value:,} exceeds the server's {limit_name} of {limit:,} (raise it with {FLAGS.get(limit_name, limit_name)})"
