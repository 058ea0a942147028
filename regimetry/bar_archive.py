"""The bar archive on disk: an append-only Parquet dataset, partitioned by symbol and UTC date.

Writer and reader of the format live here together, in the core: the archiver (archive/service.py) appends,
`--data archive:DIR` (regimetry/data.py) reads. pyarrow is imported only when an archive is touched.

Layout (hive-style, so pyarrow.dataset reads it with its partitioning)::

    ROOT/symbol=EURUSD/date=2017-10-02/part-<unix ns>-<random>.parquet
    ROOT/symbol=EURUSD/date=2017-10-02/compact-<unix ns>-<random>.parquet   (many parts merged into one)

Why it survives a SIGKILL at any point: a file is written under a temporary name, flushed to disk (fsync),
then renamed into place (an atomic step on POSIX) and its folder fsynced; the consumer commits its Kafka offsets
only after that. A crash before the rename leaves a temporary file, which `recover` deletes (its bars were not
committed, so they are consumed again); a crash after it and before the commit makes the same bars come
again, and the archiver drops them because their (symbol, bar time) is already in the dataset (`known_times`).
A compaction writes the merged file first, with the names of the parts it replaces in its Parquet metadata,
and deletes those parts only afterwards; `recover` finishes a compaction that a crash interrupted. So each
good bar is in the dataset exactly once; the reader de-duplicates on (symbol, bar time) all the same.

Rows: symbol (string), time (int64, epoch seconds), open/high/low/close/volume (float64), and the Kafka
partition and offset each bar was read from (for audits).
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ("symbol", "time", "open", "high", "low", "close", "volume", "partition", "offset")
TMP_SUFFIX = ".tmp"
SOURCES_KEY = b"regimetry.compacted_from"  # Parquet key-value metadata of a compacted file


@dataclass(frozen=True)
class ArchivedBar:
    symbol: str
    time: int
    values: tuple[float, float, float, float, float]  # open, high, low, close, volume
    partition: int = -1
    offset: int = -1


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("symbol", pa.string()),
            ("time", pa.int64()),
            ("open", pa.float64()),
            ("high", pa.float64()),
            ("low", pa.float64()),
            ("close", pa.float64()),
            ("volume", pa.float64()),
            ("partition", pa.int32()),
            ("offset", pa.int64()),
        ]
    )


def utc_date(epoch: int) -> str:
    return dt.datetime.fromtimestamp(int(epoch), dt.UTC).strftime("%Y-%m-%d")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unique_name(prefix: str) -> str:
    return f"{prefix}-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"


class ArchiveDataset:
    """One archive folder: atomic appends, crash recovery, compaction, and the index of what it holds."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # -- what is there ------------------------------------------------------------------------------------
    def files(self) -> list[Path]:
        """Every committed data file (temporary files excluded), in a stable order."""
        return sorted(p for p in self.root.glob("symbol=*/date=*/*.parquet"))

    def known_times(self) -> dict[str, set[int]]:
        """symbol -> bar times held: the archiver's de-duplication index (only the time column is read)."""
        import pyarrow.parquet as pq

        out: dict[str, set[int]] = {}
        for path in self.files():
            symbol = path.parent.parent.name.split("=", 1)[1]
            times = pq.read_table(path, columns=["time"]).column("time").to_numpy()
            out.setdefault(symbol, set()).update(times.tolist())
        return out

    # -- writing ------------------------------------------------------------------------------------------
    def _write_atomic(self, folder: Path, name: str, table: Any, metadata: dict[bytes, bytes] | None = None) -> Path:
        import pyarrow.parquet as pq

        folder.mkdir(parents=True, exist_ok=True)
        final = folder / name
        tmp = folder / (name + TMP_SUFFIX)
        if metadata:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        crash_point("before_rename")
        os.replace(tmp, final)
        _fsync_dir(folder)
        return final

    def append(self, bars: Sequence[ArchivedBar]) -> list[Path]:
        """Write bars as one new file per (symbol, UTC date); returns the files written (all on disk and
        renamed into place when this returns). The caller has already dropped bars the dataset holds."""
        import pyarrow as pa

        groups: dict[tuple[str, str], list[ArchivedBar]] = {}
        for b in bars:
            groups.setdefault((b.symbol, utc_date(b.time)), []).append(b)
        written = []
        for (symbol, date), rows in sorted(groups.items()):
            rows.sort(key=lambda b: b.time)
            values = np.asarray([b.values for b in rows], dtype=np.float64).reshape(-1, 5)
            table = pa.table(
                {
                    "symbol": [symbol] * len(rows),
                    "time": np.asarray([b.time for b in rows], dtype=np.int64),
                    **{name: values[:, j] for j, name in enumerate(("open", "high", "low", "close", "volume"))},
                    "partition": np.asarray([b.partition for b in rows], dtype=np.int32),
                    "offset": np.asarray([b.offset for b in rows], dtype=np.int64),
                },
                schema=_schema(),
            )
            written.append(self._write_atomic(self._folder(symbol, date), _unique_name("part"), table))
        return written

    def _folder(self, symbol: str, date: str) -> Path:
        if "/" in symbol or symbol in (".", "..") or "\0" in symbol:
            raise ValueError(f"symbol {symbol!r} cannot name a folder")
        return self.root / f"symbol={symbol}" / f"date={date}"

    # -- housekeeping -------------------------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """After a crash: delete temporary files (their bars were never committed) and finish interrupted
        compactions (delete the parts a compacted file already holds). Returns what it did."""
        import pyarrow.parquet as pq

        removed_tmp = 0
        for tmp in self.root.glob(f"symbol=*/date=*/*{TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
            removed_tmp += 1
        finished = 0
        for merged in self.root.glob("symbol=*/date=*/compact-*.parquet"):
            meta = pq.read_schema(merged).metadata or {}
            for name in meta.get(SOURCES_KEY, b"").decode().split(","):
                src = merged.parent / name
                if name and src.exists() and src != merged:
                    src.unlink()
                    finished += 1
        return {"temporary_files_removed": removed_tmp, "compacted_parts_removed": finished}

    def compact(self, min_files: int = 16) -> int:
        """Merge the files of every (symbol, date) folder holding at least ``min_files`` of them into one file
        (sorted by time, de-duplicated); returns the number of folders compacted. Crash-safe (see the module
        docstring): the merged file names its sources, which are deleted only after it is in place."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        done = 0
        folders = sorted({p.parent for p in self.files()})
        for folder in folders:
            parts = sorted(folder.glob("*.parquet"))
            if len(parts) < max(min_files, 2):
                continue
            table = pa.concat_tables([pq.read_table(p, schema=_schema()) for p in parts])
            table = table.take(pc.sort_indices(table, [("time", "ascending"), ("offset", "ascending")]))
            t = table.column("time").to_numpy()
            keep = np.ones(len(t), dtype=bool)
            keep[1:] = t[1:] != t[:-1]  # first copy of a time wins (there should be none twice)
            table = table.filter(pa.array(keep))
            sources = ",".join(p.name for p in parts)
            self._write_atomic(folder, _unique_name("compact"), table, {SOURCES_KEY: sources.encode()})
            crash_point("compaction_before_delete")
            for p in parts:
                p.unlink(missing_ok=True)
            _fsync_dir(folder)
            done += 1
        return done


