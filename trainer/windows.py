"""Bars -> scaled feature rows -> rolling windows, split chronologically.

A window is identified by the index of its last bar: that is the bar whose regime it describes, and the only
bar time the live worker can attach to it without looking ahead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from regimetry.data import BarSeries
from regimetry.features import FeatureSpec, Scaler, compute_features, rolling_windows


def window_end_rows(n_rows: int, window_size: int, stride: int = 1) -> np.ndarray:
    """Row index of the last row of each window produced by rolling_windows."""
    return np.arange(window_size - 1, n_rows, dtype=np.int64)[::stride]


@dataclass
class WindowSet:
    """Windows of one series with their end bars and a chronological train/held-out split."""

    windows: np.ndarray  # (N, W, F) float32, scaled
    end_index: np.ndarray  # (N,) series index of each window's last bar
    end_time: np.ndarray  # (N,) epoch seconds of that bar
    n_train: int  # windows [0, n_train) train, the rest are held out
    scaler: Scaler
    spec: FeatureSpec

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
    feats = compute_features(series.values, spec)  # row r is bar r + lookback - 1
    first_bar = spec.lookback - 1
    ends = window_end_rows(len(feats), window_size, stride)
    n = len(ends)
    if n < 50:
        raise ValueError(f"only {n} windows from {len(series)} bars; need more data or a smaller window")
    n_train = int(round(n * (1.0 - holdout)))
    # The scaler sees only feature rows that belong to training windows (rows up to the last training end).
    if scaler is None:
        scaler = Scaler.fit(feats[: ends[n_train - 1] + 1])
    windows = rolling_windows(scaler.transform(feats), window_size, stride)
    end_index = ends + first_bar
    return WindowSet(windows, end_index, series.times[end_index], n_train, scaler, spec)
