"""Content digests of folders a config points at (a trained teacher, a tokenizer).

A stage key must say everything that decides the result. A config that loads weights or a
tokenizer from a path names only the path; hashing the path alone would reuse a stale
artifact after the folder is rebuilt in place (``make teacher`` does exactly that). So the
key carries the digest of the folder's files instead: same bytes, same key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from recslm.errors import ConfigError

_CHUNK = 1 << 20


def folder_digest(folder: Path, field: str, names: Iterable[str] | None = None) -> str:
    """sha256 over the relative names and bytes of the folder's files (or only ``names``,
    those that exist). ``field`` names the config field in the error for a missing folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{field}: {folder} is not a directory; expected a Hugging Face model or tokenizer folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if names is not None:
        wanted = set(names)
        files = [p for p in files if p.relative_to(folder).as_posix() in wanted]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "tokenizer.model", "added_tokens.json", "chat_template.jinja",
)  # fmt: skip
