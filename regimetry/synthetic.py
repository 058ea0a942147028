"""A seeded regime-switching bar generator with planted labels, for tests and for measuring regime recovery.

Regimes follow a sticky Markov chain; each regime has its own drift, volatility and volume level, so a good
regime finder should recover them (adjusted Rand index against ``labels``) and a bad one visibly will not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from regimetry.data import BarSeries


@dataclass(frozen=True)
class Regime:
    name: str
    drift: float  # mean log return per bar
    volatility: float  # std of log return per bar
    volume: float  # mean volume per bar


DEFAULT_REGIMES = (
    Regime("calm_bull", drift=4e-4, volatility=0.002, volume=800.0),
    Regime("volatile_bear", drift=-8e-4, volatility=0.010, volume=3000.0),
    Regime("sideways", drift=0.0, volatility=0.005, volume=1500.0),
)


@dataclass(frozen=True)
class SyntheticBars:
    bars: BarSeries
    labels: np.ndarray  # planted regime index per bar
    regimes: tuple[Regime, ...]


def generate_bars(
    n_bars: int = 4000,
    seed: int = 7,
    regimes: tuple[Regime, ...] = DEFAULT_REGIMES,
    stay: float = 0.985,
    min_duration: int = 40,
    start_price: float = 100.0,
    start_time: int = 1_700_000_000 - 1_700_000_000 % 3600,
    bar_seconds: int = 3600,
    symbol: str = "SYNTH",
    df: float | None = None,
) -> SyntheticBars:
    """Bars whose regime switches with probability 1-stay per bar once a regime has lasted min_duration.

    df=None draws Gaussian return shocks; a number draws Student-t shocks with df degrees of freedom (df > 2),
    rescaled to unit variance so ``volatility`` stays the standard deviation of the return.
    """
    rng = np.random.default_rng(seed)
    k = len(regimes)
    labels = np.empty(n_bars, dtype=np.int64)
    cur, age = int(rng.integers(k)), 0
    for i in range(n_bars):
        if age >= min_duration and rng.random() > stay:
            cur = int(rng.choice([j for j in range(k) if j != cur]))
            age = 0
        labels[i] = cur
        age += 1
    drift = np.array([regimes[j].drift for j in labels])
    vol = np.array([regimes[j].volatility for j in labels])
    volu = np.array([regimes[j].volume for j in labels])
    gap = rng.normal(0.0, 0.1, n_bars) * vol
    if df is None:
        shock = rng.standard_normal(n_bars)
    else:
        if df <= 2:
            raise ValueError(f"df must be > 2 for a finite variance, got {df}")
        shock = rng.standard_t(df, n_bars) * np.sqrt((df - 2.0) / df)
    ret = drift + vol * shock
    close = start_price * np.exp(np.cumsum(gap + ret))
    open_ = close * np.exp(-ret)
    wick_hi = np.abs(rng.normal(0.0, 0.5, n_bars)) * vol
    wick_lo = np.abs(rng.normal(0.0, 0.5, n_bars)) * vol
    high = np.maximum(open_, close) * np.exp(wick_hi)
    low = np.minimum(open_, close) * np.exp(-wick_lo)
    volume = np.round(volu * rng.lognormal(0.0, 0.3, n_bars))
    times = start_time + bar_seconds * np.arange(n_bars, dtype=np.int64)
    values = np.stack([open_, high, low, close, volume], axis=-1)
    return SyntheticBars(BarSeries(times, values, symbol), labels, regimes)


# Named planted scenarios for the regime benchmark (benchmarks/bench_regimes.py). Each is a set of
# generate_bars() arguments; "default" is generate_bars() itself. Mean regime length is about
# min_duration + 1 / (1 - stay) bars.
SCENARIOS: dict[str, dict] = {
    "default": {},
    # two states, same drift and volume, volatility 2.5x apart
    "vol_only": {
        "regimes": (
            Regime("calm", drift=0.0, volatility=0.004, volume=1500.0),
            Regime("turbulent", drift=0.0, volatility=0.010, volume=1500.0),
        ),
        "seed": 11,
    },
    # heavy tails (Student-t, df 4); the states differ in drift and volatility, not volume
    "student_t": {
        "regimes": (
            Regime("t_bull", drift=6e-4, volatility=0.003, volume=1500.0),
            Regime("t_bear", drift=-1e-3, volatility=0.009, volume=1500.0),
            Regime("t_sideways", drift=0.0, volatility=0.005, volume=1500.0),
        ),
        "df": 4.0,
        "seed": 12,
    },
    # the default regimes, switching fast: mean regime length ~20 bars
    "short_dwell": {"stay": 0.9, "min_duration": 10, "seed": 13},
    # the default regimes, switching slowly: mean regime length ~200 bars, enough bars for several held-out switches
    "long_dwell": {"stay": 0.99, "min_duration": 100, "n_bars": 6000, "seed": 14},
}


def scenario(name: str, seed: int | None = None, **overrides) -> SyntheticBars:
    """The bars of a named SCENARIOS preset; ``seed`` (default: the preset's) and ``overrides`` (e.g. n_bars)
    replace the preset's generate_bars() arguments."""
    if name not in SCENARIOS:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    kwargs = {**SCENARIOS[name], **overrides}
    if seed is not None:
        kwargs["seed"] = seed
    return generate_bars(**kwargs)


def write_csv(series: BarSeries, path: str) -> None:
    """CSV in the layout load_bars reads (ISO UTC times)."""
    from regimetry.data import iso_utc

    with open(path, "w") as f:
        f.write("time,open,high,low,close,volume\n")
        for t, (o, h, l, c, v) in zip(series.times, series.values):
            f.write(f"{iso_utc(t)},{float(o)!r},{float(h)!r},{float(l)!r},{float(c)!r},{float(v)!r}\n")
