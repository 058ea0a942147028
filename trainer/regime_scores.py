"""Scores of a regime labelling: against planted labels, against next-bar returns, and against a refit.

Pure numpy/scipy, no training: the yardstick of
``benchmarks/bench_regimes.py`` and of its unit test. Every function takes plain 1-D integer label arrays of
equal length ``n`` (one label per scored bar, in time order); labels are arbitrary ints, only equality
matters. Masking unlabelled bars (warm-up) is the caller's job.

Notation: ``f`` found labels (n,), ``y`` true/planted labels (n,), ``r`` log returns, ``t`` a position in the
scored sequence.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

UNMATCHED = -1  # the matched label of a found class that no true class was assigned to


def _as_labels(x) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {a.shape}")
    return a.astype(np.int64, copy=False)


def contingency(found, true) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contingency table C (n_found_classes, n_true_classes) with C[i, j] = #{t : f_t = F_i and y_t = Y_j}.

    Returns (C, F, Y): the table and the sorted distinct found and true classes (F: (a,), Y: (b,)).
    """
    f, y = _as_labels(found), _as_labels(true)
    if len(f) != len(y):
        raise ValueError(f"found and true differ in length: {len(f)} vs {len(y)}")
    fc, fi = np.unique(f, return_inverse=True)
    yc, yi = np.unique(y, return_inverse=True)
    table = np.zeros((len(fc), len(yc)), dtype=np.int64)
    np.add.at(table, (fi, yi), 1)
    return table, fc, yc


def hungarian_map(found, true) -> dict[int, int]:
    """The one-to-one map found class -> true class maximising the bars on which they agree.

    Solves max_{sigma} sum_i C[i, sigma(i)] over injective partial maps with linear_sum_assignment on the
    (rectangular) contingency table C, so found and true may have different numbers of classes: with more found
    classes than true ones, the surplus found classes map to UNMATCHED (-1, never equal to a true label); with
    fewer, some true classes are never predicted.
    """
    table, fc, yc = contingency(found, true)
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = {int(c): UNMATCHED for c in fc}
    mapping.update({int(fc[i]): int(yc[j]) for i, j in zip(rows, cols)})
    return mapping


def matched(found, true) -> np.ndarray:
    """Found labels (n,) rewritten through hungarian_map(found, true): directly comparable with ``true``."""
    f = _as_labels(found)
    mapping = hungarian_map(f, true)
    return np.array([mapping[int(v)] for v in f], dtype=np.int64) if len(f) else f.copy()


def ari(found, true) -> float:
    """Adjusted Rand index (Hubert & Arabie): (RI - E[RI]) / (max RI - E[RI]) over all pairs of bars.

    1 for identical partitions up to renaming, ~0 for independent ones (may be negative): the core's
    regimetry.scoring.adjusted_rand_index on the two (n,) arrays.
    """
    from regimetry.scoring import adjusted_rand_index

    return float(adjusted_rand_index(_as_labels(true), _as_labels(found)))


def balanced_accuracy(found, true) -> float:
    """Mean over true classes s of recall_s = #{t : m_t = s and y_t = s} / #{t : y_t = s}, m = matched(found).

    A true class never matched contributes recall 0, so a labelling with too few classes is penalised.
    """
    y = _as_labels(true)
    m = matched(found, y)
    classes = np.unique(y)
    if not len(classes):
        return float("nan")
    return float(np.mean([np.mean(m[y == s] == s) for s in classes]))


def switch_count(labels) -> int:
    """#{t in 1..n-1 : label_t != label_{t-1}}."""
    a = _as_labels(labels)
    return int(np.count_nonzero(a[1:] != a[:-1]))


def switch_ratio(found, true) -> float:
    """switch_count(found) / switch_count(true): 1 = as many regime changes as planted (nan if none planted)."""
    n_true = switch_count(true)
    return float(switch_count(found) / n_true) if n_true else float("nan")


def detection_delays(found, true) -> dict:
    """How many bars after each true switch the (Hungarian-matched) found labels follow it.

    For each true switch at t (y_t != y_{t-1}) into state s = y_t, with the next true switch at u (or n): the
    delay is t' - t for the first t' in [t, u) with m_t' = s (m = matched(found, true)); a switch with no such
    t' before u is not detected. Returns {"median_delay": median delay over detected switches (bars, nan if
    none), "share_detected": detected / true switches (nan if none), "n_true_switches", "n_detected",
    "delays": list of the delays}.
    """
    y = _as_labels(true)
    m = matched(found, y)
    starts = np.flatnonzero(y[1:] != y[:-1]) + 1
    ends = np.append(starts[1:], len(y))
    delays = []
    for t, u in zip(starts, ends):
        hit = np.flatnonzero(m[t:u] == y[t])
        if len(hit):
            delays.append(int(hit[0]))
    n = len(starts)
    return {
        "median_delay": float(np.median(delays)) if delays else float("nan"),
        "share_detected": float(len(delays) / n) if n else float("nan"),
        "n_true_switches": int(n),
        "n_detected": len(delays),
        "delays": delays,
    }


