"""Operator tools: replay pacing and interleaving, tail, report-events, topic creation, the audit log.

The commands run as real subprocesses (`python -m regimetry.cli ...`) against the session's Tansu broker and
worker; only the pacing schedule is checked with an injected clock, because waiting out a real 60x replay
would make the test slow without testing anything more.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC

import numpy as np
import pytest
from helpers import TIMEOUT, schema_validator

from ops.replay import Pace, PaceError, merged, replay
from regimetry.data import BarSeries


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "regimetry.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def hourly(symbol: str, start: int, n: int, seed: int = 0) -> BarSeries:
    from helpers import series

    s = series(symbol, n, seed=seed)
    return BarSeries(start + 3600 * np.arange(n, dtype=np.int64), s.values, symbol)


# -- pacing and interleaving (pure) ------------------------------------------------------------------------
def test_pace_parsing():
    assert Pace.parse("60x", None) == Pace(speed=60.0)
    assert Pace.parse(None, "200/s") == Pace(rate=200.0)
    assert Pace.parse("max", None) == Pace() and Pace.parse(None, None) == Pace()
    for speed, rate in [("60x", "10/s"), ("fast", None), (None, "-3/s"), ("0.0x1", None)]:
        with pytest.raises(PaceError):
            Pace.parse(speed, rate)


def test_replay_follows_the_schedule_and_interleaves_by_time():
    a = hourly("A", 0, 4)
    b = hourly("B", 1800, 3)  # half an hour after each A bar
    now = [0.0]
    sleeps: list[float] = []

    def sleep(dt: float) -> None:
        sleeps.append(dt)
        now[0] += dt

    sent: list[tuple[float, str, int]] = []
    stats = replay(
        [a, b],
        lambda sym, msg: sent.append((now[0], sym, json.loads(msg)["time"])),
        Pace(speed=60.0),
        clock=lambda: now[0],
        sleep=sleep,
    )
    assert [s for _, s, _ in sent] == ["A", "B", "A", "B", "A", "B", "A"]
    times = [t for _, _, t in sent]
    assert times == sorted(times)
    # 60x: half an hour of bar time per message = 30 s of wall time, measured from the first bar
    np.testing.assert_allclose([w for w, _, _ in sent], [(t - times[0]) / 60.0 for t in times])
    assert stats.sent == 7 and stats.per_symbol == {"A": 4, "B": 3}

    now[0], sent[:] = 0.0, []
    replay([a], lambda sym, msg: sent.append((now[0], sym, 0)), Pace(rate=2.0), clock=lambda: now[0], sleep=sleep)
    np.testing.assert_allclose([w for w, _, _ in sent], [0.0, 0.5, 1.0, 1.5])


def test_merge_keeps_each_symbol_in_order_on_equal_times():
    a, b = hourly("A", 0, 3), hourly("B", 0, 3)
    got = [(t, s) for t, s, _ in merged([a, b])]
    assert got == [(0, "A"), (0, "B"), (3600, "A"), (3600, "B"), (7200, "A"), (7200, "B")]


# -- replay against the broker -----------------------------------------------------------------------------
@pytest.mark.slow
def test_replay_command_produces_interleaved_bars(stack, tmp_path):
    from devstack.kafka_kit import Collector
    from devstack.stack import create_topics
    from ops.events_view import iso

    create_topics(stack.bootstrap, {"ops-replay": 1})  # one partition: the global order is observable
    for name, start in (("a", 0), ("b", 1200)):
        s = hourly(name, 1_500_000_000 + start, 25, seed=len(name) + start)
        rows = ["time,open,high,low,close,volume"] + [
            ",".join(map(str, [iso(t), *v])) for t, v in zip(s.times, s.values)
        ]
        (tmp_path / f"{name}.csv").write_text("\n".join(rows) + "\n")
    r = run_cli(
        "replay",
        "--csv",
        str(tmp_path / "a.csv"),
        "--csv",
        str(tmp_path / "b.csv"),
        "--symbol",
        "RA",
        "--symbol",
        "RB",
        "--rate",
        "500/s",
        "--max",
        "20",
        "--topic",
        "ops-replay",
        "--broker",
        f"kafka://{stack.bootstrap}",
    )
    assert r.returncode == 0, r.stderr
    assert "sent 40 bars" in r.stderr
    col = Collector(stack.bootstrap, "ops-replay")
    try:
        got = col.wait_for(lambda v: len(v) >= 40, TIMEOUT, "40 replayed bars")
        keys = [rec.key for rec in col.records]
    finally:
        col.close()
    assert len(got) == 40
    assert [g["time"] for g in got] == sorted(g["time"] for g in got)
    assert keys == [g["symbol"].encode() for g in got]
    assert [g["symbol"] for g in got[:4]] == ["RA", "RB", "RA", "RB"]


@pytest.mark.slow
def test_replay_refuses_bad_arguments():
    r = run_cli("replay", "--sample", "synthetic", "--speed", "60x", "--rate", "5/s")
    assert r.returncode == 2 and "not both" in r.stderr
    r = run_cli("replay")
    assert r.returncode == 2 and "--csv" in r.stderr


# -- tail and report-events on the worker's events ---------------------------------------------------------
@pytest.fixture(scope="module")
def ops_symbol(fresh_symbols) -> str:
    """The symbol whose events the tail, report-events and subscriber tests read."""
    return fresh_symbols(1)[0]


@pytest.fixture(scope="module")
def ops_events(stack, worker, model, ops_symbol):
    """Events of ops_symbol (its bars sent twice: the second time the worker re-emits the same ids)."""
    from helpers import series

    from devstack.kafka_kit import Collector, produce, series_messages

    sym = ops_symbol
    history = model.bundle.history_bars
    bars = series(sym, history + 120, seed=23)
    msgs = series_messages(sym, bars.times, bars.values)
    n = len(bars) - history + 1
    col = Collector(stack.bootstrap, "regime-events")
    try:
        produce(stack.bootstrap, "bars", msgs)
        col.wait_for(lambda v: sum(e["symbol"] == sym for e in v) >= n, TIMEOUT, f"{sym} events")
        produce(stack.bootstrap, "bars", msgs)  # redelivery: same event ids again
        vals = col.wait_for(lambda v: sum(e["symbol"] == sym for e in v) >= 2 * n, TIMEOUT, f"{sym} re-emissions")
    finally:
        col.close()
    events = [e for e in vals if e["symbol"] == sym]
    assert len({e["event_id"] for e in events}) == n
    first = {}
    for e in events:
        first.setdefault(e["event_id"], e)
    return sorted(first.values(), key=lambda e: e["bar_time"])


def test_tail_shows_transitions_and_alarms_once_each_and_renders_them():
    """follow() on regime-transitions and regime-drift records: one per id (alarm_id for alarms: two detectors
    firing on one event are two alarms), each with its own row layout."""
    from ops.events_view import alarm_line, is_alarm, is_transition, transition_line
    from ops.tail import TailOptions, follow

    t = {"event_id": "e1", "symbol": "S", "bar_time": 3600, "from": {"id": 0, "name": "calm"}}
    t |= {"to": {"id": 2, "name": "turbulent"}, "dwell": 17, "confidence": 0.9}
    a1 = {"alarm_id": "a1", "event_id": "e2", "detector": "cusum_ood", "symbol": "S", "bar_time": 7200}
    a1 |= {"value": 3.0, "statistic": 9.5, "threshold": 8.0}
    a2 = {**a1, "alarm_id": "a2", "detector": "cusum_uncertainty"}
    polls = [[json.dumps(x).encode() for x in (t, a1, a2, t, a1)], []]
    shown: list[dict] = []
    n = follow(lambda: polls.pop(0) if polls else [], shown.append, TailOptions(transitions_only=False, max_events=3))
    assert n == 3 and shown == [t, a1, a2]
    assert is_transition(t) and not is_alarm(t) and is_alarm(a1) and not is_transition(a1)
    assert (
        "calm" in transition_line(t).plain and " -> " in transition_line(t).plain and "17" in transition_line(t).plain
    )
    assert "cusum_ood" in alarm_line(a1).plain and "9.50 > 8.00" in alarm_line(a1).plain


@pytest.mark.slow
def test_one_transition_record_per_regime_change_and_identical_on_redelivery(stack, ops_symbol, ops_events):
    """regime-transitions holds one record per event whose regime changed (none for the others), its from/to
    and dwell those of the events; the bars were sent twice, so each record came twice, byte for byte."""
    from devstack.kafka_kit import Collector

    changes = [(prev, e) for prev, e in zip(ops_events, ops_events[1:]) if e["regime_changed"]]
    assert changes and not ops_events[0]["regime_changed"], "the series must contain regime changes"
    col = Collector(stack.bootstrap, "regime-transitions")
    try:
        col.wait_for(lambda v: sum(t["symbol"] == ops_symbol for t in v) >= 2 * len(changes), TIMEOUT, "both copies")
        copies = col.copies_by_event_id()
        mine = [r for r in col.records if json.loads(r.value)["symbol"] == ops_symbol]
    finally:
        col.close()
    validate = schema_validator("regime_transition.schema.json")
    got: dict[str, dict] = {}
    for r in mine:
        t = json.loads(r.value)
        validate.validate(t)
        assert r.key == ops_symbol.encode() and len(copies[t["event_id"]]) == 1, "copies identical"
        got.setdefault(t["event_id"], t)
    assert len(mine) == 2 * len(changes)
    assert list(got) == [e["event_id"] for _, e in changes]
    for t, (prev, e) in zip(got.values(), changes):
        assert (t["from"]["id"], t["to"]["id"], t["dwell"]) == (
            prev["regime"]["id"],
            e["regime"]["id"],
            prev["bars_in_regime"],
        )
        assert (t["bar_time"], t["to"]["name"], t["confidence"]) == (
            e["bar_time"],
            e["regime"]["name"],
            e["regime"]["confidence"],
        )


@pytest.mark.slow
def test_tail_json_transitions_for_one_symbol_without_duplicates(stack, ops_symbol, ops_events):
    want = [e for e in ops_events if e["regime_changed"]]
    assert want, "the series must contain regime changes for this test to mean anything"
    r = run_cli(
        "tail",
        "--from-beginning",
        "--json",
        "--symbol",
        ops_symbol,
        "--transitions-only",
        "--idle-timeout",
        "3",
        "--broker",
        stack.bootstrap,
    )
    assert r.returncode == 0, r.stderr
    got = [json.loads(x) for x in r.stdout.splitlines()]  # records of regime-transitions
    assert [t["event_id"] for t in got] == [e["event_id"] for e in want]
    assert all(t["symbol"] == ops_symbol for t in got)
    assert [(t["from"]["id"], t["to"]["id"]) for t in got] == [(e["previous_regime"], e["regime"]["id"]) for e in want]
    table = run_cli(
        "tail",
        "--from-beginning",
        "--symbol",
        ops_symbol,
        "--transitions-only",
        "--max",
        str(len(want)),
        "--broker",
        stack.bootstrap,
    )
    assert table.returncode == 0, table.stderr
    assert "regime-transitions" in table.stdout + table.stderr and "dwell" in table.stdout
    assert table.stdout.count(" -> ") == len(want)


@pytest.mark.slow
def test_tail_table_stops_after_max(stack, ops_symbol, ops_events, model):
    r = run_cli("tail", "--from-beginning", "--symbol", ops_symbol, "--max", "5", "--broker", stack.bootstrap)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("bar time (UTC)") and len(lines) == 6
    assert lines[0].split()[4:6] == ["regime", "name"]
    assert all(f" {ops_symbol} " in ln for ln in lines[1:])
    # each row names its regime as the bundle does (the name column follows the id)
    names = model.bundle.regime_names
    for ln, e in zip(lines[1:], ops_events[:5]):
        assert e["regime"]["name"] == names[e["regime"]["id"]]
        assert f" {e['regime']['id']} {names[e['regime']['id']]} " in ln, ln


@pytest.mark.slow
def test_report_events_writes_the_range_once_each(stack, ops_symbol, ops_events, tmp_path):
    from datetime import datetime

    since, until = ops_events[10]["bar_time"], ops_events[50]["bar_time"]
    want = [e for e in ops_events if since <= e["bar_time"] < until]
    since_iso = datetime.fromtimestamp(since, tz=UTC).isoformat()
    out_csv, out_json = tmp_path / "ev.csv", tmp_path / "ev.json"
    r = run_cli(
        "report-events",
        "--since",
        since_iso,
        "--until",
        str(until),
        "--symbol",
        ops_symbol,
        "--csv",
        str(out_csv),
        "--json",
        str(out_json),
        "--idle",
        "1",
        "--broker",
        stack.bootstrap,
    )
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert [row["event_id"] for row in rows] == [e["event_id"] for e in want] and len(rows) == 40
    assert [int(row["regime"]) for row in rows] == [e["regime"]["id"] for e in want]
    assert [row["regime_name"] for row in rows] == [e["regime"]["name"] for e in want]
    assert json.loads(out_json.read_text()) == want


# -- topics ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_topics_command_creates_topics_with_partition_counts_from_env(stack):
    from kafka import KafkaAdminClient

    env = {
        "REGIMETRY_BARS_TOPIC": "ops-bars",
        "REGIMETRY_EVENTS_TOPIC": "ops-events",
        "REGIMETRY_DLQ_TOPIC": "ops-dlq",
        "REGIMETRY_BARS_PARTITIONS": "3",
        "REGIMETRY_EVENTS_PARTITIONS": "2",
        "REGIMETRY_DLQ_PARTITIONS": "1",
        "REGIMETRY_BROKER_URL": f"kafka://{stack.bootstrap}",
    }
    for _ in range(2):  # idempotent
        r = run_cli("topics", env=env)
        assert r.returncode == 0, r.stderr
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
    try:
        found = {d["topic"]: len(d["partitions"]) for d in admin.describe_topics(["ops-bars", "ops-events", "ops-dlq"])}
    finally:
        admin.close()
    assert found == {"ops-bars": 3, "ops-events": 2, "ops-dlq": 1}


def test_kafka_client_config_carries_sasl_and_tls():
    from ops.kafka import bootstrap_servers, client_config
    from worker.settings import load_settings

    assert bootstrap_servers("kafka://a:9092;kafka://b:9093") == ["a:9092", "b:9093"]
    s = load_settings(
        env={
            "REGIMETRY_BROKER_URL": "kafka://k1:9094,k2:9094",
            "REGIMETRY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "REGIMETRY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "REGIMETRY_KAFKA_SASL_USERNAME": "u",
            "REGIMETRY_KAFKA_SASL_PASSWORD": "p",
            "REGIMETRY_KAFKA_SSL_CAFILE": "/ca.pem",
        }
    )
    cfg = client_config(s)
    assert cfg["bootstrap_servers"] == ["k1:9094", "k2:9094"] and cfg["security_protocol"] == "SASL_SSL"
    assert (cfg["sasl_mechanism"], cfg["sasl_plain_username"], cfg["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "u",
        "p",
    )
    assert cfg["ssl_cafile"] == "/ca.pem"
    assert "sasl_mechanism" not in client_config(load_settings(env={}))


# -- audit log ---------------------------------------------------------------------------------------------
def test_audit_log_records_loads_and_version_changes(tmp_path):
    from regimetry.audit import record_model_load

    log = tmp_path / "audit" / "models.jsonl"
    m1 = {"model_version": "v1", "files": {"encoder.onnx": "aa"}, "feature_spec_hash": "h"}
    m2 = {"model_version": "v2", "files": {"encoder.onnx": "bb"}, "feature_spec_hash": "h"}
    record_model_load(log, m1, tmp_path / "v1", group_id="g")
    record_model_load(log, m1, tmp_path / "v1", group_id="g")
    with open(log, "a") as f:
        f.write('{"torn": tr')  # a crash mid-line must not break the next record
    record_model_load(log, m2, tmp_path / "v2", group_id="g")
    lines = log.read_text().splitlines()
    docs = [json.loads(x) for x in (lines[0], lines[1], lines[2][lines[2].index('{"bundle_dir"') :])]
    assert [d["event"] for d in docs] == ["model_loaded", "model_loaded", "model_changed"]
    assert docs[2]["previous_version"] == "v1" and docs[2]["model_version"] == "v2"
    assert docs[2]["files"] == {"encoder.onnx": "bb"} and docs[2]["group_id"] == "g"


@pytest.mark.slow
def test_strategy_subscriber_example_in_the_docs_runs(stack, ops_symbol, ops_events, tmp_path):
    """The kafka-python example of docs/operations.md, run as written against the embedded broker."""
    import os
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert len(blocks) == 1
    # Tansu answers JoinGroup v2 with MEMBER_ID_REQUIRED (a v4+ error), which kafka-python-ng cannot handle; Apache
    # Kafka does not, so the example joins a group in production. Here it reads without a group and commits nothing.
    code = blocks[0].replace('group_id="my-strategy",', "group_id=None,").replace("consumer.commit()", "pass")
    assert code.count("group_id=None") == 1 and "consumer.commit" not in code
    script = tmp_path / "strategy.py"
    script.write_text(code)
    r = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KAFKA_BOOTSTRAP": stack.bootstrap, "EXIT_AFTER_IDLE_MS": "3000"},
    )
    assert r.returncode == 0, r.stderr
    want = [e for e in ops_events if e["regime_changed"] and e["regime"]["confidence"] >= 0.6]
    got = [ln for ln in r.stdout.splitlines() if ln.startswith(f"{ops_symbol}:")]
    assert got and len(got) == len(want)
    assert got[0].startswith(f"{ops_symbol}: regime {want[0]['previous_regime']} -> {want[0]['regime']['id']} ")


@pytest.mark.slow
def test_tail_follows_new_events_from_the_end(stack, worker, model, fresh_symbols):
    """Started before the bars exist, tail shows the new events: nothing sent after "following" is skipped.

    (Tansu reports end offsets too low, so older events of other symbols may show first: --symbol filters them.)"""
    import os
    import time

    from helpers import series

    from devstack.kafka_kit import produce, series_messages

    (symbol,) = fresh_symbols(1)
    history = model.bundle.history_bars
    bars = series(symbol, history + 9, seed=24)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "regimetry.cli",
            "tail",
            "--json",
            "--symbol",
            symbol,
            "--max",
            "10",
            "--broker",
            stack.bootstrap,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        line = ""
        while "following" not in line:  # positions resolved: from here on nothing is skipped
            assert time.monotonic() < deadline and proc.poll() is None, line
            line = proc.stderr.readline()
        produce(stack.bootstrap, "bars", series_messages(symbol, bars.times, bars.values))
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    got = [json.loads(x) for x in out.splitlines()]
    assert [e["symbol"] for e in got] == [symbol] * 10
    assert sorted(e["bar_time"] for e in got) == bars.times[history - 1 :].tolist()
