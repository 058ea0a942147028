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

composite = (w_sep * separation + w_bal * balance + w_per * persistence) / (w_sep + w_bal + w_per)

All inputs are computed on the training windows with the causal classifier's regimes (summary["clustering"]).
A missing or NaN metric contributes 0 to its component. The score is recomputed from the stored metrics at
every run, so changing the weights re-ranks a finished search without retraining anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DEFAULT_WEIGHTS = {"separation": 0.4, "balance": 0.3, "persistence": 0.3}


@dataclass(frozen=True)
class ScoreSpec:
    weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    duration_scale: float = 24.0   # bars; e.g. one day of hourly bars

    @classmethod
    def from_dict(cls, d: dict | None) -> "ScoreSpec":
        d = dict(d or {})
        weights = {**DEFAULT_WEIGHTS, **(d.pop("weights", None) or {})}
        unknown = set(weights) - set(DEFAULT_WEIGHTS)
        if unknown or d.keys() - {"duration_scale"}:
            raise ValueError(f"score: unknown keys {sorted(unknown | (d.keys() - {'duration_scale'}))}; "
                             f"weights take {sorted(DEFAULT_WEIGHTS)}, plus duration_scale")
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError("score weights must be >= 0 and not all 0")
        return cls(weights, float(d.get("duration_scale", 24.0)))


def _num(x) -> float:
    return 0.0 if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def components(metrics: dict, spec: ScoreSpec = ScoreSpec()) -> dict:
    """separation, balance and persistence (each in [0, 1]) from a candidate's metrics; see module docstring."""
    sil, db = metrics.get("silhouette"), metrics.get("davies_bouldin")
    db_term = 0.0 if db is None or math.isnan(db) else 0.5 / (1.0 + db)
    k = metrics["n_clusters"]
    return {
        "separation": 0.5 * min(max(_num(sil), 0.0), 1.0) + db_term,
        "balance": 0.5 * _num(metrics.get("share_entropy")) + 0.5 * min(1.0, k * _num(metrics.get("min_share"))),
        "persistence": 1.0 - math.exp(-_num(metrics.get("mean_duration_bars")) / spec.duration_scale),
    }


def score(metrics: dict, spec: ScoreSpec = ScoreSpec()) -> dict:
    """Components and their weighted mean, the composite."""
    c = components(metrics, spec)
    c["composite"] = sum(spec.weights[name] * c[name] for name in DEFAULT_WEIGHTS) / sum(spec.weights.values())
    return c
