"""Trainer: windows, encoder options, forecasters, export parity, bundle contract, determinism, causality."""

import json
from pathlib import Path

import numpy as np
import pytest

from regimetry.bundle import BundleError, sha256_file, verify_bundle
from regimetry.features import FeatureSpec
from regimetry.inference import RegimeModel
from regimetry.synthetic import generate_bars
from trainer.config import EncoderConfig, ForecasterConfig, load_config
from trainer.windows import build_windows, rolling_windows, window_end_rows


def test_rolling_windows_shapes_and_stride():
    x = np.arange(100 * 3, dtype=float).reshape(100, 3)
    w = rolling_windows(x, 10, 3)
    ends = window_end_rows(100, 10, 3)
    assert w.shape == (len(ends), 10, 3) == (31, 10, 3)
    assert np.array_equal(w[5, -1], x[ends[5]]) and np.array_equal(w[5, 0], x[ends[5] - 9])


def test_build_windows_scaler_sees_training_rows_only():
    series = generate_bars(n_bars=800).bars
    ws = build_windows(series, FeatureSpec(), 16, 1, 0.25)
    assert ws.windows.shape[1:] == (16, FeatureSpec().n_features)
    assert ws.n_train == round(len(ws.windows) * 0.75)
    from regimetry.features import compute_features

    feats = compute_features(series.values)
    last_train_row = ws.end_index[ws.n_train - 1] - (FeatureSpec().lookback - 1)
    assert np.allclose(ws.scaler.mean, feats[: last_train_row + 1].mean(0))
    assert not np.allclose(ws.scaler.mean, feats.mean(0))
    assert np.array_equal(ws.end_time, series.times[ws.end_index])


def test_sinusoidal_styles():
    from trainer.encoder import sinusoidal_table

    inter = sinusoidal_table(10, 8, "interleaved")
    stacked = sinusoidal_table(10, 8, "stacked")
    freq = 1.0 / 10000 ** (np.arange(4) * 2 / 8)
    pos = np.arange(10)[:, None]
    assert np.allclose(inter[:, 0::2], np.sin(pos * freq)) and np.allclose(inter[:, 1::2], np.cos(pos * freq))
    assert np.allclose(stacked[:, :4], np.sin(pos * freq)) and np.allclose(stacked[:, 4:], np.cos(pos * freq))


@pytest.mark.parametrize(
    "method, style, contrast",
    [("learnable", "interleaved", 0.0), ("sinusoidal", "interleaved", 0.5), ("sinusoidal", "stacked", 0.0)],
)
def test_encoder_options_pretrain_and_export(tmp_path, method, style, contrast):
    from trainer import encoder as enc
    from trainer.export import check_parity, to_onnx

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 12, 5)).astype(np.float32)
    cfg = EncoderConfig(
        d_model=16,
        heads=2,
        depth=1,
        ff_dim=16,
        embedding_dim=6,
        encoding_method=method,
        encoding_style=style,
        epochs=2,
        batch_size=32,
        contrast_weight=contrast,
    )
    model = enc.build_encoder(12, 5, cfg)
    before = enc.embed(model, x[:8])
    hist = enc.pretrain(model, x[:80], x[70:], cfg, seed=1, positive_offset=12)
    assert len(hist) == 2 and all(np.isfinite(h["loss"]) and np.isfinite(h["val_loss"]) for h in hist)
    assert (hist[0]["contrast"] > 0) == (contrast > 0)
    after = enc.embed(model, x[:8])
    assert after.shape == (8, 6) and not np.allclose(before, after)  # pretraining changed the weights
    info = to_onnx(model, (12, 5), "window", "embedding", tmp_path / "enc.onnx")
    assert check_parity(model, info, tmp_path / "enc.onnx", x) <= 1e-4


@pytest.mark.parametrize("name", ["stratum", "stratum_attn", "stratum_hydra"])
@pytest.mark.parametrize("loss", ["mse", "cosine"])
def test_forecasters_train_and_export(tmp_path, name, loss):
    from trainer.export import check_parity, to_onnx
    from trainer.forecaster import sequences, train_forecaster

    t = np.arange(400)
    z = np.stack([np.sin(t / 9 + k) for k in range(6)], 1).astype(np.float32)
    x, y, idx = sequences(z, 5, 1)
    assert x.shape == (len(z) - 5, 5, 6) and np.array_equal(x[3, -1], z[idx[3]]) and np.array_equal(y[3], z[idx[3] + 1])
    model, hist = train_forecaster(x, y, ForecasterConfig(name=name, input_length=5, units=16, loss=loss, epochs=3))
    assert len(hist) == 3
    pred = np.asarray(model(x[:4]))
    assert pred.shape == (4, 6)
    info = to_onnx(model, (5, 6), "history", "next_embedding", tmp_path / f"{name}.onnx")
    assert check_parity(model, info, tmp_path / f"{name}.onnx", x) <= 1e-4


