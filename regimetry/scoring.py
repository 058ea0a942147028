"""Scoring regimes and forecasts, always beside the baselines the forecaster must beat. numpy only.

Next-regime accuracy means little alone: regimes are sticky, so "the regime will not change" (persistence) is
right most of the time. Every figure is therefore reported beside three baselines on the same steps:
persistence, a first-order Markov chain fitted on the training split, and flat-next (the regime of the window
extended by one bar on which nothing happens, see regimetry/flat_next.py), overall and on the steps where the
regime actually changes, plus change detection as its own scores. Shared by the trainer (Keras, held-out
split) and `regimetry evaluate` (ONNX Runtime on any bars, regimetry/evaluation.py), so both report the same
way.

No scikit-learn here (the serving core must run without it): confusion matrix, F1 and the adjusted Rand index
are written out below, each with its formula.
"""

from __future__ import annotations

import numpy as np

from regimetry import diagnostics

BASELINES = ("persistence", "markov", "flat_next")
TIE = 1e-9  # |a - b| <= TIE counts as a tie in the verdict


def forecast_errors(pred: np.ndarray, target: np.ndarray) -> dict:
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    cos = (pred * target).sum(1) / (np.linalg.norm(pred, axis=1) * np.linalg.norm(target, axis=1) + 1e-12)
    return {"mse": float(((pred - target) ** 2).mean()), "cosine": float(cos.mean())}


