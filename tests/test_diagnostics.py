"""Diagnostics against values worked out by hand on sequences short enough to check on paper."""

from __future__ import annotations

from math import log, log2, sqrt

import numpy as np
import pytest

from regimetry import diagnostics as d
from trainer.separation import separation

# Runs: [0 0] [1 1 1] [0] [2 2]; steps: 0>0 0>1 1>1 1>1 1>0 0>2 2>2
SEQ = np.array([0, 0, 1, 1, 1, 0, 2, 2])


def test_transition_counts_and_matrix():
    np.testing.assert_array_equal(d.transition_counts(SEQ, 3), [[1, 1, 1], [1, 2, 0], [0, 0, 1]])
    np.testing.assert_allclose(d.transition_matrix(SEQ, 3), [[1 / 3, 1 / 3, 1 / 3], [1 / 3, 2 / 3, 0], [0, 0, 1]])


def test_transition_matrix_smoothing_and_unvisited_rows():
    # counts [[0,1],[0,0]] + 1 -> [[1,2],[1,1]]
    np.testing.assert_allclose(d.transition_matrix(np.array([0, 1]), 2, smoothing=1.0), [[1 / 3, 2 / 3], [0.5, 0.5]])
    # regime 1 never left: its row is uniform rather than all zero
    np.testing.assert_allclose(d.transition_matrix(np.array([0, 0]), 2), [[1, 0], [0.5, 0.5]])


def test_row_entropy_and_stickiness():
    p = d.transition_matrix(SEQ, 3)
    np.testing.assert_allclose(d.row_entropy(p), [log(3), -(1 / 3) * log(1 / 3) - (2 / 3) * log(2 / 3), 0.0])
    assert d.stickiness(p) == pytest.approx((1 / 3 + 2 / 3 + 1) / 3)


def test_stationary_distribution_and_entropies():
    p = np.array([[0.9, 0.1], [0.2, 0.8]])  # pi solves 0.1 pi0 = 0.2 pi1 -> (2/3, 1/3)
    np.testing.assert_allclose(d.stationary_distribution(p), [2 / 3, 1 / 3])
    h0 = -(0.9 * log(0.9) + 0.1 * log(0.1))
    h1 = -(0.2 * log(0.2) + 0.8 * log(0.8))
    assert d.entropy_rate(p) == pytest.approx(2 / 3 * h0 + 1 / 3 * h1)
    assert d.stationary_entropy(p) == pytest.approx(-(2 / 3 * log(2 / 3) + 1 / 3 * log(1 / 3)))
    # an absorbing regime takes all the long-run mass
    np.testing.assert_allclose(d.stationary_distribution(d.transition_matrix(SEQ, 3)), [0, 0, 1], atol=1e-12)


def test_runs_durations_and_changes():
    reg, length = d.run_lengths(SEQ)
    np.testing.assert_array_equal(reg, [0, 1, 0, 2])
    np.testing.assert_array_equal(length, [2, 3, 1, 2])
    np.testing.assert_allclose(d.mean_durations(SEQ, 4), [1.5, 3.0, 2.0, 0.0])
    assert d.mean_duration(SEQ) == 2.0
    assert d.mean_duration(np.array([], dtype=int)) == 0.0
    idx, before, after = d.change_points(SEQ)
    np.testing.assert_array_equal(idx, [2, 5, 6])
    np.testing.assert_array_equal(before, [0, 1, 0])
    np.testing.assert_array_equal(after, [1, 0, 2])


def test_shares_and_balance():
    np.testing.assert_allclose(d.shares(SEQ, 3), [3 / 8, 3 / 8, 2 / 8])
    b = d.balance(SEQ, 3)
    assert b["share_entropy"] == pytest.approx(-(2 * 3 / 8 * log(3 / 8) + 1 / 4 * log(1 / 4)) / log(3))
    assert b["min_share"] == 0.25
    assert d.balance(np.array([0, 1, 0, 1]), 2) == {"share_entropy": pytest.approx(1.0), "min_share": 0.5}
    assert d.balance(np.array([0, 0, 0]), 3) == {"share_entropy": pytest.approx(0.0), "min_share": 0.0}


def test_separation_on_two_point_pairs():
    x = np.array([[0, 0], [0, 1], [10, 0], [10, 1]], dtype=float)
    s = separation(x, np.array([0, 0, 1, 1]))
    b = (10 + sqrt(101)) / 2  # mean distance from (0,0) to the other pair; a = 1
    assert s["silhouette"] == pytest.approx((b - 1) / b)
    assert s["davies_bouldin"] == pytest.approx((0.5 + 0.5) / 10)  # spread 0.5 each, centroids 10 apart
    assert np.isnan(separation(x, np.zeros(4, dtype=int))["silhouette"])


def test_distribution_distances():
    assert d.psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * log(2) - 0.25 * log(2 / 3))
    assert d.psi([0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.0)
    assert d.jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)
    assert d.jensen_shannon([1, 0], [0.5, 0.5]) == pytest.approx(0.5 * log2(4 / 3) + 0.5 * (0.5 * log2(2 / 3) + 0.5))
    assert d.transition_shift(np.eye(2), np.full((2, 2), 0.5)) == pytest.approx(0.5)


def test_regime_profiles_by_hand():
    ret = np.array([1.0, 3.0, -1.0, -1.0, -1.0, 5.0, 0.0, 2.0])
    prof = d.regime_profiles(SEQ, 3, ret)
    assert [p["id"] for p in prof] == [0, 1, 2]
    assert prof[0]["share"] == pytest.approx(3 / 8)
    assert [p["n_bars"] for p in prof] == [3, 3, 2]  # the sample behind mean_return / volatility
    assert prof[0]["mean_return"] == pytest.approx(3.0)  # bars 1, 3, 5
    assert prof[0]["volatility"] == pytest.approx(sqrt(8 / 3))  # population std of (1, 3, 5)
    assert prof[1]["volatility"] == 0.0
    assert prof[2]["stickiness"] == 1.0 and prof[2]["row_entropy"] == 0.0
    assert prof[1]["mean_duration"] == 3.0
