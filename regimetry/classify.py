"""Nearest-neighbour vote on plain arrays, and the distance helpers of the regime geometry.

The kNN classifier served the regimes of the first build; served regimes now come from the causal jump
decoder (regimetry/regimes.py), and the classifier is kept in bundles as a diagnostic (the trainer reports
how often its vote agrees with the jump fit). Stored as two arrays (reference embeddings and their regime ids)
in an .npz loaded with allow_pickle=False: no pickle, no scikit-learn. The neighbours come from scipy's k-d
tree, built once at load (~2.5x faster than a full distance matrix for the same votes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class KNNClassifier:
    reference: np.ndarray  # (M, D) float32, embeddings in the clustering geometry
    labels: np.ndarray  # (M,) int64 regime ids
    n_classes: int
    k: int = 15
    _tree: Any = field(init=False, repr=False, compare=False)  # scipy cKDTree over `reference`

    def __post_init__(self) -> None:
        from scipy.spatial import cKDTree

        # leaves of 64 points: ~12 us per query row instead of ~16 us with scipy's default 16 (16-dim
        # embeddings, 2,000 references); the search stays exact, only the tree's shape changes
        object.__setattr__(self, "_tree", cKDTree(np.asarray(self.reference, dtype=np.float64), leafsize=64))

    def predict_proba(self, z: np.ndarray) -> np.ndarray:
        """Vote shares of the k nearest references, (B, n_classes) float64; rows sum to 1."""
        z = np.atleast_2d(np.asarray(z, dtype=np.float64))
        k = min(self.k, len(self.reference))
        if len(z) == 0 or k == 0:
            return np.zeros((len(z), self.n_classes))
        _, idx = self._tree.query(z, k=k)
        votes = self.labels[np.asarray(idx).reshape(len(z), k)]
        cells = (np.arange(len(z))[:, None] * self.n_classes + votes).ravel()
        counts = np.bincount(cells, minlength=len(z) * self.n_classes).reshape(len(z), self.n_classes)
        return counts / k

    def predict(self, z: np.ndarray) -> np.ndarray:
        return self.predict_proba(z).argmax(1)

    def save(self, path: str | Path) -> None:
        np.savez(
            path,
            reference=self.reference.astype(np.float32),
            labels=self.labels.astype(np.int64),
            n_classes=np.int64(self.n_classes),
            k=np.int64(self.k),
        )

    @classmethod
    def load(cls, path: str | Path) -> KNNClassifier:
        with np.load(path, allow_pickle=False) as f:
            return cls(
                f["reference"].astype(np.float32), f["labels"].astype(np.int64), int(f["n_classes"]), int(f["k"])
            )


def centroid_distance(z: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Euclidean distance of each embedding to its nearest centroid: the out-of-distribution score."""
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    c = np.asarray(centroids, dtype=np.float64)
    d2 = (z * z).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2.0 * z @ c.T
    return np.sqrt(np.maximum(d2.min(1), 0.0))


def standardize(raw: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Raw encoder output -> clustering geometry (per-dimension z-score fitted on training embeddings)."""
    return ((np.asarray(raw, dtype=np.float64) - mean) / std).astype(np.float32)
