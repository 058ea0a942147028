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


def _read_frame(path: Path):
    import pandas as pd

    if not path.exists():
        raise BarDataError(f"{path}: no such file")
    return pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)


def load_bars(path: str | Path, symbol: str | None = None) -> BarSeries:
    """Read a CSV (or parquet) of bars; column names are matched case-insensitively, times read as UTC."""
    path = Path(path)
    return _frame_to_series(_read_frame(path), str(path), symbol or path.stem.upper())


def _frame_to_series(df, where: str, symbol: str) -> BarSeries:
    import pandas as pd

    cols = {str(c).strip().lower().replace("unnamed: 0", ""): c for c in df.columns}
    time_col = next((cols[k] for k in TIME_COLUMNS if k in cols), None)
    if time_col is None and isinstance(df.index, pd.DatetimeIndex):
        df = df.reset_index()
        time_col = df.columns[0]
    missing = [name for name in OHLCV if name not in cols]
    if time_col is None:
        missing.insert(0, "time")
    if missing:
        raise BarDataError(f"{where}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, df.columns))}")
    try:
        ts = pd.to_datetime(df[time_col], utc=True, errors="raise")
    except (ValueError, TypeError) as exc:
        bad = pd.to_datetime(df[time_col], utc=True, errors="coerce").isna().to_numpy()
        i = int(np.argmax(bad))
        raise BarDataError(f"{where}: row {_row(i)}, column '{time_col}': not a timestamp ({exc})") from None
    if ts.isna().any():
        i = int(np.argmax(ts.isna().to_numpy()))
        raise BarDataError(f"{where}: row {_row(i)}, column '{time_col}': missing timestamp")
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
            raise BarDataError(f"{where}: row {_row(i)}, column '{name}': not a number: {df[cols[name]].iloc[i]!r}")
        values[:, j] = col.to_numpy(dtype=np.float64)
    times = np.asarray(times, dtype=np.int64)
    validate_bars(times, values, where)
    return BarSeries(times, values, symbol)


def load_table(path: str | Path) -> list[BarSeries]:
    """A CSV/parquet of bars: one series named by the file's stem, or, when it has a ``symbol`` column, one
    series per symbol (in order of first appearance; rows of a symbol need not be adjacent, and rows are
    numbered as in the file in error messages)."""
    path = Path(path)
    df = _read_frame(path)
    sym_col = next((c for c in df.columns if str(c).strip().lower() == "symbol"), None)
    if sym_col is None:
        return [_frame_to_series(df, str(path), path.stem.upper())]
    if df[sym_col].isna().any():
        i = int(np.argmax(df[sym_col].isna().to_numpy()))
        raise BarDataError(f"{path}: row {_row(i)}, column '{sym_col}': missing symbol")
    out = []
    for sym in dict.fromkeys(df[sym_col].astype(str).tolist()):
        part = df[df[sym_col].astype(str) == sym].drop(columns=[sym_col])
        # rows keep the file's numbering in messages: validate on the part, then name the file's row
        try:
            out.append(_frame_to_series(part.reset_index(drop=True), f"{path} (symbol {sym})", sym))
        except BarDataError as exc:
            raise BarDataError(f"{exc} (rows counted within symbol {sym})") from None
    return out


# Real bars shipped inside wheels, read in place (never copied): name -> (distribution, file inside it, what it is)
WHEEL_SAMPLES = {
    "eurusd": ("backtesting", "backtesting/test/EURUSD.csv", "5,000 hourly EURUSD bars, 2017-2018"),
    "goog": ("backtesting", "backtesting/test/GOOG.csv", "2,148 daily GOOG bars, 2004-2013"),
    "btcusd": ("backtesting", "backtesting/test/BTCUSD.csv", "156 monthly BTCUSD bars, 2012-2024"),
    # the daily index bars the regime issue was measured on are of this kind; the arch wheel ships them
    "sp500": ("arch", "arch/data/sp500/sp500.csv.gz", "5,031 daily S&P 500 index bars, 1999-2018"),
}


def sample_path(name: str = "EURUSD") -> Path:
    """Where a WHEEL_SAMPLES series lies in its installed wheel (found without importing the package)."""
    import importlib.metadata as md

    key = name.lower()
    if key not in WHEEL_SAMPLES:
        raise BarDataError(f"unknown sample {name!r}: use {', '.join(repr(x) for x in WHEEL_SAMPLES)}")
    dist, inner, _ = WHEEL_SAMPLES[key]
    try:
        path = Path(str(md.distribution(dist).locate_file(inner)))
    except md.PackageNotFoundError:
        raise BarDataError(f"the {key} sample ships in the {dist!r} package: pip install {dist}") from None
    if not path.exists():
        raise BarDataError(f"the {key} sample is not where the installed {dist!r} keeps it: {path}")
    return path


