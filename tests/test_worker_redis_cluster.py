"""Redis Cluster (issue 14, "Scale past one Redis"): the worker on a real local cluster of three masters with one
replica each (devstack.stack.start_redis_cluster: `redis-server --cluster-enabled yes` on loopback joined with
`redis-cli --cluster create`), REGIMETRY_REDIS_CLUSTER=true.

- end to end: symbols spread over the masters, every event equals the batch reference, one distinct event per
  bar, every copy identical;
- a master SIGKILLed while bars flow, its replica promoted: every event still there and equal to the batch
  reference. Twice: with the replica in sync (nothing lost, the worker only waits out the failover), and with
  the replica cut off from its master before the kill, so the promoted replica misses the master's last
  acknowledged writes; the worker then reads those bars back from the bars topic (worker/log_reader.py) as after
  any Redis that came back older than the committed offsets (test_worker_redis_rollback.py).
"""

from __future__ import annotations

import json

import pytest
from helpers import assert_matches_reference, by_symbol, series

from devstack.kafka_kit import Collector, PacedFeed, interleave, produce, series_messages
from devstack.stack import create_topics, metric_value, metrics_text, start_redis_cluster, start_worker, wait_until
from worker.settings import SettingsError, load_settings


def _meta_key(symbol: str) -> str:
    return f"regimetry:{{{symbol}}}:meta"


@pytest.fixture()
def cluster(tmp_path):
    # with a password: cut_replication keeps a replica detached by giving it a wrong master password (without
    # one it re-syncs at once, and the "behind" replica was sometimes not behind)
    c = start_redis_cluster(tmp_path / "redis-cluster", masters=3, replicas=1, password="cluster-test-pw")
    yield c
    c.stop()


def _spread_symbols(cluster, fresh_symbols, n: int) -> list[str]:
    """n fresh symbols whose keys live on at least two masters (more are taken until they do)."""
    symbols = fresh_symbols(n)
    while len({cluster.master_of(_meta_key(s)) for s in symbols}) < 2:
        symbols = symbols[1:] + fresh_symbols(1)
    return symbols


def _settings(tag: str, cluster) -> dict:
    return dict(
        bars_topic=f"bars-cluster-{tag}",
        events_topic=f"events-cluster-{tag}",
        dlq_topic=f"dlq-cluster-{tag}",
        group_id=f"regimetry-cluster-{tag}",
        batch_size=16,
        batch_within=0.02,
        redis_retry_max_seconds=1,
        redis_url=cluster.url,
        redis_password=cluster.password,
        redis_cluster=True,
    )


def _assert_events(model, data: dict, events: Collector, lenient_copies: bool) -> int:
    """Every symbol's events equal the batch reference; returns the number of distinct events. Copies of one
    event are byte-identical, or (lenient_copies: recomputed after a lost write) differ in emitted_at only."""
    copies = events.copies_by_event_id()
    values = events.values()
    for s, bars in data.items():
        latest = {e["bar_time"]: e for e in by_symbol(values, s)}
        assert_matches_reference(model, bars, [latest[t] for t in sorted(latest)])
    for docs in copies.values():
        if lenient_copies:
            assert len({json.dumps({**json.loads(d), "emitted_at": None}, sort_keys=True) for d in docs}) == 1
        else:
            assert len(docs) == 1
    return len(copies)


@pytest.mark.slow
def test_worker_on_a_redis_cluster_equals_the_batch_reference(
    stack, cluster, model, tiny_bundle, tmp_path, fresh_symbols
):
    settings = _settings("e2e", cluster)
    create_topics(stack.bootstrap, {settings["bars_topic"]: 2, settings["events_topic"]: 2, settings["dlq_topic"]: 1})
    history = model.bundle.history_bars
    symbols = _spread_symbols(cluster, fresh_symbols, 3)
    data = {s: series(s, history + 100, seed=1400 + i) for i, s in enumerate(symbols)}
    n_expected = sum(len(b) - history + 1 for b in data.values())
    worker = start_worker(stack, tmp_path, name="cluster-e2e", bundle=str(tiny_bundle), **settings)
    events = Collector(stack.bootstrap, settings["events_topic"])
    try:
        produce(
            stack.bootstrap,
            settings["bars_topic"],
            interleave(*[series_messages(s, b.times, b.values) for s, b in data.items()]),
        )
        events.wait_for_bars(n_expected, 180, "every event from the cluster-backed worker")
        code = worker.stop()
        distinct = _assert_events(model, data, events, lenient_copies=False)
        client = cluster.client()
        try:  # each symbol's state is stored whole, on its own master
            for s, b in data.items():
                assert int(client.hget(_meta_key(s), "last_time")) == int(b.times[-1])
                stored = client.zrange(f"regimetry:{{{s}}}:bars", 0, -1, withscores=True)
                assert [int(score) for _, score in stored] == b.times.tolist()
        finally:
            client.close()
    finally:
        worker.stop()
        events.close()
    masters = {s: cluster.master_of(_meta_key(s)) for s in data}
    assert code == 0 and distinct == n_expected
    print(f"redis cluster e2e: {len(data)} symbols on masters {sorted(set(masters.values()))}, {distinct} events")


