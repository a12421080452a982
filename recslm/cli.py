"""The ``recslm`` command's library half (typer): serve, bench, plan, eval, compare, data, config, teacher.

``recslm run`` starts the Prefect flow, so it lives in the top layer (``flows/cli.py``,
the console script), which adds it to this ``app``; the library never imports the flows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from recslm.config import PipelineConfig, iter_fields, load_config
from recslm.errors import ConfigError, RecslmError
from recslm.serve.limits import ServeLimits

app = typer.Typer(help="recslm: distill, prune, quantize and serve recommendation LLMs.", no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Build and check ranking data.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect pipeline configs.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
teacher_app = typer.Typer(help="The shipped demo teacher.", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")
store_app = typer.Typer(help="Inspect the artifact store.", no_args_is_help=True)
app.add_typer(store_app, name="store")

# markup off: messages and tables carry paths, names and data ("rec[v2].jsonl") that rich
# would otherwise read as markup, dropping "[v2]" or crashing on "[/x]"
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)

ConfigArg = Annotated[Path, typer.Argument(help="Pipeline config YAML (e.g. configs/demo.yaml).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a field: --set teacher.train.epochs=2 (repeatable).")]


def fail(exc: RecslmError) -> typer.Exit:
    """The one way a command reports an error: one line on stderr, exit code 2."""
    err_console.print(Text.assemble(("error:", "bold red"), f" {exc}"), highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _bad_rows_policy(value: str) -> str:
    """Validate --on-bad-rows (shared by `data check` and `eval`)."""
    if value not in ("error", "skip"):
        raise RecslmError(f"--on-bad-rows: expected error or skip, got {value!r}")
    return value


def print_table(table: Table) -> None:
    """A log file or pipe gets rich's 80 columns, which would fold names and paths: print wide there."""
    (console if console.is_terminal else Console(width=220, markup=False)).print(table)


def print_summary(summary: dict) -> None:
    """The final table: stages (cached or not, time) and models (AUC per task, mean, delta)."""
    stages = Table(title=f"run {summary['run_id']} ({summary['wall_s']:.1f} s)")
    for col in ("stage", "cached", "wall s", "key"):
        stages.add_column(col)
    for name, rec in summary["stages"].items():
        stages.add_row(name, "yes" if rec["cached"] else "no", f"{rec['wall_s']:.1f}", rec["key"][:12])
    console.print(stages)
    if any(m.get("task") == "generative" for m in summary["models"]):
        print_generative_models(summary)
    else:
        print_ranking_models(summary)
    if summary.get("winner"):
        console.print(f"winner (on val): {summary['winner']}")
    if summary.get("registry"):
        reg = summary["registry"]
        console.print(f"registry: {reg['candidate']} is {reg['model_name']} v{reg['candidate_version']}, {reg['promotion']['verdict']} ({reg['promotion']['reason']})", soft_wrap=True)
    console.print(f"summary: {Path(summary['run_dir']) / 'summary.json'}", soft_wrap=True)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_generative_models(summary: dict) -> None:
    """The generative task's models: response loss on test (reported) and val (decided on), the
    val-loss increase vs the teacher, the sentiment task metric and the divergence to the teacher."""
    models = Table(title="models: response loss on test (reported) and val (decided on); increase vs the teacher; sentiment agreement (balanced accuracy); KL to the teacher")
    for col in ("model", "role", "params", "non-emb", "test loss", "val loss", "val increase %", "test sentiment", "val sentiment", "test KL"):
        models.add_column(col, justify="right" if col not in ("model", "role") else "left", no_wrap=True)
    for m in summary["models"]:
        models.add_row(
            m["name"], m["role"], f"{m['params']:,}", _fmt(m.get("params_non_embedding"), ","), _fmt(m.get("loss"), ".4f"), _fmt(m.get("val_loss"), ".4f"),
            _fmt(m.get("val_loss_increase_pct"), "+.2f"), _fmt(m.get("sentiment"), ".3f"), _fmt(m.get("val_sentiment"), ".3f"), _fmt(m.get("divergence"), ".4f"),
        )  # fmt: skip
    print_table(models)
    gate = summary.get("teacher_gate")
    if gate:
        console.print(f"teacher gate: {'passes' if gate['passed'] else 'FAILS'} (teacher val loss {_fmt(gate.get('teacher_val_loss'), '.4f')}; "
                      f"best SFT {gate.get('best_sft') or '-'} {_fmt(gate.get('best_sft_val_loss'), '.4f')})", soft_wrap=True)  # fmt: skip


