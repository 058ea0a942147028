"""Bars -> scaled feature rows -> rolling windows, split chronologically.

A window is identified by the index of its last bar: that is the bar whose regime it describes, and the only
bar time the live worker can attach to it without looking ahead.

A universe (several symbols) is a list of segments: each symbol's bars (or, with ``max_gap``, each gap-free
run of them) get their own features and windows, so no window spans two symbols or a gap; each symbol is split
chronologically on its own (its later bars held out); the scaler is fitted on the training rows of every
segment. The windows are laid out training windows first (segment by segment), then held-out ones, so
``windows[:n_train]`` stays the training set; ``segments[i].index`` lists segment i's windows in time order and
``next_window`` the next window of the same segment: every stage that walks a sequence walks a segment.
One series is one segment whose index is 0..N-1: the same arrays as before segments existed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from regimetry.data import BarSeries
from regimetry.features import FeatureSpec, Scaler, compute_features, rolling_windows


def window_end_rows(n_rows: int, window_size: int, stride: int = 1) -> np.ndarray:
    """Row index of the last row of each window produced by rolling_windows."""
    return np.arange(window_size - 1, n_rows, dtype=np.int64)[::stride]


@dataclass(frozen=True)
class Segment:
    """A run of consecutive bars of one symbol (the whole symbol unless cut at a gap) and its windows."""

    symbol: str
    series: BarSeries  # the bars of the run (end_index of its windows counts in these)
    index: np.ndarray  # (n,) its windows' positions in the WindowSet, in time order
    n_train: int  # index[:n_train] are training windows, the rest held out

    @property
    def train(self) -> np.ndarray:
        return self.index[: self.n_train]

    @property
    def test(self) -> np.ndarray:
        return self.index[self.n_train :]


@dataclass
class WindowSet:
    """Windows of one series (or of every segment of a universe) with their end bars and a chronological
    train/held-out split."""

    windows: np.ndarray  # (N, W, F) float32, scaled
    end_index: np.ndarray  # (N,) index of each window's last bar in its segment's series
    end_time: np.ndarray  # (N,) epoch seconds of that bar
    n_train: int  # windows [0, n_train) train, the rest are held out
    scaler: Scaler
    spec: FeatureSpec
    segments: tuple[Segment, ...] = ()
    seg: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,) segment of each window
    next_window: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,) -1 at a segment's end
    dropped: list = field(default_factory=list)  # gap-cut runs too short for one window: [symbol, start, bars]

    @property
    def symbols(self) -> list[str]:
        return list(dict.fromkeys(s.symbol for s in self.segments))

    def of_symbol(self, symbol: str) -> tuple[np.ndarray, np.ndarray]:
        """(training windows, held-out windows) of one symbol, each in time order."""
        segs = [s for s in self.segments if s.symbol == symbol]
        return np.concatenate([s.train for s in segs]), np.concatenate([s.test for s in segs])

    @property
    def train(self) -> np.ndarray:
        return self.windows[: self.n_train]

    @property
    def test(self) -> np.ndarray:
        return self.windows[self.n_train :]


def build_windows(
    series: BarSeries, spec: FeatureSpec, window_size: int, stride: int, holdout: float, scaler: Scaler | None = None
) -> WindowSet:
    """Features for every bar, scaler fitted on the training bars only (or the given one: a warm-started
    refit keeps its predecessor's), windows, split by time."""
    return build_universe_windows([series], spec, window_size, stride, holdout, scaler)


def split_at_gaps(series: BarSeries, max_gap: float | None) -> list[BarSeries]:
    """The runs of a series between gaps: consecutive bars more than ``max_gap`` times the series' median bar
    interval apart (None: never cut)."""
    if max_gap is None or len(series) < 3:
        return [series]
    d = np.diff(series.times)
    cuts = np.flatnonzero(d > float(max_gap) * float(np.median(d))) + 1
    bounds = [0, *cuts.tolist(), len(series)]
    return [series.slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def build_universe_windows(
    universe: list[BarSeries],
    spec: FeatureSpec,
    window_size: int,
    stride: int,
    holdout: float,
    scaler: Scaler | None = None,
    max_gap: float | None = None,
) -> WindowSet:
    """Windows of every symbol (module docstring): features and windows per segment, each symbol's windows
    split chronologically (the last ``holdout`` share held out), the scaler fitted on the feature rows of
    every training window of every symbol."""
    need = spec.lookback + window_size - 1  # bars behind the first window
    runs: list[tuple[str, BarSeries, np.ndarray, np.ndarray, int]] = []  # symbol, bars, features, ends, n_train
    dropped: list = []
    for series in universe:
        pieces = split_at_gaps(series, max_gap)
        kept = [p for p in pieces if len(p) >= need]
        dropped += [[series.symbol, int(p.times[0]), len(p)] for p in pieces if len(p) < need]
        if not kept:
            raise ValueError(
                f"{series.symbol}: {len(series)} bars"
                + (f" in {len(pieces)} gap-free runs" if len(pieces) > 1 else "")
                + f", too few for one window: a window needs {need} consecutive bars ({spec.lookback - 1} of "
                f"feature history + window_size {window_size})"
            )
        feats = [compute_features(p.values, spec) for p in kept]  # row r is bar r + lookback - 1
        ends = [window_end_rows(len(f), window_size, stride) for f in feats]
        n_sym = sum(len(e) for e in ends)
        n_train_sym = max(1, int(round(n_sym * (1.0 - holdout))))  # every symbol has a training window
        before = 0
        for p, f, e in zip(kept, feats, ends):
            runs.append((series.symbol, p, f, e, min(max(n_train_sym - before, 0), len(e))))
            before += len(e)
    n = sum(len(r[3]) for r in runs)
    if n < 50:
        raise ValueError(
            f"only {n} windows from {sum(len(s) for s in universe)} bars; need more data or a smaller window"
        )
    n_train = sum(r[4] for r in runs)
    if n_train == 0:
        raise ValueError(f"no training window among {n}; lower holdout")
    # The scaler sees only feature rows that belong to training windows (rows up to each run's last training end).
    if scaler is None:
        rows = [f[: e[k - 1] + 1] for _, _, f, e, k in runs if k > 0]
        scaler = Scaler.fit(rows[0] if len(rows) == 1 else np.concatenate(rows))
    first_bar = spec.lookback - 1
    wins = [rolling_windows(scaler.transform(f), window_size, stride) for _, _, f, _, _ in runs]
    order = [(i, slice(0, k)) for i, (*_, k) in enumerate(runs)] + [
        (i, slice(k, None)) for i, (*_, k) in enumerate(runs)
    ]
    windows = wins[0] if len(runs) == 1 else np.concatenate([wins[i][sl] for i, sl in order])
    end_index = np.concatenate([runs[i][3][sl] + first_bar for i, sl in order]).astype(np.int64)
    end_time = np.concatenate([runs[i][1].times[runs[i][3][sl] + first_bar] for i, sl in order])
    seg = np.concatenate([np.full(len(runs[i][3][sl]), i, np.int64) for i, sl in order])
    pos = np.arange(n, dtype=np.int64)
    segments = tuple(Segment(sym, p, pos[seg == i], k) for i, (sym, p, _, _, k) in enumerate(runs))
    next_window = np.full(n, -1, dtype=np.int64)
    for sg in segments:
        next_window[sg.index[:-1]] = sg.index[1:]
    return WindowSet(windows, end_index, end_time, n_train, scaler, spec, segments, seg, next_window, dropped)
