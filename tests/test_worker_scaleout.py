"""Scale-out (issue 3 item 8, issue 6 item 5): two, then three worker processes in one consumer group share
the bars partitions; one is stopped (SIGTERM) or killed (SIGKILL) mid-stream, its partitions move to the
others, and the output is complete and consistent (one distinct event per bar with a window, identical
copies, equal to the batch reference). Each test has its own topics, group and Redis key prefix.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import assert_matches_reference, series

from devstack.kafka_kit import Collector, PacedFeed, interleave, produce, series_messages
from devstack.stack import create_topics, metric_value, metrics_text, start_worker, wait_until

pytestmark = pytest.mark.slow


def scale_settings(tag: str, partitions: int) -> tuple[dict, dict]:
    """Topics and worker settings of one scale-out scenario, isolated from every other test by `tag`."""
    topics = {f"bars-{tag}": partitions, f"regime-events-{tag}": partitions, f"bars-dlq-{tag}": 1}
    settings = {
        "bars_topic": f"bars-{tag}",
        "events_topic": f"regime-events-{tag}",
        "dlq_topic": f"bars-dlq-{tag}",
        "group_id": f"regimetry-{tag}",
        "key_prefix": tag,
        "batch_size": 16,
        "batch_within": 0.02,
    }
    return topics, settings


def consumed(worker) -> float:
    return metric_value(metrics_text(worker.port), "regimetry_bars_consumed_total") or 0.0


def bar_partition(symbol: str, partitions: int) -> int:
    """The partition the default Kafka partitioner (murmur2 of the key) puts a symbol's bars in."""
    from kafka.partitioner.default import murmur2

    return (murmur2(symbol.encode()) & 0x7FFFFFFF) % partitions


