"""`regimetry train`: bars -> windows -> encoder -> regimes -> forecaster -> evaluation -> bundle.

Each stage is a function of the previous stage's plain arrays; this module only sequences them, reports
progress and writes the bundle. Seeds are set once, up front, and every random draw descends from them.

A universe (several symbols in --data) is trained as segments (trainer/windows.py): features and windows per
symbol, the scaler, encoder and clustering fitted on the pooled training windows, and every sequential step
(causal regime decoding, forecaster sequences, next-window targets, flat-next bars, dwell, transitions) walked
segment by segment; evaluation is reported pooled and per symbol. One symbol is one segment: the same arrays,
the same model version as before.
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
from regimetry.data import BarSeries, bar_interval, iso_utc, load_universe, resolve_data, universe_digest
from regimetry.features import FeatureSpec
from trainer.config import TrainConfig, dump_config, recipe
from trainer.environment import library_versions
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
    window_symbol: np.ndarray | None = field(default=None, repr=False)  # (N,) the symbol of every window


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
    """The bars of one symbol, and planted regime labels when the data is the synthetic generator (report, lock
    and refresh take one symbol; `train` takes a universe: load_training_universe)."""
    if ("," in cfg.data and not Path(cfg.data).exists()) or cfg.symbols:
        from regimetry.data import BarDataError

        raise BarDataError(f"{cfg.data}: several symbols (a universe); this command takes one symbol's bars")
    if cfg.data.lower().startswith("synthetic"):
        from regimetry.synthetic import generate_bars

        syn = generate_bars()
        return syn.bars, syn.labels
    series = resolve_data(cfg.data)
    if cfg.symbol:
        series = BarSeries(series.times, series.values, cfg.symbol)
    return series, None


def load_training_universe(cfg: TrainConfig) -> tuple[list[BarSeries], np.ndarray | None]:
    """Every symbol's bars (regimetry.data.load_universe; cfg.symbols keeps some), and planted labels when the
    data is the synthetic generator alone."""
    d = cfg.data.strip()
    if d.lower().startswith("synthetic") and "," not in d and not cfg.symbols:  # with its planted labels
        series, planted = load_training_data(cfg)
        return [series], planted
    universe = load_universe(d, cfg.symbols)
    if cfg.symbol:
        if len(universe) > 1:
            raise ValueError(f"symbol={cfg.symbol!r} renames one series, but --data holds {len(universe)} symbols")
        universe = [BarSeries(universe[0].times, universe[0].values, cfg.symbol)]
    return universe, None


MIXED_INTERVAL_RATIO = 1.5  # median bar spacings further apart than this are different intervals


def check_intervals(universe: list[BarSeries], allowed: bool) -> None:
    """Refuse a universe whose symbols have different bar intervals unless allowed (mixed_intervals: true): one
    scaler and one regime geometry over hourly and daily bars measure the interval, not the market (on the
    `backtesting` samples every regime of the pooled model held one symbol only: benchmarks/bench_universe.py)."""
    from regimetry.data import BarDataError

    iv = {u.symbol: bar_interval(u) for u in universe}
    lo, hi = min(iv.values()), max(iv.values())
    if not allowed and lo > 0 and hi / lo > MIXED_INTERVAL_RATIO:
        raise BarDataError(
            "symbols with different bar intervals in one universe: "
            + ", ".join(f"{k} {v}s" for k, v in iv.items())
            + "; train them apart, or pass --set mixed_intervals=true to pool them anyway (their regimes then "
            "mostly tell the symbols apart: benchmarks/bench_universe.py)"
        )


def model_version(cfg: TrainConfig, series: BarSeries | list[BarSeries], warm_from: str | None = None) -> str:
    """Deterministic: the same config on the same bars (warm-started from the same model) gives the same
    version (and the same event ids). A universe's bars are hashed symbol by symbol (one symbol: its own hash)."""
    data_hash = universe_digest(series) if isinstance(series, list) else series.digest()
    blob: dict = {"cfg": recipe(cfg), "data": data_hash}
    if warm_from is not None:
        blob["warm_from"] = warm_from
    return f"{cfg.name}-{sha256_json(blob)[:10]}"