def test_parity_failure_is_loud(tmp_path):
    from trainer import encoder as enc
    from trainer.export import ExportError, check_parity, to_onnx

    cfg = EncoderConfig(d_model=8, heads=2, depth=1, ff_dim=8, embedding_dim=4, epochs=1)
    model = enc.build_encoder(6, 3, cfg)
    info = to_onnx(model, (6, 3), "window", "embedding", tmp_path / "e.onnx")
    other = enc.build_encoder(6, 3, cfg)  # different random weights: the file no longer matches the model
    with pytest.raises(ExportError, match="parity check failed"):
        check_parity(other, info, tmp_path / "e.onnx", np.ones((4, 6, 3), np.float32))


def test_bundle_is_complete_and_verified(tiny_training):
    b = tiny_training.bundle_dir
    manifest = verify_bundle(b)
    names = {
        "encoder.onnx",
        "forecaster.onnx",
        "classifier.npz",
        "training_summary.json",
        "training_profile_used.yaml",
        "regimes.csv",
    }
    assert names <= set(manifest["files"])
    for name, digest in manifest["files"].items():
        assert sha256_file(b / name) == digest
    assert manifest["feature_spec_hash"] == FeatureSpec().hash()
    assert (b.parent / "CURRENT").read_text().strip() == b.name
    for part in ("encoder", "forecaster"):
        assert manifest["onnx"][part]["parity_max_abs_diff"] <= 1e-4
    assert len(manifest["regime_profiles"]) == manifest["n_clusters"] == 3
    # descriptive names, written by the trainer from the training profiles (regimetry/naming.py)
    from regimetry.naming import manifest_names, regime_names

    profiles = manifest["regime_profiles"]
    names = [p["name"] for p in profiles]
    assert len(set(names)) == 3 and names == regime_names(profiles)
    assert sum(p["n_bars"] for p in profiles) == summary_n_train(b)
    by_vol = sorted(profiles, key=lambda p: p["volatility"])
    assert [p["name"].split()[0] for p in by_vol] == ["calm", "normal", "turbulent"]
    assert manifest_names(manifest) == tuple(names)
    assert abs(sum(manifest["baseline"]["cluster_distribution"]) - 1) < 1e-9
    assert not any(p.suffix in (".pkl", ".joblib") for p in b.iterdir())
    summary = json.loads((b / "training_summary.json").read_text())
    nr = summary["next_regime"]
    assert set(nr["all_steps"]) == {"forecaster", "persistence", "markov", "flat_next"}
    assert set(nr["change_steps"]) == {"forecaster", "persistence", "markov", "flat_next"}
    assert set(summary["mean_dwell"]) == set(summary["regime_shares"]) == {"train", "held_out"}
    assert "verdict" in nr and isinstance(nr["forecaster_beats_baselines"], bool)
    assert {"ari_regimetry", "ari_hmm", "ari_hmm_filtered"} <= set(summary["planted_regimes"])
    rows = (b / "regimes.csv").read_text().splitlines()
    assert rows[0] == "bar_time,epoch,regime,confidence,split" and len(rows) == len(tiny_training.regimes) + 1
    last = rows[-1].split(",")
    assert int(last[1]) == int(tiny_training.end_time[-1]) and int(last[2]) == int(tiny_training.regimes[-1])


def summary_n_train(bundle_dir) -> int:
    return int(json.loads((bundle_dir / "training_summary.json").read_text())["data"]["n_train"])


def test_tampered_bundle_is_refused(tiny_training, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(tiny_training.bundle_dir, copy)
    with open(copy / "classifier.npz", "ab") as f:
        f.write(b"x")
    with pytest.raises(BundleError, match="sha256 of classifier.npz"):
        verify_bundle(copy)
    shutil.rmtree(copy)
    shutil.copytree(tiny_training.bundle_dir, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["feature_spec"]["rsi"] = 3
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="feature spec hash"):
        verify_bundle(copy)
    del m["centroids"]
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="manifest does not match"):
        verify_bundle(copy)
    # a file the manifest lists is gone (with the manifest intact, so this is the check that fails)
    shutil.rmtree(copy)
    shutil.copytree(tiny_training.bundle_dir, copy)
    verify_bundle(copy)
    (copy / "encoder.onnx").unlink()
    with pytest.raises(BundleError, match="file encoder.onnx listed in the manifest is missing"):
        verify_bundle(copy)