# -- classification scores ---------------------------------------------------------------------------------
def confusion_matrix(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """C[i, j] = number of steps whose true regime is i and predicted regime is j (rows true, columns
    predicted, as scikit-learn), (K, K) int64. Labels must lie in [0, K)."""
    true = np.asarray(true, dtype=np.int64).ravel()
    pred = np.asarray(pred, dtype=np.int64).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"true and pred differ in length: {len(true)} vs {len(pred)}")
    for name, a in (("true", true), ("pred", pred)):
        if len(a) and (a.min() < 0 or a.max() >= n_classes):
            raise ValueError(f"{name} labels must lie in [0, {n_classes}), got [{a.min()}, {a.max()}]")
    return np.bincount(true * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_f1(confusion: np.ndarray) -> np.ndarray:
    """F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k) with TP_k = C[k, k], FP_k = (column k sum) - TP_k and
    FN_k = (row k sum) - TP_k, so the denominator is (column sum + row sum); 0 where that is 0."""
    c = np.asarray(confusion, dtype=np.float64)
    denom = c.sum(0) + c.sum(1)
    return np.where(denom > 0, 2.0 * np.diag(c) / np.where(denom > 0, denom, 1.0), 0.0)


def present_regimes(true: np.ndarray, n_classes: int) -> tuple[list[int], list[int]]:
    """(regimes occurring in the true labels, regimes that do not)."""
    seen = np.bincount(np.asarray(true, dtype=np.int64).ravel(), minlength=n_classes)[:n_classes] > 0
    return np.flatnonzero(seen).tolist(), np.flatnonzero(~seen).tolist()


def macro_f1(true: np.ndarray, pred: np.ndarray, n_classes: int) -> float | None:
    """Mean of F1_k over the regimes present in ``true`` (None when there are no steps). A regime absent from
    the true labels has no F1 worth averaging (no step could be right about it); counting it as 0, as
    scikit-learn's f1_score(labels=range(K)) does, would lower every candidate alike for a reason that has
    nothing to do with them. Predictions of an absent regime still cost: they are misses of a present one."""
    present, _ = present_regimes(true, n_classes)
    if not present:
        return None
    return float(per_class_f1(confusion_matrix(true, pred, n_classes))[present].mean())


def classification_scores(pred: np.ndarray, true: np.ndarray, n_classes: int) -> dict:
    """n, accuracy, macro-F1 over the present regimes, per-class F1 (None for absent regimes), the absent
    regimes and the confusion matrix (rows true, columns predicted)."""
    pred = np.asarray(pred, dtype=np.int64).ravel()
    true = np.asarray(true, dtype=np.int64).ravel()
    present, absent = present_regimes(true, n_classes)
    if len(true) == 0:
        return {
            "n": 0,
            "accuracy": None,
            "macro_f1": None,
            "per_class_f1": [None] * n_classes,
            "absent_regimes": absent,
            "confusion": None,
        }
    c = confusion_matrix(true, pred, n_classes)
    f1 = per_class_f1(c)
    return {
        "n": int(len(true)),
        "accuracy": float((pred == true).mean()),
        "macro_f1": float(f1[present].mean()),
        "per_class_f1": [float(f1[k]) if k in present else None for k in range(n_classes)],
        "absent_regimes": absent,
        "confusion": c.tolist(),
    }


def change_detection(current: np.ndarray, actual_next: np.ndarray, pred: np.ndarray) -> dict:
    """Does a candidate call the regime changes? A predicted change is pred != current; a true positive is a
    predicted change to the right regime (pred == actual_next != current).

    precision = TP / predicted changes, recall = TP / actual changes, F1 = 2 P R / (P + R); each is 0 where
    undefined (no predicted change, no actual change, P + R = 0), with a note saying so. Persistence never
    predicts a change, so its precision, recall and F1 are 0 by construction."""
    current = np.asarray(current, dtype=np.int64).ravel()
    actual_next = np.asarray(actual_next, dtype=np.int64).ravel()
    pred = np.asarray(pred, dtype=np.int64).ravel()
    called = pred != current
    actual = actual_next != current
    tp = int((called & (pred == actual_next)).sum())
    n_called, n_actual = int(called.sum()), int(actual.sum())
    notes = []
    if n_called:
        precision = tp / n_called
    else:
        precision = 0.0
        notes.append("no change predicted: precision undefined, reported as 0")
    if n_actual:
        recall = tp / n_actual
    else:
        recall = 0.0
        notes.append("no actual change in these steps: recall undefined, reported as 0")
    if precision + recall > 0:
        f1 = 2.0 * precision * recall / (precision + recall)
    else:
        f1 = 0.0
        if n_called and n_actual:
            notes.append("no change predicted correctly: precision + recall = 0, F1 reported as 0")
        else:
            notes.append("F1 undefined, reported as 0")
    return {
        "n": int(len(current)),
        "actual_changes": n_actual,
        "predicted_changes": n_called,
        "true_positives": tp,
        "false_alarms": int((called & ~actual).sum()),  # change called where the regime stayed
        "wrong_regime": int((called & actual & (pred != actual_next)).sum()),  # change seen, wrong target
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "notes": notes,
    }


def markov_predictions(markov: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The Markov chain's most likely next regime: argmax_j P[current, j] (first index on ties)."""
    p = np.asarray(markov, dtype=np.float64)
    current = np.asarray(current, dtype=np.int64).ravel()
    return p[current].argmax(1) if len(current) else np.zeros(0, np.int64)


def markov_is_sticky(markov: np.ndarray) -> bool:
    """Every row's argmax is its diagonal: the chain then always predicts 'no change', i.e. persistence."""
    p = np.asarray(markov, dtype=np.float64)
    return bool(np.array_equal(p.argmax(1), np.arange(len(p))))


# -- the next-regime report --------------------------------------------------------------------------------
MEASURES = (("change_f1", "change-step F1"), ("macro_f1", "macro-F1"))


def _measure(report: dict, name: str, key: str) -> float | None:
    return report["change_detection"][name]["f1"] if key == "change_f1" else report["all_steps"][name]["macro_f1"]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _verdict(report: dict, baselines: list[str]) -> tuple[dict, bool, str]:
    """The forecaster beats the baselines only if it beats EVERY one of them on change-step F1 AND on macro-F1
    over all steps (strictly; a tie is not a win). Otherwise say which baseline it loses to or ties with on
    which measure."""
    comparisons: dict = {}
    shortfalls: list[tuple[int, str]] = []
    for key, label in MEASURES:
        for b in baselines:
            f, v = _measure(report, "forecaster", key), _measure(report, b, key)
            if f is None or v is None:
                outcome = "undefined"
            elif f > v + TIE:
                outcome = "beats"
            elif abs(f - v) <= TIE:
                outcome = "ties"
            else:
                outcome = "loses"
            comparisons.setdefault(b, {})[key] = {"forecaster": f, "baseline": v, "outcome": outcome}
            if outcome == "loses":
                shortfalls.append((0, f"loses to {b} on {label} ({_fmt(f)} vs {_fmt(v)})"))
            elif outcome == "ties":
                shortfalls.append((1, f"ties with {b} on {label} ({_fmt(f)} vs {_fmt(v)})"))
            elif outcome == "undefined":
                shortfalls.append((2, f"cannot be compared with {b} on {label} (no steps)"))
    beats = not shortfalls
    reasons = [text for _, text in sorted(shortfalls, key=lambda x: x[0])]  # losses first, then ties
    skipped = "" if "flat_next" in baselines else " (flat_next baseline not computed)"
    if beats:
        best = {key: max(baselines, key=lambda b: comparisons[b][key]["baseline"]) for key, _ in MEASURES}
        text = f"forecaster beats every baseline ({', '.join(baselines)}){skipped}: " + ", ".join(
            f"{label} {_fmt(_measure(report, 'forecaster', key))} vs best baseline "
            f"{_fmt(comparisons[best[key]][key]['baseline'])} ({best[key]})"
            for key, label in MEASURES
        )
    else:
        text = f"forecaster does NOT beat the baselines{skipped}: " + "; ".join(reasons)
    return comparisons, beats, text


def next_regime_report(
    current: np.ndarray,
    actual_next: np.ndarray,
    predicted_next: np.ndarray,
    markov: np.ndarray,
    n_classes: int,
    flat_next: np.ndarray | None = None,
) -> dict:
    """The forecaster's next regime against persistence, a Markov chain and (when given) flat-next, on the
    same steps.

    current[t]        regime of the window at step t                             (N,) int
    actual_next[t]    regime of the window one step later                        (N,) int
    predicted_next[t] regime of the forecaster's predicted next embedding        (N,) int
    markov            (K, K) transition matrix fitted on the TRAINING labels
    flat_next[t]      regime of window t extended by one flat bar (regimetry.flat_next), or None

    Returns (JSON-able):
      all_steps / change_steps: {candidate: classification_scores} on every step / on the steps where
          actual_next != current. macro_f1 averages over the regimes present in that subset's true labels;
          the others are listed in absent_regimes (top level and per entry).
      change_detection: {candidate: change_detection(...)} on every step.
      markov_equals_persistence: the Markov chain predicted the current regime on every step;
      markov_sticky: the matrix's row argmaxes are all diagonal (then markov_equals_persistence always).
      comparisons: {baseline: {change_f1|macro_f1: {forecaster, baseline, outcome}}},
      forecaster_beats_baselines, verdict, notes.
    """
    current = np.asarray(current, dtype=np.int64).ravel()
    actual_next = np.asarray(actual_next, dtype=np.int64).ravel()
    predicted_next = np.asarray(predicted_next, dtype=np.int64).ravel()
    markov = np.asarray(markov, dtype=np.float64)
    if markov.shape != (n_classes, n_classes):
        raise ValueError(f"markov must be ({n_classes}, {n_classes}), got {markov.shape}")
    candidates = {"forecaster": predicted_next, "persistence": current, "markov": markov_predictions(markov, current)}
    if flat_next is not None:
        candidates["flat_next"] = np.asarray(flat_next, dtype=np.int64).ravel()
    for name, pred in candidates.items():
        if len(pred) != len(current):
            raise ValueError(f"{name}: {len(pred)} predictions for {len(current)} steps")
    if len(actual_next) != len(current):
        raise ValueError(f"actual_next: {len(actual_next)} labels for {len(current)} steps")
    changed = actual_next != current
    out: dict = {
        "n_classes": int(n_classes),
        "candidates": list(candidates),
        "all_steps": {},
        "change_steps": {},
        "change_detection": {},
    }
    for name, pred in candidates.items():
        out["all_steps"][name] = classification_scores(pred, actual_next, n_classes)
        out["change_steps"][name] = classification_scores(pred[changed], actual_next[changed], n_classes)
        out["change_detection"][name] = change_detection(current, actual_next, pred)
    out["absent_regimes"] = {
        "all_steps": present_regimes(actual_next, n_classes)[1],
        "change_steps": present_regimes(actual_next[changed], n_classes)[1],
    }
    out["markov_sticky"] = markov_is_sticky(markov)
    out["markov_equals_persistence"] = bool(np.array_equal(candidates["markov"], current))
    notes = []
    for subset, absent in out["absent_regimes"].items():
        if absent:
            notes.append(
                f"regime(s) {', '.join(map(str, absent))} never occur as the true next regime on "
                f"{subset.replace('_', ' ')}: left out of macro-F1 there (not counted as 0)"
            )
    if out["markov_equals_persistence"]:
        sticky = " (sticky transition matrix: each row's argmax is the diagonal)" if out["markov_sticky"] else ""
        notes.append(f"markov equals persistence on every step{sticky}")
    if flat_next is None:
        notes.append("flat_next baseline not computed: no flat-bar regimes were given")
    if not changed.any():
        notes.append("the regime never changes on these steps: change-step scores are undefined")
    baselines = [b for b in BASELINES if b in candidates]
    out["comparisons"], out["forecaster_beats_baselines"], out["verdict"] = _verdict(out, baselines)
    out["notes"] = notes
    return out


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """ARI of two labelings (Hubert & Arabie). With the contingency table n_ij, row sums a_i, column sums b_j
    and C(x) = x (x - 1) / 2: index = sum C(n_ij), expected = sum C(a_i) sum C(b_j) / C(n),
    max = (sum C(a_i) + sum C(b_j)) / 2, ARI = (index - expected) / (max - expected); 1 when max == expected
    (e.g. both labelings put everything in one group), as scikit-learn does."""
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if len(a) != len(b):
        raise ValueError(f"labelings differ in length: {len(a)} vs {len(b)}")
    if len(a) < 2:
        return 1.0
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(table, (ai, bi), 1.0)

    def c2(x):
        return (x * (x - 1.0) / 2.0).sum()

    index, sa, sb = c2(table), c2(table.sum(1)), c2(table.sum(0))
    expected = sa * sb / c2(np.array([float(len(a))]))
    top = (sa + sb) / 2.0
    return 1.0 if top == expected else float((index - expected) / (top - expected))


def drift_scores(regimes: np.ndarray, confidence: np.ndarray, ood: np.ndarray, baseline: dict, n_classes: int) -> dict:
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
