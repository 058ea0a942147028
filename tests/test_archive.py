"""The bar archive (regimetry/bar_archive.py, archive/service.py): every good bar exactly once, whatever kills it.

The format is checked on its own (append, read back, recover, compact), then the archiver end to end on the
embedded stack: killed at each crash point in turn (before a file is renamed into place, between a write and
its offset commit, inside a compaction) and by SIGKILL while bars flow, restarted each time; at the end every
good bar is in the dataset once, with its values, and no bad bar is.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import series

from regimetry.bar_archive import CRASH_ENV, ArchiveDataset, ArchivedBar, read_archive


def bars_of(symbol: str, n: int, seed: int) -> list[ArchivedBar]:
    b = series(symbol, n, seed=seed)
    return [ArchivedBar(symbol, int(t), tuple(map(float, v)), 0, i) for i, (t, v) in enumerate(zip(b.times, b.values))]


def raw_rows(root) -> list[tuple[str, int]]:
    """(symbol, time) of every row of every file, duplicates kept: what exactly-once is checked on."""
    import pyarrow.parquet as pq

    out = []
    for p in ArchiveDataset(root).files():
        t = pq.read_table(p, columns=["symbol", "time"])
        out += list(zip(t.column("symbol").to_pylist(), t.column("time").to_pylist()))
    return out


# -- the format -----------------------------------------------------------------------------------------
def test_append_and_read_back(tmp_path):
    ds = ArchiveDataset(tmp_path)
    a, b = bars_of("AAA", 60, 1), bars_of("BBB", 30, 2)
    ds.append(a[:40] + b)
    ds.append(a[40:])
    got = read_archive(tmp_path)
    assert set(got) == {"AAA", "BBB"}
    t, v = got["AAA"]
    np.testing.assert_array_equal(t, [x.time for x in a])
    np.testing.assert_array_equal(v, [x.values for x in a])
    assert ds.known_times() == {"AAA": {x.time for x in a}, "BBB": {x.time for x in b}}
    # partitioned by symbol and UTC date (hourly bars: several dates)
    folders = {p.parent.relative_to(tmp_path).parts for p in ds.files()}
    assert all(s.startswith("symbol=") and d.startswith("date=") for s, d in folders)
    lo, hi = int(t[10]), int(t[20])
    t2, _ = read_archive(tmp_path, ["AAA"], lo, hi)["AAA"]
    assert t2[0] == lo and t2[-1] == hi and len(t2) == 11


def test_recover_removes_unfinished_files_and_finishes_a_compaction(tmp_path, monkeypatch):
    ds = ArchiveDataset(tmp_path)
    a = bars_of("AAA", 24, 3)  # hourly bars: one or two dates
    for i in range(0, 24, 4):
        ds.append(a[i : i + 4])
    folder = ds.files()[0].parent
    (folder / "part-1-x.parquet.tmp").write_bytes(b"half a file")
    monkeypatch.setenv(CRASH_ENV, "compaction_before_delete")
    import os

    exits = []

    def fake_exit(code: int) -> None:  # what os._exit would do, minus killing pytest
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    with pytest.raises(SystemExit):
        ds.compact(min_files=2)
    assert exits == [137]
    assert len(raw_rows(tmp_path)) > 24  # the merged file and its parts both there: the crash window
    monkeypatch.delenv(CRASH_ENV)
    done = ds.recover()
    assert done["temporary_files_removed"] == 1 and done["compacted_parts_removed"] > 0
    rows = raw_rows(tmp_path)
    assert sorted(rows) == sorted(("AAA", x.time) for x in a)  # exactly once again
    compacted = [p for p in ds.files() if p.name.startswith("compact-")]
    assert compacted and all(list(p.parent.glob("*.parquet")) == [p] for p in compacted)  # parts gone


def test_compaction_keeps_every_row_once(tmp_path):
    ds = ArchiveDataset(tmp_path)
    a = bars_of("AAA", 48, 4)
    for i in range(0, 48, 3):
        ds.append(a[i : i + 3])
    n_before = len(ds.files())
    assert ds.compact(min_files=4) >= 1
    assert len(ds.files()) < n_before
    assert sorted(raw_rows(tmp_path)) == sorted(("AAA", x.time) for x in a)
    np.testing.assert_array_equal(read_archive(tmp_path)["AAA"][1], [x.values for x in a])


def test_data_option_reads_an_archive(tmp_path):
    from regimetry.data import BarDataError, resolve_data

    ds = ArchiveDataset(tmp_path)
    ds.append(bars_of("AAA", 50, 5))
    s = resolve_data(f"archive:{tmp_path}")
    assert s.symbol == "AAA" and len(s) == 50
    ds.append(bars_of("BBB", 20, 6))
    with pytest.raises(BarDataError, match="holds 2 symbols"):
        resolve_data(f"archive:{tmp_path}")
    assert len(resolve_data(f"archive:{tmp_path}#BBB")) == 20
    with pytest.raises(BarDataError, match="no bars of 'CCC'"):
        resolve_data(f"archive:{tmp_path}#CCC")


# -- the archiver on the embedded stack -----------------------------------------------------------------
TOPIC = "bars-archive"


@pytest.mark.slow
def test_archiver_keeps_every_good_bar_exactly_once_across_crashes(stack, tmp_path):
    from devstack.kafka_kit import bar_message, interleave, produce, series_messages
    from devstack.stack import create_topics, metric_value, metrics_text, start_archiver, wait_until

    create_topics(stack.bootstrap, {TOPIC: 2})
    data = {s: series(s, 400, seed=70 + i) for i, s in enumerate(("ARC1", "ARC2", "ARC3"))}
    msgs = interleave(*[series_messages(s, b.times, b.values) for s, b in data.items()])
    t0, v0 = int(data["ARC1"].times[5]), data["ARC1"].values[5].tolist()
    bad = [
        (b"ARC1", b"{not json"),
        (b"ARC2", bar_message("ARC2", 1_700_000_000, (1.0, 0.5, 2.0, 1.0, 1.0))),  # high < low
        (b"ARC1", bar_message("ARC1", t0, v0)),  # a duplicate of a good bar: archived once
    ]
    expected = sorted((s, int(t)) for s, b in data.items() for t in b.times)
    settings = {"archive_dir": str(tmp_path / "archive"), "bars_topic": TOPIC, "archive_flush_bars": 40}
    settings.update(archive_flush_seconds=0.2, archive_compact_files=2, archive_compact_every=2)
    settings["archive_session_timeout"] = 6.0  # a killed archiver's partitions move on sooner
    assert CRASH_ENV == "REGIMETRY_ARCHIVE_CRASH_AT"  # set below as the setting archive_crash_at

    def run(name: str, crash_at: str | None, after: list) -> int | None:
        """Start an archiver that dies at `crash_at` (None: one SIGKILLed once it wrote a file), feed `after`."""
        extra = {"archive_crash_at": crash_at} if crash_at else {}
        proc = start_archiver(stack, tmp_path, name=name, ready=False, **settings, **extra)
        produce(stack.bootstrap, TOPIC, after)
        if crash_at:
            wait_until(lambda: not proc.alive(), 60, f"{name} to crash at {crash_at}")
            return proc.proc.returncode

        def wrote() -> bool:
            return (metric_value(metrics_text(proc.port), "regimetry_archive_files_written_total") or 0) >= 1

        wait_until(wrote, 60, f"{name} to write a file")
        return proc.kill()

    chunks = [msgs[i : i + 150] for i in range(0, len(msgs), 150)]
    assert run("arc-rename", "before_rename", chunks[0] + bad) == 137
    assert run("arc-commit", "before_commit", chunks[1]) == 137
    assert run("arc-compact", "compaction_before_delete", chunks[2]) == 137
    run("arc-kill", None, chunks[3])
    final = start_archiver(stack, tmp_path, name="arc-final", **settings)
    produce(stack.bootstrap, TOPIC, [m for c in chunks[4:] for m in c] + bad[-1:])
    archive_dir = tmp_path / "archive"
    wait_until(lambda: len(set(raw_rows(archive_dir))) >= len(expected), 120, "every good bar archived")
    wait_until(lambda: metric_value(metrics_text(final.port), "regimetry_archive_lag_records") == 0, 60, "no lag")
    final.stop()
    rows = raw_rows(archive_dir)
    assert sorted(rows) == expected, "every good bar exactly once, no bad one"
    got = read_archive(archive_dir)
    for s, b in data.items():
        np.testing.assert_array_equal(got[s][0], b.times)
        np.testing.assert_allclose(got[s][1], b.values, rtol=0, atol=0)


def test_data_option_reads_every_symbol_of_an_archive(tmp_path):
    from regimetry.data import BarDataError, load_universe

    ds = ArchiveDataset(tmp_path)
    ds.append(bars_of("BBB", 20, 6))
    ds.append(bars_of("AAA", 50, 5))
    u = load_universe(f"archive:{tmp_path}")
    assert [(s.symbol, len(s)) for s in u] == [("AAA", 50), ("BBB", 20)]
    assert [s.symbol for s in load_universe(f"archive:{tmp_path}", ["BBB"])] == ["BBB"]
    assert [s.symbol for s in load_universe(f"archive:{tmp_path}#AAA")] == ["AAA"]
    with pytest.raises(BarDataError, match="no bars of CCC"):
        load_universe(f"archive:{tmp_path}", ["CCC"])
