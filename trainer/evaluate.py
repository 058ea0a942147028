"""Scoring on a chronological held-out split, always beside the baselines the forecaster must beat.

Next-regime accuracy means little alone: regimes are sticky, so "the regime will not change" (persistence)
is right most of the time. Every figure is therefore reported beside persistence and a first-order Markov
chain fitted on the training split, overall and on the steps where the regime actually changes, and the
summary states plainly whether the forecaster beats persistence.
"""

from __future__ import annotations

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
                       train_labels: np.ndarray, n_classes: int) -> dict:
    """Forecaster vs persistence vs Markov on the same held-out steps, overall and where the regime changes."""
    p = diagnostics.transition_matrix(train_labels, n_classes)
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


def planted_recovery(found: np.ndarray, planted: np.ndarray, hmm_features: np.ndarray, n_states: int,
                     seed: int) -> dict:
    """Adjusted Rand index of the regimes found vs the planted ones, beside a Gaussian HMM on the same bars."""
    from sklearn.metrics import adjusted_rand_score

    out = {"ari_regimetry": float(adjusted_rand_score(planted, found))}
    try:
        from hmmlearn.hmm import GaussianHMM

        hmm = GaussianHMM(n_components=n_states, covariance_type="full", n_iter=100, random_state=seed)
        hmm.fit(hmm_features)
        out["ari_hmm"] = float(adjusted_rand_score(planted, hmm.predict(hmm_features)))
        out["hmm_note"] = "GaussianHMM (hmmlearn) on the same bars' log return, range and volume z-score; Viterbi path"
    except ImportError:  # pragma: no cover
        out["ari_hmm"] = None
        out["hmm_note"] = "hmmlearn not installed"
    return out
