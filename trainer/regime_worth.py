"""What a regime is worth: per-regime next-bar returns on the held-out split, and a cost-aware regime filter.

Causality is the whole point: the regime labelled at bar t (known at its close) is acted on from bar t + 1, so
every figure pairs label t with the log return of bar t + 1. Per regime: the mean, volatility, annualised
Sharpe ratio and maximum drawdown of the next-bar returns that followed it. The filter: long one unit, out of
the market while the most volatile regime (the highest id: ids are ordered by volatility) is in force; a cost
of ``cost_bps`` basis points of notional per unit of turnover (entering or leaving), against buy-and-hold,
which pays one entry. Annualisation uses the bars per year of the data itself (bars / years spanned).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SECONDS_PER_YEAR = 365.25 * 86400


def bars_per_year(times: np.ndarray) -> float:
    span = float(times[-1] - times[0])
    return (len(times) - 1) / span * SECONDS_PER_YEAR if span > 0 else float("nan")


def max_drawdown(log_returns: np.ndarray) -> float:
    """Largest fall of the equity curve exp(cumsum) from a running peak, as a fraction (0.25 = -25 %)."""
    if len(log_returns) == 0:
        return 0.0
    equity = np.concatenate([[0.0], np.cumsum(log_returns)])
    return float(1.0 - np.exp(np.min(equity - np.maximum.accumulate(equity))))


def summary(log_returns: np.ndarray, per_year: float) -> dict:
    r = np.asarray(log_returns, dtype=np.float64)
    n = len(r)
    mean, vol = (float(r.mean()), float(r.std())) if n else (0.0, 0.0)
    return {
        "bars": n,
        "mean_return": mean,
        "volatility": vol,
        "annual_return": mean * per_year,
        "annual_volatility": vol * np.sqrt(per_year),
        "sharpe": mean / vol * np.sqrt(per_year) if vol > 0 else None,
        "max_drawdown": max_drawdown(r),
        "total_log_return": float(r.sum()),
    }


@dataclass
class Worth:
    per_regime: list[dict]  # one summary per regime id, of the next-bar returns after that label
    strategy: dict  # the regime filter
    buy_and_hold: dict
    position: np.ndarray  # (T,) exposure held over bar t + 1 decided at bar t
    equity_strategy: np.ndarray  # (T + 1,) equity after costs, starting at 1
    equity_hold: np.ndarray
    excluded_regime: int
    cost_bps: float
    per_year: float


def regime_worth(times: np.ndarray, returns: np.ndarray, regimes: np.ndarray, k: int, cost_bps: float = 2.0) -> Worth:
    """times, returns (log return of each labelled bar), regimes: (T,) over the split to judge, in order."""
    times, returns, regimes = np.asarray(times), np.asarray(returns, np.float64), np.asarray(regimes)
    nxt = returns[1:]  # the return of bar t + 1, earned by a decision taken at the close of bar t
    label = regimes[:-1]
    per_year = bars_per_year(times)
    per_regime = [{"regime": i, **summary(nxt[label == i], per_year)} for i in range(k)]
    worst = k - 1
    position = (label != worst).astype(np.float64)
    cost = cost_bps / 1e4
    turnover = np.abs(np.diff(np.concatenate([[0.0], position])))
    strat = position * nxt - turnover * cost  # log return net of costs (costs are small: log(1-c) ~ -c)
    hold = nxt.copy()
    hold[0] -= cost  # buy-and-hold pays its one entry
    s, h = summary(strat, per_year), summary(hold, per_year)
    s.update(
        turnover_units=float(turnover.sum()),
        trades_per_year=float(turnover.sum() / (len(nxt) / per_year)) if per_year == per_year else None,
        time_in_market=float(position.mean()),
        costs_paid=float(turnover.sum() * cost),
    )
    h.update(turnover_units=1.0, time_in_market=1.0, costs_paid=cost)
    return Worth(
        per_regime,
        s,
        h,
        position,
        np.exp(np.concatenate([[0.0], np.cumsum(strat)])),
        np.exp(np.concatenate([[0.0], np.cumsum(hold)])),
        worst,
        cost_bps,
        per_year,
    )
