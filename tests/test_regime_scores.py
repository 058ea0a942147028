"""The regime benchmark's metrics on hand-made sequences whose answers are known by construction, and the
causality of the online jump-model baseline. No training; fast."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import regime_scores as rs


def blocks(*pairs: tuple[int, int]) -> np.ndarray:
    """blocks((0, 30), (1, 20)) -> thirty 0s then twenty 1s."""
    return np.concatenate([np.full(n, v, dtype=np.int64) for v, n in pairs])


TRUE = blocks((0, 30), (1, 25), (2, 40), (0, 20), (1, 35), (2, 30))


def test_permuted_labelling_is_perfect():
    found = np.array([7, 3, 5])[TRUE]  # same partition, other names
    assert rs.ari(found, TRUE) == pytest.approx(1.0)
    assert rs.balanced_accuracy(found, TRUE) == pytest.approx(1.0)
    assert rs.refit_agreement(found, TRUE) == pytest.approx(1.0)
    assert rs.hungarian_map(found, TRUE) == {7: 0, 3: 1, 5: 2}
    assert rs.switch_ratio(found, TRUE) == pytest.approx(1.0)
    assert rs.detection_delays(found, TRUE)["median_delay"] == 0.0


def test_different_numbers_of_classes():
    # one true class split in two found classes: the smaller half is unmatched
    found = TRUE.copy()
    found[:10] = 9
    m = rs.hungarian_map(found, TRUE)
    assert m[9] == rs.UNMATCHED and m[0] == 0
    assert rs.balanced_accuracy(found, TRUE) == pytest.approx((40 / 50 + 1 + 1) / 3)
    # two true classes merged into one found class: recall of the unmatched true class is 0
    merged = np.where(TRUE == 2, 1, TRUE)
    assert rs.balanced_accuracy(merged, TRUE) == pytest.approx(2 / 3)
    assert rs.ari(merged, TRUE) < 1.0


def test_delayed_copy_has_the_delay_it_was_shifted_by():
    shift = 4
    found = np.concatenate([np.full(shift, TRUE[0]), TRUE[:-shift]])
    d = rs.detection_delays(found, TRUE)
    assert d["n_true_switches"] == rs.switch_count(TRUE) == 5
    assert d["delays"] == [shift] * 5 and d["median_delay"] == shift and d["share_detected"] == 1.0
    # a switch that is never followed before the next true switch is not detected
    missed = TRUE.copy()
    missed[30:55] = 0  # the first 1-block is never labelled 1
    assert rs.detection_delays(missed, TRUE)["share_detected"] == pytest.approx(4 / 5)


def test_switch_count_and_dwell():
    a = blocks((0, 3), (1, 2), (0, 5))
    assert rs.switch_count(a) == 2
    assert rs.run_lengths(a).tolist() == [3, 2, 5]
    assert rs.mean_dwell(a) == pytest.approx(10 / 3)  # runs cut at the ends count in full
    assert rs.mean_dwell(np.zeros(7, dtype=int)) == 7.0
    assert rs.switch_ratio(blocks((0, 5), (1, 5), (0, 5), (1, 5)), blocks((0, 10), (1, 10))) == 3.0


def test_eta_squared_and_vol_ratio():
    rng = np.random.default_rng(0)
    n = 4000
    state = (np.arange(n) // 200) % 2  # two volatility levels, 200-bar blocks
    r = rng.standard_normal(n) * np.where(state == 1, 0.01, 0.001)
    bars = np.arange(n - 1)
    nxt = rs.next_returns(r, bars)  # r_{t+1}
    assert np.array_equal(nxt, r[1:])
    assert np.isnan(rs.next_returns(r, [n - 1])[0])
    good = rs.next_abs_return_eta2(state[1:], nxt)  # the label of bar t that knows bar t+1's level
    noise = rs.next_abs_return_eta2(rng.integers(0, 2, n - 1), nxt)
    assert good > 0.3 and abs(noise) < 0.01
    assert rs.vol_ratio(state[1:], nxt) == pytest.approx(10.0, rel=0.1)
    # groups of fewer than 10 bars are ignored
    lab = state[1:].copy()
    lab[:5] = 2
    assert rs.vol_ratio(lab, nxt) == pytest.approx(rs.vol_ratio(state[1:][5:], nxt[5:]), rel=1e-12)
    assert rs.eta_squared([0, 0, 1, 1], [1.0, 1.0, 3.0, 3.0]) == pytest.approx(1.0)


def test_jump_model_online_is_causal():
    from regimetry.synthetic import scenario
    from trainer.baselines import jump_model_online

    values = scenario("vol_only", n_bars=700).bars.values
    fit_end = 500
    full = jump_model_online(values, fit_end, 2, seed=0, penalties=(1.0, 30.0))
    cut = 600
    part = jump_model_online(values[:cut], fit_end, 2, seed=0, penalties=(1.0, 30.0))
    assert full.info["jump_penalty"] == part.info["jump_penalty"]
    assert np.array_equal(full.labels[:cut], part.labels)
    assert np.all(full.labels[:60] == -1) and np.all(full.labels[60:] >= 0)
