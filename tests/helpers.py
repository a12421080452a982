"""Small builders shared by tests: synthetic ranking records, a tokenizer, tiny models."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from recslm.config import ArchSpec
from recslm.data.records import RankingRecord
from recslm.data.tokenizer import train_bpe_tokenizer
from recslm.models.factory import build_model

REPO = Path(__file__).resolve().parents[1]


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module: the benchmarks are scripts, not a package, and their
    tests call their functions and ``main`` directly."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trimmed_smoke(root: Path, students: int = 1) -> dict[str, Any]:
    """configs/smoke.yaml (as a dict) cut to data -> teacher (one epoch) -> select with the first
    ``students`` students, distilled for 600 steps with a checkpoint every 50 (~20 s: long enough to
    kill it mid-way, no validation), no SFT baselines, no non-LM baselines, no prune/quantize/serve/bench. For the backend and
    fault-tolerance tests, which each change ``execution`` or run it from a file."""
    raw = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    raw["run"]["root"] = str(root)
    raw["teacher"]["train"]["epochs"] = 1
    raw["students"] = raw["students"][:students]
    raw["distill"]["sft_baseline"] = False
    raw["distill"]["phases"][0]["train"].update(max_steps=600, save_steps=50, eval_steps=0)
    for section in ("baselines", "prune", "quantize", "serve", "bench"):
        raw.setdefault(section, {})["enabled"] = False
    return raw


GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]


LIKED = {"Action", "Comedy", "Drama"}


def synthetic_records(members: int = 12, k: int = 4, seed: int = 0) -> list[RankingRecord]:
    """Records with a learnable rule: a candidate is a yes when its genre is one of LIKED."""
    rng = random.Random(seed)
    records = []
    for m in range(members):
        fav = rng.choice(GENRES)
        history = "".join(f"Film {rng.randint(1, 99)} ({rng.randint(1950, 1998)}) | {rng.choice(GENRES)} | {rng.randint(1, 5)}\n" for _ in range(rng.randint(2, 6)))
        prefix = f"Task: will the member like this movie?\nMember: likes {fav}\nHistory:\n{history}"
        for task in ("like", "next"):
            for c in range(k):
                genre = rng.choice(sorted(LIKED)) if c % 2 == 0 else rng.choice([g for g in GENRES if g not in LIKED])
                records.append(
                    RankingRecord(
                        member_id=str(m), task=task, prefix=prefix,
                        candidate=f"Movie: Title {rng.randint(1, 500)} | {genre}\nAnswer:", label=int(genre in LIKED),
                    )
                )
    return records


def tiny_tokenizer(records=None):
    records = records or synthetic_records()
    texts = sorted({r.prefix for r in records} | {r.candidate for r in records})
    return train_bpe_tokenizer(texts, vocab_size=400)


def tiny_model(tokenizer, family: str = "llama", seed: int = 0):
    spec = {
        "llama": ArchSpec(family="llama", hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64),
        "qwen2": ArchSpec(family="qwen2", hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64),
        "qwen3": ArchSpec(family="qwen3", hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=1, intermediate_size=64),
        "mixtral": ArchSpec(family="mixtral", hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=48, num_experts=4, experts_per_token=2),
    }[family]
    return build_model(spec, tokenizer, seed)


def data_artifact(folder, members: int = 6, vocab_size: int = 400):
    """A data-stage artifact in ``folder`` (records of three splits and a tokenizer), as stages read it."""
    from pathlib import Path

    from recslm.config import DataConfig
    from recslm.data.build import build_data_artifact
    from recslm.data.records import write_records

    folder = Path(folder)
    src = folder / "source"
    for split, seed in (("train", 0), ("val", 1), ("test", 2)):
        write_records(synthetic_records(members=members, seed=seed), src / f"{split}.parquet")
    build_data_artifact(DataConfig(source="records", path=src, tokenizer={"vocab_size": vocab_size}), folder / "data")
    return folder / "data"


def file_digests(folder: Path, exclude: tuple[str, ...] = ("metrics.json", "stage.json")) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path, leaving out the stage's records
    (metrics.json holds wall times, stage.json the worker and its MLflow run)."""
    import hashlib

    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(Path(folder).rglob("*"))
        if path.is_file() and path.name not in exclude
    }


def shared_data(relative: str) -> Path:
    """A file of the project's shared data sets: ``$RECSLM_SHARED/data/<relative>``, by default the
    ``shared/`` folder beside the checkout (where CI lays it)."""
    import os

    root = Path(os.environ.get("RECSLM_SHARED", REPO.parent / "shared"))
    return root / "data" / relative


def require_shared(path: Path) -> Path:
    """``path`` if it exists; else skip, or fail under CI, which always has the shared folder."""
    import os

    import pytest

    if not path.is_file():
        message = f"{path}: the shared data folder is not beside the checkout (set RECSLM_SHARED to where it is)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def readme_deploy_commands(readme: Path) -> list[str]:
    """The bash block of the README's "Scheduled retraining and the UI" paragraph, as written."""
    text = readme.read_text()
    section = text[text.index("**Scheduled retraining and the UI.**") :]
    start = section.index("```bash\n") + len("```bash\n")
    block = section[start : section.index("\n```", start)]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def run_readme_deploy_commands(repo: Path, api_url: str) -> list[str]:
    """Run the README's deploy commands (all but the long-running worker) against ``api_url``,
    after removing their work pools (and so their deployments): what a fresh server sees."""
    import os
    import subprocess
    import sys

    from prefect.client.orchestration import get_client

    commands = readme_deploy_commands(repo / "README.md")
    pools = {c.split()[3] for c in commands if c.startswith("prefect work-pool create")}
    with get_client(sync_client=True) as client:
        for pool in pools:
            try:
                client.delete_work_pool(pool)
            except Exception:  # noqa: BLE001 - not there
                pass
    env = {**os.environ, "PREFECT_API_URL": api_url, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for command in commands[:-1]:
        proc = subprocess.run(["bash", "-c", command], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise AssertionError(f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return commands


def answers_health(endpoint: str) -> bool:
    """Whether a server answers ``/health`` with 200 (False when nothing listens)."""
    import httpx

    try:
        return httpx.get(f"{endpoint}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