@pytest.mark.parametrize("edit", ["scaler", "centroid", "model_version", "penalty", "ood_quantile"])
def test_one_edited_number_in_the_manifest_is_refused(tiny_training, tmp_path, edit):
    """Every number the worker serves from the manifest is covered by its content hash (issue 14, defect 2):
    a one-digit edit of a scaler mean, a centre, the decoder penalty or the OOD threshold, or a changed model
    version (which would change every event id), is refused at load."""
    import shutil

    copy = Path(shutil.copytree(tiny_training.bundle_dir, tmp_path / "b"))
    verify_bundle(copy)
    m = json.loads((copy / "manifest.json").read_text())
    if edit == "scaler":
        m["feature_scaler"]["mean"][0] += 1e-6
    elif edit == "centroid":
        m["centroids"][0][0] += 1e-6
    elif edit == "model_version":
        m["model_version"] += "x"
    elif edit == "penalty":
        m["regimes"]["decoder"]["penalty"] += 0.5
    else:
        m["baseline"]["centroid_distance_quantiles"]["q99"] *= 1.01
    (copy / "manifest.json").write_text(json.dumps(m, indent=2))
    with pytest.raises(BundleError, match="modified after export"):
        verify_bundle(copy)


def test_worker_path_reproduces_trainer_regimes(tiny_training):
    """Causality: the trainer's regime of a window is what ONNX Runtime computes from bars up to its end."""
    model = RegimeModel(tiny_training.bundle_dir)
    series = generate_bars().bars
    r = model.run_series(series.values)
    assert r.offset == model.bundle.history_bars - 1
    assert len(r.regime) == len(tiny_training.regimes)
    assert np.abs(r.z - tiny_training.z).max() <= 1e-4
    assert np.mean(r.regime == tiny_training.regimes) >= 0.995
    # truncating the future does not change the past
    cut = model.run_series(series.values[: r.offset + 300])
    assert np.array_equal(cut.regime, r.regime[:300])


def test_huber_cost_and_volume_column_reach_the_bundle_and_the_worker(tmp_path):
    """clustering.huber_delta and clustering.volume_weight: the bundle records the cost and the volume column,
    and ONNX Runtime's path (RegimeModel, what the worker runs) reproduces the trainer's regimes with them."""
    from fixtures_bundle import tiny_config

    from trainer.pipeline import train

    res = train(tiny_config(tmp_path, **{"clustering.huber_delta": 2.5, "clustering.volume_weight": 1.0}))
    reg = res.manifest["regimes"]
    assert reg["space"]["huber_delta"] == 2.5
    assert any(n.startswith("volume_z_") for n in reg["risk_features"])
    model = RegimeModel(res.bundle_dir)
    assert model.space.huber_delta == 2.5
    r = model.run_series(generate_bars().bars.values)
    assert np.mean(r.regime == res.regimes) >= 0.995


def test_same_seed_same_model(tiny_training, tmp_path):
    from helpers import tiny_again

    again = tiny_again(tmp_path)
    a, b = tiny_training.manifest, again.manifest
    assert a["model_version"] == b["model_version"]
    for key in ("regimes", "feature_scaler", "embedding_scaler", "centroids"):
        assert a["hashes"][key] == b["hashes"][key], key
    assert np.array_equal(tiny_training.regimes, again.regimes)


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown option 'encoder.widht'"):
        load_config(None, {"encoder.widht": 3})
    with pytest.raises(ValueError, match="forecaster.name must be one of"):
        load_config(None, {"forecaster.name": "lstm"})
    p = tmp_path / "c.yaml"
    p.write_text("encoder:\n  epochs: 3\nforecaster:\n  name: stratum_attn\n")
    cfg = load_config(p)
    assert cfg.encoder.epochs == 3 and cfg.forecaster.name == "stratum_attn" and cfg.window_size == 30


