"""Reading and checking historical OHLCV bars.

Bad history is the quietest way to get a bad model, so every problem is reported with the row (1-based, as a
spreadsheet shows it, header = row 1) and the column, and loading stops at the first kind of problem found.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regimetry.features import OHLCV

TIME_COLUMNS = ("time", "timestamp", "datetime", "date", "bar_time", "")


class BarDataError(ValueError):
    """Raised with a message that names the file, row and column at fault."""


@dataclass(frozen=True)
class BarSeries:
    """Bars of one symbol: UTC epoch seconds and a (T, 5) float64 array of open/high/low/close/volume."""

    times: np.ndarray
    values: np.ndarray
    symbol: str = "UNKNOWN"

    def __len__(self) -> int:
        return len(self.times)

    def slice(self, start: int, stop: int | None = None) -> BarSeries:
        return BarSeries(self.times[start:stop], self.values[start:stop], self.symbol)

    def digest(self) -> str:
        """sha256 of the bars (values rounded to 1e-10, so a CSV round trip keeps it): tells the same data again."""
        from regimetry.bundle import sha256_json

        return sha256_json({"t": self.times.tolist(), "v": np.round(self.values, 10).tolist()})


def iso_utc(epoch: int | float) -> str:
    """Epoch seconds as an ISO-8601 UTC timestamp with a Z suffix (regimes.csv, reports, locked profiles)."""
    return dt.datetime.fromtimestamp(int(epoch), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(i: int) -> int:
    return int(i) + 2  # 0-based data index -> spreadsheet row (header is row 1)


def validate_bars(times: np.ndarray, values: np.ndarray, source: str = "bars") -> None:
    """Raise BarDataError for the first problem: non-finite, non-positive, high<low, unsorted, duplicates."""
    for j, name in enumerate(OHLCV):
        bad = ~np.isfinite(values[:, j])
        if bad.any():
            i = int(np.argmax(bad))
            raise BarDataError(f"{source}: row {_row(i)}, column '{name}': value is NaN or infinite")
    for j, name in enumerate(OHLCV[:4]):
        bad = values[:, j] <= 0
        if bad.any():
            i = int(np.argmax(bad))
            raise BarDataError(f"{source}: row {_row(i)}, column '{name}': price must be > 0, got {values[i, j]}")
    bad = values[:, 4] < 0
    if bad.any():
        i = int(np.argmax(bad))
        raise BarDataError(f"{source}: row {_row(i)}, column 'volume': volume must be >= 0, got {values[i, 4]}")
    o, h, l, c = values[:, 0], values[:, 1], values[:, 2], values[:, 3]
    bad = h < l
    if bad.any():
        i = int(np.argmax(bad))
        raise BarDataError(f"{source}: row {_row(i)}, columns 'high'/'low': high {h[i]} < low {l[i]}")
    bad = (h < np.maximum(o, c)) | (l > np.minimum(o, c))
    if bad.any():
        i = int(np.argmax(bad))
        raise BarDataError(f"{source}: row {_row(i)}, columns 'open'/'close': outside the high-low range")
    d = np.diff(times)
    if (d == 0).any():
        i = int(np.argmax(d == 0)) + 1
        raise BarDataError(f"{source}: row {_row(i)}, column 'time': duplicate timestamp (same as row {_row(i - 1)})")
    if (d < 0).any():
        i = int(np.argmax(d < 0)) + 1
        raise BarDataError(
            f"{source}: row {_row(i)}, column 'time': timestamps not sorted (earlier than row {_row(i - 1)})"
        )


def load_bars(path: str | Path, symbol: str | None = None) -> BarSeries:
    """Read a CSV (or parquet) of bars; column names are matched case-insensitively, times read as UTC."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise BarDataError(f"{path}: no such file")
    df = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    cols = {str(c).strip().lower().replace("unnamed: 0", ""): c for c in df.columns}
    time_col = next((cols[k] for k in TIME_COLUMNS if k in cols), None)
    if time_col is None and isinstance(df.index, pd.DatetimeIndex):
        df = df.reset_index()
        time_col = df.columns[0]
    missing = [name for name in OHLCV if name not in cols]
    if time_col is None:
        missing.insert(0, "time")
    if missing:
        raise BarDataError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, df.columns))}")
    try:
        ts = pd.to_datetime(df[time_col], utc=True, errors="raise")
    except (ValueError, TypeError) as exc:
        bad = pd.to_datetime(df[time_col], utc=True, errors="coerce").isna().to_numpy()
        i = int(np.argmax(bad))
        raise BarDataError(f"{path}: row {_row(i)}, column '{time_col}': not a timestamp ({exc})") from None
    if ts.isna().any():
        i = int(np.argmax(ts.isna().to_numpy()))
        raise BarDataError(f"{path}: row {_row(i)}, column '{time_col}': missing timestamp")
    times = (
        (ts.astype("int64") // 10**9).to_numpy()
        if ts.dt.unit == "ns"
        else ts.map(lambda x: int(x.timestamp())).to_numpy()
    )
    values = np.empty((len(df), 5), dtype=np.float64)
    for j, name in enumerate(OHLCV):
        col = pd.to_numeric(df[cols[name]], errors="coerce")
        raw_bad = col.isna() & df[cols[name]].notna()
        if raw_bad.any():
            i = int(np.argmax(raw_bad.to_numpy()))
            raise BarDataError(f"{path}: row {_row(i)}, column '{name}': not a number: {df[cols[name]].iloc[i]!r}")
        values[:, j] = col.to_numpy(dtype=np.float64)
    times = np.asarray(times, dtype=np.int64)
    validate_bars(times, values, str(path))
    return BarSeries(times, values, symbol or path.stem.upper())


def eurusd_sample_path() -> Path:
    """The 5,000 hourly EURUSD bars shipped inside the `backtesting` wheel (read in place, never copied)."""
    try:
        import backtesting
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BarDataError("the EURUSD sample needs the 'backtesting' package: pip install backtesting") from exc
    return Path(backtesting.__file__).parent / "test" / "EURUSD.csv"


def load_sample(name: str) -> BarSeries:
    """Named sample data: 'eurusd' (real hourly bars) or 'synthetic' (seeded planted regimes)."""
    if name.lower() == "eurusd":
        return load_bars(eurusd_sample_path(), "EURUSD")
    if name.lower().startswith("synthetic"):
        from regimetry.synthetic import generate_bars

        return generate_bars().bars
    raise BarDataError(f"unknown sample {name!r}: use 'eurusd', 'synthetic' or a path to a CSV/parquet file")


ARCHIVE_PREFIX = "archive:"


def load_archive(spec: str) -> BarSeries:
    """``archive:DIR`` or ``archive:DIR#SYMBOL``: one symbol's bars from a bar archive (regimetry/bar_archive.py,
    written by `regimetry archive`). Without #SYMBOL the archive must hold exactly one symbol."""
    from regimetry.bar_archive import read_archive

    body = spec[len(ARCHIVE_PREFIX) :]
    root, _, symbol = body.partition("#")
    if not Path(root).is_dir():
        raise BarDataError(f"{spec}: no archive folder {root!r}")
    try:
        held = read_archive(root, [symbol] if symbol else None)
    except ImportError as exc:
        raise BarDataError(f"{spec}: reading an archive needs pyarrow ({exc})") from None
    if symbol and symbol not in held:
        raise BarDataError(f"{spec}: the archive holds no bars of {symbol!r}")
    if not held:
        raise BarDataError(f"{spec}: the archive holds no bars")
    if len(held) > 1:
        raise BarDataError(
            f"{spec}: the archive holds {len(held)} symbols ({', '.join(sorted(held)[:10])}); "
            f"name one: {ARCHIVE_PREFIX}{root}#SYMBOL"
        )
    name, (times, values) = next(iter(held.items()))
    validate_bars(times, values, spec)
    return BarSeries(times, values, name)


def resolve_data(source: str) -> BarSeries:
    """A path to a file, an archive (``archive:DIR[#SYMBOL]``), or the name of a sample."""
    if source.startswith(ARCHIVE_PREFIX):
        return load_archive(source)
    p = Path(source)
    if p.suffix.lower() in (".csv", ".parquet", ".pq") or p.exists():
        return load_bars(p)
    return load_sample(source)