def next_returns(log_ret, bar_index) -> np.ndarray:
    """r_{b+1} for each bar index b in ``bar_index`` (k,), nan where b+1 is past the end of ``log_ret`` (T,).

    ``log_ret[b]`` is the log return of bar b (log close_b - log close_{b-1}). The pairs (label at b, r_{b+1})
    are what eta_squared and vol_ratio score: does the label known at bar b tell anything about the next bar?
    """
    r = np.asarray(log_ret, dtype=np.float64)
    b = np.asarray(bar_index, dtype=np.int64) + 1
    out = np.full(len(b), np.nan)
    ok = b < len(r)
    out[ok] = r[b[ok]]
    return out


def _paired(labels, values) -> tuple[np.ndarray, np.ndarray]:
    a, v = _as_labels(labels), np.asarray(values, dtype=np.float64)
    if len(a) != len(v):
        raise ValueError(f"labels and values differ in length: {len(a)} vs {len(v)}")
    ok = np.isfinite(v)
    return a[ok], v[ok]


def eta_squared(labels, values) -> float:
    """Correlation ratio eta^2 = SS_between / SS_total of ``values`` (n,) grouped by ``labels`` (n,).

    SS_total = sum_t (v_t - mean(v))^2, SS_between = sum_g n_g (mean_g(v) - mean(v))^2: the share of the variance
    of v explained by the labels, in [0, 1]. Nan values are dropped; nan if SS_total = 0.
    """
    a, v = _paired(labels, values)
    if len(v) < 2:
        return float("nan")
    total = float(np.sum((v - v.mean()) ** 2))
    if total <= 0.0:
        return float("nan")
    classes, inv = np.unique(a, return_inverse=True)
    n_g = np.bincount(inv)
    mean_g = np.bincount(inv, weights=v) / n_g
    return float(np.sum(n_g * (mean_g - v.mean()) ** 2) / total)


def next_abs_return_eta2(labels, next_ret) -> float:
    """eta_squared(labels, |next_ret|): labels at bar t (n,) against |r_{t+1}| (n,) (see next_returns)."""
    return eta_squared(labels, np.abs(np.asarray(next_ret, dtype=np.float64)))


def vol_ratio(labels, next_ret, min_bars: int = 10) -> float:
    """max_g sd_g / min_g sd_g, sd_g = standard deviation of r_{t+1} over the bars t labelled g.

    ``labels`` (n,) at bar t, ``next_ret`` (n,) = r_{t+1}; groups with fewer than ``min_bars`` bars are ignored;
    nan with fewer than two groups left (or a zero deviation).
    """
    a, v = _paired(labels, next_ret)
    sds = [float(np.std(v[a == g])) for g in np.unique(a) if np.count_nonzero(a == g) >= min_bars]
    if len(sds) < 2 or min(sds) <= 0.0:
        return float("nan")
    return float(max(sds) / min(sds))


def run_lengths(labels) -> np.ndarray:
    """Lengths of the maximal runs of equal labels, in order; runs cut by either end of the sequence count
    (regimetry.diagnostics.run_lengths, lengths only)."""
    from regimetry.diagnostics import run_lengths as runs

    return runs(_as_labels(labels))[1]


def mean_dwell(labels) -> float:
    """Mean run length in bars = n / (switch_count + 1) (nan for an empty sequence)."""
    runs = run_lengths(labels)
    return float(runs.mean()) if len(runs) else float("nan")


def refit_agreement(a, b) -> float:
    """Share of bars on which two labellings of the same bars agree after Hungarian matching of a onto b.

    ``a`` and ``b`` (n,) come from two fits (e.g. on overlapping spans); the ids of separate fits are arbitrary,
    so the agreement is max over one-to-one maps sigma of mean_t [sigma(a_t) = b_t], in [0, 1].
    """
    b = _as_labels(b)
    if not len(b):
        return float("nan")
    return float(np.mean(matched(a, b) == b))
