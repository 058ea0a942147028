"""Nearest-neighbour regime classifier on plain arrays, shared by the trainer's evaluation and the worker.

Stored as two arrays (reference embeddings and their regime ids) in an .npz loaded with allow_pickle=False:
no pickle, no scikit-learn at serving time, and the trainer scores exactly what the worker will compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class KNNClassifier:
    reference: np.ndarray  # (M, D) float32, embeddings in the clustering geometry
    labels: np.ndarray     # (M,) int64 regime ids
    n_classes: int
    k: int = 15

    def __post_init__(self) -> None:
        ref = np.asarray(self.reference, dtype=np.float64)
        object.__setattr__(self, "_ref64", ref)
        object.__setattr__(self, "_ref_sq", (ref * ref).sum(1))

    def predict_proba(self, z: np.ndarray) -> np.ndarray:
        """Vote shares of the k nearest references, (B, n_classes) float64; rows sum to 1."""
        z = np.atleast_2d(np.asarray(z, dtype=np.float64))
        ref = self._ref64
        # |z|^2 is the same for every reference of a row, so it cannot change which are nearest: leave it out.
        d2 = self._ref_sq[None, :] - 2.0 * z @ ref.T
        k = min(self.k, len(ref))
        idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
        votes = self.labels[idx]
        proba = np.zeros((len(z), self.n_classes))
        np.add.at(proba, (np.arange(len(z))[:, None], votes), 1.0)
        return proba / k

    def predict(self, z: np.ndarray) -> np.ndarray:
        return self.predict_proba(z).argmax(1)

    def save(self, path: str | Path) -> None:
        np.savez(path, reference=self.reference.astype(np.float32), labels=self.labels.astype(np.int64),
                 n_classes=np.int64(self.n_classes), k=np.int64(self.k))

    @classmethod
    def load(cls, path: str | Path) -> "KNNClassifier":
        with np.load(path, allow_pickle=False) as f:
            return cls(f["reference"].astype(np.float32), f["labels"].astype(np.int64), int(f["n_classes"]), int(f["k"]))


def centroid_distance(z: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Euclidean distance of each embedding to its nearest centroid: the out-of-distribution score."""
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    c = np.asarray(centroids, dtype=np.float64)
    d2 = (z * z).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2.0 * z @ c.T
    return np.sqrt(np.maximum(d2.min(1), 0.0))


def standardize(raw: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Raw encoder output -> clustering geometry (per-dimension z-score fitted on training embeddings)."""
    return ((np.asarray(raw, dtype=np.float64) - mean) / std).astype(np.float32)
