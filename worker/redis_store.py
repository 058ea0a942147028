"""Per-symbol rolling state in Redis: bars, embeddings and regime costs, recent events, the last regime.

Layout (every key of a symbol shares the hash tag ``{SYMBOL}``, so the scripts below also run on a Redis
Cluster, where a script may only touch keys of one slot):

    <prefix>:{SYM}:bars    ZSET  score = bar time, member = packed (time, o, h, l, c, v)
    <prefix>:{SYM}:emb     ZSET  score = bar time, member = packed (time, float32[D] embedding in clustering
                                 geometry, float64[K] regime costs of the bar's window)
    <prefix>:{SYM}:events  ZSET  score = bar time, member = the event exactly as it was sent
    <prefix>:{SYM}:side    ZSET  score = bar time, member = the drift alarms and the regime transition that
                                 bar's event raised, exactly as they were sent (pack_side; bars that raised
                                 none have no member), kept as long as the bar's event
    <prefix>:{SYM}:meta    HASH  last_time, regime, dwell (bars in that regime, the last one included),
                                 pred (predicted next regime), model_version, cusum (the drift detectors'
                                 statistics after the last event, with the model version they belong to),
                                 partition and offset (the bars topic's record of the last stored bar: where a
                                 read-back after a Redis rollback starts, worker/log_reader.py)

The costs are kept as the float64 numbers the batch pass uses (regimetry/regimes.py: the decoder of bar t
reads the last ``memory`` costs), the embeddings for the forecaster: one member holds both, the last
max(span, memory - 1) of them. Bars are kept for max(history + that, dedupe_window), so a symbol's costs and
embeddings can be rebuilt from its bars when they belong to another model (hot reload) or are missing.

Why this shape: bars and events are kept for `dedupe_window` bars so that an at-least-once redelivery finds
its bar already stored and re-emits the stored event byte for byte (same id, same content), and a late or
conflicting bar can be told apart from a harmless duplicate. Reads are side-effect free; the single write per
symbol is a compare-and-set on ``last_time``, so two workers racing on one symbol during a rebalance cannot
interleave appends: the loser re-reads and finds the winner's events. Members are packed binary so a batch's
histories decode with one ``np.frombuffer`` instead of thousands of string parses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import orjson

BAR_DTYPE = np.dtype([("time", ">i8"), ("ohlcv", ">f8", (5,))])

# KEYS: bars, emb, events, meta.  ARGV: n_history, then candidate bar times.
# Returns {meta pairs, last n_history bars concatenated, embedding members concatenated, oldest bar time or '',
# [time, stored bar, stored event] for each candidate at or before last_time (only those can be duplicates),
# number of stored bars}.
# Concatenating fixed-size members server-side turns ~100 reply items per symbol into one.
# KEYS[5] (side): each candidate's stored side records come with its bar and event.
READ_LUA = """
local meta = redis.call('HGETALL', KEYS[4])
local last = tonumber(redis.call('HGET', KEYS[4], 'last_time') or '-1')
local n = tonumber(ARGV[1])
local bars = {}
if n > 0 then bars = redis.call('ZRANGE', KEYS[1], -n, -1) end
local emb = redis.call('ZRANGE', KEYS[2], 0, -1)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local lookups = {}
for i = 2, #ARGV do
  if tonumber(ARGV[i]) <= last then
    local b = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[i], ARGV[i])
    local e = redis.call('ZRANGEBYSCORE', KEYS[3], ARGV[i], ARGV[i])
    local x = redis.call('ZRANGEBYSCORE', KEYS[5], ARGV[i], ARGV[i])
    lookups[#lookups + 1] = {ARGV[i], b[1] or '', e[1] or '', x[1] or ''}
  end
end
return {meta, table.concat(bars), table.concat(emb), oldest[2] or '', lookups, redis.call('ZCARD', KEYS[1])}
"""

# KEYS: bars, emb, events, meta, side.
# ARGV: expected last_time ('' = none), model_version, reset ('1': the embedding members are a rebuild and
#       replace every stored one; '2': everything stored goes first (bars, members, events, side, meta): a
#       reset), keep_bars, keep_emb, keep_events, n_bars, n_emb, n_events, n_side, ttl seconds (0: none), then
#       (score, member) pairs for bars, emb, events, side, then meta field/value pairs. Side members older than
#       the oldest kept event go when events are added.
# Returns 1 when applied, 0 when last_time moved (another worker got there first: re-read and retry).
WRITE_LUA = """
local last = redis.call('HGET', KEYS[4], 'last_time') or ''
if last ~= ARGV[1] then return 0 end
local mv = redis.call('HGET', KEYS[4], 'model_version')
if ARGV[3] == '2' then redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
elseif (mv and mv ~= ARGV[2]) or ARGV[3] == '1' then redis.call('DEL', KEYS[2]) end
local i = 12
local counts = {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])}
local keep = {tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])}
for k = 1, 3 do
  for j = 1, counts[k] do
    redis.call('ZADD', KEYS[k], ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  if counts[k] > 0 then redis.call('ZREMRANGEBYRANK', KEYS[k], 0, -(keep[k] + 1)) end
end
for j = 1, tonumber(ARGV[10]) do
  redis.call('ZADD', KEYS[5], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if counts[3] > 0 then
  local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if oldest[2] then redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. oldest[2]) end
end
redis.call('HSET', KEYS[4], 'model_version', ARGV[2])
while i <= #ARGV do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local ttl = tonumber(ARGV[11])
if ttl > 0 then
  for k = 1, 5 do redis.call('EXPIRE', KEYS[k], ttl) end
end
return 1
"""


def pack_bars(times: list[int], values: np.ndarray) -> list[bytes]:
    """One packed member per bar, from one array build for all of them (not one per bar)."""
    arr = np.empty(len(times), dtype=BAR_DTYPE)
    arr["time"], arr["ohlcv"] = times, values
    return _split(arr.tobytes(), BAR_DTYPE.itemsize)


def pack_bar(time: int, values: tuple[float, ...]) -> bytes:
    return pack_bars([time], np.asarray([values], dtype=np.float64))[0]


def unpack_bars(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated packed bars -> (times int64 (n,), values float64 (n, 5))."""
    if not blob:
        return np.zeros(0, np.int64), np.zeros((0, 5), np.float64)
    arr = np.frombuffer(blob, dtype=BAR_DTYPE)
    return arr["time"].astype(np.int64), arr["ohlcv"].astype(np.float64)


def _embedding_dtype(dim: int, k: int) -> np.dtype:
    return np.dtype([("time", ">i8"), ("z", "<f4", (dim,)), ("cost", "<f8", (k,))])


def pack_embeddings(times: list[int], z: np.ndarray, costs: np.ndarray) -> list[bytes]:
    """One packed member per bar (time, float32[D] embedding, float64[K] costs), from one array build."""
    dtype = _embedding_dtype(z.shape[-1], costs.shape[-1])
    arr = np.empty(len(times), dtype=dtype)
    arr["time"], arr["z"], arr["cost"] = times, z, costs
    return _split(arr.tobytes(), dtype.itemsize)


@dataclass(frozen=True)
class StoredWindows:
    """A symbol's stored members, oldest first."""

    times: np.ndarray  # (n,) int64
    z: np.ndarray  # (n, D) float32
    costs: np.ndarray  # (n, K) float64


def unpack_embeddings(blob: bytes, dim: int, k: int) -> StoredWindows | None:
    """Concatenated packed members (oldest first) -> their times, embeddings and costs; None when the blob
    cannot be members of this layout (another model's sizes, or the costless layout of schema 1)."""
    record = _embedding_dtype(dim, k)
    if len(blob) % record.itemsize:
        return None
    arr = np.frombuffer(blob, dtype=record)
    return StoredWindows(arr["time"].astype(np.int64), arr["z"].astype(np.float32), arr["cost"].astype(np.float64))


SIDE_DRIFT = "drift"  # a drift alarm record (regime-drift topic)
SIDE_TRANSITION = "transition"  # a regime transition record (regime-transitions topic)


@dataclass(frozen=True)
class SideRecord:
    """A record one bar's event raised besides itself: a drift alarm (detector set) or its regime transition."""

    kind: str  # SIDE_DRIFT or SIDE_TRANSITION
    detector: str  # the alarm's detector; "" for a transition
    value: bytes  # the record exactly as it is sent


def pack_side(records: list[SideRecord]) -> bytes:
    """One side member: the bar's records as JSON [[kind, detector, record], ...] (records are UTF-8 JSON,
    so they come back byte for byte)."""
    return orjson.dumps([[r.kind, r.detector, r.value.decode()] for r in records])


def unpack_side(blob: bytes) -> list[SideRecord]:
    return [SideRecord(kind, detector, value.encode()) for kind, detector, value in orjson.loads(blob)] if blob else []


def pack_cusum(model_version: str, state: dict[str, float]) -> bytes:
    """The drift detectors' statistics as stored in meta (floats round-trip exactly through orjson)."""
    return orjson.dumps({"model_version": model_version, "state": state})


def unpack_cusum(raw: bytes | None) -> tuple[str, dict[str, float]] | None:
    if not raw:
        return None
    try:
        doc = orjson.loads(raw)
        return str(doc["model_version"]), {str(k): float(v) for k, v in doc["state"].items()}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None  # unreadable: the detectors start from zero, as for a new symbol


def _split(blob: bytes, size: int) -> list[bytes]:
    return [blob[i : i + size] for i in range(0, len(blob), size)]


@dataclass
class SymbolState:
    """What one symbol looks like in Redis before a batch is applied."""

    last_time: int | None
    regime: int | None
    pred: int | None
    model_version: str | None
    bars: np.ndarray  # (n, 5) the last history - 1 stored bars (all of them: read_bars)
    emb: bytes  # concatenated packed members (embedding + costs), oldest first
    oldest_time: int | None
    lookups: dict[int, tuple[bytes, bytes]]  # bar time <= last_time -> (stored bar, stored event) or b""
    dwell: int | None = None  # bars in `regime`, the last one included
    n_bars: int = 0  # bars stored
    bar_times: np.ndarray | None = None  # (n,) their times
    side: dict[int, bytes] = field(default_factory=dict)  # bar time <= last_time -> its stored side member
    cusum: tuple[str, dict[str, float]] | None = None  # (model version, drift detector statistics) or None
    partition: int | None = None  # bars topic partition and offset of the last stored bar (None: not recorded)
    offset: int | None = None


@dataclass
class SymbolWrite:
    """Everything one batch appends for one symbol, applied atomically or not at all."""

    symbol: str
    expected_last: int | None
    bars: list[tuple[int, bytes]] = field(default_factory=list)
    emb: list[tuple[int, bytes]] = field(default_factory=list)
    events: list[tuple[int, bytes]] = field(default_factory=list)
    side: list[tuple[int, bytes]] = field(default_factory=list)
    meta: dict[str, int | str | bytes] = field(default_factory=dict)
    reset_emb: bool = False  # `emb` is a rebuild: it replaces every stored member
    reset_all: bool = False  # everything stored goes first: the symbol starts again from these bars


# RedisClusterException messages of a cluster the client cannot map right now (no seed answers, slots not
# covered or disputed during a failover): transient, unlike its other uses (a command it cannot route)
_CLUSTER_TOPOLOGY_TEXTS = ("Redis Cluster cannot be connected", "All slots are not covered", "could not agree")


def is_redis_outage(exc: BaseException) -> bool:
    """Redis (or part of a Redis Cluster) is away or failing over: retry later, the bar is not dropped.

    A single Redis: connection refused or lost, a timeout, still loading its data set, a replica that is read
    only for now. A cluster adds CLUSTERDOWN (a master failed and no replica is promoted yet), TRYAGAIN (a slot
    migrating), a slot no node serves, and a client that cannot map the cluster. MOVED and ASK never get here:
    the cluster client follows them itself."""
    from redis.exceptions import (
        BusyLoadingError,
        ClusterDownError,
        ConnectionError,
        ReadOnlyError,
        RedisClusterException,
        SlotNotCoveredError,
        TimeoutError,
        TryAgainError,
    )

    transient = (
        ConnectionError,
        TimeoutError,
        BusyLoadingError,
        ReadOnlyError,
        OSError,
        ClusterDownError,
        TryAgainError,
        SlotNotCoveredError,
    )
    if isinstance(exc, transient):
        return True
    return isinstance(exc, RedisClusterException) and any(t in str(exc) for t in _CLUSTER_TOPOLOGY_TEXTS)


def _int_or_none(raw: bytes | None) -> int | None:
    return int(raw) if raw not in (None, b"") else None


class RedisStore:
    """The two scripts, run as one pipelined round trip per micro-batch (one script call per symbol)."""

    def __init__(
        self,
        client,
        prefix: str,
        history: int,
        emb_keep: int,
        dedupe_window: int,
        model_version: str,
        ttl_seconds: int = 0,
    ):
        self.client = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds  # every key of a symbol expires this long after its last write (0: never)
        self.dedupe_window = dedupe_window
        self.keep_events = max(dedupe_window, 1)
        self.configure(history, emb_keep, model_version)
        self._read_sha: str | None = None
        self._write_sha: str | None = None

    def configure(self, history: int, emb_keep: int, model_version: str) -> None:
        """Sizes that depend on the model in force (set again on a hot reload). `emb_keep` members
        (embedding + costs) per symbol; bars: enough to rebuild them (history + emb_keep), at least the
        dedupe window."""
        self.history = history
        self.keep_emb = max(emb_keep, 1)
        self.keep_bars = max(history + self.keep_emb, self.dedupe_window)
        self.model_version = model_version

    def keys(self, symbol: str) -> list[str]:
        base = f"{self.prefix}:{{{symbol}}}:"
        return [base + "bars", base + "emb", base + "events", base + "meta", base + "side"]

    async def load_scripts(self) -> None:
        """(Re)load both scripts; needed at start and after a Redis restart emptied its script cache. On a
        Redis Cluster the client sends SCRIPT LOAD to every primary (redis-py routes it to PRIMARIES), so a
        replica promoted later without them answers NOSCRIPT once and gets them here (_run)."""
        self._read_sha = await self.client.script_load(READ_LUA)
        self._write_sha = await self.client.script_load(WRITE_LUA)

    async def _run(self, calls: list[tuple[str, list[str], list]]) -> list:
        from redis.exceptions import NoScriptError

        if self._read_sha is None:
            await self.load_scripts()
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for which, keys, args in calls:
                sha = self._read_sha if which == "read" else self._write_sha
                # execute_command, not pipe.evalsha: redis-py's cluster pipeline blocks the evalsha method
                # name, yet routes an EVALSHA by its keys (one slot here: the symbol's hash tag) and sends each
                # node's share as one pipeline, the nodes concurrently; on a single Redis it is what evalsha does
                pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
            try:
                return await pipe.execute()
            except NoScriptError:
                if attempt == 2:
                    raise
                await self.load_scripts()
        raise AssertionError("unreachable")

    async def read(self, candidates: dict[str, list[int]]) -> dict[str, SymbolState]:
        """State of every symbol in the batch; `candidates` are the batch's bar times per symbol."""
        symbols = list(candidates)
        calls = [("read", self.keys(s), [self.history - 1, *candidates[s]]) for s in symbols]
        replies = await self._run(calls)
        out = {}
        for s, (meta_pairs, bars, emb, oldest, lookups, n_bars) in zip(symbols, replies):
            meta = dict(zip(meta_pairs[::2], meta_pairs[1::2]))
            times, values = unpack_bars(bars)
            out[s] = SymbolState(
                last_time=_int_or_none(meta.get(b"last_time")),
                regime=_int_or_none(meta.get(b"regime")),
                pred=_int_or_none(meta.get(b"pred")),
                model_version=meta[b"model_version"].decode() if b"model_version" in meta else None,
                bars=values,
                emb=emb,
                oldest_time=int(float(oldest)) if oldest not in (b"", "") else None,
                lookups={int(t): (bar, event) for t, bar, event, _ in lookups},
                dwell=_int_or_none(meta.get(b"dwell")),
                n_bars=int(n_bars),
                bar_times=times,
                side={int(t): side for t, _, _, side in lookups if side},
                cusum=unpack_cusum(meta.get(b"cusum")),
                partition=_int_or_none(meta.get(b"partition")),
                offset=_int_or_none(meta.get(b"offset")),
            )
        return out

    async def read_bars(self, symbols: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every stored bar of each symbol (times, values), oldest first: the second read of a batch, only for
        symbols whose costs and embeddings must be rebuilt. One pipelined round trip, no side effects."""
        if not symbols:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for s in symbols:
            pipe.zrange(self.keys(s)[0], 0, -1)
        replies = await pipe.execute()
        return {s: unpack_bars(b"".join(members)) for s, members in zip(symbols, replies)}

    async def write(self, writes: list[SymbolWrite]) -> list[bool]:
        """Apply each symbol's appends atomically; False where another writer moved the symbol first."""
        if not writes:
            return []
        calls = []
        for w in writes:
            args: list = [
                "" if w.expected_last is None else str(w.expected_last),
                self.model_version,
                "2" if w.reset_all else "1" if w.reset_emb else "0",
                self.keep_bars,
                self.keep_emb,
                self.keep_events,
                len(w.bars),
                len(w.emb),
                len(w.events),
                len(w.side),
                self.ttl_seconds,
            ]
            for pairs in (w.bars, w.emb, w.events, w.side):
                for score, member in pairs:
                    args += [score, member]
            for k, v in w.meta.items():
                args += [k, v]
            calls.append(("write", self.keys(w.symbol), args))
        return [bool(r) for r in await self._run(calls)]