def test_committed_bundle_regimes_recur_over_time():
    """Regimes must be states the market returns to, not calendar periods (a non-stationary input such as
    raw volume level turns clusters into eras). Checked on the committed EURUSD bundle. Since the regimes are
    persistent volatility states (mean dwell ~70 hourly bars) and volatility clusters for weeks, a major regime
    may be missing from a month-long tenth of the sample; it must still be in most tenths and in both halves."""
    import csv

    from regimetry.bundle import resolve_bundle_dir

    d = resolve_bundle_dir("exported_models")
    verify_bundle(d)
    regimes = np.array([int(r["regime"]) for r in csv.DictReader(open(d / "regimes.csv"))])
    deciles = np.array_split(regimes, 10)
    k = int(regimes.max()) + 1
    present = [sum((part == r).mean() > 0.02 for part in deciles) for r in range(k)]
    major = [r for r in range(k) if (regimes == r).mean() > 0.15]
    assert major and all(present[r] >= 7 for r in major), present
    halves = np.array_split(regimes, 2)
    assert all((h == r).mean() > 0.05 for h in halves for r in major), [np.bincount(h, minlength=k) for h in halves]


def test_train_config_reads_a_locked_profile(tmp_path):
    from fixtures_bundle import tiny_config

    from trainer import locked_profile

    cfg = tiny_config(tmp_path, seed=99)
    doc = locked_profile.lock(cfg, generate_bars(n_bars=300).bars)
    locked_profile.write(doc, tmp_path / "locked_profile.yaml")
    again = load_config(tmp_path / "locked_profile.yaml")
    assert again == cfg and again.seed == 99
    doc["feature_spec_hash"] = "0" * 64
    locked_profile.write(doc, tmp_path / "stale.yaml")
    with pytest.raises(ValueError, match="locked with feature spec"):
        load_config(tmp_path / "stale.yaml")


def test_hmm_baseline_never_fails_training():
    from trainer.evaluate import planted_recovery

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=400), np.zeros(400), np.ones(400)])  # singular covariance
    out = planted_recovery(rng.integers(0, 3, 400), rng.integers(0, 3, 400), x, 3, seed=0)
    assert "ari_regimetry" in out and "hmm_note" in out


# -- universes: several symbols, windows never crossing a symbol or a gap ---------------------------------------


def _universe_csv(path, n: int = 900, gap_at: int | None = 450) -> str:
    """Two synthetic symbols in one table with a symbol column, their bars interleaved in time (AAA on the hour,
    BBB at half past); BBB's bars after gap_at jump 30 days ahead (a hole in its history)."""
    import pandas as pd

    frames = []
    for sym, seed, shift in (("AAA", 1, 0), ("BBB", 2, 1800)):
        s = generate_bars(n_bars=n, seed=seed).bars
        t = s.times + shift
        if sym == "BBB" and gap_at is not None:
            t = np.where(np.arange(n) >= gap_at, t + 30 * 86400, t)
        df = pd.DataFrame(s.values, columns=["open", "high", "low", "close", "volume"])
        df.insert(0, "time", pd.to_datetime(t, unit="s", utc=True))
        df.insert(1, "symbol", sym)
        frames.append(df)
    pd.concat(frames).sort_values("time", kind="stable").to_csv(path, index=False)
    return str(path)


def test_no_window_crosses_symbols_or_gaps(tmp_path):
    from regimetry.data import load_universe
    from regimetry.features import compute_features
    from trainer.windows import build_universe_windows

    spec, w = FeatureSpec(), 16
    universe = load_universe(_universe_csv(tmp_path / "u.csv"))
    times_of = {s.symbol: set(s.times.tolist()) for s in universe}
    ws = build_universe_windows(universe, spec, w, 1, 0.25, max_gap=5)
    assert [(sg.symbol, len(sg.series)) for sg in ws.segments] == [("AAA", 900), ("BBB", 450), ("BBB", 450)]
    assert sum(len(sg.index) for sg in ws.segments) == len(ws.windows)
    span = spec.lookback + w - 1  # bars behind one window (feature history + the window)
    for i in range(len(ws.windows)):
        sg = ws.segments[ws.seg[i]]
        e = int(ws.end_index[i])
        bars = sg.series.slice(e - span + 1, e + 1)
        assert len(bars) == span and e - span + 1 >= 0
        # every bar behind the window is one symbol's, consecutive, no gap among them
        assert set(bars.times.tolist()) <= times_of[sg.symbol]
        assert np.diff(bars.times).max() <= 3600 and ws.end_time[i] == bars.times[-1]
        # and the window is exactly what those bars alone give
        assert np.allclose(ws.windows[i], ws.scaler.transform(compute_features(bars.values, spec))[-w:], atol=1e-6)
    nxt = ws.next_window >= 0
    assert (ws.seg[ws.next_window[nxt]] == ws.seg[nxt]).all()  # the next window stays in its segment
    assert (ws.end_time[ws.next_window[nxt]] > ws.end_time[nxt]).all()
    assert nxt.sum() == len(ws.windows) - len(ws.segments)
    for sym in ("AAA", "BBB"):  # each symbol split chronologically on its own: its later bars held out
        tr, te = ws.of_symbol(sym)
        assert len(tr) and len(te) and ws.end_time[tr].max() < ws.end_time[te].min()
        assert abs(len(te) / (len(tr) + len(te)) - 0.25) < 0.01
    assert (np.arange(len(ws.windows)) < ws.n_train).sum() == sum(sg.n_train for sg in ws.segments)
    # without max_gap the gap is not cut, but symbols still are
    ws2 = build_universe_windows(universe, spec, w, 1, 0.25)
    assert [sg.symbol for sg in ws2.segments] == ["AAA", "BBB"]


