"""`regimetry train`: bars -> windows -> encoder -> regimes -> forecaster -> evaluation -> bundle.

Each stage is a function of the previous stage's plain arrays; this module only sequences them, reports
progress and writes the bundle. Seeds are set once, up front, and every random draw descends from them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from regimetry import diagnostics, naming, scoring
from regimetry.bundle import POINTER, Manifest, sha256_json, write_manifest
from regimetry.data import BarSeries, iso_utc, resolve_data
from regimetry.features import FeatureSpec
from trainer.config import TrainConfig, dump_config, recipe
from trainer.separation import separation

Progress = Callable[[str, int, int, str], None]  # stage, step, total, message
# Refresh hook: (clustering, standardised embeddings of every window, their end times) -> (the clustering with
# its regime ids renumbered, a JSON-able record of how) -- see trainer/alignment.py.
Align = Callable[..., tuple]


def _quiet(stage: str, step: int, total: int, msg: str = "") -> None:
    pass


@dataclass
class TrainResult:
    bundle_dir: Path | None  # None when trained with write_bundle=False
    manifest: dict
    summary: dict
    regimes: np.ndarray = field(repr=False)  # decoded (served) regime of every window (train + held out)
    end_time: np.ndarray = field(repr=False)
    z: np.ndarray = field(repr=False)  # standardised embeddings of every window
    warm: object = field(default=None, repr=False)  # trainer.warm_start.WarmStart of this model (for a refit)


def set_seed(seed: int) -> None:
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # pragma: no cover - older TF
        pass


def load_training_data(cfg: TrainConfig) -> tuple[BarSeries, np.ndarray | None]:
    """The bars, and planted regime labels when the data is the synthetic generator."""
    if cfg.data.lower().startswith("synthetic"):
        from regimetry.synthetic import generate_bars

        syn = generate_bars()
        return syn.bars, syn.labels
    series = resolve_data(cfg.data)
    if cfg.symbol:
        series = BarSeries(series.times, series.values, cfg.symbol)
    return series, None


def library_versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("numpy", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "scikit-learn", "scipy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    import platform

    out["python"] = platform.python_version()
    return out


def model_version(cfg: TrainConfig, series: BarSeries, warm_from: str | None = None) -> str:
    """Deterministic: the same config on the same bars (warm-started from the same model) gives the same
    version (and the same event ids)."""
    data_hash = series.digest()
    blob: dict = {"cfg": recipe(cfg), "data": data_hash}
    if warm_from is not None:
        blob["warm_from"] = warm_from
    return f"{cfg.name}-{sha256_json(blob)[:10]}"


def write_regimes(path: Path, end_time: np.ndarray, regimes: np.ndarray, confidence: np.ndarray, n_train: int) -> None:
    """The regime of every window, keyed by the time of its last bar (the bar it describes, causally)."""
    with open(path, "w") as f:
        f.write("bar_time,epoch,regime,confidence,split\n")
        for i, (t, r, c) in enumerate(zip(end_time.tolist(), regimes.tolist(), confidence.tolist())):
            f.write(f"{iso_utc(t)},{t},{r},{c:.4f},{'train' if i < n_train else 'held_out'}\n")


@dataclass
class _Regimes:
    """The regime stage's output for every window (train + held out). Arrays: z (N, D) standardised
    embeddings; g (N, P) regime geometry; w (N, K) decoder values; proba (N, K); regimes (N,); last_rows (N, F)
    each window's last feature row; log_ret (T,) one-bar log returns; vol_key (n_train,) each training window's
    own return volatility (the key the ids are ordered by)."""

    cl: Any  # trainer.clustering.Clustering
    z: np.ndarray
    g: np.ndarray
    w: np.ndarray
    proba: np.ndarray
    regimes: np.ndarray
    last_rows: np.ndarray
    log_ret: np.ndarray
    vol_key: np.ndarray
    alignment: dict | None

    def next_regime_of(self, t: np.ndarray, z_next: np.ndarray) -> np.ndarray:
        """The decoder one bar ahead of windows t, given their next embedding (the served prediction)."""
        space, decoder = self.cl.space, self.cl.decoder
        return decoder.step(self.w[t], space.costs(space.geometry(self.last_rows[t], z_next))).argmin(1)


@dataclass
class _Forecast:
    """The forecaster and its sequences: x_all (S, L, D) inputs, t_all (S,) the window each input ends at,
    in_train (S,) inputs whose target is a training window; held-out steps x_test, y_test, t_test, pred_test."""

    model: Any
    history: list
    x_all: np.ndarray
    t_all: np.ndarray
    in_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    t_test: np.ndarray
    pred_test: np.ndarray


def train(
    cfg: TrainConfig,
    progress: Progress = _quiet,
    series: BarSeries | None = None,
    planted: np.ndarray | None = None,
    write_bundle: bool = True,
    align: Align | None = None,
    warm=None,
) -> TrainResult:
    """Run the whole pipeline and write the bundle; returns where it is and what it scored.

    write_bundle=False stops after evaluation (nothing written): the configuration search only needs the scores.
    align, if given, renumbers the regime ids right after clustering, so every later array and the manifest
    use the aligned ids; its record goes into manifest["alignment"]. warm (trainer.warm_start.WarmStart), if
    given, warm-starts a refit from the model in force: its scaler, encoder weights, geometry, centres, penalty
    and ids; the encoder is fine-tuned for encoder.warm_epochs epochs."""
    set_seed(cfg.seed)
    from trainer import encoder as enc
    from trainer.warm_start import WarmStart
    from trainer.windows import build_windows

    if series is None:
        series, planted = load_training_data(cfg)
    spec = FeatureSpec()
    progress("features", 0, 1, f"{len(series)} bars of {series.symbol}")
    ws = build_windows(
        series, spec, cfg.window_size, cfg.stride, cfg.holdout, scaler=warm.scaler if warm is not None else None
    )
    progress(
        "features", 1, 1, f"{len(ws.windows)} windows ({ws.n_train} train / {len(ws.windows) - ws.n_train} held out)"
    )
    encoder, enc_hist, e_cfg = _fit_encoder(cfg, spec, ws, warm, progress)
    rg = _fit_regimes(cfg, spec, series, ws, enc.embed(encoder, ws.windows), warm, align, progress)
    fc = _fit_forecaster(cfg, ws, rg, progress)
    summary = _evaluate(cfg, spec, series, ws, encoder, enc_hist, rg, fc, planted, progress)
    profiles = _regime_profiles(cfg, ws, rg)
    summary["regime_names"] = [p["name"] for p in profiles]  # what an export writes, for reports of a config
    cl = rg.cl
    warm_next = WarmStart(
        "in-memory", ws.scaler, cl.emb_mean, cl.emb_std, cl.space, cl.decoder.penalty, encoder.get_weights()
    )
    if not write_bundle:
        return TrainResult(None, {}, summary, rg.regimes, ws.end_time, rg.z, warm_next)
    out, manifest = _export(cfg, spec, series, ws, encoder, e_cfg, rg, fc, summary, profiles, warm, progress)
    warm_next.source = manifest["model_version"]
    return TrainResult(out, manifest, summary, rg.regimes, ws.end_time, rg.z, warm_next)


def _fit_encoder(cfg: TrainConfig, spec: FeatureSpec, ws, warm, progress: Progress):
    """The transformer encoder, pretrained (or fine-tuned from the bundle in force): (encoder, history, cfg)."""
    from trainer import encoder as enc

    e_cfg = cfg.encoder
    encoder = enc.build_encoder(cfg.window_size, spec.n_features, e_cfg)
    if warm is not None:
        import dataclasses

        warm.load_into(encoder)
        e_cfg = dataclasses.replace(e_cfg, epochs=e_cfg.warm_epochs)
    offset = max(1, -(-cfg.window_size // cfg.stride))  # the first window sharing no bar with the anchor
    n_val = max(ws.n_train // 10, offset + 2)
    enc_hist = enc.pretrain(
        encoder,
        ws.train[:-n_val],
        ws.train[-n_val:],
        e_cfg,
        cfg.seed,
        offset,
        on_epoch=lambda e, r: progress("encoder", e + 1, e_cfg.epochs, f"loss {r['loss']:.4f} val {r['val_loss']:.4f}"),
    )
    return encoder, enc_hist, e_cfg


def _fit_regimes(
    cfg: TrainConfig, spec: FeatureSpec, series: BarSeries, ws, raw: np.ndarray, warm, align, progress: Progress
) -> _Regimes:
    """Clustering on the training windows (or anchored to the bundle in force), optional id alignment, and the
    causal decoder over every window. raw: (N, D) encoder embeddings."""
    from trainer import clustering

    progress("clustering", 0, 1, f"spectral + jump model, k={cfg.clustering.n_clusters}")
    log_ret = np.concatenate([[0.0], np.diff(np.log(series.values[:, 3]))])
    # volatility of each training window's own bars: orders the regime ids from calmest to most volatile
    vol_key = sliding_window_view(log_ret, cfg.window_size)[ws.end_index[: ws.n_train] - cfg.window_size + 1].std(1)
    last_rows = ws.windows[:, -1, :]
    # the penalty is validated on how much of the coming risk the regimes explain: the mean range-based volatility
    # of the next window_size bars (~5x less noisy than |log return|, and a regime is about more than one bar).
    # Targets that would reach past the last training bar are NaN, so nothing held out is looked at.
    bar_vol = clustering.bar_volatility(series.values)
    last_train_bar = int(ws.end_index[ws.n_train - 1])
    csum = np.concatenate([[0.0], np.cumsum(bar_vol)])
    ahead = ws.end_index + cfg.window_size
    next_risk = np.where(
        ahead <= last_train_bar,
        (csum[np.minimum(ahead, len(bar_vol) - 1) + 1] - csum[ws.end_index + 1]) / cfg.window_size,
        np.nan,
    )
    if warm is not None:
        cl = clustering.fit_anchored(raw[: ws.n_train], last_rows[: ws.n_train], vol_key, warm, cfg.clustering)
    else:
        cl = clustering.fit_regimes(
            raw[: ws.n_train],
            last_rows[: ws.n_train],
            spec.names,
            vol_key,
            next_risk[: ws.n_train],
            cfg.clustering,
            cfg.seed,
        )
    z = ((raw - cl.emb_mean) / cl.emb_std).astype(np.float32)

    def decode(c: clustering.Clustering) -> tuple[np.ndarray, np.ndarray]:
        g_ = c.space.geometry(last_rows, z)
        return g_, c.decoder.decode_series(c.space.costs(g_))

    g, w = decode(cl)
    alignment = None
    if align is not None:
        cl, alignment = align(cl, w.argmin(1), ws.end_time)
        g, w = decode(cl)
    regimes = w.argmin(1)
    progress(
        "clustering",
        1,
        1,
        f"penalty {cl.decoder.penalty:g}; train agreement decoder/jump fit "
        f"{np.mean(regimes[: ws.n_train] == cl.train_labels):.3f}",
    )
    return _Regimes(cl, z, g, w, cl.decoder.proba(w), regimes, last_rows, log_ret, vol_key, alignment)


def _fit_forecaster(cfg: TrainConfig, ws, rg: _Regimes, progress: Progress) -> _Forecast:
    """The next-embedding forecaster on training sequences (inputs and target all training windows)."""
    from trainer import forecaster as fcast

    f_cfg = cfg.forecaster
    x_all, y_all, t_all = fcast.sequences(rg.z, f_cfg.input_length, 1)
    in_train = t_all + 1 < ws.n_train  # the target window must be a training window too
    model, history = fcast.train_forecaster(
        x_all[in_train],
        y_all[in_train],
        f_cfg,
        on_epoch=lambda e, logs: progress("forecaster", e + 1, f_cfg.epochs, f"loss {logs['loss']:.4f}"),
    )
    x_test, y_test, t_test = x_all[~in_train], y_all[~in_train], t_all[~in_train]
    t_test_mask = t_test >= ws.n_train  # held-out steps whose *current* window is held out as well
    x_test, y_test, t_test = x_test[t_test_mask], y_test[t_test_mask], t_test[t_test_mask]
    pred_test = np.asarray(model.predict(x_test, batch_size=512, verbose=0))
    return _Forecast(model, history, x_all, t_all, in_train, x_test, y_test, t_test, pred_test)


def _flat_next_regimes(cfg: TrainConfig, spec: FeatureSpec, series: BarSeries, ws, encoder, rg: _Regimes, t):
    """The flat-next baseline: the regime of window t extended by one bar on which nothing happens."""
    from regimetry.flat_next import flat_next_windows, next_window_regimes
    from trainer import encoder as enc

    cl = rg.cl
    flat_w = flat_next_windows(series.values, ws.end_index[t], spec, ws.scaler, cfg.window_size)
    z_flat = ((enc.embed(encoder, flat_w) - cl.emb_mean) / cl.emb_std).astype(np.float32)
    return next_window_regimes(cl.space, cl.decoder, rg.w[t], flat_w, z_flat)


def _evaluate(
    cfg: TrainConfig,
    spec: FeatureSpec,
    series: BarSeries,
    ws,
    encoder,
    enc_hist: list,
    rg: _Regimes,
    fc: _Forecast,
    planted: np.ndarray | None,
    progress: Progress,
) -> dict:
    """training_summary.json: the forecast beside its baselines on the held-out split, regime shares and dwell
    in training and held out, clustering diagnostics, and planted-regime recovery on synthetic data."""
    from trainer import evaluate

    progress("evaluation", 0, 1, "held-out split")
    k = cfg.clustering.n_clusters
    cl, z, regimes = rg.cl, rg.z, rg.regimes
    train_reg = regimes[: ws.n_train]
    f_cfg = cfg.forecaster
    summary: dict = {
        "data": {
            "source": cfg.data,
            "symbol": series.symbol,
            "n_bars": len(series),
            "n_windows": int(len(z)),
            "n_train": int(ws.n_train),
            "n_test": int(len(z) - ws.n_train),
        },
        "encoder": {"history": enc_hist},
        "forecaster": {
            "name": f_cfg.name,
            "loss": f_cfg.loss,
            "history": fc.history,
            "held_out": scoring.forecast_errors(fc.pred_test, fc.y_test),
            "persistence_held_out": scoring.forecast_errors(fc.x_test[:, -1, :], fc.y_test),
        },
        "next_regime": scoring.next_regime_report(
            regimes[fc.t_test],
            regimes[fc.t_test + 1],
            rg.next_regime_of(fc.t_test, fc.pred_test),
            diagnostics.transition_matrix(train_reg, k),
            k,
            flat_next=_flat_next_regimes(cfg, spec, series, ws, encoder, rg, fc.t_test),
        ),
        "regime_shares": {
            "train": diagnostics.shares(train_reg, k).tolist(),
            "held_out": diagnostics.shares(regimes[ws.n_train :], k).tolist(),
        },
        "mean_dwell": {
            "train": diagnostics.mean_duration(train_reg),
            "held_out": diagnostics.mean_duration(regimes[ws.n_train :]),
        },
        "clustering": {
            "train_agreement_decoder_vs_jump_fit": float(np.mean(train_reg == cl.train_labels)),
            "train_agreement_knn_vs_jump_fit": float(
                np.mean(cl.classifier.predict(z[: ws.n_train]) == cl.train_labels)
            ),
            "penalty": cl.decoder.penalty,
            "penalty_selection": cl.selection,
            **separation(rg.g[: ws.n_train], train_reg, seed=cfg.seed),
            **diagnostics.balance(train_reg, k),
            "stickiness": diagnostics.stickiness(diagnostics.transition_matrix(train_reg, k)),
            "mean_duration": diagnostics.mean_duration(train_reg),
        },
    }
    if planted is not None:
        v = series.values
        hmm_x = np.stack([rg.log_ret, np.log(np.log(v[:, 1] / v[:, 2]) + 1e-6), np.log1p(v[:, 4])], 1)
        summary["planted_regimes"] = evaluate.planted_recovery(
            regimes, planted[ws.end_index], hmm_x[ws.end_index], k, cfg.seed, fit_rows=ws.n_train
        )
    progress("evaluation", 1, 1, summary["next_regime"]["verdict"])
    return summary


def _regime_profiles(cfg: TrainConfig, ws, rg: _Regimes) -> list[dict]:
    """Each regime's training profile (shares, return moments, dwell), its window volatility and its name."""
    train_reg = rg.regimes[: ws.n_train]
    bar_ret = rg.log_ret[ws.end_index]
    profiles = diagnostics.regime_profiles(train_reg, cfg.clustering.n_clusters, bar_ret[: ws.n_train])
    for p in profiles:  # the key the ids are ordered by (each window's own return volatility), for the names
        own = train_reg == p["id"]
        p["window_volatility"] = float(rg.vol_key[own].mean()) if own.any() else None
    for p, name in zip(profiles, naming.regime_names(profiles)):  # descriptive labels; ids stay the contract
        p["name"] = name
    return profiles


