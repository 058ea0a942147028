"""The causal jump decoder (regimetry/regimes.py): equal to the jump model's online step, causal, and the same
whether a series is decoded at once or bar by bar from stored costs. Fast: numpy only, no training."""

from __future__ import annotations

import numpy as np
import pytest

from regimetry.regimes import JumpDecoder, RegimeSpace, dwell


def planted_costs(n: int = 3000, k: int = 4, seed: int = 0) -> np.ndarray:
    """Costs 0.5 * ||x - c_k||^2 of noisy points drawn around K centres with sticky switching."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.0, (k, 5))
    state, labels = 0, []
    for _ in range(n):
        if rng.random() < 0.03:
            state = int(rng.integers(k))
        labels.append(state)
    x = centres[labels] + rng.normal(0, 1.5, (n, 5))
    return 0.5 * ((x[:, None, :] - centres[None]) ** 2).sum(-1)


def brute_force(costs: np.ndarray, lam: float, memory: int) -> np.ndarray:
    """Label of each bar by the textbook recursion V_t = L_t + min_j(V_{t-1,j} + lam [j != k]) over the last
    `memory` bars only, one bar and one regime at a time in plain Python."""
    out = []
    for t in range(len(costs)):
        v = None
        for row in costs[max(0, t - memory + 1) : t + 1]:
            if v is None:
                v = [float(c) for c in row]
            else:
                v = [
                    float(row[k]) + min(v[j] + (lam if j != k else 0.0) for j in range(len(row)))
                    for k in range(len(row))
                ]
        out.append(int(np.argmin(v)))
    return np.asarray(out)


@pytest.mark.parametrize("lam", [0.0, 2.0, 10.0])
def test_full_memory_equals_jumpmodels_online_prediction(lam):
    from jumpmodels.jump import dp, jump_penalty_to_mx

    costs = planted_costs(600)
    ref = dp(costs, jump_penalty_to_mx(lam, costs.shape[1]), return_value_mx=True).argmin(1)
    ours = JumpDecoder(lam, memory=len(costs)).decode_series(costs).argmin(1)
    np.testing.assert_array_equal(ours, ref)


def test_finite_memory_equals_brute_force():
    costs = planted_costs(400, seed=3)
    dec = JumpDecoder(5.0, memory=40)
    np.testing.assert_array_equal(dec.decode_series(costs).argmin(1), brute_force(costs, 5.0, 40))


def test_finite_memory_changes_almost_nothing():
    """The restart `memory` bars back is the price of exact live == batch; the clipped recursion forgets its
    start within a few dozen bars, so at the default memory the labels equal the unbounded ones."""
    costs = planted_costs(5000, seed=5)
    for lam in (2.0, 8.0, 32.0):
        full = JumpDecoder(lam, memory=len(costs)).decode_series(costs).argmin(1)
        finite = JumpDecoder(lam, memory=128).decode_series(costs).argmin(1)
        assert np.mean(full == finite) >= 0.999, lam


def test_truncating_the_future_never_changes_past_labels():
    costs = planted_costs(1500, seed=7)
    dec = JumpDecoder(8.0, memory=128)
    whole = dec.decode_series(costs)
    for cut in (1, 50, 127, 128, 129, 700, 1499):
        np.testing.assert_array_equal(dec.decode_series(costs[:cut]), whole[:cut])


def test_bar_by_bar_from_stored_costs_equals_the_batch_pass():
    """The worker holds the last memory - 1 costs of a symbol and decodes each batch's new bars from them:
    chunks of any size give exactly the batch pass (same float64 arithmetic, bit for bit)."""
    costs = planted_costs(900, seed=9)
    dec = JumpDecoder(6.0, memory=64)
    whole = dec.decode_series(costs)
    rng = np.random.default_rng(1)
    got, stored, i = [], np.zeros((0, costs.shape[1])), 0
    while i < len(costs):
        n = int(rng.integers(1, 150))
        new = costs[i : i + n]
        got.append(dec.values_at(dec.sequence(stored, new), np.arange(len(new))))
        stored = np.concatenate([stored, new])[-(dec.memory - 1) :]
        i += n
    np.testing.assert_array_equal(np.concatenate(got), whole)


def test_every_batch_size_gives_the_same_bits():
    """values_at runs a batch of a few bars (a live bar arriving alone) on Python floats, a medium one on
    windows gathered at once and a large one row by row: the same bar gets the same bits in each, whatever the
    memory, penalty, number of regimes or zero padding, so the size of the batch a bar travels in never changes
    its event."""
    rng = np.random.default_rng(12)
    for k, memory, lam in ((4, 256, 238.0), (3, 64, 4.5), (2, 17, 0.0), (6, 128, 30.0), (4, 1, 9.0)):
        dec = JumpDecoder(lam, memory)
        n_bars = max(memory + 40, dec.GATHERED // k + 10)
        costs = rng.exponential(3.0, (n_bars, k)) * rng.integers(0, 2, (n_bars, 1))  # some zero rows
        seq = dec.sequence(np.zeros((0, k)), costs)
        starts = np.arange(n_bars)
        assert n_bars * k > dec.GATHERED  # row by row
        whole = dec.values_at(seq, starts)
        sizes = {1, dec.SMALL // k, dec.SMALL // k + 1, dec.GATHERED // k}  # Python floats, then gathered windows
        for n in sorted(sizes):
            for first in (0, memory // 2, n_bars - n):
                part = dec.values_at(seq, starts[first : first + n])
                np.testing.assert_array_equal(part, whole[first : first + n])


def test_symbols_laid_end_to_end_decode_as_each_alone():
    """The worker's one call per batch (worker/steps.py::infer): every symbol's sequence (padding, stored costs,
    new costs) concatenated, one start per new bar. Each symbol's values equal its own batch pass bit for bit,
    and its labels the brute-force recursion over the same bars, whatever the neighbouring symbols hold."""
    dec = JumpDecoder(7.0, memory=48)
    rng = np.random.default_rng(4)
    series = [planted_costs(int(rng.integers(60, 300)), seed=20 + i) for i in range(5)]
    stored_n = [int(rng.integers(0, len(s) - 1)) for s in series]  # some start empty, some beyond memory - 1
    seqs = [dec.sequence(s[:n], s[n:]) for s, n in zip(series, stored_n)]
    offsets = np.cumsum([0] + [len(q) for q in seqs[:-1]])
    starts = np.concatenate([o + np.arange(len(s) - n) for o, s, n in zip(offsets, series, stored_n)])
    got = dec.values_at(np.concatenate(seqs), starts)
    i = 0
    for s, n in zip(series, stored_n):
        mine, i = got[i : i + len(s) - n], i + len(s) - n
        np.testing.assert_array_equal(mine, dec.decode_series(s)[n:])
        np.testing.assert_array_equal(mine.argmin(1), brute_force(s, 7.0, 48)[n:])
    assert i == len(got)


def test_probabilities_favour_the_decoded_regime_and_sum_to_one():
    dec = JumpDecoder(4.0, memory=32)
    w = dec.decode_series(planted_costs(300))
    p = dec.proba(w)
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_array_equal(p.argmax(1), w.argmin(1))


def test_a_larger_penalty_switches_less():
    costs = planted_costs(3000, seed=11)
    switches = [
        np.count_nonzero(np.diff(JumpDecoder(lam, 128).decode_series(costs).argmin(1))) for lam in (0.0, 4.0, 32.0)
    ]
    assert switches[0] > switches[1] > switches[2]


def test_dwell_counts_bars_in_the_current_regime_and_continues():
    labels = np.array([1, 1, 2, 2, 2, 0])
    np.testing.assert_array_equal(dwell(labels), [1, 2, 1, 2, 3, 1])
    np.testing.assert_array_equal(dwell(labels[3:], previous=2, previous_dwell=2), [3, 4, 1])


def test_space_geometry_weights_and_costs():
    space = RegimeSpace((1, 3), (1.0, 0.5), 2.0, np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))
    rows = np.array([[9.0, 2.0, 9.0, 4.0]])
    z = np.array([[1.0, -1.0]])
    g = space.geometry(rows, z)
    np.testing.assert_allclose(g, [[2.0, 2.0, 2.0 / np.sqrt(2), -2.0 / np.sqrt(2)]])
    np.testing.assert_allclose(space.costs(g), 0.5 * ((g[:, None, :] - space.centroids[None]) ** 2).sum(-1))
    assert RegimeSpace.from_dict(space.to_dict()).to_dict() == space.to_dict()


def planted_points(n: int, dwell_bars: int, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) points around K well separated centres, unit within-regime noise, a switch every dwell_bars bars
    (so the mean dwell is known exactly), and their labels."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) // dwell_bars) % k
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0]])[:k]
    return centres[labels] + rng.normal(0, 1.0, (n, 2)), labels


@pytest.mark.parametrize("dwell_bars", [20, 200])
def test_self_consistent_penalty_is_the_switch_cost_of_the_dwell(dwell_bars):
    """The fixed point is log((K-1)(D-1)) for the dwell D the decoder then gives: a hard HMM's switch cost.
    Short-lived regimes get a small penalty, long-lived ones a larger one, without a horizon or a grid."""
    from trainer.config import ClusterConfig
    from trainer.penalty import self_consistent_penalty

    g, labels = planted_points(2000, dwell_bars)
    cfg = ClusterConfig(n_clusters=3)
    lam, info = self_consistent_penalty(g, labels, cfg)
    last = info["candidates"][-1]
    assert last["penalty"] == lam and abs(last["implied_penalty"] - lam) < 0.05
    assert lam == pytest.approx(np.log(2 * (last["dwell"] - 1)), abs=0.05)
    assert last["dwell"] == pytest.approx(dwell_bars, rel=0.1)


def persistent_setting(dwell_bars: int, informative: bool, seed: int = 0):
    """Planted points, each bar's next |move| drawn from its regime's scale (informative) or from one scale for
    all (not), and the self-consistent penalty of their fit."""
    from trainer.config import ClusterConfig
    from trainer.penalty import self_consistent_penalty

    g, labels = planted_points(2400, dwell_bars, seed=seed)
    rng = np.random.default_rng(seed + 1)
    scale = np.array([0.5, 1.0, 2.0])[labels] if informative else np.ones(len(labels))
    move = np.abs(rng.normal(0.0, scale))
    move[-1] = np.nan  # the last bar's next bar is not a training bar
    cfg = ClusterConfig(n_clusters=3, penalty_rule="persistent")
    lam0, _ = self_consistent_penalty(g, labels, cfg)
    return g, move, labels.astype(float), cfg, lam0


def test_persistent_penalty_keeps_the_self_consistent_one_where_a_larger_one_loses_regimes():
    """Short planted regimes that tell the next move's scale: every larger multiple merges some of them, the
    folds agree on the loss, and the rule stays at the self-consistent penalty."""
    from trainer.penalty import persistent_penalty

    g, move, key, cfg, lam0 = persistent_setting(20, informative=True)
    lam, info = persistent_penalty(g, lam0, move, key, cfg, seed=0)
    assert lam == lam0 and info["chosen"] == lam0
    scores = np.asarray(info["fold_scores"])
    assert scores.shape == (len(cfg.persistence_folds), len(info["multiples"]))
    assert np.all(scores[:, 0] > scores[:, -1])  # the largest penalty explains less in every fold


def test_persistent_penalty_buys_persistence_where_the_folds_cannot_tell():
    """The same regimes with a next move that none of them explains: every candidate scores noise, and the
    one-standard-error rule takes a larger penalty than the self-consistent one."""
    from trainer.penalty import persistent_penalty

    g, move, key, cfg, lam0 = persistent_setting(20, informative=False)
    lam, info = persistent_penalty(g, lam0, move, key, cfg, seed=0)
    assert lam > lam0 and lam in [lam0 * m for m in info["multiples"]]


def test_persistent_penalty_without_two_usable_folds_keeps_the_self_consistent_one():
    from trainer.penalty import persistent_penalty

    g, move, key, cfg, lam0 = persistent_setting(20, informative=True)
    unknown = np.full_like(move, np.nan)
    lam, info = persistent_penalty(g, lam0, unknown, key, cfg, seed=0)
    assert lam == lam0 and "fewer than two" in info["rule"]


def test_an_anchored_refit_moves_its_centres_only_as_far_as_the_new_windows_outweigh_the_previous_model():
    """A refit on bars whose mix has shifted (a third regime sits between two others): without an anchor the
    jump model's centres drift toward it; anchored with the previous model's windows as the prior's weight each
    centre stays nearer its previous place and more windows keep the previous regime; an anchor of weight 0 is
    no anchor, and shrink is the weighted mean it says it is."""
    from trainer.jump_fit import refine, shrink

    rng = np.random.default_rng(3)
    previous = np.array([[0.0, 0.0], [6.0, 0.0]])
    labels = (np.arange(1500) // 50) % 3
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [3.5, 0.0]])  # the new bars' third mode, nearer regime 1
    g = centres[labels] + rng.normal(0, 1.0, (1500, 2))
    before = np.argmin(((g[:, None, :] - previous[None]) ** 2).sum(-1), axis=1)
    weight = np.bincount(before, minlength=2).astype(float)
    free, free_lab = refine(g, None, 2, 4.0, init_centroids=previous)
    held, held_lab = refine(g, None, 2, 4.0, init_centroids=previous, anchor=(previous, weight))
    zero, _ = refine(g, None, 2, 4.0, init_centroids=previous, anchor=(previous, np.zeros(2)))
    assert np.array_equal(zero, free)
    moved_free, moved_held = np.linalg.norm(free - previous, axis=1), np.linalg.norm(held - previous, axis=1)
    assert np.all(moved_held < moved_free) and moved_free.max() > 0.3
    assert np.mean(held_lab == before) > np.mean(free_lab == before)
    # the formula: counts 3 and 1 at centres 0 and 4 against anchors 10 with weights 1 and 0; nothing at all keeps
    out = shrink(np.array([[0.0], [4.0], [7.0]]), np.array([3, 1, 0]), np.full((3, 1), 10.0), np.array([1.0, 0.0, 0.0]))
    assert out.ravel().tolist() == [2.5, 4.0, 7.0]


def test_adequate_memory_grows_with_the_penalty_until_the_decoder_equals_the_unbounded_one():
    """A large penalty takes longer to forget the restart: the memory is doubled until the finite decoder labels
    (almost) every bar as the unbounded recursion does, and a small penalty keeps the configured memory."""
    from trainer.jump_fit import MEMORY_AGREEMENT, adequate_memory, unbounded_labels

    costs = planted_costs(3000, seed=5) * 0.05  # weak evidence per bar: forgetting takes many bars
    small, agree_small = adequate_memory(costs, 1.0, 32)
    assert small == 32 and agree_small >= MEMORY_AGREEMENT
    lam = 40.0
    assert np.mean(JumpDecoder(lam, 32).decode_series(costs).argmin(1) == unbounded_labels(costs, lam)) < 0.99
    grown, agree = adequate_memory(costs, lam, 32)
    assert grown > 32 and agree >= MEMORY_AGREEMENT
    head = costs[:600]  # the reference itself: the decoder with a memory as long as the series
    np.testing.assert_array_equal(
        unbounded_labels(head, lam), JumpDecoder(lam, len(head)).decode_series(head).argmin(1)
    )


def test_whitening_puts_every_column_in_units_of_its_within_regime_noise():
    """A column ten times noisier (and ten times further apart) gets a tenth of the weight: after whitening each
    column's pooled within-regime spread is its configured weight, whatever its scale."""
    from trainer.clustering import whiten
    from trainer.config import ClusterConfig
    from trainer.jump_fit import refine

    g, labels = planted_points(1500, 50)
    rows = np.stack([g[:, 0], 10.0 * g[:, 1]], 1)
    cfg = ClusterConfig(n_clusters=3)
    space = RegimeSpace((0, 1), (1.0, 1.0), 0.0, np.zeros((3, 2)))
    white, info = whiten(rows, np.zeros((len(rows), 0)), space, cfg, seed=0)
    assert white.risk_weights[1] == pytest.approx(white.risk_weights[0] / 10.0, rel=0.1)
    gw = white.geometry(rows, np.zeros((len(rows), 0)))
    cent, lab = refine(gw, labels, 3, cfg.penalty_start)
    np.testing.assert_allclose((gw - cent[lab]).std(0), [1.0, 1.0], rtol=0.1)
    assert len(info["passes"]) >= 1