def print_ranking_models(summary: dict) -> None:
    """The ranking task's models: AUC per task on test and the val mean, deltas vs the teacher, and the teacher gate."""
    tasks = sorted({t for m in summary["models"] for t in m["auc"]})
    models = Table(title="models: AUC on test (reported) and val (decided on); delta vs the teacher; params total / non-embedding")
    for col in ("model", "role", "params", "non-emb", *[f"AUC {t}" for t in tasks], "AUC mean", "delta %", "val mean", "val delta %"):
        models.add_column(col, justify="right" if col not in ("model", "role") else "left", no_wrap=True)
    for m in summary["models"]:
        val_mean, val_delta, non_embedding = m.get("val_auc_mean"), m.get("val_auc_delta_pct"), m.get("params_non_embedding")
        models.add_row(
            m["name"], m["role"], f"{m['params']:,}", f"{non_embedding:,}" if non_embedding is not None else "-",
            *[f"{m['auc'].get(t, float('nan')):.4f}" for t in tasks], f"{m['auc_mean']:.4f}", f"{m['auc_delta_pct']:+.2f}",
            f"{val_mean:.4f}" if val_mean is not None else "-", f"{val_delta:+.2f}" if val_delta is not None else "-",
        )
    print_table(models)
    if summary.get("teacher_gate"):
        gate = summary["teacher_gate"]
        console.print(f"teacher gate: {'passes' if gate['passed'] else 'FAILS'} (teacher val {gate['teacher_val_auc_mean']:.4f}; "
                      f"best baseline {gate['best_baseline'] or '-'} {gate['best_baseline_val_auc_mean'] or float('nan'):.4f}; "
                      f"best SFT {gate['best_sft'] or '-'} {gate['best_sft_val_auc_mean'] or float('nan'):.4f})", soft_wrap=True)  # fmt: skip
        for split, d in (gate.get("vs_best_baseline") or {}).items():
            console.print(f"  teacher - {gate['best_baseline']} on {split}: {d['difference']:+.4f}, 95% interval [{d['low']:+.4f}, {d['high']:+.4f}] "
                          f"(paired bootstrap over {int(d['members'])} members)", soft_wrap=True, highlight=False)  # fmt: skip


@app.command()
def serve(
    model_dir: Annotated[Path, typer.Argument(help="Hugging Face model directory (model and tokenizer), e.g. runs/store/prune/<key>/model.")],
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 30000,
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 for all).")] = "127.0.0.1",
    cache_tokens: Annotated[int, typer.Option(help="Radix prefix-cache budget in tokens (0 = no prefix cache).")] = 200_000,
    batch_window_ms: Annotated[float, typer.Option(help="How long the batcher waits for more requests once one arrived (0: take what queued meanwhile).")] = 0.0,
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads (default: torch's).")] = None,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="Largest request body; larger ones get a 413 before they are parsed.")] = ServeLimits.max_body_bytes,
    max_items: Annotated[int, typer.Option(min=1, help="Most items in one /v1/score request (400 beyond).")] = ServeLimits.max_items,
    max_request_tokens: Annotated[int, typer.Option(min=1, help="Most tokens in one request: query + items, or prompt + max_new_tokens (400 beyond).")] = ServeLimits.max_request_tokens,
    max_batch_tokens: Annotated[int, typer.Option(min=1, help="Most packed item tokens in one scoring forward (bounds memory; larger batches are split).")] = ServeLimits.max_batch_tokens,
) -> None:
    """Serve a model with the local engine: SGLang's /generate, /v1/score, /health and /model_info."""
    from recslm.serve.server import serve as run_server

    if not (model_dir / "config.json").is_file():
        raise fail(RecslmError(f"{model_dir}: not a Hugging Face model directory (config.json missing)"))
    limits = ServeLimits(max_body_bytes=max_body_bytes, max_items=max_items, max_request_tokens=max_request_tokens, max_batch_tokens=max_batch_tokens)
    run_server(model_dir, host=host, port=port, cache_tokens=cache_tokens, batch_window_ms=batch_window_ms, threads=threads, limits=limits)


