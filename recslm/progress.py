"""Rich progress bars for long work, as plain callbacks the library can take.

Library functions accept ``on_progress(done, total)`` callbacks and know nothing of the
terminal; the CLI and the tasks decide whether to draw a bar. Set ``RECSLM_PROGRESS=0``
to turn bars off (e.g. in log files).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

ProgressFn = Callable[[int, int], None]


def progress_enabled() -> bool:
    return os.environ.get("RECSLM_PROGRESS", "1") not in ("0", "false", "no")


@contextmanager
def progress_bar(description: str) -> Iterator[ProgressFn]:
    """Yield an ``update(done, total)`` callback that drives one rich progress bar."""
    if not progress_enabled():
        yield lambda done, total: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as progress:
        task_id = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task_id, completed=done, total=total)

        yield update


def counter(on_progress: ProgressFn | None, total: int) -> Callable[[int], None]:
    """Turn per-batch counts (``tick(n)``) into ``on_progress(done, total)`` calls.

    Scoring loops know how many items a batch held, not how many are done; this keeps
    the running total so each loop does not carry its own.
    """
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if on_progress is not None:
            on_progress(done, total)

    return tick
