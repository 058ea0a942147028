"""How well the regimes separate in embedding space: silhouette and Davies-Bouldin from scikit-learn.

In the trainer, not the core, because the serving core runs without scikit-learn; only training summaries and
the search's scorecards report these.
"""

from __future__ import annotations

import numpy as np


def separation(embeddings: np.ndarray, labels: np.ndarray, sample: int = 3000, seed: int = 0) -> dict:
    """How well the regimes separate in embedding space, from scikit-learn (Euclidean distances).

    Silhouette: mean over points of (b - a) / max(a, b), a = mean distance to the point's own regime,
    b = mean distance to the nearest other regime; in [-1, 1], higher is better. Computed on a seeded
    random sample of at most ``sample`` points because it costs O(n^2).
    Davies-Bouldin: (1/K) sum_i max_{j != i} (S_i + S_j) / d(c_i, c_j), S_i = mean distance of regime i's
    points to its centroid c_i; >= 0, lower is better. Computed on all points (it is O(n K)).
    Both are NaN when fewer than two regimes occur."""
    from sklearn.metrics import davies_bouldin_score, silhouette_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return {"silhouette": float("nan"), "davies_bouldin": float("nan")}
    n = len(labels)
    idx = np.random.default_rng(seed).choice(n, sample, replace=False) if n > sample else np.arange(n)
    return {
        "silhouette": float(silhouette_score(embeddings[idx], labels[idx])),
        "davies_bouldin": float(davies_bouldin_score(embeddings, labels)),
    }