def write_regimes(
    path: Path,
    end_time: np.ndarray,
    regimes: np.ndarray,
    confidence: np.ndarray,
    n_train: int,
    symbol: np.ndarray | None = None,
) -> None:
    """The regime of every window, keyed by the time of its last bar (the bar it describes, causally); a
    universe's rows carry a last column, symbol."""
    with open(path, "w") as f:
        f.write("bar_time,epoch,regime,confidence,split" + (",symbol" if symbol is not None else "") + "\n")
        for i, (t, r, c) in enumerate(zip(end_time.tolist(), regimes.tolist(), confidence.tolist())):
            tail = "" if symbol is None else f",{symbol[i]}"
            f.write(f"{iso_utc(t)},{t},{r},{c:.4f},{'train' if i < n_train else 'held_out'}{tail}\n")


@dataclass
class _Regimes:
    """The regime stage's output for every window (train + held out). Arrays: z (N, D) standardised
    embeddings; g (N, P) regime geometry; w (N, K) decoder values; proba (N, K); regimes (N,); last_rows (N, F)
    each window's last feature row; bar_ret (N,) the log return of each window's last bar; next_ret (N,) that of
    the bar after it in the same segment (NaN at a segment's end); vol_key (n_train,) each training window's own
    return volatility (the key the ids are ordered by)."""

    cl: Any  # trainer.clustering.Clustering
    z: np.ndarray
    g: np.ndarray
    w: np.ndarray
    proba: np.ndarray
    regimes: np.ndarray
    last_rows: np.ndarray
    bar_ret: np.ndarray
    next_ret: np.ndarray
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
    series: BarSeries | list[BarSeries] | None = None,
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
    and ids; the encoder is fine-tuned for encoder.warm_epochs epochs. series may be a list of BarSeries (a
    universe, one per symbol)."""
    set_seed(cfg.seed)
    from trainer import encoder as enc
    from trainer.warm_start import WarmStart
    from trainer.windows import build_universe_windows

    if series is None:
        universe, planted = load_training_universe(cfg)
    else:
        universe = list(series) if isinstance(series, list) else [series]
    series = universe[0]  # the series of a one-symbol run (its summary, planted regimes)
    spec = FeatureSpec()
    if len(universe) == 1:
        progress("features", 0, 1, f"{len(series)} bars of {series.symbol}")
    else:
        planted = None
        check_intervals(universe, bool(cfg.mixed_intervals))
        intervals = sorted({bar_interval(u) for u in universe})
        mixed = f"; MIXED bar intervals {', '.join(f'{i}s' for i in intervals)}" if len(intervals) > 1 else ""
        progress("features", 0, 1, f"{sum(len(u) for u in universe)} bars of {len(universe)} symbols{mixed}")
    ws = build_universe_windows(
        universe,
        spec,
        cfg.window_size,
        cfg.stride,
        cfg.holdout,
        scaler=warm.scaler if warm is not None else None,
        max_gap=cfg.max_gap,
    )
    progress(
        "features", 1, 1, f"{len(ws.windows)} windows ({ws.n_train} train / {len(ws.windows) - ws.n_train} held out)"
    )
    encoder, enc_hist, e_cfg = _fit_encoder(cfg, spec, ws, warm, progress)
    rg = _fit_regimes(cfg, spec, ws, enc.embed(encoder, ws.windows), warm, align, progress)
    fc = _fit_forecaster(cfg, ws, rg, progress)
    summary = _evaluate(cfg, spec, universe, ws, encoder, enc_hist, rg, fc, planted, progress)
    profiles = _regime_profiles(cfg, ws, rg)
    summary["regime_names"] = [p["name"] for p in profiles]  # what an export writes, for reports of a config
    cl = rg.cl
    warm_next = WarmStart(
        "in-memory",
        ws.scaler,
        cl.emb_mean,
        cl.emb_std,
        cl.space,
        cl.decoder.penalty,
        encoder.get_weights(),
        memory=cl.decoder.memory,
    )
    if not write_bundle:
        return TrainResult(None, {}, summary, rg.regimes, ws.end_time, rg.z, warm_next, _window_symbols(ws))
    out, manifest = _export(cfg, spec, universe, ws, encoder, e_cfg, rg, fc, summary, profiles, warm, progress)
    warm_next.source = manifest["model_version"]
    return TrainResult(out, manifest, summary, rg.regimes, ws.end_time, rg.z, warm_next, _window_symbols(ws))


def _window_symbols(ws) -> np.ndarray:
    return np.array([sg.symbol for sg in ws.segments])[ws.seg]


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
    anchors = val_anchors = None
    if len(ws.segments) == 1:
        n_val = max(ws.n_train // 10, offset + 2)
        fit_x, val_x = ws.train[:-n_val], ws.train[-n_val:]
    else:  # the last tenth of each segment's training windows (a segment too short to spare one only fits)
        fit_i, val_i = [], []
        for sg in ws.segments:
            nv = max(sg.n_train // 10, offset + 2) if sg.n_train >= 4 * (offset + 2) else 0
            fit_i.append(sg.train[: sg.n_train - nv])
            val_i.append(sg.train[sg.n_train - nv :])
        fit_x, val_x = ws.windows[np.concatenate(fit_i)], ws.windows[np.concatenate(val_i)]

        def paired(parts: list[np.ndarray]) -> np.ndarray:  # rows whose positive is in the same segment
            starts = np.cumsum([0] + [len(q) for q in parts[:-1]])
            return np.concatenate([a + np.arange(max(0, len(q) - offset)) for a, q in zip(starts, parts)])

        anchors, val_anchors = paired(fit_i), paired(val_i)
    enc_hist = enc.pretrain(
        encoder,
        fit_x,
        val_x,
        e_cfg,
        cfg.seed,
        offset,
        on_epoch=lambda e, r: progress("encoder", e + 1, e_cfg.epochs, f"loss {r['loss']:.4f} val {r['val_loss']:.4f}"),
        anchors=anchors,
        val_anchors=val_anchors,
    )
    return encoder, enc_hist, e_cfg


def _segment_ids(ws, n: int | None = None) -> np.ndarray | None:
    """The segment of each of the first n windows, for the clustering's sequential steps (None: one series)."""
    return None if len(ws.segments) == 1 else ws.seg[: len(ws.seg) if n is None else n]


