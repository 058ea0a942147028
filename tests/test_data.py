"""Bad history is reported with the row and column at fault."""

import numpy as np
import pytest

from regimetry.data import BarDataError, load_bars
from regimetry.synthetic import generate_bars, write_csv

GOOD = [
    "time,open,high,low,close,volume",
    "2024-01-01T00:00:00Z,1.0,1.2,0.9,1.1,100",
    "2024-01-01T01:00:00Z,1.1,1.3,1.0,1.2,120",
    "2024-01-01T02:00:00Z,1.2,1.4,1.1,1.3,90",
]


def write(tmp_path, lines):
    p = tmp_path / "bars.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_good_csv_loads(tmp_path):
    s = load_bars(write(tmp_path, GOOD))
    assert len(s) == 3 and s.values.shape == (3, 5)
    assert s.times[1] - s.times[0] == 3600


@pytest.mark.parametrize(
    "row, replacement, pattern",
    [
        (2, "2024-01-01T01:00:00Z,1.1,1.3,1.0,nan,120", r"row 3, column 'close': value is NaN"),
        (2, "2024-01-01T01:00:00Z,1.1,1.3,1.0,inf,120", r"row 3, column 'close': value is NaN or infinite"),
        (1, "2024-01-01T00:00:00Z,-1.0,1.2,0.9,1.1,100", r"row 2, column 'open': price must be > 0"),
        (3, "2024-01-01T02:00:00Z,1.2,1.0,1.1,1.05,90", r"row 4, columns 'high'/'low'"),
        (3, "2024-01-01T01:00:00Z,1.2,1.4,1.1,1.3,90", r"row 4, column 'time': duplicate timestamp"),
        (3, "2023-12-31T02:00:00Z,1.2,1.4,1.1,1.3,90", r"row 4, column 'time': timestamps not sorted"),
        (2, "2024-01-01T01:00:00Z,1.1,1.3,1.0,abc,120", r"row 3, column 'close': not a number"),
        (2, "not-a-time,1.1,1.3,1.0,1.2,120", r"row 3, column 'time': not a timestamp"),
        (1, "2024-01-01T00:00:00Z,1.0,1.2,0.9,1.1,-5", r"row 2, column 'volume': volume must be >= 0"),
    ],
)
def test_bad_rows_are_named(tmp_path, row, replacement, pattern):
    lines = list(GOOD)
    lines[row] = replacement
    with pytest.raises(BarDataError, match=pattern):
        load_bars(write(tmp_path, lines))


def test_missing_column_is_named(tmp_path):
    lines = [",".join(l.split(",")[:5]) for l in GOOD]  # drop volume
    with pytest.raises(BarDataError, match="missing column.*volume"):
        load_bars(write(tmp_path, lines))


def test_synthetic_roundtrip_and_planted_regimes(tmp_path):
    syn = generate_bars(n_bars=1500, seed=3)
    assert len(np.unique(syn.labels)) >= 3
    # the regimes really differ in volatility and volume
    r = np.diff(np.log(syn.bars.values[:, 3]), prepend=np.log(syn.bars.values[0, 3]))
    vols = [r[syn.labels == k].std() for k in range(3)]
    assert max(vols) > 2 * min(vols)
    path = tmp_path / "syn.csv"
    write_csv(syn.bars, str(path))
    back = load_bars(path)
    assert np.array_equal(back.times, syn.bars.times) and np.abs(back.values - syn.bars.values).max() == 0
    assert np.array_equal(generate_bars(n_bars=1500, seed=3).labels, syn.labels)


def test_eurusd_sample_reads_from_installed_package():
    from regimetry.data import eurusd_sample_path, load_sample

    assert "site-packages" in str(eurusd_sample_path()) or "dist-packages" in str(eurusd_sample_path())
    s = load_sample("eurusd")
    assert len(s) == 5000 and s.symbol == "EURUSD"


def test_wheel_samples_read_in_place_with_their_own_spacing(monkeypatch):
    """Every named real sample loads from its wheel (the S&P 500 from arch's gzipped CSV) with the spacing its
    name promises; a sample whose package is absent names the package to install."""
    from regimetry import data
    from regimetry.data import bar_interval, load_sample

    day = 86400
    expected = {"eurusd": (5000, 3600), "goog": (2148, day), "sp500": (5031, day)}
    for name, (n, step) in expected.items():
        s = load_sample(name)
        assert (len(s), s.symbol) == (n, name.upper())
        assert bar_interval(s) == step, (name, bar_interval(s))
    assert bar_interval(load_sample("btcusd")) > 27 * day  # monthly: why the regime benchmark skips it
    monkeypatch.setitem(data.WHEEL_SAMPLES, "nowhere", ("no-such-distribution-x", "x/y.csv", "nothing"))
    with pytest.raises(BarDataError, match="pip install no-such-distribution-x"):
        load_sample("nowhere")


