"""Hostile input (issue 6, item 4): 10,000 malformed or adversarial messages interleaved with good bars.

Every bad message must land in bars-dlq with the reason its kind calls for, every good bar must produce
its event (equal to the batch reference), and the worker must keep running. The adversarial messages are
drawn from a seeded generator, one kind at a time, so each has a known expected reason.
"""

from __future__ import annotations

import json
import random

import pytest
from helpers import assert_matches_reference, by_symbol, series

from devstack.kafka_kit import interleave, produce, series_messages
from devstack.stack import metric_value, metrics_text

pytestmark = pytest.mark.slow
N_BAD = 10_000
N_SYMBOLS = 4


def good_doc(symbol: str, t: int) -> dict:
    return {"symbol": symbol, "time": t, "open": 1.10, "high": 1.20, "low": 1.00, "close": 1.15, "volume": 10.0}


def adversarial(rng: random.Random, symbol: str, t: int, others: list[str]) -> tuple[bytes, bytes, str]:
    """(key, value, expected DLQ reason) of one hostile message for `symbol` around bar time `t`; `others` are
    accepted symbols other than `symbol` (for a body that names another symbol than its key)."""
    key = symbol.encode()
    d = good_doc(symbol, t)
    kind = rng.randrange(16)
    if kind == 0:
        raw = json.dumps(d).encode()
        return key, raw[: rng.randrange(1, len(raw) - 1)], "malformed_json"
    if kind == 1:
        return key, bytes([0xFF]) + rng.randbytes(rng.randrange(0, 64)), "malformed_json"
    if kind == 2:
        d[rng.choice(["time", "open", "volume"])] = rng.choice(["1", None, [1], {"a": 1}, True])
        return key, json.dumps(d).encode(), "schema_violation"
    if kind == 3:
        del d[rng.choice(list(d))]
        return key, json.dumps(d).encode(), "schema_violation"
    if kind == 4:
        return key, json.dumps(rng.choice([[d], "bar", 42, None])).encode(), "schema_violation"
    if kind == 5:
        d[rng.choice(["open", "high", "low", "close", "volume"])] = rng.choice(
            [float("nan"), float("inf"), -float("inf")]
        )
        return key, json.dumps(d).encode(), "non_finite"
    if kind == 6:
        d[rng.choice(["open", "high", "low", "close"])] = rng.choice([0, -1, -1e9, 0.0])
        return key, json.dumps(d).encode(), "non_positive_price"
    if kind == 7:
        d["high"], d["low"] = 1.0, 1.2
        return key, json.dumps(d).encode(), "high_below_low"
    if kind == 8:
        d["open"] = rng.choice([1e300, 10**30])
        return key, json.dumps(d).encode(), "schema_violation"
    if kind == 9:
        d["time"] = rng.choice([-1, -(10**12), 10**12, 5_000_000_000])
        return key, json.dumps(d).encode(), "schema_violation"
    if kind == 10:
        d["time"] = 4_000_000_000  # year 2096: within the schema, far beyond the worker's clock
        return key, json.dumps(d).encode(), "time_in_future"
    if kind == 11:
        d["padding"] = "x" * rng.randrange(4100, 20_000)
        return key, json.dumps(d).encode(), "payload_too_large"
    if kind == 12:
        unknown = f"UNK{rng.randrange(100)}"
        return unknown.encode(), json.dumps(good_doc(unknown, t)).encode(), "unknown_symbol"
    if kind == 13:
        d["symbol"] = rng.choice(["T3{2}", "", "x" * 40, "bad symbol"])
        return key, json.dumps(d).encode(), "schema_violation"
    if kind == 14:
        return key, json.dumps(good_doc(rng.choice(others), t)).encode(), "key_mismatch"
    d["time"] = t - 3600 * rng.randrange(10_000, 20_000)  # older than anything stored for this symbol
    return key, json.dumps(d).encode(), "out_of_order"


def test_ten_thousand_hostile_messages(stack, worker, model, events, dead_letters, fresh_symbols):
    rng = random.Random(20261127)
    symbols = fresh_symbols(N_SYMBOLS)
    history = model.bundle.history_bars
    data = {s: series(s, history + 40, seed=500 + i) for i, s in enumerate(symbols)}
    good = interleave(*[series_messages(s, b.times, b.values) for s, b in data.items()])
    per_good = N_BAD // len(good) + 1
    stream, expected = [], {}
    sent_bad = 0
    for i, (key, value) in enumerate(good):
        stream.append((key, value))
        if i < len(symbols):  # out-of-order bars need a stored bar of their symbol before them
            continue
        doc = json.loads(value)
        for _ in range(per_good):
            if sent_bad == N_BAD:
                break
            others = [s for s in symbols if s != doc["symbol"]]
            k, v, reason = adversarial(rng, doc["symbol"], doc["time"], others)
            stream.append((k, v))
            expected[reason] = expected.get(reason, 0) + 1
            sent_bad += 1
    # exact duplicates of good bars are not errors: they re-emit the same event
    dupes = [good[j] for j in rng.sample(range(len(good)), 50)]
    stream += dupes
    assert sent_bad == N_BAD
    produce(stack.bootstrap, "bars", stream)

    keys = set(symbols) | {f"UNK{i}" for i in range(100)}

    def mine(v: list[dict]) -> list[dict]:
        return [d for d in v if d["source"]["key"] in keys]

    dlq = dead_letters.wait_for(lambda v: len(mine(v)) >= N_BAD, 300, f"{N_BAD} dead letters")
    got: dict[str, int] = {}
    for d in mine(dlq):
        got[d["reason"]] = got.get(d["reason"], 0) + 1
    assert got == expected

    n_events = sum(len(b) - history + 1 for b in data.values())
    n_dupe_events = sum(1 for k, v in dupes if json.loads(v)["time"] >= int(data[k.decode()].times[history - 1]))
    vals = events.wait_for(
        lambda v: sum(len(by_symbol(v, s)) for s in symbols) >= n_events + n_dupe_events,
        300,
        "events of every good bar",
    )
    for s, b in data.items():
        mine_events = by_symbol(vals, s)
        unique = {e["event_id"]: e for e in mine_events}
        assert len(mine_events) - len(unique) == sum(
            1 for k, v in dupes if k.decode() == s and json.loads(v)["time"] >= int(b.times[history - 1])
        )
        assert_matches_reference(model, b, sorted(unique.values(), key=lambda e: e["bar_time"]))
    assert worker.alive()
    assert metric_value(metrics_text(worker.port), "regimetry_worker_ready") == 1.0
    print(
        f"hostile input: {len(stream)} messages ({N_BAD} bad, {len(good)} good, {len(dupes)} duplicates); "
        f"dead letters by reason {dict(sorted(got.items()))}"
    )
