"""`regimetry drift-report`: what the regime stream did against the bundle's training, as files to read.

From the regime events of a topic or a file (de-duplicated by event id, ordered by bar time per symbol) and the
bundle that produced them:

- ``drift_log.jsonl``  every alarm of the bundle's calibrated CUSUM detectors (regimetry/drift_alarms.py):
  detector, stream, statistic, threshold, value, symbol, model version, bar time, event id;
- ``anomaly_report.md`` per-symbol figures (events, alarms by detector, PSI and Jensen-Shannon of the regime
  shares against training, transition-matrix shift, mean confidence, OOD share) and the plots below;
- ``transition_deviation.csv`` predicted vs realised next regime per (from, to) pair: how often the forecast
  called each transition and how often it happened;
- PNGs (matplotlib, when installed): PSI and Jensen-Shannon over a rolling window of events, live vs training
  transition matrices, confidence and OOD score over time with the alarms marked.

Events of another model version than the bundle's are counted and left out (their ids mean other regimes).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from regimetry import diagnostics as dg
from regimetry.drift_alarms import detectors_from_manifest, run_detectors, streams_of


@dataclass
class SymbolDrift:
    symbol: str
    times: np.ndarray  # (T,) bar times
    regimes: np.ndarray  # (T,)
    proba: np.ndarray  # (T, K)
    ood: np.ndarray  # (T,)
    predicted: np.ndarray  # (T,) regime predicted for the next bar, -1 without a forecast
    event_ids: list[str]
    alarms: list[dict] = field(default_factory=list)


def read_events(source: str, settings=None, timeout: float = 300.0) -> list[dict]:
    """Events from a file (.json array, or JSON lines) or, if no such file exists, from the Kafka topic of
    that name (read to its end, no consumer group joined)."""
    path = Path(source)
    if path.exists():
        text = path.read_text()
        if text.lstrip().startswith("["):
            return list(json.loads(text))
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    from ops.event_report import read_all
    from ops.kafka import consumer

    cons = consumer(settings, None, True)
    try:
        values = read_all(cons, source, timeout=timeout)
    finally:
        cons.close()
    return [json.loads(v) for v in values if v]


def by_symbol(events: list[dict], model_version: str) -> tuple[dict[str, SymbolDrift], dict]:
    """Events of ``model_version`` per symbol, de-duplicated (first copy of an event id) and ordered by bar
    time; and counts of what was left out."""
    seen: set[str] = set()
    grouped: dict[str, list[dict]] = {}
    other, dup = 0, 0
    for e in events:
        if e.get("model_version") != model_version:
            other += 1
            continue
        if e["event_id"] in seen:
            dup += 1
            continue
        seen.add(e["event_id"])
        grouped.setdefault(e["symbol"], []).append(e)
    out = {}
    for sym, evs in sorted(grouped.items()):
        evs.sort(key=lambda e: e["bar_time"])
        out[sym] = SymbolDrift(
            sym,
            np.asarray([e["bar_time"] for e in evs], dtype=np.int64),
            np.asarray([e["regime"]["id"] for e in evs], dtype=np.int64),
            np.asarray([e["regime"]["probabilities"] for e in evs], dtype=np.float64),
            np.asarray([e["ood_score"] for e in evs], dtype=np.float64),
            np.asarray([e["predicted"]["regime"] if e.get("predicted") else -1 for e in evs], dtype=np.int64),
            [e["event_id"] for e in evs],
        )
    return out, {"other_model_version": other, "duplicates": dup}


def detect(symbols: dict[str, SymbolDrift], manifest: dict) -> list[dict]:
    """Run the bundle's detectors over each symbol's streams; the drift log's records, in bar-time order."""
    from regimetry.data import iso_utc

    detectors = detectors_from_manifest(manifest)
    log = []
    for s in symbols.values():
        streams = streams_of(s.proba, s.regimes, s.ood, s.predicted)
        for a in run_detectors(detectors, streams):
            i = a.pop("index")
            rec = {
                **a,
                "value": float(streams[a["stream"]][i]),
                "symbol": s.symbol,
                "model_version": manifest["model_version"],
                "bar_time": int(s.times[i]),
                "time": iso_utc(int(s.times[i])),
                "event_id": s.event_ids[i],
            }
            s.alarms.append(rec)
            log.append(rec)
    return sorted(log, key=lambda r: (r["bar_time"], r["symbol"], r["detector"]))