def test_parquet_bars(tmp_path):
    import pandas as pd

    syn = generate_bars(n_bars=300, seed=5)
    df = pd.DataFrame(syn.bars.values, columns=["Open", "High", "Low", "Close", "Volume"])
    df.insert(0, "timestamp", pd.to_datetime(syn.bars.times, unit="s", utc=True))
    df.to_parquet(tmp_path / "bars.parquet")
    back = load_bars(tmp_path / "bars.parquet")
    assert np.array_equal(back.times, syn.bars.times) and np.array_equal(back.values, syn.bars.values)
    df.loc[7, "Low"] = df.loc[7, "High"] * 2
    df.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(BarDataError, match="row 9, columns 'high'/'low'"):
        load_bars(tmp_path / "bad.parquet")


# -- universes: several symbols in one --data ---------------------------------------------------------------


def _two_symbol_frame(n: int = 200):
    """Two synthetic symbols whose bars interleave in time (A on the hour, B at half past), in one table."""
    import pandas as pd

    frames = []
    for sym, seed, shift in (("AAA", 1, 0), ("BBB", 2, 1800)):
        s = generate_bars(n_bars=n, seed=seed).bars
        df = pd.DataFrame(s.values, columns=["open", "high", "low", "close", "volume"])
        df.insert(0, "time", pd.to_datetime(s.times + shift, unit="s", utc=True))
        df.insert(1, "symbol", sym)
        frames.append(df)
    return pd.concat(frames).sort_values("time", kind="stable").reset_index(drop=True)


def test_universe_from_a_symbol_column_csv_and_parquet(tmp_path):
    from regimetry.data import load_universe

    df = _two_symbol_frame()
    df.to_csv(tmp_path / "u.csv", index=False)
    df.to_parquet(tmp_path / "u.parquet")
    for name in ("u.csv", "u.parquet"):
        u = load_universe(str(tmp_path / name))
        assert [s.symbol for s in u] == ["AAA", "BBB"] and [len(s) for s in u] == [200, 200]
        assert np.array_equal(u[0].values, generate_bars(n_bars=200, seed=1).bars.values)
        assert (np.diff(u[1].times) > 0).all()
    assert [s.symbol for s in load_universe(str(tmp_path / "u.csv"), ["BBB"])] == ["BBB"]


def test_universe_from_files_folder_and_comma_list(tmp_path):
    from regimetry.data import load_universe

    (tmp_path / "d").mkdir()
    for sym, seed in (("aaa", 1), ("bbb", 2)):
        write_csv(generate_bars(n_bars=150, seed=seed).bars, str(tmp_path / "d" / f"{sym}.csv"))
    assert [s.symbol for s in load_universe(str(tmp_path / "d"))] == ["AAA", "BBB"]
    both = f"{tmp_path / 'd' / 'bbb.csv'},{tmp_path / 'd' / 'aaa.csv'}"
    assert [s.symbol for s in load_universe(both)] == ["BBB", "AAA"]
    assert [(s.symbol, len(s)) for s in load_universe("eurusd,goog")] == [("EURUSD", 5000), ("GOOG", 2148)]


def test_universe_errors_are_clear(tmp_path):
    from regimetry.data import load_universe

    write_csv(generate_bars(n_bars=150, seed=1).bars, str(tmp_path / "aaa.csv"))
    with pytest.raises(BarDataError, match=r"no bars of symbol\(s\) ZZZ; the data holds AAA"):
        load_universe(str(tmp_path / "aaa.csv"), ["ZZZ"])
    with pytest.raises(BarDataError, match="AAA given more than once"):
        load_universe(f"{tmp_path / 'aaa.csv'},{tmp_path / 'aaa.csv'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BarDataError, match="no .csv or .parquet files"):
        load_universe(str(tmp_path / "empty"))
    df = _two_symbol_frame(50)
    df.loc[df.index[df["symbol"] == "BBB"][3], "close"] = -1.0
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(BarDataError, match=r"symbol BBB.*column 'close'"):
        load_universe(str(tmp_path / "bad.csv"))