def test_huber_cost_is_gaussian_inside_delta_and_linear_beyond():
    """Per coordinate: 0.5 r^2 within delta of the centre, delta |r| - 0.5 delta^2 beyond (same value and slope
    at delta), summed over coordinates; None is the Gaussian cost."""
    from regimetry.regimes import point_costs

    cent = np.zeros((1, 2))
    gauss = RegimeSpace((0, 1), (1.0, 1.0), 0.0, cent)
    huber = RegimeSpace((0, 1), (1.0, 1.0), 0.0, cent, huber_delta=2.0)
    inside = np.array([[0.0, 0.0], [1.5, -2.0], [-0.3, 1.9]])
    np.testing.assert_allclose(huber.costs(inside), gauss.costs(inside))
    r = np.array([2.0, 3.0, 5.0, 11.0])
    g = np.stack([r, np.zeros_like(r)], 1)
    c = huber.costs(g)[:, 0]
    np.testing.assert_allclose(c, 2.0 * r - 2.0)
    np.testing.assert_allclose(np.diff(c) / np.diff(r), 2.0)  # slope delta beyond delta, never more
    assert (c[1:] < gauss.costs(g)[1:, 0]).all()
    # coordinates add; the sign of the residual does not matter
    np.testing.assert_allclose(huber.costs(np.array([[-5.0, 1.0]])), [[(2.0 * 5 - 2.0) + 0.5]])
    np.testing.assert_allclose(point_costs(g, cent, None), gauss.costs(g))
    with pytest.raises(ValueError):
        point_costs(g, cent, 0.0)