def eurusd_sample_path() -> Path:
    """The 5,000 hourly EURUSD bars shipped inside the `backtesting` wheel (read in place, never copied)."""
    return sample_path("EURUSD")


def load_sample(name: str) -> BarSeries:
    """Named sample data: one of WHEEL_SAMPLES ('eurusd' hourly, 'goog' daily, 'btcusd' monthly, 'sp500' daily
    index) or 'synthetic' (seeded planted regimes)."""
    if name.lower() in WHEEL_SAMPLES:
        return load_bars(sample_path(name.upper()), name.upper())
    if name.lower().startswith("synthetic"):
        from regimetry.synthetic import generate_bars

        return generate_bars().bars
    known = "; ".join(f"{k!r} ({what})" for k, (_, _, what) in WHEEL_SAMPLES.items())
    raise BarDataError(
        f"unknown sample {name!r}: use {known}; 'synthetic' or a path to a CSV/parquet file or a folder of them"
    )


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


def _read_archive_all(spec: str, symbols: list[str] | None) -> list[BarSeries]:
    from regimetry.bar_archive import read_archive

    body = spec[len(ARCHIVE_PREFIX) :]
    root, _, symbol = body.partition("#")
    if not Path(root).is_dir():
        raise BarDataError(f"{spec}: no archive folder {root!r}")
    wanted = [symbol] if symbol else symbols
    try:
        held = read_archive(root, wanted)
    except ImportError as exc:
        raise BarDataError(f"{spec}: reading an archive needs pyarrow ({exc})") from None
    if not held:
        raise BarDataError(f"{spec}: the archive holds no bars" + (f" of {', '.join(wanted)}" if wanted else ""))
    out = []
    for name in sorted(held):
        times, values = held[name]
        validate_bars(times, values, f"{spec} (symbol {name})")
        out.append(BarSeries(times, values, name))
    return out


def _sources(source: str) -> list[str]:
    """``a.csv,b.csv`` -> its parts; a path that exists with a comma in its name stays whole."""
    if "," not in source or Path(source).exists():
        return [source]
    return [p.strip() for p in source.split(",") if p.strip()]


def load_universe(source: str, symbols: list[str] | None = None) -> list[BarSeries]:
    """The bars of every symbol ``--data`` names, one BarSeries per symbol, in the order given (a folder's files
    and an archive's symbols sorted by name). ``source`` is a comma list of: a CSV/parquet file (one symbol named
    by its stem, or one per value of its ``symbol`` column), a folder of such files, ``archive:DIR`` (every
    symbol; ``archive:DIR#SYMBOL`` one), or a sample name (eurusd, goog, btcusd, sp500, synthetic). ``symbols`` keeps
    only those (in that order); naming one that is not there is an error listing what is."""
    out: list[BarSeries] = []
    for part in _sources(source):
        p = Path(part)
        if part.startswith(ARCHIVE_PREFIX):
            out.extend(_read_archive_all(part, symbols))
        elif p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".csv", ".parquet", ".pq"))
            if not files:
                raise BarDataError(f"{part}: no .csv or .parquet files in this folder")
            for f in files:
                out.extend(load_table(f))
        elif p.suffix.lower() in (".csv", ".parquet", ".pq") or p.exists():
            out.extend(load_table(p))
        else:
            s = load_sample(part)
            out.append(BarSeries(s.times, s.values, "SYNTHETIC") if part.lower().startswith("synthetic") else s)
    seen: dict[str, int] = {}
    for s in out:
        seen[s.symbol] = seen.get(s.symbol, 0) + 1
    dup = [k for k, n in seen.items() if n > 1]
    if dup:
        raise BarDataError(f"{source}: symbol(s) {', '.join(dup)} given more than once (one series per symbol)")
    if symbols:
        by = {s.symbol: s for s in out}
        unknown = [x for x in symbols if x not in by]
        if unknown:
            raise BarDataError(
                f"{source}: no bars of symbol(s) {', '.join(unknown)}; the data holds {', '.join(sorted(by)[:20])}"
            )
        out = [by[x] for x in symbols]
    if not out:
        raise BarDataError(f"{source}: no bars")
    return out


def universe_digest(universe: list[BarSeries]) -> str:
    """The data hash of a universe: one symbol's own digest (so a one-symbol universe is that series), else
    the symbols and their digests in order."""
    from regimetry.bundle import sha256_json

    if len(universe) == 1:
        return universe[0].digest()
    return sha256_json({"symbols": [[s.symbol, s.digest()] for s in universe]})


def bar_interval(series: BarSeries) -> int:
    """The median spacing of a series' bars, in seconds (0 for fewer than two bars)."""
    return int(np.median(np.diff(series.times))) if len(series) > 1 else 0
