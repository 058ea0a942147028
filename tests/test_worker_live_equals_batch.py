"""Live equals batch (issue 11, item 3): the worker's regimes, probabilities and dwell are run_series's.

The first test needs nothing but numpy: the decoder fed one series in chunks the way the worker's _compute
feeds it (the costs stored for the symbol + the batch's new costs, several symbols stacked into one
`values` call) gives exactly decode_series. The others run the worker's BatchProcessor in-process against a
Redis of their own (no broker: what the agent adds is delivery, tested end to end elsewhere) and check every
event against RegimeModel.run_series, also when a symbol's stored state is in doubt and is rebuilt.
"""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import assert_matches_reference, schema_validator, series

from regimetry.regimes import JumpDecoder, dwell


def test_decoder_fed_in_chunks_equals_decode_series():
    rng = np.random.default_rng(7)
    k, memory = 4, 37
    dec = JumpDecoder(penalty=1.5, memory=memory)
    # two symbols with regime-like costs (runs of a cheap regime plus noise), fed in chunks of varied sizes
    series_costs = []
    for n in (400, 260):
        cheap = np.repeat(rng.integers(0, k, n // 20 + 1), 20)[:n]
        c = rng.gamma(2.0, 1.0, (n, k))
        c[np.arange(n), cheap] *= 0.2
        series_costs.append(c)
    chunkings = [[1, 2, 3, 36, 1, 37, 38, 100, 5, 77], [64, 1, 1, 1, 29, 40, 124]]
    stored = [np.zeros((0, k)), np.zeros((0, k))]
    last: list[tuple[int | None, int]] = [(None, 0), (None, 0)]
    got_w = [[], []]
    got_dwell = [[], []]
    pos = [0, 0]
    step = 0
    while any(pos[s] < len(series_costs[s]) for s in (0, 1)):
        seqs, starts, owners = [], [], []
        offset = 0
        for s in (0, 1):
            n = chunkings[s][step % len(chunkings[s])]  # cycled until the series is used up
            new = series_costs[s][pos[s] : pos[s] + n]
            pos[s] += len(new)
            if not len(new):
                continue
            seqs.append(dec.sequence(stored[s], new))
            starts.append(offset + np.arange(len(new)))
            offset += len(seqs[-1])
            owners.append((s, len(new)))
            stored[s] = np.concatenate([stored[s], new])[-(memory - 1) :]  # what Redis keeps
        # one call for every symbol's new bars, laid end to end as worker/steps.py::infer lays them
        w = dec.values_at(np.concatenate(seqs), np.concatenate(starts))
        at = 0
        for s, n in owners:
            ws = w[at : at + n]
            at += n
            labels = ws.argmin(1)
            d = dwell(labels, *last[s])
            last[s] = (int(labels[-1]), int(d[-1]))
            got_w[s].append(ws)
            got_dwell[s].append(d)
        step += 1
    for s in (0, 1):
        assert pos[s] == len(series_costs[s])
        ref = dec.decode_series(series_costs[s])
        np.testing.assert_array_equal(np.concatenate(got_w[s]), ref)  # exactly, not approximately
        np.testing.assert_array_equal(np.concatenate(got_dwell[s]), dwell(ref.argmin(1)))
        assert len(set(ref.argmin(1).tolist())) > 1, "the test series should switch regimes"


# -- the worker's BatchProcessor in-process ---------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    from devstack.stack import start_redis

    proc = start_redis(tmp_path_factory.mktemp("redis-live-batch"))
    yield f"redis://127.0.0.1:{proc.port}/0"
    proc.stop()


def _records(msgs: list, start: int):
    from worker.pipeline import Record

    return [Record(k, v, "bars", 0, start + i, time.time()) for i, (k, v) in enumerate(msgs)]


class InProcess:
    """A worker Runtime (bundle, Redis store, BatchProcessor) without Kafka; feeds messages in chunks."""

    def __init__(self, bundle, redis_url: str, prefix: str, **settings):
        from worker.app import Runtime
        from worker.settings import load_settings

        self.rt = Runtime(
            load_settings(
                {},
                bundle=str(bundle),
                redis_url=redis_url,
                key_prefix=prefix,
                reload_interval=0,
                **{"state_cache_verify": True, **settings},
            )
        )
        self.offset = 0
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.rt.connect())

    def forget(self) -> None:
        """Drop what this worker remembers of its own writes (worker/state_cache.py), as a worker taking the
        symbols over would start: the tests that change Redis behind its back model that. (Its cache would
        keep serving the state it wrote itself, correct for its events; the compare-and-set write notices
        every change that moves a symbol's last bar, and nothing but an outside edit leaves it in place.)"""
        self.rt.processor.cache.clear()

    def feed(self, msgs: list) -> list[dict]:
        out = self.loop.run_until_complete(self.rt.processor.process(_records(msgs, self.offset)))
        self.offset += len(msgs)
        return [json.loads(v) for _, v in out.events]

    def rebuilds(self) -> dict[str, float]:
        from prometheus_client import generate_latest

        from devstack.stack import metric_value

        text = generate_latest(self.rt.metrics.registry).decode()
        return {
            r: metric_value(text, "regimetry_state_rebuilds_total", {"result": r}) or 0.0
            for r in ("exact", "short", "dwell_bound")
        }

    def close(self) -> None:
        self.loop.close()


def _chunked(msgs: list, sizes: list[int]):
    i = 0
    for n in sizes * (len(msgs) // max(sum(sizes), 1) + 1):
        if i >= len(msgs):
            return
        yield msgs[i : i + n]
        i += n


@pytest.mark.slow
def test_chunks_of_varied_sizes_equal_the_batch_reference(tiny_bundle, model, redis_url):
    from devstack.kafka_kit import interleave, series_messages

    h = model.bundle.history_bars
    data = {s: series(s, h + 300, seed=500 + i) for i, s in enumerate(("LB1", "LB2", "LB3"))}
    msgs = interleave(*[series_messages(s, b.times, b.values) for s, b in data.items()])
    w = InProcess(tiny_bundle, redis_url, "chunks")
    got = []
    for chunk in _chunked(msgs, [1, 5, 64, 2, 300, 17, 3, 130]):
        got += w.feed(chunk)
    w.close()
    validate = schema_validator("regime_event.schema.json")
    for e in got[:50]:
        validate.validate(e)
    for s, b in data.items():
        mine = [e for e in got if e["symbol"] == s]
        assert_matches_reference(model, b, mine)
        assert len({e["regime"]["id"] for e in mine}) > 1, f"{s}: the series should switch regimes"
    assert w.rebuilds() == {"exact": 0, "short": 0, "dwell_bound": 0}


def _corrupt(client, prefix: str, symbol: str, how: str, dim: int = 0) -> None:
    base = f"{prefix}:{{{symbol}}}:"
    if how == "other_model":
        client.hset(base + "meta", "model_version", "another-model")
    elif how == "emb_lost":
        client.delete(base + "emb")
    elif how == "dwell_lost":
        client.hdel(base + "meta", "dwell")
    elif how == "old_layout":  # schema-1 members: (time, float32[D]) without costs
        members = client.zrange(base + "emb", 0, -1, withscores=True)
        client.delete(base + "emb")
        for m, score in members:
            client.zadd(base + "emb", {m[: 8 + 4 * dim]: score})
    else:
        raise ValueError(how)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["other_model", "emb_lost", "dwell_lost", "old_layout"])
def test_state_in_doubt_is_rebuilt_from_the_stored_bars(tiny_bundle, model, redis_url, how):
    """The stored costs belong to another model (hot reload), vanished, lost the dwell or have the schema-1
    layout: the symbol is rebuilt from its stored bars and every later event equals the reference."""
    import redis

    from devstack.kafka_kit import series_messages

    h = model.bundle.history_bars
    memory = model.decoder.memory
    symbol = f"RB-{how}"
    b = series(symbol, h + memory + 120, seed=610)
    msgs = series_messages(symbol, b.times, b.values)
    prefix = f"rebuild-{how}"
    w = InProcess(tiny_bundle, redis_url, prefix)
    cut = h + memory + 40  # enough bars stored for an exact rebuild (history + memory - 1)
    before = []
    for chunk in _chunked(msgs[:cut], [50, 7]):
        before += w.feed(chunk)
    client = redis.Redis.from_url(redis_url)
    _corrupt(client, prefix, symbol, how, dim=int(model.bundle.manifest["embedding_dim"]))
    w.forget()
    after = []
    for chunk in _chunked(msgs[cut:], [1, 30, 4]):
        after += w.feed(chunk)
    rebuilt = w.rebuilds()
    w.close()
    assert rebuilt == {"exact": 1, "short": 0, "dwell_bound": 0}
    assert_matches_reference(model, b, before + after)
    # the rebuilt state is stored: the next batch finds it consistent (no second rebuild)
    base = f"{prefix}:{{{symbol}}}:"
    assert client.zcard(base + "emb") == max((model.bundle.input_length - 1) * model.bundle.stride, memory - 1)
    assert int(client.hget(base + "meta", "dwell")) == after[-1]["bars_in_regime"]
    client.close()


@pytest.mark.slow
def test_rebuild_from_fewer_bars_follows_their_batch_reference(tiny_bundle, model, redis_url):
    """Fewer bars stored than history + memory - 1 (here: the symbol's whole, short history): counted as a
    short rebuild and the events follow the batch reference of the stored bars, which here is the series'."""
    import redis

    from devstack.kafka_kit import series_messages

    h = model.bundle.history_bars
    b = series("RB-short", h + 60, seed=620)
    msgs = series_messages("RB-short", b.times, b.values)
    w = InProcess(tiny_bundle, redis_url, "rebuild-short")
    cut = h + 20
    got = w.feed(msgs[:cut])
    client = redis.Redis.from_url(redis_url)
    _corrupt(client, "rebuild-short", "RB-short", "other_model")
    client.close()
    w.forget()
    got += w.feed(msgs[cut:])
    rebuilt = w.rebuilds()
    w.close()
    assert rebuilt == {"exact": 0, "short": 1, "dwell_bound": 0}
    assert_matches_reference(model, b, got)


@pytest.mark.slow
@pytest.mark.parametrize("dedupe_window, expect", [(8, "dwell_bound"), (400, "exact")])
def test_rebuild_after_trimmed_bars_keeps_regimes_and_probabilities(
    tiny_bundle, model, redis_url, dedupe_window, expect
):
    """Bars trimmed (to history + memory - 1 by a small dedupe window, or to 400): the rebuilt costs are the
    whole history's (finite memory), so regimes and probabilities equal the reference of the whole series; the
    dwell too, unless the rebuild says its regime began before the stored bars decode exactly (dwell_bound:
    with only history + memory - 1 bars, only a change at the first new bar makes it exact)."""
    import redis

    from devstack.kafka_kit import series_messages

    h = model.bundle.history_bars
    memory = model.decoder.memory
    symbol, prefix = f"RB-trim{dedupe_window}", f"rebuild-trim{dedupe_window}"
    b = series(symbol, h + memory + 500, seed=630)
    msgs = series_messages(symbol, b.times, b.values)
    w = InProcess(tiny_bundle, redis_url, prefix, dedupe_window=dedupe_window)
    keep = max(h + memory - 1, dedupe_window)
    assert w.rt.processor.store.keep_bars == keep and w.rt.serving.rebuild_bars == h + memory - 1
    cut = len(msgs) - 60
    got = []
    for chunk in _chunked(msgs[:cut], [97]):
        got += w.feed(chunk)
    client = redis.Redis.from_url(redis_url)
    assert client.zcard(f"{prefix}:{{{symbol}}}:bars") == keep
    _corrupt(client, prefix, symbol, "other_model")
    client.close()
    w.forget()
    after = w.feed(msgs[cut:])
    rebuilt = w.rebuilds()
    w.close()
    ref = model.run_series(b.values)
    rows = np.arange(cut, len(b)) - ref.offset
    np.testing.assert_array_equal([e["regime"]["id"] for e in after], ref.regime[rows])
    np.testing.assert_allclose([e["regime"]["probabilities"] for e in after], ref.proba[rows], atol=1e-5)
    np.testing.assert_array_equal([e["predicted"]["regime"] for e in after], ref.next_regime[rows])
    assert rebuilt == {"exact": 0, "short": 0, "dwell_bound": 0, expect: 1}
    if rebuilt["exact"]:
        np.testing.assert_array_equal([e["bars_in_regime"] for e in after], ref.dwell[rows])
    else:  # the dwell follows the stored bars' reference until the first change
        stored_ref = model.run_series(b.values[cut - keep :])
        np.testing.assert_array_equal([e["bars_in_regime"] for e in after], stored_ref.dwell[-len(after) :])
    if rebuilt["exact"]:
        assert_matches_reference(model, b, got + after)


@pytest.mark.slow
def test_symbol_state_expires_after_its_ttl(tiny_bundle, model, redis_url):
    """Issue 14, defect 6: per-symbol state never expired (50,000 one-bar symbols left 100,000 keys); every key
    of a symbol now expires REGIMETRY_STATE_TTL_SECONDS after its last write, renewed by each write."""
    import redis

    from devstack.kafka_kit import series_messages

    b = series("TTL1", 5, seed=77)
    w = InProcess(tiny_bundle, redis_url, "ttl", state_ttl_seconds=120)
    w.feed(series_messages("TTL1", b.times[:3], b.values[:3]))
    client = redis.Redis.from_url(redis_url)
    keys = [f"ttl:{{TTL1}}:{k}" for k in ("bars", "meta")]
    try:
        assert all(0 < client.ttl(k) <= 120 for k in keys)
        for k in keys:
            client.expire(k, 5)
        w.feed(series_messages("TTL1", b.times[3:], b.values[3:]))
        assert all(client.ttl(k) > 5 for k in keys), "a write renews the expiry"
        forever = InProcess(tiny_bundle, redis_url, "ttl0", state_ttl_seconds=0)
        forever.feed(series_messages("TTL1", b.times[:3], b.values[:3]))
        assert client.ttl("ttl0:{TTL1}:meta") == -1  # 0: never expires
        forever.close()
    finally:
        client.close()
        w.close()


def _counter(w: InProcess, name: str) -> float:
    from prometheus_client import generate_latest

    from devstack.stack import metric_value

    return metric_value(generate_latest(w.rt.metrics.registry).decode(), name) or 0.0


@pytest.mark.slow
def test_a_stale_state_cache_is_refused_by_the_write_and_redone_from_redis(tiny_bundle, model, redis_url):
    """worker/state_cache.py: worker A plans on its cached state while worker B moved the symbol, then while
    Redis lost it. A's compare-and-set write is refused each time; A reads Redis and redoes the bars: B's
    events re-emitted byte for byte, the rest as the batch reference says, and after the loss a refill
    (no event from a window with a hole), as without a cache."""
    import redis

    from devstack.kafka_kit import series_messages

    h = model.bundle.history_bars
    symbol, prefix = "SC-stale", "cache-stale"
    b = series(symbol, 2 * h + 120, seed=640)
    msgs = series_messages(symbol, b.times, b.values)
    a = InProcess(tiny_bundle, redis_url, prefix, state_cache_verify=False)  # the cache as it runs in production
    other = InProcess(tiny_bundle, redis_url, prefix)
    client = redis.Redis.from_url(redis_url)
    try:
        cut = h + 40
        got = a.feed(msgs[:cut])
        assert len(a.rt.processor.cache) == 1
        got += a.feed(msgs[cut : cut + 5])  # planned on the cache: no read
        assert _counter(a, "regimetry_state_cache_hits_total") == 1
        other.offset = a.offset
        by_other = other.feed(msgs[cut + 5 : cut + 15])  # B moves the symbol behind A's cache
        a_again = a.feed(msgs[cut + 5 : cut + 25])  # A: cache hit, write refused, read, redone
        assert _counter(a, "regimetry_state_cache_stale_total") == 1
        assert _counter(a, "regimetry_redis_conflicts_total") == 0
        assert a_again[:10] == by_other  # B's stored events, re-emitted unchanged
        n = cut + 25
        assert_matches_reference(model, SimpleNamespace(values=b.values[:n], times=b.times[:n]), got + a_again)

        for key in client.scan_iter(f"{prefix}:*"):  # Redis loses the symbol (a restart without persistence)
            client.delete(key)
        start = cut + 25
        refill = a.feed(msgs[start : start + h + 5])
        assert _counter(a, "regimetry_state_cache_stale_total") == 2
        assert [e["bar_time"] for e in refill] == b.times[start + h - 1 : start + h + 5].tolist()
        ref = model.run_series(b.values[start:])
        np.testing.assert_array_equal([e["regime"]["id"] for e in refill], ref.regime[: len(refill)])
    finally:
        client.close()
        a.close()
        other.close()
