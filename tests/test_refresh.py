"""Refresh: Hungarian alignment of regime ids, publishing rules, transition log, exit codes, locked profiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from research_helpers import csv_of, json_lines, nested, permute_bundle, run_cli, shifted, write_yaml

from trainer import alignment

PERM = np.array([2, 0, 1])  # tiny bundles have 3 regimes


# -- alignment on plain arrays ------------------------------------------------------------------------------


def test_permuted_labels_with_noise_are_recovered_exactly():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 2000)
    perm = np.array([3, 1, 0, 2])
    previous = perm[truth]
    noisy = truth.copy()
    flip = rng.random(len(truth)) < 0.2  # 20% of the new labels are wrong
    noisy[flip] = rng.integers(0, 4, flip.sum())
    found, agreement = alignment.match_labels(noisy, previous, 4)
    np.testing.assert_array_equal(found, perm)
    assert agreement == pytest.approx(np.mean(perm[noisy] == previous))
    assert 0.8 <= agreement < 1.0


def test_contingency_and_greedy_trap():
    # new 0 overlaps previous 0 most, but giving 0->0 would force 1->1 (0 windows): the optimum is 0->1, 1->0
    new = np.array([0] * 10 + [1] * 8)
    prev = np.array([0] * 6 + [1] * 4 + [0] * 8)
    np.testing.assert_array_equal(alignment.contingency(new, prev, 2), [[6, 4], [8, 0]])
    perm, agreement = alignment.match_labels(new, prev, 2)
    np.testing.assert_array_equal(perm, [1, 0])
    assert agreement == pytest.approx(12 / 18)


def test_centroid_matching_and_permuted_clustering():
    from regimetry.classify import KNNClassifier
    from regimetry.regimes import JumpDecoder, RegimeSpace
    from trainer.clustering import Clustering

    rng = np.random.default_rng(1)
    centroids = rng.normal(size=(3, 5)) * 5
    moved = centroids[np.argsort(PERM)] + rng.normal(scale=0.1, size=(3, 5))  # new id i is old regime argsort[i]
    np.testing.assert_array_equal(alignment.match_centroids(moved, centroids), np.argsort(PERM))

    ref = rng.normal(size=(30, 5)).astype(np.float32)
    labels = np.arange(30) % 3
    space = RegimeSpace((0, 1), (1.0, 0.5), 1.0, centroids)  # 2 risk columns + a 3-dim embedding: P = 5
    decoder = JumpDecoder(4.0, 32)
    cl = Clustering(np.zeros(5), np.ones(5), labels, centroids, KNNClassifier(ref, labels, 3, 1), space, decoder)
    pc = alignment.permute_clustering(cl, PERM)
    np.testing.assert_array_equal(pc.classifier.predict(ref), PERM[labels])
    np.testing.assert_array_equal(pc.train_labels, PERM[labels])
    np.testing.assert_allclose(pc.centroids[PERM], centroids)
    # the geometry's centres move with their ids; its weights and the decoder are the same
    np.testing.assert_allclose(pc.space.centroids, pc.centroids)
    assert (pc.space.risk_columns, pc.space.risk_weights, pc.space.embedding_weight) == ((0, 1), (1.0, 0.5), 1.0)
    assert pc.decoder == decoder


# -- locked profile -------------------------------------------------------------------------------------------


def test_lock_round_trip_and_feature_mismatch(tmp_path):
    from fixtures_bundle import tiny_config

    from regimetry.synthetic import generate_bars
    from trainer import locked_profile

    cfg = tiny_config(tmp_path, seed=5)
    bars = generate_bars(n_bars=300).bars
    doc = locked_profile.lock(cfg, bars)
    path = tmp_path / "locked.yaml"
    locked_profile.write(doc, path)
    prof = locked_profile.load(path)
    assert prof.config == cfg and prof.meta["seed"] == 5
    assert prof.meta["data"]["n_bars"] == 300 and prof.meta["data"]["start"].startswith("20")
    doc["feature_spec_hash"] = "0" * 64
    locked_profile.write(doc, path)
    with pytest.raises(locked_profile.ProfileMismatch, match="feature spec"):
        locked_profile.load(path)
    write_yaml(path, {"name": "x"})
    with pytest.raises(locked_profile.ProfileError, match="not a locked profile"):
        locked_profile.load(path)


# -- end to end: one refit on shifted data, one on the same data, both against a permuted previous bundle -----


@pytest.fixture()
def locked(tmp_path):
    from fixtures_bundle import TINY

    from regimetry.synthetic import generate_bars
    from trainer import locked_profile
    from trainer.config import from_dict

    cfg = from_dict(nested(TINY))
    path = tmp_path / "locked_profile.yaml"
    locked_profile.write(locked_profile.lock(cfg, generate_bars().bars), path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("start", ["warm", "cold"])
def test_refresh_on_shifted_bars_keeps_ids_and_publishes(tiny_bundle, locked, tmp_path, start):
    """warm: the refit starts from the previous (permuted) bundle's weights, centres and ids, so its ids are
    the previous ones by construction; cold (no weights to start from): alignment must find the permutation."""
    from regimetry.inference import RegimeModel
    from regimetry.synthetic import generate_bars

    models = tmp_path / "models"
    models.mkdir()
    prev = permute_bundle(Path(tiny_bundle), models, PERM, cold=start == "cold")
    old = generate_bars().bars
    new = shifted(old, 300)
    data = csv_of(new, tmp_path / "new.csv")
    log = tmp_path / "transitions.jsonl"
    res = run_cli(
        ["refresh", "--profile", str(locked), "--data", str(data), "--models", str(models), "--transitions", str(log)]
    )
    events = json_lines(res.stdout)
    assert res.exit_code == 0, res.stdout
    aligned = next(e for e in events if e["event"] == "aligned")
    print("shifted refresh:", {k: aligned[k] for k in ("agreement", "agreement_in_previous_data", "mapping")})
    assert aligned["method"] == "window_labels" and aligned["agreement"] >= 0.9
    assert any(e["event"] == f"{start}_start" for e in events)
    # warm: anchored ids need no renumbering; cold: the previous ids were permuted, alignment had work to do
    assert aligned["identity"] == (start == "warm")
    version = next(e for e in events if e["event"] == "published")["model_version"]
    assert (models / "CURRENT").read_text().strip() == version
    manifest = json.loads((models / version / "manifest.json").read_text())
    assert manifest["alignment"]["mapping"] == aligned["mapping"]
    assert manifest["alignment"]["previous_model_version"] == prev.name

    # independent check with ONNX Runtime: both bundles label the overlapping bars alike
    a, b = RegimeModel(prev).run_series(old.values), RegimeModel(models / version).run_series(new.values)
    _, ia, ib = np.intersect1d(old.times[a.offset :], new.times[b.offset :], return_indices=True)
    assert len(ia) > 3000
    assert np.mean(a.regime[ia] == b.regime[ib]) >= 0.9

    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert rows and all(r["epoch"] > old.times[-1] and r["from"] != r["to"] for r in rows)
    assert {r["model_version"] for r in rows} == {version}

    again = run_cli(["refresh", "--profile", str(locked), "--data", str(data), "--models", str(models)])
    assert again.exit_code == 0 and json_lines(again.stdout)[-1]["event"] == "up_to_date"


@pytest.mark.slow
def test_permuted_previous_recovered_exactly_and_low_agreement_is_flagged(tiny_bundle, locked, tmp_path):
    from regimetry.synthetic import generate_bars

    models = tmp_path / "models"
    models.mkdir()
    prev = permute_bundle(Path(tiny_bundle), models, PERM, cold=True)  # a cold refit: the tiny model again
    data = csv_of(generate_bars().bars, tmp_path / "same.csv")  # the bars the tiny bundle was trained on
    res = run_cli(
        ["refresh", "--profile", str(locked), "--data", str(data), "--models", str(models), "--min-agreement", "1.01"]
    )
    assert res.exit_code == 3, res.stdout
    events = json_lines(res.stdout)
    aligned = next(e for e in events if e["event"] == "aligned")
    # same seed, same bars: the refit is the tiny model again, so the mapping is exactly the permutation
    assert aligned["mapping"] == {str(i): int(PERM[i]) for i in range(3)}
    # not exactly 1: the previous labels come from ONNX Runtime (float32), the refit's from Keras, and a few
    # windows sit on a near-tie of the decoder that rounding flips
    assert aligned["agreement"] >= 0.99 and aligned["flagged"]
    assert events[-1]["event"] == "flagged"
    assert (models / "CURRENT").read_text().strip() == prev.name  # not published
    assert not (models / "transitions.jsonl").exists()


def test_refresh_exit_codes_for_bad_inputs(tmp_path, locked):
    bad = write_yaml(tmp_path / "bad.yaml", {"kind": "something else"})
    res = run_cli(["refresh", "--profile", str(bad), "--data", "synthetic", "--models", str(tmp_path)])
    assert res.exit_code == 2 and json_lines(res.stdout)[-1]["event"] == "error"
    missing = run_cli(
        ["refresh", "--profile", str(locked), "--data", str(tmp_path / "nope.csv"), "--models", str(tmp_path)]
    )
    assert missing.exit_code == 2 and "no such file" in json_lines(missing.stdout)[-1]["message"]


def test_aligner_falls_back_to_profile_centroids_when_the_previous_bundle_cannot_label():
    from regimetry.classify import KNNClassifier
    from regimetry.data import BarSeries
    from regimetry.regimes import JumpDecoder, RegimeSpace
    from trainer.clustering import Clustering
    from trainer.refresh import Aligner, Previous

    rng = np.random.default_rng(2)
    n = 600
    new_ids = np.repeat([0, 1, 2], n // 3)  # the refit's own ids, by block of bars
    vol = np.array([0.001, 0.004, 0.012])[new_ids]
    drift = np.array([0.0005, 0.0, -0.0005])[new_ids]
    close = 100 * np.exp(np.cumsum(drift + vol * rng.standard_normal(n)))
    series = BarSeries(3600 * np.arange(n), np.stack([close] * 4 + [np.ones(n)], 1))
    z = np.eye(3, dtype=np.float32)[new_ids] * 10  # embeddings that the classifier maps to new_ids
    space = RegimeSpace((), (), 1.0, np.eye(3) * 10)  # the embedding alone: P = D = 3
    cl = Clustering(
        np.zeros(3), np.ones(3), new_ids, np.eye(3) * 10, KNNClassifier(z, new_ids, 3, 1), space, JumpDecoder(4.0, 32)
    )
    # the previous bundle called the calm regime 2, the middle one 0, the wild one 1 (PERM)
    profiles = [
        {"id": int(PERM[i]), "mean_return": [0.0005, 0.0, -0.0005][i], "volatility": [0.001, 0.004, 0.012][i]}
        for i in range(3)
    ]
    prev = Previous(
        Path("prev"),
        {"model_version": "old", "regime_profiles": profiles, "data": {}},
        None,
        None,
        "feature code version 1 is gone",
    )
    aligned, rec = Aligner(prev, series, 0.9, 50)(cl, new_ids, series.times)  # the refit's decoded regimes
    assert rec["method"] == "profile_centroids" and rec["mapping"] == {str(i): int(PERM[i]) for i in range(3)}
    assert rec["agreement"] is None and rec["flagged"] and "gone" in rec["reason"]
    np.testing.assert_array_equal(aligned.classifier.predict(z), PERM[new_ids])
    np.testing.assert_allclose(aligned.space.centroids, aligned.centroids)  # the geometry's centres moved too


def test_overlapping_refreshes_are_refused(tmp_path, locked):
    from trainer.refresh import Busy, exclusive

    with exclusive(tmp_path):
        with pytest.raises(Busy):
            with exclusive(tmp_path):
                pass
        res = run_cli(["refresh", "--profile", str(locked), "--data", "synthetic", "--models", str(tmp_path)])
        assert res.exit_code == 6 and json_lines(res.stdout)[-1]["event"] == "error"
    with exclusive(tmp_path):  # released on exit
        pass


def test_permuted_bundle_helper_renames_every_id(tiny_bundle, tmp_path):
    """The previous bundle of the refresh tests must be the tiny model with ids renamed, nothing else."""
    from regimetry.inference import RegimeModel
    from regimetry.synthetic import generate_bars

    bars = generate_bars().bars.values[:800]
    copy = permute_bundle(Path(tiny_bundle), tmp_path, PERM)
    a, b = RegimeModel(tiny_bundle).run_series(bars), RegimeModel(copy).run_series(bars)
    # a tied k-NN vote goes to the lowest id, so renaming ids can only change the winner of a tie
    tied = (a.proba == a.proba.max(1, keepdims=True)).sum(1) > 1
    assert tied.mean() < 0.05
    np.testing.assert_array_equal(b.regime[~tied], PERM[a.regime[~tied]])
    np.testing.assert_allclose(b.proba[:, PERM], a.proba)
    np.testing.assert_allclose(b.ood, a.ood)  # centroids moved with their ids
    ma = json.loads((Path(tiny_bundle) / "manifest.json").read_text())
    mb = json.loads((copy / "manifest.json").read_text())
    for i in range(3):
        assert mb["baseline"]["cluster_distribution"][PERM[i]] == ma["baseline"]["cluster_distribution"][i]
        assert mb["regime_profiles"][PERM[i]]["volatility"] == ma["regime_profiles"][i]["volatility"]
    # the tiny bundle has a regimes.csv (test_trainer checks it), so its ids must be renamed too
    ra = [r.split(",")[2] for r in (Path(tiny_bundle) / "regimes.csv").read_text().splitlines()[1:]]
    rb = [r.split(",")[2] for r in (copy / "regimes.csv").read_text().splitlines()[1:]]
    assert ra and rb == [str(PERM[int(x)]) for x in ra]
