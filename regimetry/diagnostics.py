"""Plain functions that describe a regime sequence; shared by the trainer, the search and the worker's drift.

Notation: a regime sequence s_1..s_n over K regimes; counts N_ij = #{t : s_t = i, s_{t+1} = j}.
Logarithms are natural (nats) unless a function says otherwise.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def transition_counts(labels: np.ndarray, n_states: int) -> np.ndarray:
    """N_ij = number of steps from regime i to regime j."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.zeros((n_states, n_states))
    if len(labels) > 1:
        np.add.at(counts, (labels[:-1], labels[1:]), 1.0)
    return counts


def transition_matrix(labels: np.ndarray, n_states: int, smoothing: float = 0.0) -> np.ndarray:
    """Row-stochastic P_ij = (N_ij + a) / sum_j (N_ij + a); a row never visited becomes uniform."""
    counts = transition_counts(labels, n_states) + smoothing
    rows = counts.sum(1, keepdims=True)
    return np.where(rows > 0, counts / np.where(rows > 0, rows, 1.0), 1.0 / n_states)


def row_entropy(p: np.ndarray) -> np.ndarray:
    """H_i = -sum_j P_ij log P_ij for each row: how unpredictable the next regime is from regime i."""
    p = np.asarray(p, dtype=np.float64)
    return -(np.where(p > 0, p * np.log(np.maximum(p, _EPS)), 0.0)).sum(-1)


def stationary_distribution(p: np.ndarray) -> np.ndarray:
    """pi with pi P = pi, sum_i pi_i = 1: the left eigenvector of P for the eigenvalue closest to 1.

    The long-run share of time in each regime implied by the transition matrix alone; for a chain with one
    closed class it is unique (for a reducible chain, one of the stationary vectors is returned)."""
    vals, vecs = np.linalg.eig(np.asarray(p, dtype=np.float64).T)
    v = np.real(vecs[:, np.argmin(np.abs(vals - 1.0))])
    v = np.abs(v)
    return v / v.sum()


def entropy_rate(p: np.ndarray) -> float:
    """Stationary entropy rate H = sum_i pi_i H_i (nats per step): the average surprise of the next regime."""
    return float(stationary_distribution(p) @ row_entropy(p))


def stationary_entropy(p: np.ndarray) -> float:
    """H(pi) = -sum_i pi_i log pi_i (nats) of the stationary distribution: how evenly the chain spreads its
    time over the regimes in the long run (log K at most)."""
    pi = stationary_distribution(p)
    return float(-(np.where(pi > 0, pi * np.log(np.maximum(pi, _EPS)), 0.0)).sum())


def stickiness(p: np.ndarray) -> float:
    """Mean self-transition probability (1/K) sum_i P_ii (1 = regimes never change).

    For a regime with self-transition p the expected run length is 1 / (1 - p) steps (geometric durations)."""
    return float(np.mean(np.diag(p)))


def run_lengths(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(regime of each run, length of each run) for the maximal runs of equal labels."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(labels)]])
    return labels[starts], ends - starts


def mean_durations(labels: np.ndarray, n_states: int) -> np.ndarray:
    """Mean run length of each regime, in steps: D_k = (steps labelled k) / (runs of k); 0 if k never occurs."""
    reg, length = run_lengths(labels)
    out = np.zeros(n_states)
    for k in range(n_states):
        sel = reg == k
        out[k] = length[sel].mean() if sel.any() else 0.0
    return out


def mean_duration(labels: np.ndarray) -> float:
    """Mean length of all runs: n / number of runs."""
    _, length = run_lengths(labels)
    return float(length.mean()) if len(length) else 0.0


def shares(labels: np.ndarray, n_states: int) -> np.ndarray:
    """Fraction of steps in each regime: s_k = #{t : s_t = k} / n (all zero for an empty sequence)."""
    labels = np.asarray(labels, dtype=np.int64)
    c = np.bincount(labels, minlength=n_states).astype(np.float64)
    return c / max(c.sum(), 1.0)


def balance(labels: np.ndarray, n_states: int) -> dict:
    """Normalised share entropy -sum_k s_k log s_k / log K (1 = perfectly balanced, 0 = one regime only)
    and the smallest share min_k s_k (0 when a regime is never used)."""
    s = shares(labels, n_states)
    h = float(-(np.where(s > 0, s * np.log(np.maximum(s, _EPS)), 0.0)).sum())
    return {"share_entropy": h / np.log(n_states) if n_states > 1 else 1.0, "min_share": float(s.min())}


def psi(observed: np.ndarray, expected: np.ndarray, floor: float = 1e-4) -> float:
    """Population stability index sum_k (o_k - e_k) ln(o_k / e_k), shares floored to avoid log 0."""
    o = np.maximum(np.asarray(observed, dtype=np.float64), floor)
    e = np.maximum(np.asarray(expected, dtype=np.float64), floor)
    o, e = o / o.sum(), e / e.sum()
    return float(((o - e) * np.log(o / e)).sum())


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 = same, 1 = disjoint): JS = (KL(p||m) + KL(q||m)) / 2, m = (p+q)/2."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p, q = p / max(p.sum(), _EPS), q / max(q.sum(), _EPS)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        return float(np.where(a > 0, a * np.log2(np.maximum(a, _EPS) / np.maximum(m, _EPS)), 0.0).sum())

    return 0.5 * (kl(p) + kl(q))


def transition_shift(p: np.ndarray, baseline: np.ndarray) -> float:
    """Mean total-variation distance between matching rows: (1/K) sum_i (1/2) sum_j |P_ij - B_ij|."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(baseline)).sum(1).mean())


def change_points(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index t, regime before, regime after) for every step where s_t != s_{t-1}: the regime changes."""
    labels = np.asarray(labels)
    idx = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    return idx, labels[idx - 1], labels[idx]


def regime_profiles(labels: np.ndarray, n_states: int, returns: np.ndarray | None = None) -> list[dict]:
    """Per regime: share, mean duration (steps), stickiness P_kk, row entropy H_k, the number of bars labelled k
    (``n_bars``) and the mean return and volatility (population std) of their returns (``returns`` aligned with
    ``labels``). Descriptive names come from these profiles: regimetry/naming.py."""
    p = transition_matrix(labels, n_states)
    sh, dur, ent = shares(labels, n_states), mean_durations(labels, n_states), row_entropy(p)
    out = []
    labels = np.asarray(labels)
    for k in range(n_states):
        mask = labels == k
        r = returns[mask] if returns is not None else np.zeros(0)
        out.append(
            {
                "id": k,
                "share": float(sh[k]),
                "mean_duration": float(dur[k]),
                "stickiness": float(p[k, k]),
                "row_entropy": float(ent[k]),
                "n_bars": int(mask.sum()),
                "mean_return": float(r.mean()) if len(r) else 0.0,
                "volatility": float(r.std()) if len(r) else 0.0,
            }
        )
    return out