def rolling_divergence(regimes: np.ndarray, baseline: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """PSI and Jensen-Shannon of the regime shares of each trailing ``window`` events against the training
    shares: two (T,) arrays, NaN until the window is full."""
    k = len(baseline)
    psi, js = np.full(len(regimes), np.nan), np.full(len(regimes), np.nan)
    onehot = np.eye(k)[regimes]
    csum = np.concatenate([np.zeros((1, k)), np.cumsum(onehot, 0)])
    for t in range(window - 1, len(regimes)):
        counts = csum[t + 1] - csum[t + 1 - window]
        share = counts / counts.sum()
        psi[t], js[t] = dg.psi(share, baseline), dg.jensen_shannon(share, baseline)
    return psi, js


def transition_deviation(symbols: dict[str, SymbolDrift], k: int) -> list[dict]:
    """Per (from, to): steps where the forecast called that transition, where it happened, and both."""
    called = np.zeros((k, k), dtype=np.int64)
    happened = np.zeros((k, k), dtype=np.int64)
    both = np.zeros((k, k), dtype=np.int64)
    for s in symbols.values():
        cur, nxt, pred = s.regimes[:-1], s.regimes[1:], s.predicted[:-1]
        ok = pred >= 0
        np.add.at(happened, (cur[ok], nxt[ok]), 1)
        np.add.at(called, (cur[ok], pred[ok]), 1)
        hit = ok & (pred == nxt)
        np.add.at(both, (cur[hit], nxt[hit]), 1)
    rows = []
    for i in range(k):
        for j in range(k):
            if called[i, j] or happened[i, j]:
                rows.append(
                    {
                        "from": i,
                        "to": j,
                        "predicted": int(called[i, j]),
                        "realised": int(happened[i, j]),
                        "predicted_and_realised": int(both[i, j]),
                        "precision": float(both[i, j] / called[i, j]) if called[i, j] else None,
                        "recall": float(both[i, j] / happened[i, j]) if happened[i, j] else None,
                    }
                )
    return rows


def summary_rows(symbols: dict[str, SymbolDrift], manifest: dict, ood_threshold: float) -> list[dict]:
    base = manifest["baseline"]
    k = int(manifest["n_clusters"])
    rows = []
    for s in symbols.values():
        counts: dict[str, int] = {}
        for a in s.alarms:
            counts[a["detector"]] = counts.get(a["detector"], 0) + 1
        shares = dg.shares(s.regimes, k)
        rows.append(
            {
                "symbol": s.symbol,
                "events": len(s.regimes),
                "alarms": counts,
                "psi": dg.psi(shares, base["cluster_distribution"]),
                "jensen_shannon": dg.jensen_shannon(shares, base["cluster_distribution"]),
                "transition_shift": dg.transition_shift(dg.transition_matrix(s.regimes, k), base["transition_matrix"]),
                "mean_confidence": float(s.proba[np.arange(len(s.regimes)), s.regimes].mean()),
                "ood_share": float(np.mean(s.ood > ood_threshold)),
            }
        )
    return rows


@dataclass
class ReportFiles:
    folder: Path
    drift_log: Path
    report: Path
    transitions: Path
    figures: dict[str, Path]
    n_alarms: int
    notes: list[str]


def write_report(
    events: list[dict], manifest: dict, out: Path, window: int = 500, ood_quantile: str = "q99"
) -> ReportFiles:
    """Everything of the module docstring into ``out``; returns where it went."""
    out.mkdir(parents=True, exist_ok=True)
    version = manifest["model_version"]
    symbols, left_out = by_symbol(events, version)
    notes = []
    if left_out["other_model_version"]:
        notes.append(f"{left_out['other_model_version']} events of other model versions left out")
    if left_out["duplicates"]:
        notes.append(f"{left_out['duplicates']} duplicate events (same event id) counted once")
    if not detectors_from_manifest(manifest):
        notes.append("this bundle has no calibrated drift alarms (trained before them): no alarms computed")
    log = detect(symbols, manifest)
    drift_log = out / "drift_log.jsonl"
    drift_log.write_text("".join(json.dumps(r) + "\n" for r in log))
    k = int(manifest["n_clusters"])
    deviation = transition_deviation(symbols, k)
    transitions = out / "transition_deviation.csv"
    with open(transitions, "w", newline="") as f:
        fields = ["from", "to", "predicted", "realised", "predicted_and_realised", "precision", "recall"]
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(deviation)
    ood_threshold = float(manifest["baseline"]["centroid_distance_quantiles"][ood_quantile])
    rows = summary_rows(symbols, manifest, ood_threshold)
    figures: dict[str, Path] = {}
    try:
        figures = _plots(symbols, manifest, out, window, ood_threshold)
    except ImportError:
        notes.append("matplotlib is not installed here (worker-only install): no figures")
    report = out / "anomaly_report.md"
    report.write_text(_markdown(manifest, rows, deviation, log, figures, notes, window))
    return ReportFiles(out, drift_log, report, transitions, figures, len(log), notes)


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _markdown(manifest, rows, deviation, log, figures, notes, window) -> str:
    names = [p.get("name", str(p["id"])) for p in manifest.get("regime_profiles", [])]
    alarms_cfg = manifest.get("drift_alarms") or {}
    lines = [
        f"# Drift report: {manifest['model_version']}",
        "",
        f"Bundle trained on {manifest.get('data', {}).get('source')} ({manifest.get('data', {}).get('symbol')}); "
        f"drift alarms: one-sided CUSUMs calibrated for at least {alarms_cfg.get('target_arl_events', '-')} "
        "events between false alarms on training-like data (regimetry/drift_alarms.py).",
        "",
        *[f"- {n}" for n in notes],
        "",
        "## Per symbol",
        "",
        "| symbol | events | alarms | PSI | Jensen-Shannon | transition shift | mean confidence | OOD share |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        alarms = ", ".join(f"{k} {v}" for k, v in sorted(r["alarms"].items())) or "none"
        lines.append(
            f"| {r['symbol']} | {r['events']} | {alarms} | {_fmt(r['psi'])} | {_fmt(r['jensen_shannon'])} | "
            f"{_fmt(r['transition_shift'])} | {_fmt(r['mean_confidence'])} | {_fmt(r['ood_share'])} |"
        )
    lines += ["", f"## Alarms ({len(log)}; all in drift_log.jsonl)", ""]
    if log:
        lines += ["| time | symbol | detector | statistic | threshold |", "|---|---|---|---:|---:|"]
        for a in log[:50]:
            lines.append(
                f"| {a['time']} | {a['symbol']} | {a['detector']} | {a['statistic']:.1f} | {a['threshold']:.1f} |"
            )
        if len(log) > 50:
            lines.append(f"| ... | {len(log) - 50} more | | | |")
    else:
        lines.append("No alarm.")
    lines += [
        "",
        "## Transition deviation (predicted vs realised next regime)",
        "",
        "| from | to | predicted | realised | both | precision | recall |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for d in deviation:
        a, b = d["from"], d["to"]
        lines.append(
            f"| {a} {names[a] if a < len(names) else ''} | {b} {names[b] if b < len(names) else ''} | "
            f"{d['predicted']} | {d['realised']} | {d['predicted_and_realised']} | {_fmt(d['precision'])} | "
            f"{_fmt(d['recall'])} |"
        )
    if figures:
        lines += ["", "## Figures", ""]
        titles = {
            "divergence": f"PSI and Jensen-Shannon of the last {window} events' regime shares against training",
            "transitions": "Transition matrices: training vs live",
            "confidence_ood": "Confidence and OOD score over time, alarms marked",
        }
        for key, path in figures.items():
            lines += [f"### {titles.get(key, key)}", "", f"![{key}]({path.name})", ""]
    return "\n".join(lines) + "\n"


def _plots(symbols: dict[str, SymbolDrift], manifest: dict, out: Path, window: int, ood_threshold: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from regimetry.data import iso_utc

    base = np.asarray(manifest["baseline"]["cluster_distribution"])
    k = int(manifest["n_clusters"])
    figures = {}

    fig, axes = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    for s in symbols.values():
        psi, js = rolling_divergence(s.regimes, base, min(window, max(len(s.regimes) // 2, 10)))
        axes[0].plot(s.times, psi, lw=0.9, label=s.symbol)
        axes[1].plot(s.times, js, lw=0.9, label=s.symbol)
    axes[0].axhline(0.25, color="red", ls="--", lw=0.8, label="PSI 0.25 (significant shift)")
    axes[0].set_ylabel("PSI")
    axes[1].set_ylabel("Jensen-Shannon")
    axes[0].legend(fontsize=7, ncol=4)
    _time_axis(axes[1], iso_utc)
    fig.suptitle(f"Regime-share divergence from training, trailing {window} events")
    figures["divergence"] = _save(fig, out / "divergence.png", plt)

    live = sum(
        (dg.transition_matrix(s.regimes, k) * max(len(s.regimes) - 1, 0) for s in symbols.values()), np.zeros((k, k))
    )
    live = live / np.maximum(live.sum(1, keepdims=True), 1e-12)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.6), constrained_layout=True)
    for ax, mat, title in (
        (axes[0], np.asarray(manifest["baseline"]["transition_matrix"]), "training"),
        (axes[1], live, "live"),
    ):
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"{title} P(next | current)")
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xlabel("next regime")
        ax.set_ylabel("current regime")
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{mat[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if mat[i, j] < 0.5 else "black",
                )
    fig.colorbar(im, ax=list(axes), shrink=0.8)
    figures["transitions"] = _save(fig, out / "transitions.png", plt)

    fig, axes = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    for s in symbols.values():
        conf = s.proba[np.arange(len(s.regimes)), s.regimes]
        (line,) = axes[0].plot(s.times, conf, lw=0.6, label=s.symbol)
        axes[1].plot(s.times, s.ood, lw=0.6, color=line.get_color())
        for a in s.alarms:
            ax = axes[1] if a["stream"] == "ood" else axes[0]
            ax.axvline(a["bar_time"], color="red", alpha=0.5, lw=0.8)
    axes[1].axhline(ood_threshold, color="grey", ls="--", lw=0.8, label="OOD threshold")
    axes[0].set_ylabel("confidence")
    axes[1].set_ylabel("OOD score")
    axes[0].legend(fontsize=7, ncol=4)
    axes[1].legend(fontsize=7)
    _time_axis(axes[1], iso_utc)
    fig.suptitle("Confidence and OOD score; red lines: drift alarms (uncertainty/miss above, OOD below)")
    figures["confidence_ood"] = _save(fig, out / "confidence_ood.png", plt)
    return figures


def _time_axis(ax, iso_utc) -> None:
    ticks = ax.get_xticks()
    ax.set_xticks(ticks)
    ax.set_xticklabels([iso_utc(t)[:10] if t > 0 else "" for t in ticks], rotation=20, fontsize=7)


def _save(fig, path: Path, plt) -> Path:
    if not fig.get_constrained_layout():
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