def last_assignment(log: Path, topic: str) -> set[int]:
    """Partitions of `topic` in the worker's last 'partitions assigned' log line."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if "partitions assigned:" in ln]
    return {int(p) for p in re.findall(rf"'{re.escape(topic)}:(\d+)'", lines[-1])} if lines else set()


def assert_complete_and_consistent(events: Collector, data: dict, model, n_expected: int) -> int:
    """One distinct event per bar with a full window, every copy identical, each symbol equal to the batch
    reference; returns the number of duplicate copies received."""
    copies = events.copies_by_event_id()
    assert len(copies) == n_expected, "one distinct event id per bar with a complete window"
    assert all(len(c) == 1 for c in copies.values()), "every copy of an event is identical"
    values = [json.loads(next(iter(c))) for c in copies.values()]
    for s, bars in data.items():
        mine = sorted((e for e in values if e["symbol"] == s), key=lambda e: e["bar_time"])
        assert_matches_reference(model, bars, mine)
    return len(events.records) - n_expected


def symbols_on_every_partition(fresh_symbols, n: int, partitions: int) -> list[str]:
    """At least n fresh symbols, more if needed until every partition of the bars topic has one: then whichever
    partitions a member of the group is assigned, it has bars to consume (the tests wait for every member to
    consume, and the killed one must hold a symbol)."""
    symbols = fresh_symbols(n)
    while {bar_partition(s, partitions) for s in symbols} != set(range(partitions)):
        symbols += fresh_symbols(1)
    return symbols


def scale_feed(model, symbols: list[str], seed: int, extra_bars: int) -> tuple[dict, list, int]:
    """Seeded bars per symbol, interleaved into one message list, and the number of events expected."""
    history = model.bundle.history_bars
    data = {s: series(s, history + extra_bars, seed=seed + i) for i, s in enumerate(symbols)}
    msgs = interleave(*[series_messages(s, b.times, b.values) for s, b in data.items()])
    return data, msgs, sum(len(b) - history + 1 for b in data.values())


def test_two_workers_share_partitions_and_survive_one_stopping(stack, model, tiny_bundle, tmp_path, fresh_symbols):
    partitions = 4
    topics, base = scale_settings("scale", partitions)
    create_topics(stack.bootstrap, topics)
    symbols = symbols_on_every_partition(fresh_symbols, 8, partitions)
    data, msgs, n_expected = scale_feed(model, symbols, 700, 120)
    settings = {**base, "bundle": str(tiny_bundle)}
    a = start_worker(stack, tmp_path, name="scale-a", **settings)
    b = start_worker(stack, tmp_path, name="scale-b", **settings)
    events = Collector(stack.bootstrap, settings["events_topic"])
    feed = PacedFeed(stack.bootstrap, settings["bars_topic"], msgs).start()
    try:
        # both members got work once the group settled, then one leaves mid-stream
        wait_until(lambda: consumed(a) > 0 and consumed(b) > 0, 120, "both workers consuming")
        events.wait_for(lambda v: len(v) >= n_expected // 3, 120, "a third of the events")
        assert a.stop() == 0
        feed.join(120)
        events.wait_for_bars(n_expected, 180, "every event after the rebalance")
    finally:
        feed.stop()
        b.stop()
        a.stop()
    duplicates = assert_complete_and_consistent(events, data, model, n_expected)
    events.close()
    print(
        f"scale-out (2 workers, SIGTERM): bars {len(msgs)}, events {len(events.records)} ({n_expected} distinct), "
        f"duplicates {duplicates}, losses 0"
    )


def current_symbols(worker) -> set[str]:
    """Symbols this worker reports in regimetry_current_regime."""
    return set(re.findall(r'regimetry_current_regime\{symbol="([^"]+)"\}', metrics_text(worker.port)))


def test_three_workers_one_killed_mid_stream(stack, model, tiny_bundle, tmp_path, fresh_symbols):
    """Three members on 6 partitions; one is SIGKILLed (no goodbye to the group: the coordinator notices
    after the session timeout). Its partitions move to the two survivors; the rebalance time is measured from
    the kill to the first new event of a symbol the killed worker was serving."""
    partitions = 6
    topics, base = scale_settings("scale3", partitions)
    create_topics(stack.bootstrap, topics)
    symbols = symbols_on_every_partition(fresh_symbols, 12, partitions)
    data, msgs, n_expected = scale_feed(model, symbols, 900, 100)
    settings = {**base, "bundle": str(tiny_bundle)}
    with ThreadPoolExecutor(3) as pool:  # start-ups overlap: ~7 s each, mostly waiting for the group
        workers = list(pool.map(lambda c: start_worker(stack, tmp_path, name=f"scale3-{c}", **settings), "abc"))
    events = Collector(stack.bootstrap, settings["events_topic"])
    feed = PacedFeed(stack.bootstrap, settings["bars_topic"], msgs, chunk=24).start()
    try:
        wait_until(lambda: all(consumed(w) > 0 for w in workers), 120, "all three workers consuming")
        events.wait_for(lambda v: len(v) >= n_expected // 3, 120, "a third of the events")
        victim, survivors = workers[0], workers[1:]
        held = last_assignment(victim.log, settings["bars_topic"])
        orphans = {s for s in data if bar_partition(s, partitions) in held}
        assert orphans, f"the killed worker held partitions {held} but none of the test's symbols"
        victim.kill()
        t_kill = time.time()
        # the broker timestamps every record when it is produced: anything of an orphan after the kill was
        # sent by a survivor (a dead process sends nothing)
        first = wait_until(
            lambda: (
                events.poll() >= 0
                and min(
                    (
                        r.timestamp / 1000
                        for r in events.records
                        if r.key.decode() in orphans and r.timestamp / 1000 > t_kill
                    ),
                    default=None,
                )
            ),
            60,
            "a new event of a symbol the killed worker served",
        )
        rebalance = first - t_kill
        feed.join(120)
        events.wait_for_bars(n_expected, 180, "every event after the rebalance")
        reported = [current_symbols(w) for w in survivors]
        owned = [
            {s for s in data if bar_partition(s, partitions) in last_assignment(w.log, settings["bars_topic"])}
            for w in survivors
        ]
    finally:
        feed.stop()
        for w in workers:
            w.stop()
    duplicates = assert_complete_and_consistent(events, data, model, n_expected)
    events.close()
    for got, mine in zip(reported, owned):
        assert got <= mine, f"current_regime reports symbols of partitions moved away: {sorted(got - mine)}"
    print(
        f"scale-out (3 workers, SIGKILL): bars {len(msgs)}, events {len(events.records)} ({n_expected} distinct), "
        f"duplicates {duplicates}, losses 0, rebalance {rebalance:.1f} s (session timeout "
        f"{settings.get('session_timeout', 10)} s), orphaned symbols {len(orphans)}"
    )


def test_a_worker_paused_past_its_session_sends_no_false_dead_letters(
    stack, model, tiny_bundle, tmp_path, fresh_symbols
):
    """Issue 14, defect 3: two workers on a backlog; one is SIGSTOPped (holding fetched records) past its
    session timeout, so the other takes its partitions over and goes far past the bars the paused one holds
    (a small dedupe window trims them from Redis); resumed, the paused one processes what it held. Those
    records are a fencing outcome (regimetry_bars_overtaken_total), not out-of-order input: the dead-letter
    topic stays empty and the output is complete and consistent (before the fix they were dead-lettered as
    out_of_order)."""
    import os
    import signal

    partitions = 4
    topics, base = scale_settings("pause", partitions)
    create_topics(stack.bootstrap, topics)
    symbols = symbols_on_every_partition(fresh_symbols, 8, partitions)
    data, msgs, n_expected = scale_feed(model, symbols, 1100, 900)
    backlog, tail = msgs[: -8 * len(symbols)], msgs[-8 * len(symbols) :]
    settings = {**base, "bundle": str(tiny_bundle), "dedupe_window": 16, "session_timeout": 6}
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda c: start_worker(stack, tmp_path, name=f"pause-{c}", **settings), "ab")
    events = Collector(stack.bootstrap, settings["events_topic"])
    dead = Collector(stack.bootstrap, settings["dlq_topic"])
    paused = False
    try:
        produce(stack.bootstrap, settings["bars_topic"], backlog)
        wait_until(lambda: consumed(a) > 0 and consumed(b) > 0, 120, "both workers consuming")
        before = consumed(a)  # (the metrics are served by the process: not while it is stopped)
        os.kill(a.pid, signal.SIGSTOP)
        paused = True
        wait_until(
            lambda: last_assignment(b.log, settings["bars_topic"]) == set(range(partitions)),
            60,
            "the other worker taking every partition over",
        )
        events.wait_for_bars(n_expected - 8 * len(symbols), 180, "the other worker through the backlog")
        os.kill(a.pid, signal.SIGCONT)
        paused = False
        produce(stack.bootstrap, settings["bars_topic"], tail)
        wait_until(lambda: consumed(a) > before, 120, "the paused worker processing again")
        events.wait_for_bars(n_expected, 180, "every event")
        overtaken = metric_value(metrics_text(a.port), "regimetry_bars_overtaken_total") or 0.0
        dead.poll()
    finally:
        if paused:
            os.kill(a.pid, signal.SIGCONT)
        a.stop()
        b.stop()
    duplicates = assert_complete_and_consistent(events, data, model, n_expected)
    events.close()
    dead_letters = len(dead.records)
    dead.close()
    print(
        f"pause past the session timeout: bars {len(msgs)}, overtaken (fenced) {overtaken:.0f}, dead letters "
        f"{dead_letters}, duplicates {duplicates}"
    )
    assert dead_letters == 0, "no bar of a valid feed is dead-lettered after a pause"