def test_space_dict_keeps_the_cost_and_an_old_dict_means_gaussian():
    cent = np.array([[0.0, 0.0], [1.0, 1.0]])
    old = {"risk_columns": [0, 1], "risk_weights": [1.0, 1.0], "embedding_weight": 0.0, "centroids": cent.tolist()}
    space = RegimeSpace.from_dict(old)
    assert space.huber_delta is None
    assert space.to_dict() == old  # a Gaussian space's dict (and the bundle's regimes hash) is unchanged
    g = np.array([[9.0, -7.0]])
    np.testing.assert_allclose(space.costs(g), 0.5 * ((g[:, None, :] - cent[None]) ** 2).sum(-1))
    huber = RegimeSpace.from_dict({**old, "huber_delta": 2.5})
    assert huber.huber_delta == 2.5
    assert RegimeSpace.from_dict(huber.to_dict()).to_dict() == huber.to_dict()
    assert (huber.costs(g) < space.costs(g)).all()


def test_one_outlying_bar_carries_a_switch_under_gaussian_costs_but_not_huber():
    """Two regimes 2 apart on one coordinate, penalty 4: one bar 10 deviations out on the far side gives
    0.5 (10^2 - 8^2) = 18 nats of evidence under the Gaussian cost (a switch), at most delta * 2 = 4 under Huber
    with delta 2 (no switch)."""
    cent = np.array([[0.0], [2.0]])
    g = np.zeros((60, 1))
    g[30, 0] = 10.0
    dec = JumpDecoder(4.5, 64)
    gauss = dec.decode_series(RegimeSpace((0,), (1.0,), 0.0, cent).costs(g)).argmin(1)
    huber = dec.decode_series(RegimeSpace((0,), (1.0,), 0.0, cent, huber_delta=2.0).costs(g)).argmin(1)
    assert gauss[30] == 1 and (huber == 0).all()


def test_huber_fit_centres_resist_outliers_and_volume_is_a_geometry_column():
    from trainer.clustering import risk_columns
    from trainer.config import ClusterConfig
    from trainer.jump_fit import huber_centre, refine

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (400, 1))
    x[:8] = 60.0  # 2 % wild points
    m = huber_centre(x, 2.0, x.mean(0))
    assert abs(m[0]) < 0.25 < abs(x.mean())
    g, labels = planted_points(1500, 50)
    cent_h, lab_h = refine(g, labels, 3, 4.0, huber_delta=2.5)
    cent_g, lab_g = refine(g, labels, 3, 4.0)
    assert np.mean(lab_h == lab_g) > 0.98 and np.abs(cent_h - cent_g).max() < 0.2  # Gaussian data: ~ the same
    names = ("log_return", "log_range", "volume_z_20", "log_rvol_hl3")
    assert risk_columns(names, ClusterConfig()) == ((1, 3), (1.0, 1.0))
    assert risk_columns(names, ClusterConfig(volume_weight=0.5)) == ((1, 2, 3), (1.0, 0.5, 1.0))