def _decode_segments(ws, decoder, costs: np.ndarray) -> np.ndarray:
    """The causal decoder over every window, each segment on its own in time order."""
    if len(ws.segments) == 1:
        return decoder.decode_series(costs)
    out = np.empty_like(costs, dtype=np.float64)
    for sg in ws.segments:
        out[sg.index] = decoder.decode_series(costs[sg.index])
    return out


def _fit_regimes(cfg: TrainConfig, spec: FeatureSpec, ws, raw: np.ndarray, warm, align, progress: Progress) -> _Regimes:
    """Clustering on the training windows (or anchored to the bundle in force), optional id alignment, and the
    causal decoder over every window. raw: (N, D) encoder embeddings."""
    from trainer import clustering

    progress("clustering", 0, 1, f"spectral + jump model, k={cfg.clustering.n_clusters}")
    n, w_size = len(ws.windows), cfg.window_size
    bar_ret, next_ret, vol_all = np.zeros(n), np.full(n, np.nan), np.zeros(n)
    next_risk, next_move = np.full(n, np.nan), np.full(n, np.nan)
    for sg in ws.segments:
        values, idx = sg.series.values, sg.index
        end = ws.end_index[idx]
        log_ret = np.concatenate([[0.0], np.diff(np.log(values[:, 3]))])
        bar_ret[idx] = log_ret[end]
        nxt = end + 1 < len(log_ret)
        next_ret[idx[nxt]] = log_ret[end[nxt] + 1]
        # volatility of each window's own bars: orders the regime ids from calmest to most volatile
        vol_all[idx] = sliding_window_view(log_ret, w_size)[end - w_size + 1].std(1)
        # the penalty is validated on how much of the coming risk the regimes explain: the mean range-based
        # volatility of the next window_size bars (~5x less noisy than |log return|, and a regime is about more
        # than one bar). Targets that would reach past the segment's last training bar are NaN, so nothing held
        # out is looked at.
        bar_vol = clustering.bar_volatility(values)
        last_train_bar = int(end[sg.n_train - 1]) if sg.n_train else -1
        # the persistent penalty rule's target: the next bar's |log return|, where that bar is a training bar
        known = end + 1 <= last_train_bar
        next_move[idx[known]] = np.abs(log_ret[end[known] + 1])
        csum = np.concatenate([[0.0], np.cumsum(bar_vol)])
        ahead = end + w_size
        next_risk[idx] = np.where(
            ahead <= last_train_bar,
            (csum[np.minimum(ahead, len(bar_vol) - 1) + 1] - csum[end + 1]) / w_size,
            np.nan,
        )
    vol_key = vol_all[: ws.n_train]
    last_rows = ws.windows[:, -1, :]
    seg = _segment_ids(ws, ws.n_train)
    if warm is not None:
        cl = clustering.fit_anchored(raw[: ws.n_train], last_rows[: ws.n_train], vol_key, warm, cfg.clustering, seg)
    else:
        cl = clustering.fit_regimes(
            raw[: ws.n_train],
            last_rows[: ws.n_train],
            spec.names,
            vol_key,
            next_risk[: ws.n_train],
            cfg.clustering,
            cfg.seed,
            seg,
            next_move=next_move[: ws.n_train],
        )
    z = ((raw - cl.emb_mean) / cl.emb_std).astype(np.float32)

    def decode(c: clustering.Clustering) -> tuple[np.ndarray, np.ndarray]:
        g_ = c.space.geometry(last_rows, z)
        return g_, _decode_segments(ws, c.decoder, c.space.costs(g_))

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
    return _Regimes(cl, z, g, w, cl.decoder.proba(w), regimes, last_rows, bar_ret, next_ret, vol_key, alignment)