@pytest.mark.slow
@pytest.mark.parametrize("replica", ["in-sync", "behind"])
def test_master_killed_mid_stream_loses_no_event(stack, cluster, model, tiny_bundle, tmp_path, fresh_symbols, replica):
    settings = _settings(f"failover-{replica}", cluster)
    create_topics(stack.bootstrap, {settings["bars_topic"]: 2, settings["events_topic"]: 2, settings["dlq_topic"]: 1})
    history = model.bundle.history_bars
    symbols = _spread_symbols(cluster, fresh_symbols, 3)
    data = {s: series(s, history + 100, seed=1500 + i) for i, s in enumerate(symbols)}
    n_expected = sum(len(b) - history + 1 for b in data.values())
    victim = symbols[0]  # its master is killed; the other symbols' masters may or may not be the same one
    on_victim = [s for s in symbols if cluster.master_of(_meta_key(s)) == cluster.master_of(_meta_key(victim))]
    msgs = interleave(*[series_messages(s, b.times, b.values) for s, b in data.items()])
    worker = start_worker(stack, tmp_path, name=f"cluster-{replica}", bundle=str(tiny_bundle), **settings)
    events = Collector(stack.bootstrap, settings["events_topic"])
    feed = PacedFeed(stack.bootstrap, settings["bars_topic"], msgs, chunk=6, pause=0.05).start()
    try:
        events.wait_for(lambda v: len(v) >= n_expected // 4, 120, "a quarter of the events before the kill")
        master = cluster.master_of(_meta_key(victim))
        (standby,) = cluster.replicas_of(master)
        lagged = 0
        if replica == "behind":
            cluster.cut_replication(standby)
            cut_at = int(cluster.stored(standby, _meta_key(victim), "last_time") or 0)

            def master_ahead() -> bool:
                return int(cluster.stored(master, _meta_key(victim), "last_time") or 0) > cut_at

            # bars keep flowing: the master acknowledges writes (and the worker sends their events) the
            # replica will never have
            wait_until(master_ahead, 30, "the master storing bars its cut-off replica does not have")
        before_kill = len({(e["symbol"], e["bar_time"]) for e in events.values()})
        master_last = int(cluster.stored(master, _meta_key(victim), "last_time") or 0)  # it may store more yet
        killed, promoted = cluster.kill_master_of(_meta_key(victim), timeout=30)
        assert promoted == standby
        if replica == "behind":
            have = int(cluster.stored(promoted, _meta_key(victim), "last_time") or 0)
            lagged = sum(have < int(t) <= master_last for t in data[victim].times)  # at least this many
        events.wait_for_bars(n_expected, 180, "every event after the failover")
        feed.join(120)
        text = metrics_text(worker.port)
        restored = metric_value(text, "regimetry_bars_restored_total") or 0.0
        errors = metric_value(text, "regimetry_redis_errors_total") or 0.0
        assert worker.alive()
    finally:
        feed.stop()
        code = worker.stop()
    values = events.values()
    wrong, missing = 0, 0
    for s, bars in data.items():  # the figures first, for the report; the asserts below say what is wrong
        ref = model.run_series(bars.values)
        latest = {e["bar_time"]: e for e in by_symbol(values, s)}
        for t, regime in zip(bars.times[ref.offset :].tolist(), ref.regime.tolist()):
            if t not in latest:
                missing += 1
            elif latest[t]["regime"]["id"] != regime:
                wrong += 1
    distinct = _assert_events(model, data, events, lenient_copies=True)
    events.close()
    assert code == 0 and distinct == n_expected and before_kill < n_expected
    if replica == "behind":  # only the bars the promoted replica missed were read back, every one of them
        assert lagged > 0 and restored > 0
        assert restored <= sum(len(b) for s, b in data.items() if s in on_victim)
    print(
        f"redis cluster failover ({replica} replica): killed master {killed}, promoted {promoted}; events "
        f"{distinct} of {n_expected} ({before_kill} before the kill), differing from the reference {wrong}, missing "
        f"{missing}; redis errors retried {errors:.0f}, bars restored from the log {restored:.0f} (replica behind "
        f"by {lagged} bars of {victim})"
    )


def test_cluster_setting_builds_a_cluster_client_from_every_seed():
    """REGIMETRY_REDIS_CLUSTER=true: a RedisCluster bootstrapping from each seed of the URL, with the password and
    TLS of the settings (no server needed: the client connects on first use)."""
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from worker.client_security import redis_client

    env = {
        "REGIMETRY_REDIS_URL": "rediss://h1:7000;redis://h2:7001, redis://h3:7002",
        "REGIMETRY_REDIS_CLUSTER": "true",
        "REGIMETRY_REDIS_PASSWORD": "s3cret",
    }
    client = redis_client(load_settings(env))
    assert isinstance(client, RedisCluster)
    assert sorted(n.name for n in client.startup_nodes) == ["h1:7000", "h2:7001", "h3:7002"]
    kwargs = client.get_connection_kwargs()
    assert kwargs["password"] == "s3cret" and kwargs["socket_timeout"] == 5.0
    assert client.nodes_manager.startup_nodes["h2:7001"].connection_class.__name__ == "SSLConnection"
    single = redis_client(load_settings({"REGIMETRY_REDIS_URL": "redis://h1:7000/0"}))
    assert isinstance(single, Redis)  # the default: one Redis
    with pytest.raises(SettingsError, match="database 0 only"):
        redis_client(load_settings({**env, "REGIMETRY_REDIS_URL": "redis://h1:7000/3"}))


def test_cluster_outages_are_retried_and_bugs_are_not():
    """What _with_redis waits out (a bar is never dropped meanwhile) and what it lets through."""
    from redis import exceptions as e

    from worker.redis_store import is_redis_outage

    transient = [
        e.ConnectionError("refused"),
        e.TimeoutError("slow"),
        e.BusyLoadingError("loading"),
        e.ClusterDownError("CLUSTERDOWN The cluster is down"),
        e.MasterDownError("MASTERDOWN"),
        e.TryAgainError("TRYAGAIN"),
        e.SlotNotCoveredError('Slot "5" is not covered by the cluster.'),
        e.RedisClusterException("Redis Cluster cannot be connected. Please provide at least one reachable node"),
        OSError("network unreachable"),
    ]
    permanent = [
        e.ResponseError("ERR wrong number of arguments"),
        e.RedisClusterException("ERROR: Calling pipelined function evalsha is blocked"),
        e.ClusterCrossSlotError("CROSSSLOT"),
        ValueError("a bug"),
    ]
    assert all(is_redis_outage(x) for x in transient)
    assert not any(is_redis_outage(x) for x in permanent)


@pytest.mark.slow
def test_preflight_on_a_cluster_with_a_password(tmp_path):
    """Preflight speaks the cluster protocol: the right password passes (every primary answers, cluster_state
    ok), a wrong one is an authentication failure (refused at once), not "unreachable" after the timeout."""
    import asyncio

    from worker.preflight import _redis_once, is_auth_failure

    with start_redis_cluster(tmp_path / "auth-cluster", masters=3, replicas=0, password="right") as c:
        env = {"REGIMETRY_REDIS_URL": c.url, "REGIMETRY_REDIS_CLUSTER": "true"}
        asyncio.run(_redis_once(load_settings({**env, "REGIMETRY_REDIS_PASSWORD": "right"})))
        with pytest.raises(Exception) as caught:
            asyncio.run(_redis_once(load_settings({**env, "REGIMETRY_REDIS_PASSWORD": "wrong"})))
        assert is_auth_failure(caught.value), repr(caught.value)
