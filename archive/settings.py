"""The archiver's settings: the shared connection settings plus its own (REGIMETRY_ARCHIVE_*).

The input policy (payload size, allowed symbols, how far in the future a bar may be) has the worker's setting
names on purpose: one environment gives the worker and the archive the same policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connect.settings import ConnectionSettings, load


@dataclass(frozen=True, repr=False)
class ArchiveSettings(ConnectionSettings):
    archive_dir: str = "archive"
    archive_group_id: str = "regimetry-archive"  # its own consumer group: it reads every bar the worker reads
    archive_flush_bars: int = 5000  # bars buffered before a file is written (and offsets committed)
    archive_flush_seconds: float = 5.0  # or this long after the first buffered bar, whichever comes first
    archive_compact_files: int = 16  # a (symbol, date) folder with this many files is merged into one
    archive_compact_every: int = 10  # flushes between two compaction passes
    archive_session_timeout: float = 10.0  # seconds before the group gives a silent archiver's partitions away
    archive_metrics_host: str = "127.0.0.1"
    archive_metrics_port: int = 9110
    # the worker's input policy (same names, same meaning)
    max_payload_bytes: int = 4096
    max_future_seconds: int = 86_400
    allowed_symbols: tuple[str, ...] = ()
    log_level: str = "info"


def load_archive_settings(env: dict[str, str] | None = None, **overrides: Any) -> ArchiveSettings:
    """Defaults < REGIMETRY_SETTINGS file (keys of other parts ignored) < REGIMETRY_* < overrides."""
    return load(ArchiveSettings, env, strict=False, **overrides)