def _fit_forecaster(cfg: TrainConfig, ws, rg: _Regimes, progress: Progress) -> _Forecast:
    """The next-embedding forecaster on training sequences (inputs and target all training windows)."""
    from trainer import forecaster as fcast

    f_cfg = cfg.forecaster
    if len(ws.segments) == 1:
        x_all, y_all, t_all = fcast.sequences(rg.z, f_cfg.input_length, 1)
    else:  # each segment's own histories: no input or target reaches into another symbol or past a gap
        parts = [
            (x, y, sg.index[t])
            for sg in ws.segments
            if len(sg.index) > f_cfg.input_length
            for x, y, t in [fcast.sequences(rg.z[sg.index], f_cfg.input_length, 1)]
        ]
        x_all, y_all, t_all = (np.concatenate([p[i] for p in parts]) for i in range(3))
    nxt = ws.next_window[t_all]
    in_train = (nxt >= 0) & (nxt < ws.n_train)  # the target window must be a training window too
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


def _flat_next_regimes(cfg: TrainConfig, spec: FeatureSpec, ws, encoder, rg: _Regimes, t):
    """The flat-next baseline: the regime of window t extended by one bar on which nothing happens."""
    from regimetry.flat_next import flat_next_windows, next_window_regimes
    from trainer import encoder as enc

    cl = rg.cl
    if len(ws.segments) == 1:
        flat_w = flat_next_windows(ws.segments[0].series.values, ws.end_index[t], spec, ws.scaler, cfg.window_size)
    else:  # each window's flat bar continues its own segment's bars
        flat_w = np.empty((len(t), cfg.window_size, spec.n_features), np.float32)
        for i, sg in enumerate(ws.segments):
            sel = ws.seg[t] == i
            if sel.any():
                flat_w[sel] = flat_next_windows(
                    sg.series.values, ws.end_index[t[sel]], spec, ws.scaler, cfg.window_size
                )
    z_flat = ((enc.embed(encoder, flat_w) - cl.emb_mean) / cl.emb_std).astype(np.float32)
    return next_window_regimes(cl.space, cl.decoder, rg.w[t], flat_w, z_flat)


def _transitions(ws, regimes: np.ndarray, k: int) -> np.ndarray:
    """The transition matrix of the training windows' regimes, counted within each segment."""
    train_reg = regimes[: ws.n_train]
    if len(ws.segments) == 1:
        return diagnostics.transition_matrix(train_reg, k)
    counts = np.sum([diagnostics.transition_counts(regimes[sg.train], k) for sg in ws.segments], axis=0)
    rows = counts.sum(1, keepdims=True)
    return np.where(rows > 0, counts / np.where(rows > 0, rows, 1.0), 1.0 / k)


def _dwell(ws, regimes: np.ndarray, part: str) -> float:
    """Mean dwell of the training ('train') or held-out ('test') windows, runs cut at segment boundaries."""
    from trainer.jump_fit import dwell

    if len(ws.segments) == 1:
        return diagnostics.mean_duration(regimes[: ws.n_train] if part == "train" else regimes[ws.n_train :])
    idx = np.concatenate([getattr(sg, part) for sg in ws.segments])
    return dwell(regimes[idx], ws.seg[idx])


