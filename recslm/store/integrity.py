"""Artifact integrity: every published file's size and sha256 in ``stage.json``, checked on use.

A content key says what an artifact *should* hold; only the bytes say what it *does*. A
bit-flipped or truncated weights file under a valid ``stage.json`` used to be reused as a
cache hit, and evaluation quietly reported a different AUC. Now publishing records a
manifest (size and sha256 of every file but ``stage.json``), and a lookup

- compares every file's size with the manifest, always (one ``stat`` per file);
- hashes every file the first time this machine uses the artifact, and again whenever a
  file's size or modification time differs from what the last verification saw (kept in
  ``<store>/_verified/<host>/``, so a shared store is verified once per machine, not once
  per run).

A mismatch is a :class:`CorruptArtifactError` naming the artifact and the file.
``recslm store verify`` re-hashes everything and can move corrupt artifacts aside so the
next run rebuilds them. Artifacts published before manifests existed carry none and are
reported as ``unverified``, not refused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recslm.errors import CheckpointError
from recslm.jsonfile import write_json

STAGE_FILE = "stage.json"
MANIFEST_FIELD = "files"
_CHUNK = 1 << 20


class CorruptArtifactError(CheckpointError):
    """A published artifact's files differ from the manifest its stage.json recorded."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file in ``folder`` except ``stage.json`` (which holds the manifest)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / STAGE_FILE)
    return {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in files}


@dataclass(frozen=True)
class Problem:
    """One file that does not match: which, and how."""

    file: str
    what: str


def size_problems(folder: Path, manifest: dict[str, dict[str, Any]]) -> list[Problem]:
    problems = []
    for name, entry in manifest.items():
        path = folder / name
        if not path.is_file():
            problems.append(Problem(name, "is missing"))
        elif path.stat().st_size != entry["size"]:
            problems.append(Problem(name, f"has {path.stat().st_size:,} bytes; stage.json recorded {entry['size']:,} (truncated or rewritten)"))
    return problems


def hash_problems(folder: Path, manifest: dict[str, dict[str, Any]]) -> list[Problem]:
    problems = size_problems(folder, manifest)
    bad = {p.file for p in problems}
    for name, entry in manifest.items():
        if name not in bad and (found := sha256_file(folder / name)) != entry["sha256"]:
            problems.append(Problem(name, f"has sha256 {found[:16]}…; stage.json recorded {entry['sha256'][:16]}… (changed after publishing)"))
    return problems


def read_manifest(folder: Path) -> dict[str, dict[str, Any]] | None:
    """The manifest stage.json recorded, or None for an artifact published before manifests."""
    try:
        record = json.loads((Path(folder) / STAGE_FILE).read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CorruptArtifactError(f"{Path(folder) / STAGE_FILE}: unreadable ({exc}); the artifact cannot be trusted") from None
    return record.get(MANIFEST_FIELD) if isinstance(record, dict) else None


def _fingerprint(folder: Path, manifest: dict[str, dict[str, Any]]) -> dict[str, list[int]]:
    return {name: [(s := (folder / name).stat()).st_size, s.st_mtime_ns] for name in manifest}


def _name(stage: str, key: str) -> str:
    return f"{stage}/{key[:12]}"


def _raise(stage: str, key: str, folder: Path, problems: list[Problem], store_root: Path) -> None:
    first = problems[0]
    more = f" (and {len(problems) - 1} more file(s))" if len(problems) > 1 else ""
    raise CorruptArtifactError(
        f"artifact {_name(stage, key)} ({folder}): {first.file} {first.what}{more}. "
        f"`recslm store verify {store_root} --quarantine` moves it aside; the next run rebuilds it"
    )


def verify_on_use(store_root: Path, stage: str, key: str, folder: Path) -> None:
    """What a lookup checks: sizes always, hashes once per machine and file version."""
    manifest = read_manifest(folder)
    if manifest is None:
        return
    if problems := size_problems(folder, manifest):
        _raise(stage, key, folder, problems, store_root)
    seen_file = Path(store_root) / "_verified" / socket.gethostname() / stage / f"{key}.json"
    fingerprint = _fingerprint(folder, manifest)
    try:
        if json.loads(seen_file.read_text()) == fingerprint:
            return
    except (OSError, ValueError):
        pass
    if problems := hash_problems(folder, manifest):
        _raise(stage, key, folder, problems, store_root)
    write_json(seen_file, fingerprint)


@dataclass(frozen=True)
class Verdict:
    stage: str
    key: str
    folder: Path
    status: str  # "ok" | "corrupt" | "unverified"
    problems: tuple[Problem, ...] = ()
    moved_to: Path | None = None


def verify_store(store_root: Path, *, quarantine: bool = False) -> list[Verdict]:
    """Re-hash every published artifact under ``store_root`` (no cached verification).
    With ``quarantine``, corrupt artifacts move to ``<store>/_corrupt/`` so the next run
    rebuilds them (their key no longer resolves)."""
    store_root = Path(store_root)
    verdicts = []
    for stage_file in sorted(store_root.glob(f"*/*/{STAGE_FILE}")):
        folder = stage_file.parent
        stage, key = folder.parent.name, folder.name
        if stage.startswith("_"):
            continue
        try:
            manifest = read_manifest(folder)
        except CorruptArtifactError as exc:
            verdicts.append(_settle(store_root, Verdict(stage, key, folder, "corrupt", (Problem(STAGE_FILE, str(exc)),)), quarantine))
            continue
        if manifest is None:
            verdicts.append(Verdict(stage, key, folder, "unverified"))
            continue
        problems = hash_problems(folder, manifest)
        verdict = Verdict(stage, key, folder, "corrupt" if problems else "ok", tuple(problems))
        verdicts.append(_settle(store_root, verdict, quarantine))
    return verdicts


def _settle(store_root: Path, verdict: Verdict, quarantine: bool) -> Verdict:
    if verdict.status != "corrupt" or not quarantine:
        return verdict
    target = store_root / "_corrupt" / verdict.stage / f"{verdict.key}-{time.strftime('%Y%m%dT%H%M%S')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(verdict.folder), str(target))
    for stale in store_root.glob(f"_verified/*/{verdict.stage}/{verdict.key}.json"):
        stale.unlink()  # what a machine verified is gone
    return Verdict(verdict.stage, verdict.key, verdict.folder, verdict.status, verdict.problems, target)
