"""Write JSON files atomically.

Several files are read back as proof that work finished (summary.json, a distill phase's
or a prune step's report.json): a crash mid-write must leave the old file or none, never
half a file that a retry would trust or fail to parse.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: Path, value: Any, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Write ``value`` as JSON to ``path`` via a temporary file and a rename (values JSON does
    not know, such as paths, as their text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=indent, sort_keys=sort_keys, default=str))
    os.replace(tmp, path)
    return path
