"""End to end on the embedded stack: bars into Kafka, the worker process, regime events out.

Each test uses its own symbols on the shared session stack and worker, and waits for conditions with
deadlines. The reference for every number is RegimeModel.run_series on the same bars.
"""

from __future__ import annotations

import json

import pytest
from helpers import TIMEOUT, assert_matches_reference, by_symbol, schema_validator, series

from devstack.kafka_kit import bar_message, interleave, produce, series_messages

pytestmark = pytest.mark.slow


def test_events_equal_batch_reference(stack, worker, model, events, fresh_symbols):
    symbols = [*fresh_symbols(2), "EQ.A"]  # EQ.A: a symbol with punctuation, served like any other
    data = {s: series(s, model.bundle.history_bars + 80, seed=i) for i, s in enumerate(symbols)}
    produce(stack.bootstrap, "bars", interleave(*[series_messages(s, b.times, b.values) for s, b in data.items()]))
    expected = {s: len(b) - model.bundle.history_bars + 1 for s, b in data.items()}

    vals = events.wait_for(
        lambda v: all(len(by_symbol(v, s)) >= n for s, n in expected.items()), TIMEOUT, "one event per complete window"
    )
    validate = schema_validator("regime_event.schema.json")
    for s, b in data.items():
        got = by_symbol(vals, s)
        assert len(got) == expected[s], f"{s}: duplicates or extra events"
        for e in got:
            validate.validate(e)
        assert_matches_reference(model, b, got)


def test_events_go_to_the_partition_of_their_key(stack, worker, model, events):
    """The worker sends record batches to partitions it picks itself; they must be the ones Kafka's default
    partitioner (murmur2 of the key, as any keyed producer and subscriber assume) gives each symbol."""
    from kafka.partitioner.default import DefaultPartitioner

    symbols = [f"PART{i}" for i in range(8)]  # named, not fresh: they hash to several partitions (fixtures_stack)
    data = {s: series(s, model.bundle.history_bars + 5, seed=40 + i) for i, s in enumerate(symbols)}
    produce(stack.bootstrap, "bars", interleave(*[series_messages(s, b.times, b.values) for s, b in data.items()]))
    events.wait_for(lambda v: all(len(by_symbol(v, s)) >= 6 for s in symbols), TIMEOUT, "events of every symbol")
    partitions = list(range(4))  # regime-events has 4 partitions on the test stack
    mine = [r for r in events.records if r.key.decode() in symbols]
    assert {r.key.decode() for r in mine} == set(symbols)
    for r in mine:
        assert r.partition == DefaultPartitioner()(r.key, partitions, partitions), r.key
    assert len({r.partition for r in mine}) > 1, "8 symbols should spread over several partitions"


def test_duplicates_and_redeliveries_keep_event_ids(stack, worker, model, events, dead_letters, redis_client):
    b = series("DUP", model.bundle.history_bars + 40, seed=21)
    msgs = series_messages("DUP", b.times, b.values)
    produce(stack.bootstrap, "bars", msgs)
    n_events = len(b) - model.bundle.history_bars + 1
    first = events.wait_for(lambda v: len(by_symbol(v, "DUP")) >= n_events, TIMEOUT, "first pass")
    original = {e["bar_time"]: e for e in by_symbol(first, "DUP")}

    # Redeliver the last 25 bars (as Kafka does after a crash before the commit) plus one bar whose values
    # differ from the stored one (a conflicting duplicate, which must not overwrite anything).
    again = msgs[-25:]
    t, row = int(b.times[-3]), b.values[-3].copy()
    row[3] = row[3] * (1 + 1e-6)
    produce(stack.bootstrap, "bars", again + [(b"DUP", bar_message("DUP", t, row))])
    vals = events.wait_for(lambda v: len(by_symbol(v, "DUP")) >= n_events + 25, TIMEOUT, "re-emitted events")
    got = by_symbol(vals, "DUP")
    assert len(got) == n_events + 25
    for e in got:
        assert e == original[e["bar_time"]], "a redelivered bar must re-emit the identical event"
    dlq = dead_letters.wait_for(lambda v: any(d["source"]["key"] == "DUP" for d in v), TIMEOUT, "conflict in DLQ")
    mine = [d for d in dlq if d["source"]["key"] == "DUP"]
    assert [d["reason"] for d in mine] == ["conflicting_duplicate"]

    stored = redis_client.zrange("regimetry:{DUP}:bars", 0, -1, withscores=True)
    times = [int(score) for _, score in stored]
    assert times == sorted(set(times)) == b.times.tolist(), "Redis holds each bar once"