@app.command()
def bench(
    endpoint: Annotated[str, typer.Option(help="Server base URL: the local engine or any SGLang server.")] = "http://127.0.0.1:30000",
    members_per_s: Annotated[list[float], typer.Option("--members-per-s", help="Poisson arrival rate; repeat for a sweep; 0 = closed loop (max throughput).")] = [4.0],  # noqa: B006
    candidates: Annotated[int, typer.Option(help="k candidates per member.")] = 16,
    prefix_tokens: Annotated[int, typer.Option(help="P: the member's shared prefix length.")] = 512,
    candidate_tokens: Annotated[int, typer.Option(help="Tokens per candidate.")] = 8,
    output_tokens: Annotated[int, typer.Option(help="N: 1 = ranking (/v1/score); > 1 needs --api generate.")] = 1,
    api: Annotated[str, typer.Option(help="score (one request per member) or generate (k streamed requests per member).")] = "score",
    duration_s: Annotated[float, typer.Option(help="Seconds per load level.")] = 30.0,
    member_pool: Annotated[int, typer.Option(help="Distinct members; the first visit of each is cold, later ones hot.")] = 64,
    concurrency: Annotated[int, typer.Option(help="Workers in closed-loop mode.")] = 4,
    split_items: Annotated[bool, typer.Option(help="score: one request per candidate instead of one per member.")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write all results to this JSON file.")] = None,
) -> None:
    """Load-test a server with "one member, k candidates" traffic: TTFT p50/p99, TPOT, throughput, cache hits."""
    import asyncio
    import datetime
    import platform

    from recslm.serve.bench import Workload, run_workload, table
    from recslm.serve.client import ServerError

    results = []
    try:
        for rate in members_per_s:
            w = Workload(members_per_s=rate, candidates=candidates, prefix_tokens=prefix_tokens, candidate_tokens=candidate_tokens, output_tokens=output_tokens,
                         duration_s=duration_s, member_pool=member_pool, concurrency=concurrency, api=api, split_items=split_items)  # fmt: skip
            results.append(asyncio.run(run_workload(endpoint, w)))
            console.print(table(results[-1]))
    except (ServerError, ValueError) as exc:
        raise fail(RecslmError(str(exc))) from None
    if json_out:
        meta = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "machine": f"{platform.node()} {os.cpu_count()} cpus"}
        json_out.write_text(json.dumps({**meta, "results": results}, indent=2))


@app.command("plan")
def plan_(
    bench_json: Annotated[Path, typer.Argument(help="A `recslm bench --json` file (ideally a sweep of --members-per-s).")],
    target: Annotated[float, typer.Option(help="Target load in members per second.")],
    slo_p99_ms: Annotated[float, typer.Option(help="p99 member latency objective in ms.")],
    burst: Annotated[float, typer.Option(help="Peak-to-average load factor to provision for.")] = 1.5,
    spare: Annotated[int, typer.Option(help="Extra replicas so the fleet survives losing that many.")] = 1,
    tensor_parallel: Annotated[int, typer.Option(help="GPUs per replica.")] = 1,
) -> None:
    """Replicas and GPUs for a target load and p99 SLO, from benchmark results of one replica."""
    from recslm.serve.capacity import CapacityError, parse_results, plan

    try:
        document = json.loads(bench_json.read_bytes())
    except OSError as exc:
        raise fail(RecslmError(f"{bench_json}: cannot read it ({exc.strerror or exc})")) from None
    except (ValueError, RecursionError) as exc:  # bad JSON, not UTF-8, nested too deep, a 5,000-digit number
        raise fail(RecslmError(f"{bench_json}: not JSON ({type(exc).__name__}: {str(exc)[:200]})")) from None
    try:
        results = parse_results(document, str(bench_json))
        console.print(plan(results, target, slo_p99_ms, burst=burst, spare=spare, tensor_parallel=tensor_parallel).describe())
    except (CapacityError, ValueError) as exc:
        raise fail(RecslmError(str(exc))) from None


