"""Bar features shared by the trainer (whole history at once) and the worker (a few bars at a time).

Every feature is a *finite* function of the last ``lookback`` bars: exponential averages use a truncated,
normalised kernel instead of a recursion. That costs a little smoothing accuracy but buys the property the
system depends on: the value at bar t is the same number whether it is computed over ten years of history or
over the last ``lookback`` bars held in Redis, because it is literally the same arithmetic on the same bars.
The worker therefore needs no per-symbol recursive state, and a redelivered bar recomputes exactly.

Input is an array of bars shaped ``(..., T, 5)`` with columns open, high, low, close, volume; any leading
axes are batch axes (the worker stacks one history per symbol). Output is ``(..., T - lookback + 1, F)``:
row j holds the features of bar ``j + lookback - 1``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

OHLCV = ("open", "high", "low", "close", "volume")
FEATURE_CODE_VERSION = 4  # bump whenever the arithmetic below changes; it is part of the spec hash

_EPS = 1e-12
_TINY = 1e-6  # floor inside logs of ranges/volatility: a flat bar (high == low) stays finite


@dataclass(frozen=True)
class FeatureSpec:
    """Parameters of the feature set; its hash ties a model bundle to this exact code."""

    return_lags: tuple[int, ...] = (1,)
    momentum: int = 10
    atr: int = 14
    rsi: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    volatility: int = 20
    volume: int = 20
    ema_kernel: float = 2.0  # truncated EMA kernels hold ema_kernel * span bars
    # range-based (Garman-Klass + overnight gap) volatility and trend at several half-lives: the inputs that carry
    # risk at several horizons, which the regime geometry reads directly (regimetry/regimes.py)
    risk_halflives: tuple[int, ...] = (3, 10, 30)
    trend_halflives: tuple[int, ...] = (10, 30)
    risk_kernel: float = 3.0  # truncated half-life kernels hold risk_kernel * half-life bars
    names: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "names",
            (
                "log_return",
                "log_range",
                "body_share",
                "upper_shadow_share",
                "lower_shadow_share",
                f"momentum_{self.momentum}",
                f"log_atr_{self.atr}",
                f"rsi_{self.rsi}",
                "macd_hist",
                f"log_volatility_{self.volatility}",
                f"volume_z_{self.volume}",
                "volatility_ratio",
                *(f"log_rvol_hl{h}" for h in self.risk_halflives),
                *(f"trend_hl{h}" for h in self.trend_halflives),
            ),
        )

    @property
    def n_features(self) -> int:
        return len(self.names)

    def kernel_len(self, span: int) -> int:
        return max(1, int(round(self.ema_kernel * span)))

    def halflife_len(self, halflife: int) -> int:
        return max(1, int(round(self.risk_kernel * halflife)))

    @property
    def lookback(self) -> int:
        """Bars needed to compute the features of one bar (the bar itself included)."""
        macd = self.kernel_len(self.macd_slow) + self.kernel_len(self.macd_signal) - 1
        risk = max((self.halflife_len(h) for h in (*self.risk_halflives, *self.trend_halflives)), default=0)
        return 1 + max(self.momentum, self.atr, self.rsi, macd, self.volatility, 2 * self.volatility, self.volume, risk)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["return_lags"] = list(self.return_lags)
        d["risk_halflives"] = list(self.risk_halflives)
        d["trend_halflives"] = list(self.trend_halflives)
        d["names"] = list(self.names)
        d["code_version"] = FEATURE_CODE_VERSION
        d["lookback"] = self.lookback
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        keys = {
            "return_lags",
            "momentum",
            "atr",
            "rsi",
            "macd_fast",
            "macd_slow",
            "macd_signal",
            "volatility",
            "volume",
            "ema_kernel",
            "risk_halflives",
            "trend_halflives",
            "risk_kernel",
        }
        kw = {k: d[k] for k in keys if k in d}
        for k in ("return_lags", "risk_halflives", "trend_halflives"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def hash(self) -> str:
        """sha256 of the canonical spec (parameters + code version + feature names)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def _rolling(x: np.ndarray, n: int) -> np.ndarray:
    """Trailing windows of length n along the last axis: (..., T) -> (..., T-n+1, n), read-only.

    The view numpy's sliding_window_view(x, n, axis=-1) returns (same shape, strides and memory, so the same
    numbers come out of it), built directly: its argument checks cost ~10 us a call, 16 calls per feature
    pass, a third of the pass for a live worker's one-bar batch."""
    if not 1 <= n <= x.shape[-1]:
        raise ValueError(f"window {n} does not fit {x.shape[-1]} values")
    return as_strided(x, (*x.shape[:-1], x.shape[-1] - n + 1, n), (*x.strides, x.strides[-1]), writeable=False)