BAD = [
    (b"BAD", b'{"symbol": "BAD", "time": ', "malformed_json"),
    (b"BAD", b"\xff\xfe\x00", "malformed_json"),
    (b"BAD", b'{"symbol": "BAD", "time": 1, "open": 1}', "schema_violation"),
    (b"BAD", b'{"symbol":"BAD","time":"yesterday","open":1,"high":1,"low":1,"close":1,"volume":1}', "schema_violation"),
    (b"BAD", b'{"symbol":"BAD","time":1700000000,"open":NaN,"high":1,"low":1,"close":1,"volume":1}', "non_finite"),
    (b"BAD", b'{"symbol":"BAD","time":1700000000,"open":1,"high":Infinity,"low":1,"close":1,"volume":1}', "non_finite"),
    (
        b"BAD",
        b'{"symbol":"BAD","time":1700000000,"open":0,"high":1,"low":1,"close":1,"volume":1}',
        "non_positive_price",
    ),
    (b"BAD", b'{"symbol":"BAD","time":1700000000,"open":1,"high":1,"low":2,"close":1,"volume":1}', "high_below_low"),
    (
        b"BAD",
        b'{"symbol":"BAD","time":1700000000,"open":3,"high":2,"low":1,"close":1.5,"volume":1}',
        "ohlc_out_of_range",
    ),
    (b"BAD", b'{"symbol":"BAD","time":4000000000,"open":1,"high":1,"low":1,"close":1,"volume":1}', "time_in_future"),
    (b"BAD", b'{"symbol":"NOPE","time":1700000000,"open":1,"high":1,"low":1,"close":1,"volume":1}', "key_mismatch"),
    (b"NOPE", b'{"symbol":"NOPE","time":1700000000,"open":1,"high":1,"low":1,"close":1,"volume":1}', "unknown_symbol"),
    (b"BAD", json.dumps({"symbol": "BAD", "pad": "x" * 5000}).encode(), "payload_too_large"),
]


def test_bad_input_is_dead_lettered_and_good_bars_flow(stack, worker, model, events, dead_letters):
    b = series("BAD", model.bundle.history_bars + 30, seed=33)
    good = series_messages("BAD", b.times, b.values)
    # bad messages sprinkled between good bars, plus an out-of-order bar (an older time, not stored)
    mixed = list(good[:50])
    for i, bad in enumerate(BAD):
        mixed += [(bad[0], bad[1])] + list(good[50 + 2 * i : 52 + 2 * i])
    mixed += good[50 + 2 * len(BAD) :]
    old = bar_message("BAD", int(b.times[0]) - 3600, b.values[0])
    mixed.insert(len(mixed) - 5, (b"BAD", old))
    produce(stack.bootstrap, "bars", mixed)

    expected = dict(bad_reason_counts(), out_of_order=1)
    n_events = len(b) - model.bundle.history_bars + 1

    def mine(v: list[dict]) -> list[dict]:
        return [d for d in v if d["source"]["key"] in ("BAD", "NOPE")]

    dlq = dead_letters.wait_for(lambda v: len(mine(v)) >= sum(expected.values()), TIMEOUT, "dead letters")
    reasons: dict[str, int] = {}
    for d in mine(dlq):
        reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
        assert d["source"]["topic"] == "bars" and d["source"]["offset"] >= 0
    assert reasons == expected
    validate = schema_validator("dlq.schema.json")
    for d in mine(dlq):
        validate.validate(d)
    big = next(d for d in mine(dlq) if d["reason"] == "payload_too_large")
    assert big["raw_truncated"] and big["raw_bytes"] > 5000

    vals = events.wait_for(lambda v: len(by_symbol(v, "BAD")) >= n_events, TIMEOUT, "events of the good bars")
    assert_matches_reference(model, b, by_symbol(vals, "BAD"))


def bad_reason_counts() -> dict[str, int]:
    out: dict[str, int] = {}
    for _, _, reason in BAD:
        out[reason] = out.get(reason, 0) + 1
    return out