def test_universe_symbol_too_short_is_named(tmp_path):
    from regimetry.data import BarSeries
    from trainer.windows import build_universe_windows

    a = generate_bars(n_bars=400, seed=1).bars
    b = BarSeries(a.times[:60], a.values[:60], "TINY")
    with pytest.raises(ValueError, match="TINY: 60 bars, too few for one window: a window needs 106"):
        build_universe_windows([BarSeries(a.times, a.values, "AAA"), b], FeatureSpec(), 16, 1, 0.2)


def test_two_symbol_universe_trains_end_to_end(tmp_path):
    import csv

    from fixtures_bundle import tiny_config

    from trainer.pipeline import train

    data = _universe_csv(tmp_path / "u.csv", n=1200, gap_at=None)
    # with the contrastive term on, so its positives (windows a fixed offset later) stay within a symbol too
    result = train(tiny_config(tmp_path / "models", data=data, **{"encoder.contrast_weight": 0.5}))
    assert result.summary["encoder"]["history"][-1]["contrast"] > 0
    m = verify_bundle(result.bundle_dir)
    syms = m["data"]["symbols"]
    assert [s["symbol"] for s in syms] == ["AAA", "BBB"] and all(s["n_bars"] == 1200 for s in syms)
    assert all(s["start"] < s["train_end"] < s["end"] for s in syms) and syms[1]["start"] == syms[0]["start"] + 1800
    assert m["data"]["n_bars"] == 2400 and m["data"]["symbol"] == "AAA,BBB"
    uni = result.summary["universe"]
    assert set(uni["per_symbol"]) == {"AAA", "BBB"} and "pooled" in uni
    assert sum(v["n_held_out_windows"] for v in uni["per_symbol"].values()) == uni["pooled"]["n_held_out_windows"]
    assert all("next_regime" in v and v["held_out_mean_dwell"] > 0 for v in uni["per_symbol"].values())
    rows = list(csv.DictReader(open(result.bundle_dir / "regimes.csv")))
    assert {r["symbol"] for r in rows} == {"AAA", "BBB"} and len(rows) == len(result.regimes)
    # each symbol's trainer regimes are what the worker computes from that symbol's bars alone (ONNX Runtime,
    # the decoder's memory never reaching into the other symbol)
    from regimetry.data import load_universe

    model = RegimeModel(result.bundle_dir)
    for s in load_universe(data):
        mine = sorted((int(r["epoch"]), int(r["regime"])) for r in rows if r["symbol"] == s.symbol)
        served = model.run_series(s.values)
        assert [t for t, _ in mine] == s.times[served.offset :].tolist()
        assert np.mean(served.regime == np.array([r for _, r in mine])) >= 0.99


def test_universe_of_mixed_bar_intervals_is_refused(tmp_path):
    from fixtures_bundle import tiny_config

    from regimetry.data import BarDataError
    from trainer.pipeline import train

    with pytest.raises(BarDataError, match=r"different bar intervals.*EURUSD 3600s, GOOG 86400s.*mixed_intervals"):
        train(tiny_config(tmp_path, data="eurusd,goog"))
    with pytest.raises(BarDataError, match=r"no bars of symbol\(s\) XAU"):
        train(tiny_config(tmp_path, data="eurusd,goog", symbols=["XAU"]))


def test_one_symbol_commands_refuse_a_universe_clearly(tmp_path):
    from fixtures_bundle import tiny_config

    from regimetry.data import BarDataError
    from trainer.pipeline import load_training_data

    with pytest.raises(BarDataError, match="several symbols .*one symbol's bars"):
        load_training_data(tiny_config(tmp_path, data="eurusd,goog"))
