"""The k-d tree classifier returns exactly the brute-force k-nearest-neighbour vote shares."""

from __future__ import annotations

import numpy as np

from regimetry.classify import KNNClassifier


def brute_force_shares(reference: np.ndarray, labels: np.ndarray, n_classes: int, k: int, z: np.ndarray) -> np.ndarray:
    d2 = ((z[:, None, :] - reference[None, :, :]) ** 2).sum(-1)
    nearest = np.argsort(d2, axis=1, kind="stable")[:, :k]
    shares = np.zeros((len(z), n_classes))
    for row, idx in enumerate(nearest):
        np.add.at(shares[row], labels[idx], 1.0 / k)
    return shares


def test_vote_shares_equal_brute_force():
    rng = np.random.default_rng(7)
    reference = rng.standard_normal((700, 16)).astype(np.float32)
    labels = rng.integers(0, 5, len(reference))
    z = np.concatenate(
        [
            reference[:50] + 0.05 * rng.standard_normal((50, 16)),  # near a reference
            2.0 * rng.standard_normal((150, 16)),
        ]
    ).astype(np.float32)  # anywhere
    clf = KNNClassifier(reference, labels, 5, k=9)
    got = clf.predict_proba(z)
    want = brute_force_shares(reference.astype(np.float64), labels, 5, 9, z.astype(np.float64))
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(got.sum(1), 1.0)


def test_fewer_references_than_k_uses_all():
    reference = np.eye(3, dtype=np.float32)
    clf = KNNClassifier(reference, np.array([0, 1, 1]), 2, k=15)
    np.testing.assert_allclose(clf.predict_proba(np.zeros((1, 3), np.float32)), [[1 / 3, 2 / 3]])
