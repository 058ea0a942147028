"""From a window's embedding to its regime: the regime geometry, per-regime costs and a causal jump decoder.

Shared, like the features, by the trainer (a whole series at once) and the worker (a few bars per symbol per
micro-batch), so the served regime of a bar is the same arithmetic on the same numbers in both.

Why this shape (measured with benchmarks/bench_regimes.py): labelling each window by its own embedding alone
(the nearest-neighbour vote of the first build) said less about the next bar's risk than a trailing standard
deviation and flickered out of sample. Two things were missing:

1. **Risk at several horizons, read directly.** The geometry of a window is its embedding (weighted as one
   block) next to the window's last feature row at the bar's log range and the range-based volatility and trend
   columns (``log_range``, ``log_rvol_hl*``, ``trend_hl*`` in regimetry/features.py), each weight set by the
   trainer so that a column's within-regime spread is 1 (trainer/clustering.py::whiten). Regimes then separate by
   risk first, whatever the unsupervised encoder chose to keep.
2. **Persistence, decoded causally.** The statistical jump model's online step: with the cost of regime k at
   bar t ``L[t, k] = 0.5 * ||g_t - c_k||^2`` and a penalty ``lam`` per switch,

       V[t, k] = L[t, k] + min_j (V[t-1, j] + lam * [j != k]),   regime_t = argmin_k V[t, k]

   which is O(K) per bar after normalising ``W = V - min V``: ``W[t, k] = L[t, k] + min(W[t-1, k], lam) - m_t``.
   A regime changes only once the evidence against it has added up to ``lam``.

**Finite memory, so live equals batch by construction.** ``V`` depends on the whole history; the decoder here
restarts the recursion ``memory`` bars back (from W = 0) for every bar. Because ``min(W, lam)`` clips, two runs
of the recursion from different starting states become *identical* as soon as every non-winning regime has been
``lam`` behind once, which on real and planted bars happens within a few dozen bars; the restart therefore
changes almost nothing (see tests/test_regimes.py) and buys the property the system depends on: the regime at
bar t is a finite function of the last ``memory`` costs, so the worker needs only those costs (stored in Redis
beside the embeddings) and a batch pass over a series, a redelivery, a refill or a hot reload all give the same
labels. The first bars of a series use the costs they have (the window is padded with zero rows, which leave
W at 0: the same as starting at the first bar).

**A robust cost, optionally** (``huber_delta``): the Gaussian cost lets one outlying bar carry a switch alone,
since its evidence ``0.5 * (||g - c_a||^2 - ||g - c_b||^2)`` grows without bound with the bar's distance. With
``huber_delta = d`` each coordinate's cost is Huber's, ``0.5 * r^2`` within ``d`` of the centre and
``d * |r| - 0.5 * d^2`` beyond (the negative log-likelihood of a density Gaussian in the middle and Laplace in the
tails, in nats as before), so one bar's evidence for a switch is bounded by ``d`` times the centres' separation
per coordinate. ``None`` (the default, and what a bundle without the field means) is the Gaussian cost.

Probabilities are the decoder's normalised max-marginals ``p_k ~ exp(-W[t, k] / temperature)``: with
temperature 1 they are exactly what its own model says (isotropic unit-variance Gaussian costs, a switch
costing ``lam`` nats), not vote shares.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class RegimeSpace:
    """Where regimes live and where their centres are.

    ``risk_columns`` index the feature rows (the scaled window's last row); ``risk_weights`` multiply them;
    the standardised embedding is multiplied by ``embedding_weight / sqrt(D)``, so the whole embedding weighs
    as much as one risk column of weight ``embedding_weight``. ``huber_delta`` (None: Gaussian) makes the
    per-regime cost Huber's per coordinate (module docstring), in the units of this geometry.
    """

    risk_columns: tuple[int, ...]
    risk_weights: tuple[float, ...]
    embedding_weight: float
    centroids: np.ndarray  # (K, P) in this geometry, P = len(risk_columns) + D
    huber_delta: float | None = field(default=None, kw_only=True)

    @property
    def n_regimes(self) -> int:
        return int(len(self.centroids))

    def geometry(self, last_rows: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(N, F) scaled feature rows of each window's last bar and (N, D) standardised embeddings -> (N, P)."""
        last_rows = np.asarray(last_rows, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        risk = last_rows[:, list(self.risk_columns)] * np.asarray(self.risk_weights, dtype=np.float64)
        emb = z * (self.embedding_weight / np.sqrt(max(z.shape[1], 1)))
        return np.concatenate([risk, emb], axis=1)

    def costs(self, g: np.ndarray) -> np.ndarray:
        """(N, P) -> (N, K) cost of each regime (the jump model's loss): 0.5 * squared distance to its centre,
        or with ``huber_delta`` the sum of the coordinates' Huber costs."""
        return point_costs(g, self.centroids, self.huber_delta)

    def to_dict(self) -> dict:
        d = {
            "risk_columns": list(self.risk_columns),
            "risk_weights": list(self.risk_weights),
            "embedding_weight": self.embedding_weight,
            "centroids": np.asarray(self.centroids).tolist(),
        }
        if self.huber_delta is not None:  # absent = Gaussian: a Gaussian space's dict (and hash) is unchanged
            d["huber_delta"] = float(self.huber_delta)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RegimeSpace:
        delta = d.get("huber_delta")
        return cls(
            tuple(int(c) for c in d["risk_columns"]),
            tuple(float(w) for w in d["risk_weights"]),
            float(d["embedding_weight"]),
            np.asarray(d["centroids"], dtype=np.float64),
            huber_delta=None if delta is None else float(delta),
        )


def point_costs(g: np.ndarray, centroids: np.ndarray, huber_delta: float | None = None) -> np.ndarray:
    """(N, P), (K, P) -> (N, K) costs: 0.5 * squared distance (``huber_delta`` None), or the sum over
    coordinates of Huber's cost with threshold ``huber_delta``: 0.5 * r^2 for |r| <= delta, delta * |r| -
    0.5 * delta^2 beyond (equal value and slope at delta)."""
    if huber_delta is None:
        return 0.5 * sq_distances(g, centroids)
    d = float(huber_delta)
    if not d > 0:
        raise ValueError(f"huber_delta must be > 0, got {huber_delta}")
    r = np.abs(np.asarray(g, dtype=np.float64)[:, None, :] - np.asarray(centroids, dtype=np.float64)[None, :, :])
    return np.where(r <= d, 0.5 * r * r, d * r - 0.5 * d * d).sum(-1)


def sq_distances(g: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N, P), (K, P) -> (N, K) squared Euclidean distances, computed as differences (exact for near points)."""
    g = np.asarray(g, dtype=np.float64)
    c = np.asarray(centroids, dtype=np.float64)
    return ((g[:, None, :] - c[None, :, :]) ** 2).sum(-1)


@dataclass(frozen=True)
class JumpDecoder:
    """The causal jump decoder with finite memory (module docstring)."""

    penalty: float  # lam: cost of one switch, in the units of the costs
    memory: int  # bars of costs behind each decision (the bar itself included)
    temperature: float = 1.0
    SMALL: ClassVar[int] = 16  # values_at runs on Python floats up to this many bars x regimes
    GATHERED: ClassVar[int] = 256  # ... and gathers every window at once up to this many

    def values_at(self, seq: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """(S, K) costs laid end to end and (N,) the first row of each bar's window -> (N, K) values W (min 0):
        bar n is decided from ``seq[starts[n] : starts[n] + memory]``, oldest first, the recursion restarted
        from W = 0 (``sequence`` pads a series' first bars with zero costs, which leave W at 0, so a bar with
        fewer than ``memory`` costs before it gets what a shorter recursion gives).

        The one implementation of the decoder's arithmetic (``decode_series`` and the worker call it), in three
        loops by batch size, each doing the same IEEE double operations in the same order (min with the
        penalty, add the cost, subtract the minimum), so a bar gets the same bits whatever batch it travels in
        (tests/test_regimes.py). Why three: a step is a handful of numpy calls of ~2 us each whatever their
        size, which is most of the work for a small batch, while a large batch must not copy its windows.

        - N x K <= ``SMALL`` (a live worker's bar arriving alone): the steps on Python floats (memory 256, one
          bar: 3.7 -> 0.7 ms).
        - N x K <= ``GATHERED``: every bar's window gathered once, (M, K, N), then four calls a step (ten bars:
          3.3 -> 1.4 ms).
        - larger: one row per bar gathered per step from the shared sequence in a (K, N) layout, since a bar's
          window overlaps its neighbours' and the (M, K, N) copy would cost more than the steps (~4x at memory
          256 and a thousand bars)."""
        seq = np.asarray(seq, dtype=np.float64)
        starts = np.asarray(starts, dtype=np.int64)
        if len(starts) and (starts.min() < 0 or starts.max() + self.memory > seq.shape[0]):
            raise ValueError(f"a window of {self.memory} costs runs off the {seq.shape[0]}-row sequence")
        k, n, m = seq.shape[1], len(starts), self.memory
        if n * k <= self.SMALL:
            return self._values_small(seq, starts)
        rows: Iterable[np.ndarray]  # step i: (K, N) the i-th cost of every bar's window, oldest first
        if n * k <= self.GATHERED:
            rows = np.ascontiguousarray(np.moveaxis(seq[starts[None, :] + np.arange(m)[:, None]], 2, 1))
        else:
            seq_t, row = np.ascontiguousarray(seq.T), np.empty((k, n))  # (K, S): one row per bar gathered a step
            rows = (np.take(seq_t, starts + i, axis=1, out=row) for i in range(m))
        lam = float(self.penalty)
        w, low = np.zeros((k, n)), np.empty(n)
        for r in rows:
            np.minimum(w, lam, out=w)
            w += r
            np.minimum.reduce(w, axis=0, out=low)
            w -= low
        return np.ascontiguousarray(w.T)

    def _values_small(self, seq: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """``values_at`` for a few bars, step by step on Python floats (same operations, same order, same bits)."""
        lam, m = float(self.penalty), self.memory
        out = np.empty((len(starts), seq.shape[1]))
        for i, s in enumerate(starts.tolist()):
            w = [0.0] * seq.shape[1]
            for row in seq[s : s + m].tolist():
                w = [(a if a < lam else lam) + c for a, c in zip(w, row)]
                low = min(w)
                w = [a - low for a in w]
            out[i] = w
        return out

    def step(self, w_prev: np.ndarray, costs: np.ndarray) -> np.ndarray:
        """One more bar: (N, K) values and (N, K) costs of the next bar -> (N, K) values (the one-step-ahead
        regime of a forecast embedding, or of the window extended by a flat bar)."""
        w = np.asarray(costs, dtype=np.float64) + np.minimum(np.asarray(w_prev, dtype=np.float64), self.penalty)
        return w - w.min(1, keepdims=True)

    def proba(self, w: np.ndarray) -> np.ndarray:
        """(N, K) values -> (N, K) probabilities exp(-W / T), normalised (the winner's is the largest)."""
        e = np.exp(-np.asarray(w, dtype=np.float64) / self.temperature)
        return e / e.sum(1, keepdims=True)

    def decode_series(self, costs: np.ndarray) -> np.ndarray:
        """(T, K) costs of consecutive bars -> (T, K) values: bar t decided from costs[max(0, t-M+1) : t+1].

        The same arithmetic as the worker's (``values_at``) on the same zero-padded windows, so both agree
        exactly."""
        costs = np.asarray(costs, dtype=np.float64)
        return self.values_at(self.sequence(np.zeros((0, costs.shape[1])), costs), np.arange(len(costs)))

    def sequence(self, stored: np.ndarray, new: np.ndarray) -> np.ndarray:
        """(S, K) costs already stored for a symbol (oldest first, any number) and (n, K) costs of its new
        bars -> (memory - 1 + n, K): zero padding, the last memory - 1 stored costs, the new ones; new bar j's
        window is rows j .. j + memory - 1 (``values_at`` with starts j)."""
        new = np.asarray(new, dtype=np.float64)
        k = new.shape[1]
        stored = (
            np.asarray(stored, dtype=np.float64).reshape(-1, k)[-(self.memory - 1) :]
            if self.memory > 1
            else np.zeros((0, k))
        )
        pad = np.zeros((self.memory - 1 - len(stored), k))
        return np.concatenate([pad, stored, new])

    def to_dict(self) -> dict:
        return {"kind": "jump", "penalty": self.penalty, "memory": self.memory, "temperature": self.temperature}

    @classmethod
    def from_dict(cls, d: dict) -> JumpDecoder:
        return cls(float(d["penalty"]), int(d["memory"]), float(d.get("temperature", 1.0)))


def dwell(labels: np.ndarray, previous: int | None = None, previous_dwell: int = 0) -> np.ndarray:
    """(T,) labels -> (T,) bars spent in the current regime, this bar included; ``previous``/``previous_dwell``
    continue a sequence (the worker's stored last regime and its dwell)."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.empty(len(labels), dtype=np.int64)
    last, run = previous, previous_dwell
    for i, lab in enumerate(labels.tolist()):
        run = run + 1 if lab == last else 1
        out[i] = run
        last = lab
    return out
