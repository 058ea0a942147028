"""Scoring regimes and forecasts, always beside the baselines the forecaster must beat.

Next-regime accuracy means little alone: regimes are sticky, so "the regime will not change" (persistence)
is right most of the time. Every figure is therefore reported beside persistence and a first-order Markov
chain fitted on the training split, overall and on the steps where the regime actually changes, and the
summary states plainly whether the forecaster beats persistence. Shared by the trainer (Keras, held-out
split) and `regimetry evaluate` (ONNX Runtime on any bars), so both report the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from regimetry import diagnostics


def forecast_errors(pred: np.ndarray, target: np.ndarray) -> dict:
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    cos = (pred * target).sum(1) / (np.linalg.norm(pred, axis=1) * np.linalg.norm(target, axis=1) + 1e-12)
    return {"mse": float(((pred - target) ** 2).mean()), "cosine": float(cos.mean())}


def classification_scores(pred: np.ndarray, true: np.ndarray, n_classes: int) -> dict:
    from sklearn.metrics import confusion_matrix, f1_score

    if len(true) == 0:
        return {"n": 0, "accuracy": None, "macro_f1": None, "confusion": None}
    labels = list(range(n_classes))
    return {
        "n": int(len(true)),
        "accuracy": float((pred == true).mean()),
        "macro_f1": float(f1_score(true, pred, labels=labels, average="macro", zero_division=0)),
        "confusion": confusion_matrix(true, pred, labels=labels).tolist(),
    }


def next_regime_report(current: np.ndarray, actual_next: np.ndarray, predicted_next: np.ndarray,
                       markov: np.ndarray, n_classes: int) -> dict:
    """Forecaster vs persistence vs a Markov chain (transition matrix fitted on training labels) on the same
    steps, overall and where the regime changes."""
    p = np.asarray(markov)
    candidates = {
        "forecaster": predicted_next,
        "persistence": current,
        "markov": p[current].argmax(1),
    }
    changed = actual_next != current
    out: dict = {"all_steps": {}, "change_steps": {}}
    for name, pred in candidates.items():
        out["all_steps"][name] = classification_scores(pred, actual_next, n_classes)
        out["change_steps"][name] = classification_scores(pred[changed], actual_next[changed], n_classes)
    f = out["all_steps"]["forecaster"]["accuracy"]
    best = max(out["all_steps"]["persistence"]["accuracy"], out["all_steps"]["markov"]["accuracy"])
    out["forecaster_beats_baselines"] = bool(f is not None and f > best)
    out["verdict"] = (
        f"forecaster accuracy {f:.3f} vs persistence {out['all_steps']['persistence']['accuracy']:.3f} "
        f"and markov {out['all_steps']['markov']['accuracy']:.3f}: "
        + ("beats both baselines" if out["forecaster_beats_baselines"] else "DOES NOT beat the best baseline")
    )
    return out


def drift_scores(regimes: np.ndarray, confidence: np.ndarray, ood: np.ndarray, baseline: dict,
                 n_classes: int) -> dict:
    """How far a regime sequence sits from the training baseline recorded in the manifest."""
    p = diagnostics.transition_matrix(regimes, n_classes)
    observed = diagnostics.shares(regimes, n_classes)
    return {
        "psi": diagnostics.psi(observed, baseline["cluster_distribution"]),
        "jensen_shannon": diagnostics.jensen_shannon(observed, baseline["cluster_distribution"]),
        "transition_shift": diagnostics.transition_shift(p, baseline["transition_matrix"]),
        "mean_confidence": float(np.mean(confidence)) if len(confidence) else 0.0,
        "ood_share": float(np.mean(ood > baseline["centroid_distance_quantiles"]["q99"])) if len(ood) else 0.0,
    }


def score_bundle(bundle: str | Path, data: str) -> dict:
    """Re-score an exported bundle on any bars with ONNX Runtime only: what the worker would have emitted."""
    from regimetry.data import resolve_data
    from regimetry.inference import RegimeModel

    planted = None
    if data.lower().startswith("synthetic"):
        from regimetry.synthetic import generate_bars

        syn = generate_bars()
        series, planted = syn.bars, syn.labels
    else:
        series = resolve_data(data)
    model = RegimeModel(bundle)
    m = model.bundle.manifest
    k = model.bundle.n_clusters
    r = model.run_series(series.values)
    has_next = np.flatnonzero(r.next_regime[:-1] >= 0)
    step = model.bundle.stride
    has_next = has_next[has_next + step < len(r.regime)]
    out = {
        "model_version": m["model_version"],
        "data": {"source": data, "symbol": series.symbol, "n_bars": len(series), "n_events": int(len(r.regime))},
        "regime_shares": diagnostics.shares(r.regime, k).tolist(),
        "next_regime": next_regime_report(r.regime[has_next], r.regime[has_next + step], r.next_regime[has_next],
                                          np.asarray(m["baseline"]["transition_matrix"]), k),
        "drift": drift_scores(r.regime, r.proba.max(1), r.ood, m["baseline"], k),
        "clustering": {**diagnostics.balance(r.regime, k),
                       "stickiness": diagnostics.stickiness(diagnostics.transition_matrix(r.regime, k)),
                       "mean_duration": diagnostics.mean_duration(r.regime)},
    }
    if planted is not None:
        from sklearn.metrics import adjusted_rand_score

        out["planted_regimes"] = {"ari_regimetry": float(adjusted_rand_score(planted[r.offset:], r.regime)),
                                  "ari_hmm": None}
    return out