def _ema_fir(x: np.ndarray, span: int, length: int) -> np.ndarray:
    """Truncated exponential average: weights (1-a)^k for the last ``length`` values, normalised to 1."""
    alpha = 2.0 / (span + 1.0)
    w = (1.0 - alpha) ** np.arange(length - 1, -1, -1, dtype=np.float64)  # oldest first
    w /= w.sum()
    return _rolling(x, length) @ w


def _halflife_fir(x: np.ndarray, halflife: int, length: int) -> np.ndarray:
    """Truncated exponential average with weights 2^(-k / halflife) for the last ``length`` values, normalised."""
    w = 0.5 ** (np.arange(length - 1, -1, -1, dtype=np.float64) / halflife)  # oldest first
    w /= w.sum()
    return _rolling(x, length) @ w


def garman_klass(lo: np.ndarray, lh: np.ndarray, ll: np.ndarray, lc: np.ndarray) -> np.ndarray:
    """Range-based variance of each bar from its log open/high/low/close (Garman-Klass; >= 0 since
    |log(c/o)| <= log(h/l)): the one expression behind the log_rvol_hl* features and the trainer's
    per-bar volatility (trainer/clustering.py::bar_volatility)."""
    return 0.5 * (lh - ll) ** 2 - (2.0 * np.log(2.0) - 1.0) * (lc - lo) ** 2


