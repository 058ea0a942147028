"""The composite score that ranks candidate configurations in `regimetry search`.

What a researcher wants from regimes, each turned into a number in [0, 1] (higher is better):

- separation  = 0.5 * clip(silhouette, 0, 1) + 0.5 / (1 + davies_bouldin)
                regimes are distinct clouds in embedding space (silhouette below 0 counts as no separation;
                Davies-Bouldin is unbounded above, 1 / (1 + DB) maps it into (0, 1]).
- balance     = 0.5 * share_entropy + 0.5 * min(1, K * min_share)
                every regime is used: normalised share entropy, and the smallest share relative to the 1/K a
                perfectly balanced split would give (a regime holding 1% of the bars is not a regime).
- persistence = 1 - exp(-D / duration_scale), D = mean regime duration in bars (mean run length in windows
                times the stride); a run of duration_scale bars scores 0.63, three times that 0.95.
                Regimes that flicker every few bars are useless to a strategy however well they separate.

- informative = 1 - exp(-eta2 / eta2_scale), eta2 = share of the variance of the coming bars' range-based
                volatility explained by the regimes on the validation span (the last 30 % of the training
                windows, decoded by a fit on the first 70 %); eta2_scale 0.05 scores 0.63.
- steadiness  = 1 - min(1, |log(dwell_validation / dwell_fit)| / log 2): regimes as persistent out of the fit
                span as in it (a doubling or halving scores 0).
- stability   = (a - 1/K) / (1 - 1/K) clipped to [0, 1], a = Hungarian-matched agreement between the regimes of
                the 70 % fit and of the final fit on the validation windows: a refit finds the same regimes.

composite = sum_c w_c * c / sum_c w_c over the six components.

All inputs are computed on the training windows only (summary["clustering"], its penalty_selection.validation),
never on the held-out split: the same measures as benchmarks/bench_regimes.py, on a span carved from training.
A missing or NaN metric contributes 0 to its component. The score is recomputed from the stored metrics at
every run, so changing the weights re-ranks a finished search without retraining anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DEFAULT_WEIGHTS = {
    "separation": 0.1,
    "balance": 0.1,
    "persistence": 0.2,
    "informative": 0.3,
    "steadiness": 0.1,
    "stability": 0.2,
}


@dataclass(frozen=True)
class ScoreSpec:
    weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    duration_scale: float = 24.0  # bars; e.g. one day of hourly bars
    eta2_scale: float = 0.05

    @classmethod
    def from_dict(cls, d: dict | None) -> ScoreSpec:
        d = dict(d or {})
        weights = {**DEFAULT_WEIGHTS, **(d.pop("weights", None) or {})}
        unknown = set(weights) - set(DEFAULT_WEIGHTS)
        scalars = {"duration_scale", "eta2_scale"}
        if unknown or d.keys() - scalars:
            raise ValueError(
                f"score: unknown keys {sorted(unknown | (d.keys() - scalars))}; "
                f"weights take {sorted(DEFAULT_WEIGHTS)}, plus {', '.join(sorted(scalars))}"
            )
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError("score weights must be >= 0 and not all 0")
        return cls(weights, float(d.get("duration_scale", 24.0)), float(d.get("eta2_scale", 0.05)))


def _num(x) -> float:
    return 0.0 if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def components(metrics: dict, spec: ScoreSpec = ScoreSpec()) -> dict:
    """separation, balance and persistence (each in [0, 1]) from a candidate's metrics; see module docstring."""
    sil, db = metrics.get("silhouette"), metrics.get("davies_bouldin")
    db_term = 0.0 if db is None or math.isnan(db) else 0.5 / (1.0 + db)
    k = metrics["n_clusters"]
    ratio = metrics.get("validation_dwell_ratio")
    steady = 0.0 if not ratio or ratio <= 0 else 1.0 - min(1.0, abs(math.log(ratio)) / math.log(2.0))
    stab = _num(metrics.get("validation_refit_stability"))
    return {
        "separation": 0.5 * min(max(_num(sil), 0.0), 1.0) + db_term,
        "balance": 0.5 * _num(metrics.get("share_entropy")) + 0.5 * min(1.0, k * _num(metrics.get("min_share"))),
        "persistence": 1.0 - math.exp(-_num(metrics.get("mean_duration_bars")) / spec.duration_scale),
        "informative": 1.0 - math.exp(-_num(metrics.get("validation_eta2")) / spec.eta2_scale),
        "steadiness": steady,
        "stability": min(1.0, max(0.0, (stab - 1.0 / k) / (1.0 - 1.0 / k))),
    }


def score(metrics: dict, spec: ScoreSpec = ScoreSpec()) -> dict:
    """Components and their weighted mean, the composite."""
    c = components(metrics, spec)
    c["composite"] = sum(spec.weights[name] * c[name] for name in DEFAULT_WEIGHTS) / sum(spec.weights.values())
    return c
