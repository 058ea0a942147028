"""`regimetry archive`: run the bar archiver. Options map onto REGIMETRY_* settings."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def archive_cmd(
    directory: Path | None = typer.Option(None, "--dir", help="Archive folder (REGIMETRY_ARCHIVE_DIR)."),
    broker: str | None = typer.Option(None, help="Kafka bootstrap (REGIMETRY_BROKER_URL)."),
    metrics_port: int | None = typer.Option(None, help="Port of /metrics (REGIMETRY_ARCHIVE_METRICS_PORT)."),
) -> None:
    """Keep every good bar of the bars topic, exactly once, in a Parquet dataset by symbol and date
    (read it back with --data archive:DIR[#SYMBOL])."""
    given = {"archive_dir": directory, "broker_url": broker, "archive_metrics_port": metrics_port}
    for name, value in given.items():
        if value is not None:
            os.environ[f"REGIMETRY_{name.upper()}"] = str(value)
    from archive.service import main

    raise typer.Exit(main())


def register(app: typer.Typer) -> None:
    app.command("archive")(archive_cmd)