def _align(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Right-align series of different lengths along the last axis (they all end at the same bar)."""
    n = min(a.shape[-1] for a in arrays)
    return [a[..., a.shape[-1] - n :] for a in arrays]


def compute_features(bars: np.ndarray, spec: FeatureSpec = FeatureSpec()) -> np.ndarray:
    """Features of every bar that has ``spec.lookback`` bars of history, as float64.

    ``bars`` is (..., T, 5) open/high/low/close/volume with positive prices and T >= lookback.
    """
    bars = np.asarray(bars, dtype=np.float64)
    if bars.shape[-1] != 5:
        raise ValueError(f"bars must have 5 columns (open, high, low, close, volume), got {bars.shape[-1]}")
    t = bars.shape[-2]
    if t < spec.lookback:
        raise ValueError(f"need at least {spec.lookback} bars for features, got {t}")
    o, h, l, c, v = (np.moveaxis(bars, -1, 0)[i] for i in range(5))  # each (..., T)
    lc = np.log(c)
    lo, lh, ll = np.log(o), np.log(h), np.log(l)

    ret = lc[..., 1:] - lc[..., :-1]  # bars 1..T-1
    # Volatility-like quantities are positive and heavy-tailed: logs make "twice as volatile" one step.
    spread = lh - ll
    log_range = np.log(spread + _TINY)
    # Candle shape as shares of the bar's range: scale-free, so comparable across symbols and regimes.
    inv = np.where(spread > _EPS, 1.0 / np.maximum(spread, _EPS), 0.0)
    body = (lc - lo) * inv
    upper = (lh - np.maximum(lo, lc)) * inv
    lower = (np.minimum(lo, lc) - ll) * inv
    momentum = lc[..., spec.momentum :] - lc[..., : -spec.momentum]

    prev_c = c[..., :-1]
    true_range = np.maximum(h[..., 1:], prev_c) - np.minimum(l[..., 1:], prev_c)
    atr = np.log(_rolling(true_range, spec.atr).mean(-1) / c[..., spec.atr :] + _TINY)

    gains = _rolling(np.maximum(ret, 0.0), spec.rsi).mean(-1)
    losses = _rolling(np.maximum(-ret, 0.0), spec.rsi).mean(-1)
    rsi = (gains - losses) / (gains + losses + _EPS)  # RSI rescaled to [-1, 1]

    fast = _ema_fir(c, spec.macd_fast, spec.kernel_len(spec.macd_fast))
    slow = _ema_fir(c, spec.macd_slow, spec.kernel_len(spec.macd_slow))
    fast, slow = _align([fast, slow])
    macd = fast - slow
    signal = _ema_fir(macd, spec.macd_signal, spec.kernel_len(spec.macd_signal))
    macd, signal = _align([macd, signal])
    macd_hist = (macd - signal) / c[..., c.shape[-1] - macd.shape[-1] :]

    vol = _rolling(ret, spec.volatility).std(-1)
    vol_long = _rolling(ret, 2 * spec.volatility).std(-1)
    vol_s, vol_l = _align([vol, vol_long])
    vol_ratio = np.log((vol_s + _EPS) / (vol_l + _EPS))
    log_vol = np.log(vol + _TINY)

    lv = np.log1p(np.maximum(v, 0.0))
    win = _rolling(lv, spec.volume)
    sd = win.std(-1)
    volume_z = np.where(sd > _EPS, (lv[..., spec.volume - 1 :] - win.mean(-1)) / np.maximum(sd, _EPS), 0.0)

    # Range-based variance of each bar (Garman-Klass, >= 0 since |log(c/o)| <= log(h/l)) plus the squared
    # overnight gap: ~5x more efficient than close-to-close returns as a volatility estimate, which is what
    # lets the regimes say more about the next bar's risk than a trailing standard deviation does.
    gk = garman_klass(lo, lh, ll, lc)
    bar_var = gk[..., 1:] + (lo[..., 1:] - lc[..., :-1]) ** 2  # bars 1..T-1
    rvol = [0.5 * np.log(_halflife_fir(bar_var, h, spec.halflife_len(h)) + _TINY**2) for h in spec.risk_halflives]
    # Trend: exponentially weighted mean return over the same-horizon range volatility (a Sharpe-like ratio
    # per bar), so drift is measured in units of risk and is comparable across symbols and regimes.
    trend = []
    for h in spec.trend_halflives:
        n = spec.halflife_len(h)
        m, v2 = _align([_halflife_fir(ret, h, n), _halflife_fir(bar_var, h, n)])
        trend.append(m / np.sqrt(v2 + _TINY**2))

    # Deliberately no raw volume level: on real feeds it drifts with the data vendor and the years (EURUSD
    # tick volume doubles mid-sample), and regimes built on it become calendar periods. Volume enters only
    # relative to its own recent history.
    cols = _align(
        [ret, log_range, body, upper, lower, momentum, atr, rsi, macd_hist, log_vol, volume_z, vol_ratio, *rvol, *trend]
    )
    n_out = t - spec.lookback + 1
    return np.stack([col[..., col.shape[-1] - n_out :] for col in cols], axis=-1)


def latest_features(bars: np.ndarray, spec: FeatureSpec = FeatureSpec()) -> np.ndarray:
    """Features of the last bar only, from its trailing ``lookback`` bars: the worker's one-bar view."""
    bars = np.asarray(bars, dtype=np.float64)
    return compute_features(bars[..., -spec.lookback :, :], spec)[..., -1, :]


@dataclass(frozen=True)
class Scaler:
    """Per-feature standardisation fitted on training rows only; plain numbers, stored in the manifest."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    clip: float = 8.0

    @classmethod
    def fit(cls, x: np.ndarray, clip: float = 8.0) -> Scaler:
        x = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
        sd = x.std(0)
        sd = np.where(sd > _EPS, sd, 1.0)
        return cls(tuple(float(m) for m in x.mean(0)), tuple(float(s) for s in sd), clip)

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.std)
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "clip": self.clip}

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        return cls(tuple(d["mean"]), tuple(d["std"]), float(d.get("clip", 8.0)))


def history_needed(spec: FeatureSpec, window_size: int) -> int:
    """Bars a symbol must hold so that one full window of features can be built."""
    return spec.lookback + window_size - 1


def rolling_windows(x: np.ndarray, window_size: int, stride: int = 1) -> np.ndarray:
    """(..., T, F) -> (..., N, window_size, F) views, windows starting every ``stride`` rows (the last one ending
    at T-1 or before): the one windowing of feature rows, for the trainer's scaled rows and scaled_windows."""
    if x.shape[-2] < window_size:
        raise ValueError(f"need at least {window_size} rows for one window, got {x.shape[-2]}")
    w = np.swapaxes(sliding_window_view(x, window_size, axis=-2), -1, -2)
    return w[..., ::stride, :, :]


def scaled_windows(bars: np.ndarray, spec: FeatureSpec, scaler: Scaler, window_size: int) -> np.ndarray:
    """Every scaled feature window of a bar history, ready for the encoder: the one way both sides build them.

    ``bars`` is (..., T, 5) with T >= history_needed; returns (..., T - history_needed + 1, window_size, F)
    float32, window j ending at bar ``j + history_needed - 1``. One feature pass covers all windows, since
    consecutive windows share all but one feature row.
    """
    feats = scaler.transform(compute_features(bars, spec))  # (..., rows, F)
    return np.ascontiguousarray(rolling_windows(feats, window_size), dtype=np.float32)
