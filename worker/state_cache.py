"""Each symbol's Redis state as this worker's own last write left it, so the next batch need not read it back.

Why: on a live feed a batch holds about one new bar per symbol, and reading the symbol's state (its last
history - 1 bars and memory - 1 embeddings with costs, ~19 KB at memory 128, ~32 KB at 256) was the largest
single share of a small batch (~2.2 of ~8.5 ms for a dozen symbols, at memory 128). After a write that held,
this worker knows exactly what Redis holds for the symbol, because the write script (worker/redis_store.py,
WRITE_LUA) is a pure function of the state it found and the write: ``after_write`` applies the same appends,
trims and resets in-process.

Why it cannot serve a wrong event: the cache only ever stands in for a read, and the write that follows is
still the compare-and-set on the symbol's last bar time. Whatever happened in Redis meanwhile (another
worker moved the symbol, Redis restarted empty, failed over to an older copy, expired the keys) moved or
removed ``last_time``, so that write is refused and the symbol is read and redone (worker/pipeline.py), as
when two workers race. A batch whose bars include any at or before the cached last bar (a redelivery, a
duplicate, a late bar) reads Redis as before: only the read returns stored events to re-emit. A hot reload
clears the cache, as does an offset jump in a partition (a rebalance or seek) for that partition's symbols.

``verify`` (REGIMETRY_STATE_CACHE_VERIFY, on in the tests): every hit is also read from Redis and compared
field by field; a difference is a bug and stops the batch (the runner's exit-on-bug path).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from worker.redis_store import SymbolState, SymbolWrite, unpack_bars, unpack_cusum

# the fields a read returns that a batch of bars all after last_time can depend on (lookups, side and
# oldest_time only matter for bars at or before it, which always read Redis)
COMPARED = ("last_time", "regime", "pred", "model_version", "emb", "dwell", "n_bars", "cusum", "partition", "offset")


class StateCache:
    def __init__(self, max_symbols: int, history: int, keep_bars: int, keep_emb: int):
        self.max_symbols = max_symbols  # 0: off
        self._states: OrderedDict[str, SymbolState] = OrderedDict()
        self.configure(history, keep_bars, keep_emb)

    def configure(self, history: int, keep_bars: int, keep_emb: int) -> None:
        """The store's sizes in force (a hot reload changes them: everything cached goes)."""
        self.history, self.keep_bars, self.keep_emb = history, keep_bars, keep_emb
        self._states.clear()

    def __len__(self) -> int:
        return len(self._states)

    def get(self, symbol: str, times: list[int], model_version: str) -> SymbolState | None:
        """The cached state when it can stand in for a read of a batch with these bar times: every bar after
        the cached last bar, and written by the model in force."""
        st = self._states.get(symbol)
        if st is None or st.last_time is None or st.model_version != model_version or min(times) <= st.last_time:
            return None
        self._states.move_to_end(symbol)
        return st

    def drop(self, symbol: str) -> None:
        self._states.pop(symbol, None)

    def drop_partition(self, partition: int) -> None:
        for symbol in [s for s, st in self._states.items() if st.partition == partition]:
            del self._states[symbol]

    def clear(self) -> None:
        self._states.clear()

    def after_write(self, before: SymbolState, write: SymbolWrite, model_version: str) -> None:
        """Remember what Redis holds for the symbol once `write` held on the state `before` (WRITE_LUA, step by
        step); ``before`` is the state the batch planned on (read or cached)."""
        if self.max_symbols <= 0:
            return
        reset_all = write.reset_all
        drop_emb = reset_all or write.reset_emb or (before.model_version not in (None, model_version))
        new_times, new_values = unpack_bars(b"".join(member for _, member in write.bars))
        old_times = np.zeros(0, np.int64) if reset_all or before.bar_times is None else before.bar_times
        old_values = np.zeros((0, 5)) if reset_all else before.bars
        n_bars = (0 if reset_all else before.n_bars) + len(write.bars)
        keep = self.history - 1
        bars = np.concatenate([old_values, new_values])[-keep:] if keep > 0 else new_values[:0]
        bar_times = np.concatenate([old_times, new_times])[-keep:] if keep > 0 else new_times[:0]
        emb = b"" if drop_emb else before.emb
        if write.emb:
            members = [member for _, member in write.emb]
            size = len(members[0])
            emb = (emb + b"".join(members))[-self.keep_emb * size :]
        meta = write.meta
        packed = meta.get("cusum")
        cusum = unpack_cusum(packed) if isinstance(packed, bytes) else (None if reset_all else before.cusum)
        st = SymbolState(
            last_time=int(meta["last_time"]),
            regime=_field(meta, "regime", None if reset_all else before.regime),
            pred=_field(meta, "pred", None if reset_all else before.pred),
            model_version=model_version,
            bars=bars,
            emb=emb,
            oldest_time=None,  # not kept: only bars at or before last_time need it, and they read Redis
            lookups={},
            dwell=_field(meta, "dwell", None if reset_all else before.dwell),
            n_bars=min(n_bars, self.keep_bars),
            bar_times=bar_times,
            side={},
            cusum=cusum,
            partition=_field(meta, "partition", None if reset_all else before.partition),
            offset=_field(meta, "offset", None if reset_all else before.offset),
        )
        self._states[write.symbol] = st
        self._states.move_to_end(write.symbol)
        while len(self._states) > self.max_symbols:
            self._states.popitem(last=False)


def _field(meta: dict, name: str, default: int | None) -> int | None:
    """A meta field as a read decodes it: written "" means absent."""
    if name not in meta:
        return default
    value = meta[name]
    return None if value in ("", b"") else int(value)


def differences(cached: SymbolState, read: SymbolState) -> list[str]:
    """Fields where a cached state differs from what Redis returned (empty: equal)."""
    out = [f for f in COMPARED if getattr(cached, f) != getattr(read, f)]
    if not np.array_equal(cached.bars, read.bars):
        out.append("bars")
    if not np.array_equal(
        cached.bar_times if cached.bar_times is not None else np.zeros(0, np.int64),
        read.bar_times if read.bar_times is not None else np.zeros(0, np.int64),
    ):
        out.append("bar_times")
    return out
