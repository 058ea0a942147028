"""The flat-next baseline: the regime of the next window if the next bar does nothing. No forecaster involved.

The window one step later differs from the current one in two ways: a new bar comes in at the end and the
oldest bar drops out. The second half is known today. So the regime of "the current bars plus one bar on which
nothing happens" is a forecast that needs no model of the future, and a forecaster that cannot beat it has
learnt nothing about the next bar.

The flat bar appended after bar t (``e = end_index[n]``) is

    open = high = low = close = close[e]     no return, no range, no body: price does not move
    volume = volume[e]                       the last volume repeated

Volume is repeated rather than set to 0 because 0 is an event of its own: the features see volume as a z-score
of log1p(volume) against its last 20 bars, and a zero there is an extreme outlier (a "something happened" bar),
while repeating the last volume changes that z-score as little as any value can. Caveat, inherent to a flat
bar: its log range sits at the feature floor log(1e-6), far below any real bar's, so after scaling it is
usually clipped to -clip. The flat bar is the calmest bar possible and the flat window leans calm.

With stride s the next scored window ends s bars later, so ``n_flat=s`` appends s such bars (the default 1 is
the stride-1 case).

Shapes (T bars, N steps, H = history_bars = spec.lookback + window_size - 1 = manifest["history_bars"],
W = window_size, F = spec.n_features):

    values        (T, 5)     open, high, low, close, volume of one symbol
    end_index     (N,)       bar index (into values) of the last bar of each current window; >= H - 1 - n_flat
    histories     (N, H, 5)  float64: bars end_index[n]-H+1+n_flat .. end_index[n], then n_flat flat bars
    windows       (N, W, F)  float32: the scaled feature window ending at the (last) flat bar

``scaled_windows(histories, spec, scaler, W)[:, 0]`` (what ``RegimeModel.windows`` does) turns histories into
windows: each history is exactly H bars long, so it holds exactly one window. Features are computed once per
step over H bars only (not over the whole series), so 5,000 steps cost a few tenths of a second.

numpy only: used by ``regimetry evaluate`` (ONNX Runtime) and by the trainer (Keras) alike.
"""

from __future__ import annotations

import numpy as np

from regimetry.features import FeatureSpec, Scaler, history_needed, scaled_windows
from regimetry.regimes import JumpDecoder, RegimeSpace


def flat_bar_histories(values: np.ndarray, end_index: np.ndarray, history_bars: int, n_flat: int = 1) -> np.ndarray:
    """(T, 5) bars, (N,) window-end bar indices -> (N, history_bars, 5): the last history_bars - n_flat real bars
    up to and including end_index[n], followed by n_flat flat bars (see the module docstring)."""
    values = np.asarray(values, dtype=np.float64)
    end_index = np.asarray(end_index, dtype=np.int64).ravel()
    if values.ndim != 2 or values.shape[1] != 5:
        raise ValueError(f"values must be (T, 5) open/high/low/close/volume, got shape {values.shape}")
    if n_flat < 1 or n_flat >= history_bars:
        raise ValueError(f"n_flat must be in [1, history_bars), got {n_flat} (history_bars={history_bars})")
    real = history_bars - n_flat
    if len(end_index) and (end_index.min() < real - 1 or end_index.max() >= len(values)):
        raise ValueError(
            f"end_index must lie in [{real - 1}, {len(values) - 1}] ({real} real bars before "
            f"the flat one(s)), got [{end_index.min()}, {end_index.max()}]"
        )
    idx = end_index[:, None] + np.arange(1 - real, 1)[None, :]  # (N, real), oldest first
    last = values[end_index]  # (N, 5)
    flat = np.repeat(last[:, 3:4], 5, axis=1)  # o = h = l = c = close
    flat[:, 4] = last[:, 4]  # volume repeated
    return np.concatenate([values[idx], np.repeat(flat[:, None, :], n_flat, axis=1)], axis=1)


def flat_next_windows(
    values: np.ndarray,
    end_index: np.ndarray,
    spec: FeatureSpec,
    scaler: Scaler,
    window_size: int,
    n_flat: int = 1,
    block: int = 1024,
) -> np.ndarray:
    """(N, window_size, F) float32 scaled feature windows, each ending at the flat bar(s) appended after
    end_index[n]: ready for the encoder (ONNX ``RegimeModel.embed`` or the Keras encoder). Built in blocks of
    ``block`` steps to bound memory."""
    end_index = np.asarray(end_index, dtype=np.int64).ravel()
    h = history_needed(spec, window_size)
    if len(end_index) == 0:
        return np.zeros((0, window_size, spec.n_features), np.float32)
    return np.concatenate(
        [
            scaled_windows(flat_bar_histories(values, end_index[i : i + block], h, n_flat), spec, scaler, window_size)[
                :, 0
            ]
            for i in range(0, len(end_index), block)
        ]
    )


def next_window_regimes(
    space: RegimeSpace, decoder: JumpDecoder, w_prev: np.ndarray, windows: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """The regime of the window one bar after bar t, labelled the way every window is labelled: the causal
    jump decoder (regimetry/regimes.py) stepped once from its values at t, on that window's own costs.

    w_prev   (N, K)     decoder values at bar t (``SeriesRegimes.values`` / the trainer's decoded ``w``)
    windows  (N, W, F)  the next windows (here: flat_next_windows), whose last feature row enters the geometry
    z        (N, D)     their embeddings, standardised (``RegimeModel.embed`` / the trainer's z geometry)
    returns  (N,)       int64 regime ids

    The one rule for flat-next regimes on both sides (ONNX evaluate and Keras training): swap the labelling
    here and every flat-next score follows. Unlike the forecaster's next regime (which carries bar t's feature
    row forward beside a predicted embedding), the flat window brings its own last row: the flat bar's."""
    costs = space.costs(space.geometry(np.asarray(windows)[:, -1, :], z))
    return decoder.step(np.asarray(w_prev, dtype=np.float64), costs).argmin(1).astype(np.int64)