@app.command("eval")
def eval_(
    model_dir: Annotated[Path, typer.Argument(help="Hugging Face model directory (model and tokenizer).")],
    data: Annotated[Path, typer.Argument(help="A data artifact folder (records/ inside) or a .jsonl/.parquet records file.")],
    split: Annotated[str, typer.Option(help="Split to score when DATA is a data artifact folder.")] = "test",
    prefix_sharing: Annotated[bool, typer.Option(help="Reuse each member's prefix KV cache across its candidates.")] = True,
    on_bad_rows: Annotated[str, typer.Option(help="For a records file: error or skip.")] = "error",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the metrics to this JSON file.")] = None,
) -> None:
    """Score records with a model: AUC per task and mean."""
    from recslm.data.build import load_split, records_path, tokenizer_path
    from recslm.data.records import load_records
    from recslm.evaluate.evaluate import evaluate_records
    from recslm.progress import progress_bar

    try:
        if data.is_dir():
            if not records_path(data, split).is_file():
                raise RecslmError(f"{data}: no records/{split}.parquet; expected a data artifact folder")
            records, tok_dir = load_split(data, split), tokenizer_path(data)
        else:
            loaded = load_records(data, _bad_rows_policy(on_bad_rows))  # type: ignore[arg-type]
            if loaded.bad_rows:
                err_console.print(f"skipped {loaded.bad_rows} bad rows of {data}")
            records, tok_dir = loaded.records, None
        with progress_bar("scoring") as on_progress:
            metrics = evaluate_records(model_dir, records, prefix_sharing=prefix_sharing, data_tokenizer_dir=tok_dir, on_progress=on_progress)
    except RecslmError as exc:
        raise fail(exc) from None
    table = Table(title=f"{model_dir} on {data}")
    table.add_column("task")
    table.add_column("AUC", justify="right")
    for task, auc in metrics["auc"].items():
        table.add_row(task, f"{auc:.4f}")
    table.add_row("mean", f"{metrics['auc_mean']:.4f}")
    console.print(table)
    console.print(f"{metrics['examples']} examples, {metrics['examples_per_s']:.1f} examples/s, answer loss {metrics['loss']:.4f}")
    if json_out:
        json_out.write_text(json.dumps(metrics, indent=2))


@data_app.command("build")
def data_build(config: ConfigArg, out: Annotated[Path, typer.Option(help="Output folder (records/ and tokenizer/).")], set_: SetOpt = None) -> None:
    """Build the ranking records and tokenizer of a config's data section into a folder."""
    from recslm.data.build import build_data_artifact

    try:
        cfg = load_config(config, set_ or [])
        metrics = build_data_artifact(cfg.data, out)
    except RecslmError as exc:
        raise fail(exc) from None
    table = Table(title=f"data in {out}")
    for col in ("split", "task", "groups", "records", "positive rate"):
        table.add_column(col)
    for split, per_task in metrics["splits"].items():
        for task, s in per_task.items():
            table.add_row(split, task, str(s["groups"]), str(s["records"]), f"{s['positive_rate']:.3f}")
    console.print(table)
    console.print(f"vocabulary {metrics['vocab_size']}, prefix {metrics['prefix_tokens_mean']:.0f} tokens, candidate {metrics['candidate_tokens_mean']:.0f} tokens (means)")


@data_app.command("check")
def data_check(
    path: Annotated[Path, typer.Argument(help="A .jsonl or .parquet ranking-records file.")],
    on_bad_rows: Annotated[str, typer.Option(help="error: list bad rows and fail; skip: count them.")] = "error",
) -> None:
    """Validate a records file row by row."""
    from recslm.data.records import load_records

    try:
        loaded = load_records(path, _bad_rows_policy(on_bad_rows))  # type: ignore[arg-type]
    except RecslmError as exc:
        raise fail(exc) from None
    tasks = sorted({r.task for r in loaded.records})
    console.print(f"{path}: {len(loaded.records)} valid records, {loaded.bad_rows} bad rows skipped, tasks {tasks}", soft_wrap=True)


@app.command("compare")
def compare(
    run_dir: Annotated[Path, typer.Argument(help="A finished run's folder (holds summary.json).")],
    a: Annotated[str, typer.Argument(help="Model name (teacher, a student, a baseline, ...).")],
    b: Annotated[str, typer.Argument(help="The model to compare it with.")],
    draws: Annotated[int, typer.Option(help="Bootstrap draws over members.")] = 1000,
) -> None:
    """A - B in mean AUC on val and the reported split, with a paired member-bootstrap 95% interval."""
    from recslm.evaluate.compare import compare_models

    try:
        file = run_dir / "summary.json"
        if not file.is_file():
            raise ConfigError(f"{file}: not found; pass a run folder")
        result = compare_models(json.loads(file.read_text()), a, b, draws=draws)
    except RecslmError as exc:
        raise fail(exc) from None
    for split, d in result.items():
        console.print(f"{a} - {b} on {split}: {d.text()}", highlight=False)