def read_archive(
    root: str | Path, symbols: Iterable[str] | None = None, start: int | None = None, end: int | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """symbol -> (times (T,) int64, values (T, 5) float64), sorted by time and de-duplicated on (symbol, time),
    bars with start <= time <= end (epoch seconds; None = unbounded)."""
    import pyarrow.parquet as pq

    root = Path(root)
    wanted = set(symbols) if symbols else None
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for sym_dir in sorted(root.glob("symbol=*")):
        symbol = sym_dir.name.split("=", 1)[1]
        if wanted is not None and symbol not in wanted:
            continue
        files = sorted(sym_dir.glob("date=*/*.parquet"))
        if not files:
            continue
        cols = ["time", "open", "high", "low", "close", "volume"]
        tables = [pq.read_table(p, columns=cols) for p in files]
        t = np.concatenate([tb.column("time").to_numpy() for tb in tables]).astype(np.int64)
        v = np.concatenate([np.stack([tb.column(c).to_numpy() for c in cols[1:]], 1) for tb in tables])
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        keep = np.ones(len(t), dtype=bool)
        keep[1:] = t[1:] != t[:-1]
        if start is not None:
            keep &= t >= start
        if end is not None:
            keep &= t <= end
        if keep.any():
            out[symbol] = (t[keep], v[keep].astype(np.float64))
    return out


CRASH_ENV = "REGIMETRY_ARCHIVE_CRASH_AT"  # fault injection for the crash tests: a crash point's name


def crash_point(name: str) -> None:
    """Die like a SIGKILL (no cleanup, no flush) when the crash tests ask for this point. A no-op otherwise."""
    if os.environ.get(CRASH_ENV) == name:
        os._exit(137)