def _symbol_scores(cfg: TrainConfig, ws, rg: _Regimes, fc: _Forecast, flat: np.ndarray, markov: np.ndarray) -> dict:
    """Held-out figures of each symbol of a universe and of all of them pooled: the next-regime report on the
    symbol's held-out steps, shares, mean dwell, eta^2 of the next bar's |return| by regime (held-out windows
    whose next bar is known), the forecast error."""
    from trainer.jump_fit import dwell
    from trainer.regime_scores import next_abs_return_eta2

    k = cfg.clustering.n_clusters
    regimes = rg.regimes
    sym_of_seg = np.array([sg.symbol for sg in ws.segments])

    def scores(step_sel: np.ndarray, test_idx: np.ndarray, train_idx: np.ndarray) -> dict:
        t = fc.t_test[step_sel]
        test_idx = np.sort(test_idx)  # held-out windows segment by segment, each in time order
        eta2 = next_abs_return_eta2(regimes[test_idx], rg.next_ret[test_idx])
        out: dict = {
            "n_held_out_windows": int(len(test_idx)),
            "n_held_out_steps": int(len(t)),
            "held_out_next_abs_return_eta2": None if np.isnan(eta2) else eta2,
            "held_out_mean_dwell": dwell(regimes[test_idx], ws.seg[test_idx]),
            "held_out_shares": diagnostics.shares(regimes[test_idx], k).tolist(),
            "train_shares": diagnostics.shares(regimes[train_idx], k).tolist(),
        }
        if len(t):
            rep_ = scoring.next_regime_report(
                regimes[t],
                regimes[ws.next_window[t]],
                rg.next_regime_of(t, fc.pred_test[step_sel]),
                markov,
                k,
                flat_next=flat[step_sel],
            )
            out["forecaster_held_out"] = scoring.forecast_errors(fc.pred_test[step_sel], fc.y_test[step_sel])
            out["next_regime"] = {
                "change_f1": {c: rep_["change_detection"][c]["f1"] for c in rep_["candidates"]},
                "accuracy": {c: rep_["all_steps"][c]["accuracy"] for c in rep_["candidates"]},
                "macro_f1": {c: rep_["all_steps"][c]["macro_f1"] for c in rep_["candidates"]},
                "actual_changes": rep_["change_detection"]["forecaster"]["actual_changes"],
                "verdict": rep_["verdict"],
            }
        return out

    all_test = np.arange(ws.n_train, len(regimes))
    per = {}
    for sym in ws.symbols:
        segs = np.flatnonzero(sym_of_seg == sym)
        per[sym] = scores(np.isin(ws.seg[fc.t_test], segs), ws.of_symbol(sym)[1], ws.of_symbol(sym)[0])
        first = [sg for sg in ws.segments if sg.symbol == sym]
        per[sym]["bar_interval_seconds"] = bar_interval(first[0].series)
    intervals = {v["bar_interval_seconds"] for v in per.values()}
    return {
        "symbols": ws.symbols,
        # symbols of different bar intervals (hourly beside daily) share one scaler, encoder and regime geometry:
        # allowed, but their regimes then also tell the intervals apart (benchmarks/bench_universe.py measures it)
        "mixed_intervals": len(intervals) > 1,
        "pooled": scores(np.ones(len(fc.t_test), bool), all_test, np.arange(ws.n_train)),
        "per_symbol": per,
    }


