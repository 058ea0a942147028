"""Terminal output shared by the commands: one console, a per-stage progress bar, clean fatal errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

console = Console(stderr=True)
if not console.is_terminal:  # logs and CI: do not squeeze tables and progress into 80 columns
    console.width = 120


def fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def progress_bars(label: str, on: Console = console) -> Progress:
    """Bars showing ``label`` (rich markup; task fields allowed), a count, the elapsed time and what is being
    done now; they stay on screen and in logs when done."""
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=on,
        transient=False,
    )


@contextlib.contextmanager
def stage_progress() -> Iterator:
    """Yields progress(stage, step, total, message): one bar per pipeline stage."""
    bars = progress_bars("{task.fields[stage]:<11}")
    tasks: dict[str, TaskID] = {}

    def update(stage: str, step: int, total: int, message: str = "") -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(message, total=total, stage=stage)
        bars.update(tasks[stage], completed=step, total=total, description=message)

    with bars:
        yield update
