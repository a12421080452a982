"""The ``recslm`` console script: the library's commands (``recslm.cli``) plus ``run``.

``run`` starts the pipeline flow, so it lives here in the top layer, the only place allowed
to import the flows; ``recslm.cli`` (and ``import recslm``) never pulls in Prefect or MLflow.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated, Optional

import typer

from recslm.cli import ConfigArg, SetOpt, app, fail, print_summary
from recslm.config import load_config
from recslm.errors import RecslmError


def _prefect_defaults() -> None:
    """Sensible Prefect defaults for a local run; anything set in the environment wins."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


class _ExpectedErrorsInOneLine(logging.Filter):
    """Prefect logs every exception a flow or task raises with its traceback. For recslm's own
    errors (bad config, data, checkpoint: :class:`RecslmError`) the message is the whole story
    and the CLI prints it as its last line; the traceback is noise, shown only with --debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], RecslmError):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_prefect_tracebacks() -> None:
    quiet = _ExpectedErrorsInOneLine()
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("prefect"))]
    for logger in loggers:
        for handler in logger.handlers:
            if quiet.__class__ not in {type(f) for f in handler.filters}:
                handler.addFilter(quiet)


@app.command()
def run(
    config: ConfigArg,
    set_: SetOpt = None,
    run_id: Annotated[Optional[str], typer.Option(help="Run id (default: time stamp + random suffix).")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks (Prefect's and recslm's) for recslm's own errors too.")] = False,
) -> None:
    """Run the pipeline and write <run.root>/<run id>/summary.json."""
    try:
        cfg = load_config(config, set_ or [])
        _prefect_defaults()
        from flows.compress import compress  # Prefect and MLflow load only when a run starts

        if not debug:
            _quiet_prefect_tracebacks()
        summary = compress(cfg, run_id=run_id)
    except RecslmError as exc:
        if debug:
            raise
        raise fail(exc) from None
    print_summary(summary.model_dump(mode="json"))


@app.command()
def reproduce(
    config: ConfigArg,
    quick: Annotated[bool, typer.Option(help="Every row on tiny settings (the study's quick_* fields): a few minutes.")] = False,
    study_id: Annotated[Optional[str], typer.Option(help="Study id (default: time stamp + random suffix); the report goes to <run.root>/reproduce/<id>/.")] = None,
    rows: Annotated[Optional[str], typer.Option(help="Only these rows, comma-separated (e.g. gen_kd_vs_sft,gen_losses); default: the config's rows.")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks for recslm's own errors too.")] = False,
) -> None:
    """Re-measure the paper's findings: every arm at every seed, effects with 95 % intervals, computed verdicts."""
    from recslm.cli import console
    from recslm.reproduce.study_config import load_study, study_with_rows

    try:
        study = load_study(config)
        if rows:
            study = study_with_rows(study, [r.strip() for r in rows.split(",") if r.strip()], config)
        _prefect_defaults()
        from flows.reproduce import reproduce as reproduce_flow

        if not debug:
            _quiet_prefect_tracebacks()
        result = reproduce_flow(study, quick=quick, study_id=study_id, name=config.stem)
    except RecslmError as exc:
        if debug:
            raise
        raise fail(exc) from None
    from rich.table import Table

    from recslm.cli import print_table

    table = Table(title=f"findings ({'quick, ' if quick else ''}{len(result['header']['seeds'])} paired seeds; effect = b - a in the row's metric, 95 % interval)")
    for col in ("row", "b - a", "metric", "effect", "95 % interval", "verdict", "claim"):
        table.add_column(col, justify="right" if col in ("effect", "95 % interval") else "left", no_wrap=col != "claim")
    for f in result["findings"]:
        low, high = f["ci95"]
        table.add_row(f["row"], f"{f['b']} - {f['a']}", f["metric"], f"{f['effect']:+.4f}", f"[{low:+.4f}, {high:+.4f}]", f["verdict"], f["claim"])
    print_table(table)
    for f in result["findings"]:
        if f["note"]:
            console.print(f"{f['row']}: {f['note']}", soft_wrap=True)
    console.print(f"report: {result['dir']}/reproduce.md (reproduce.json, reproduce.png)", soft_wrap=True)


if __name__ == "__main__":
    app()