def _export(
    cfg: TrainConfig,
    spec: FeatureSpec,
    series: BarSeries,
    ws,
    encoder,
    e_cfg,
    rg: _Regimes,
    fc: _Forecast,
    summary: dict,
    profiles: list[dict],
    warm,
    progress: Progress,
) -> tuple[Path, dict]:
    """Write the bundle into a temporary folder (ONNX with parity checks, classifier, encoder weights for warm
    starts, regimes.csv, profile, summary, manifest last), then rename it into place: (folder, manifest)."""
    from regimetry.classify import centroid_distance
    from trainer import export
    from trainer.warm_start import WEIGHTS_FILE

    cl, z, regimes, proba = rg.cl, rg.z, rg.regimes, rg.proba
    k, f_cfg = cfg.clustering.n_clusters, cfg.forecaster
    train_reg = regimes[: ws.n_train]
    alignment = rg.alignment
    version = model_version(cfg, series, None if warm is None else warm.source)
    out_root = Path(cfg.output_dir)
    out = out_root / version
    tmp = out_root / f".{version}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    progress("export", 0, 2, "encoder -> ONNX")
    onnx_info = {
        "encoder": export.to_onnx(
            encoder, (cfg.window_size, spec.n_features), "window", "embedding", tmp / "encoder.onnx", cfg.opset
        )
    }
    onnx_info["encoder"]["parity_max_abs_diff"] = export.check_parity(
        encoder, onnx_info["encoder"], tmp / "encoder.onnx", ws.test
    )
    progress("export", 1, 2, "forecaster -> ONNX")
    onnx_info["forecaster"] = export.to_onnx(
        fc.model, (f_cfg.input_length, z.shape[1]), "history", "next_embedding", tmp / "forecaster.onnx", cfg.opset
    )
    onnx_info["forecaster"]["parity_max_abs_diff"] = export.check_parity(
        fc.model, onnx_info["forecaster"], tmp / "forecaster.onnx", fc.x_test
    )
    cl.classifier.save(tmp / "classifier.npz")
    encoder.save_weights(str(tmp / WEIGHTS_FILE))  # for warm-started refits only (trainer/warm_start.py)
    write_regimes(tmp / "regimes.csv", ws.end_time, regimes, proba.max(1), ws.n_train)
    dump_config(cfg, tmp / "training_profile_used.yaml")
    summary["export"] = {k2: {"parity_max_abs_diff": v["parity_max_abs_diff"]} for k2, v in onnx_info.items()}
    (tmp / "training_summary.json").write_text(json.dumps(summary, indent=2))

    dists = centroid_distance(rg.g[: ws.n_train], cl.centroids)
    t_all, in_train = fc.t_all, fc.in_train
    hits = rg.next_regime_of(
        t_all[in_train], np.asarray(fc.model.predict(fc.x_all[in_train], batch_size=512, verbose=0))
    )
    predicted = np.full(len(regimes), -1, dtype=np.int64)
    predicted[t_all[in_train]] = hits  # the regime each training window predicted for the next one
    manifest = write_manifest(
        tmp,
        Manifest(
            model_version=version,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            seed=cfg.seed,
            spec=spec,
            scaler=ws.scaler,
            window_size=cfg.window_size,
            stride=cfg.stride,
            emb_mean=cl.emb_mean,
            emb_std=cl.emb_std,
            centroids=cl.centroids,
            space=cl.space,
            decoder=cl.decoder,
            classifier=cl.classifier,
            forecaster={"name": f_cfg.name, "input_length": f_cfg.input_length, "loss": f_cfg.loss},
            onnx=onnx_info,
            regime_profiles=profiles,
            baseline={
                "cluster_distribution": diagnostics.shares(train_reg, k).tolist(),
                "transition_matrix": diagnostics.transition_matrix(train_reg, k).tolist(),
                "centroid_distance_quantiles": {f"q{q}": float(np.quantile(dists, q / 100)) for q in (50, 90, 95, 99)},
                "mean_confidence": float(proba[: ws.n_train].max(1).mean()),
                "next_regime_hit_rate": float(np.mean(hits == regimes[t_all[in_train] + 1])),
            },
            data={
                "source": cfg.data,
                "symbol": series.symbol,
                "n_bars": len(series),
                "start": int(series.times[0]),
                "end": int(series.times[-1]),
                "train_end": int(ws.end_time[ws.n_train - 1]),
            },
            libraries=library_versions(),
            alignment=alignment,
            warm_start=None
            if warm is None
            else {
                "from": warm.source,
                "encoder_epochs": e_cfg.epochs,
                **{k2: (cl.selection or {})[k2] for k2 in ("ids_ordered_by_volatility", "volatility_by_id")},
            },
            drift_alarms=_drift_alarms(cfg, proba[: ws.n_train], train_reg, dists, predicted[: ws.n_train]),
        ),
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    if cfg.set_current:
        (out_root / POINTER).write_text(version + "\n")
    progress("export", 2, 2, f"bundle {out}")
    return out, manifest


def _drift_alarms(cfg: TrainConfig, proba, regimes, ood, predicted) -> dict:
    """The drift alarms calibrated on the training windows (regimetry/drift_alarms.py), for the manifest."""
    from regimetry.drift_alarms import STREAMS, calibrate, streams_of

    streams = streams_of(proba, regimes, ood, predicted)
    detectors, records = [], []
    for name in STREAMS:
        det, rec = calibrate(name, streams[name], arl0=cfg.drift_arl_events, seed=cfg.seed)
        detectors.append(det.to_dict())
        records.append(rec)
    return {
        "kind": "cusum",
        "target_arl_events": cfg.drift_arl_events,
        "detectors": detectors,
        "calibration": records,
    }