def _git_commit() -> str | None:
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
    except (OSError, subprocess.CalledProcessError):
        return None
    commit = head.stdout.strip()
    return (commit + "+uncommitted changes" if dirty.stdout.strip() else commit) or None


@teacher_app.command("export")
def teacher_export(
    config: ConfigArg,
    run_dir: Annotated[Path, typer.Argument(help="The finished run of CONFIG (its folder holds summary.json).")],
    out: Annotated[Path, typer.Option(help="Checkpoint folder to (re)write, with README.md and card.json.")] = Path("models/demo-teacher"),
    set_: SetOpt = None,
) -> None:
    """Copy a run's teacher out of the store as a shipped checkpoint with its card."""
    from recslm.models.card import export_teacher

    try:
        cfg = load_config(config, set_ or [])
        summary_file = run_dir / "summary.json"
        recorded = json.loads(summary_file.read_text()).get("config_hash") if summary_file.is_file() else None
        if recorded is not None and recorded != cfg.config_hash():
            raise ConfigError(f"{summary_file}: written by another config (hash {recorded[:12]}, {config} is {cfg.config_hash()[:12]}); pass the config and --set overrides of that run")
        command = " ".join(["recslm run", str(config), *[f"--set {item}" for item in set_ or []], "--run-id", run_dir.name])
        from recslm.stages.base import without_later_defaults
        from recslm.stages.data import LATER_DATA_FIELDS

        data_section = without_later_defaults(cfg.data, LATER_DATA_FIELDS)  # as the data stage's key reads it
        card = export_teacher(summary_file, data_section, out, command, _git_commit())
    except RecslmError as exc:
        raise fail(exc) from None
    console.print(f"{out}: teacher {card['params']:,} params, val mean AUC {card['teacher']['val_auc_mean']:.4f}, test {card['teacher']['auc_mean']:.4f}", highlight=False)


@store_app.command("verify")
def store_verify(
    store: Annotated[Path, typer.Argument(help="A local artifact store folder (store.uri; by default <run.root>/store).")] = Path("runs/store"),
    quarantine: Annotated[bool, typer.Option(help="Move corrupt artifacts to <store>/_corrupt/, so the next run rebuilds them.")] = False,
) -> None:
    """Re-hash every published artifact against the manifest in its stage.json; exit code 2 if any is corrupt (and left in place)."""
    from recslm.store.integrity import verify_store

    if not store.is_dir():
        raise fail(ConfigError(f"{store}: not a folder; expected a local artifact store (e.g. runs/store)"))
    verdicts = verify_store(store, quarantine=quarantine)
    table = Table(title=f"artifacts in {store}")
    for col in ("stage", "key", "status", "problem"):
        table.add_column(col, overflow="fold")
    for v in verdicts:
        problem = "; ".join(f"{p.file} {p.what}" for p in v.problems) + (f" (moved to {v.moved_to})" if v.moved_to else "")
        table.add_row(v.stage, v.key[:12], v.status, problem)
    print_table(table)
    counts = {status: sum(v.status == status for v in verdicts) for status in ("ok", "corrupt", "unverified")}
    console.print(f"{counts['ok']} ok, {counts['corrupt']} corrupt, {counts['unverified']} unverified (published before manifests)", highlight=False)
    if counts["corrupt"] and not quarantine:
        raise fail(RecslmError(f"{counts['corrupt']} corrupt artifact(s) in {store}; `recslm store verify {store} --quarantine` moves them aside"))


@config_app.command("show")
def config_show(config: ConfigArg, set_: SetOpt = None) -> None:
    """Print the validated config with every default filled in."""
    try:
        cfg = load_config(config, set_ or [])
    except RecslmError as exc:
        raise fail(exc) from None
    console.print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), highlight=False)
    console.print(f"# config_hash: {cfg.config_hash()}")


@config_app.command("fields")
def config_fields() -> None:
    """List every config field with its type, default and description."""
    table = Table(title="PipelineConfig fields")
    for col in ("field", "type", "default", "description"):
        table.add_column(col, overflow="fold")
    for name, type_name, default, description in iter_fields(PipelineConfig):
        table.add_row(name, type_name, json.dumps(default, default=str), description)
    print_table(table)


if __name__ == "__main__":
    app()