def _evaluate(
    cfg: TrainConfig,
    spec: FeatureSpec,
    universe: list[BarSeries],
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
    series = universe[0]
    markov = _transitions(ws, regimes, k)
    flat = _flat_next_regimes(cfg, spec, ws, encoder, rg, fc.t_test)
    summary: dict = {
        "data": {
            "source": cfg.data,
            "symbol": series.symbol if len(universe) == 1 else ",".join(ws.symbols),
            "n_bars": sum(len(u) for u in universe),
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
            regimes[ws.next_window[fc.t_test]],
            rg.next_regime_of(fc.t_test, fc.pred_test),
            markov,
            k,
            flat_next=flat,
        ),
        "regime_shares": {
            "train": diagnostics.shares(train_reg, k).tolist(),
            "held_out": diagnostics.shares(regimes[ws.n_train :], k).tolist(),
        },
        "mean_dwell": {
            "train": _dwell(ws, regimes, "train"),
            "held_out": _dwell(ws, regimes, "test"),
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
            "stickiness": diagnostics.stickiness(markov),
            "mean_duration": _dwell(ws, regimes, "train"),
        },
    }
    if len(universe) > 1 or ws.dropped:
        summary["universe"] = _symbol_scores(cfg, ws, rg, fc, flat, markov)
        summary["universe"]["dropped_runs"] = ws.dropped  # gap-cut runs too short for one window
    if planted is not None:
        v = series.values
        log_ret = np.concatenate([[0.0], np.diff(np.log(v[:, 3]))])
        hmm_x = np.stack([log_ret, np.log(np.log(v[:, 1] / v[:, 2]) + 1e-6), np.log1p(v[:, 4])], 1)
        summary["planted_regimes"] = evaluate.planted_recovery(
            regimes, planted[ws.end_index], hmm_x[ws.end_index], k, cfg.seed, fit_rows=ws.n_train
        )
    progress("evaluation", 1, 1, summary["next_regime"]["verdict"])
    return summary


def _regime_profiles(cfg: TrainConfig, ws, rg: _Regimes) -> list[dict]:
    """Each regime's training profile (shares, return moments, dwell), its window volatility and its name."""
    train_reg = rg.regimes[: ws.n_train]
    bar_ret = rg.bar_ret
    k = cfg.clustering.n_clusters
    profiles = diagnostics.regime_profiles(train_reg, k, bar_ret[: ws.n_train])
    if len(ws.segments) > 1:  # a universe: runs and transitions counted within each segment
        p_ = _transitions(ws, rg.regimes, k)
        entropy = diagnostics.row_entropy(p_)
        runs = [diagnostics.run_lengths(rg.regimes[sg.train]) for sg in ws.segments]
        reg, length = np.concatenate([r[0] for r in runs]), np.concatenate([r[1] for r in runs])
        for p in profiles:
            sel = reg == p["id"]
            p["mean_duration"] = float(length[sel].mean()) if sel.any() else 0.0
            p["stickiness"], p["row_entropy"] = float(p_[p["id"], p["id"]]), float(entropy[p["id"]])
    for p in profiles:  # the key the ids are ordered by (each window's own return volatility), for the names
        own = train_reg == p["id"]
        p["window_volatility"] = float(rg.vol_key[own].mean()) if own.any() else None
    for p, name in zip(profiles, naming.regime_names(profiles)):  # descriptive labels; ids stay the contract
        p["name"] = name
    return profiles


def _export(
    cfg: TrainConfig,
    spec: FeatureSpec,
    universe: list[BarSeries],
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
    version = model_version(cfg, universe if len(universe) > 1 else universe[0], None if warm is None else warm.source)
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
    many = len(universe) > 1
    symbol_col = _window_symbols(ws) if many else None
    write_regimes(tmp / "regimes.csv", ws.end_time, regimes, proba.max(1), ws.n_train, symbol_col)
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
                "transition_matrix": _transitions(ws, regimes, k).tolist(),
                "centroid_distance_quantiles": {f"q{q}": float(np.quantile(dists, q / 100)) for q in (50, 90, 95, 99)},
                "mean_confidence": float(proba[: ws.n_train].max(1).mean()),
                "next_regime_hit_rate": float(np.mean(hits == regimes[ws.next_window[t_all[in_train]]])),
            },
            data=_data_record(cfg, universe, ws),
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


def _data_record(cfg: TrainConfig, universe: list[BarSeries], ws) -> dict:
    """manifest["data"]: the source and period trained on; a universe adds each symbol's own (its bars, first
    and last bar time, last training window's bar time, bar interval) and start/end/train_end span them all."""
    if len(universe) == 1:
        series = universe[0]
        return {
            "source": cfg.data,
            "symbol": series.symbol,
            "n_bars": len(series),
            "start": int(series.times[0]),
            "end": int(series.times[-1]),
            "train_end": int(ws.end_time[ws.n_train - 1]),
        }
    symbols: list[dict[str, Any]] = []
    for u in universe:
        train_idx, _ = ws.of_symbol(u.symbol)  # every symbol has a training window (trainer/windows.py)
        symbols.append(
            {
                "symbol": u.symbol,
                "n_bars": len(u),
                "start": int(u.times[0]),
                "end": int(u.times[-1]),
                "train_end": int(ws.end_time[train_idx[-1]]),
                "bar_interval_seconds": bar_interval(u),
            }
        )
    return {
        "source": cfg.data,
        "symbol": ",".join(x["symbol"] for x in symbols),
        "n_bars": sum(len(u) for u in universe),
        "start": min(x["start"] for x in symbols),
        "end": max(x["end"] for x in symbols),
        "train_end": max(x["train_end"] for x in symbols),
        "symbols": symbols,
    }


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
