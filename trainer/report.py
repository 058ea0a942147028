"""`regimetry report`: figures and a Markdown report describing the regimes of one configuration.

The regimes come either from an exported bundle run with ONNX Runtime over some bars (exactly what the live
worker would emit, bar by bar) or from a training config trained without export (a search candidate before
anyone commits to it). Both reduce to a RegimeView: times, prices, embeddings and regime ids; everything in
the report is computed from that view alone, except the regime names, which come from the training profiles
(the bundle's manifest, or the config's own training windows) so a report names a regime as the worker does.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from regimetry import diagnostics as dg
from regimetry.naming import regime_names
from trainer.separation import separation

NAMES_NOTE = (
    "Names (regimetry/naming.py): rank of the regime's window volatility on its training bars, calmest first "
    "(calm, normal, turbulent, crisis for 4 regimes), with ' up' / ' down' where the mean log return of "
    "those bars is significant (|mean| > 2 x volatility / sqrt(bars))."
)


@dataclass
class RegimeView:
    title: str
    source: str
    times: np.ndarray  # epoch seconds of each labelled bar (a window's last bar)
    close: np.ndarray
    returns: np.ndarray  # log return of that bar
    regimes: np.ndarray
    z: np.ndarray  # embeddings in clustering geometry
    k: int
    bars_per_step: int = 1  # stride between consecutive labelled bars
    info: dict = field(default_factory=dict)
    names: tuple[str, ...] | None = None  # descriptive name per id from the training profiles (regimetry/naming.py)
    # bars after this time were not trained on (the held-out split); None: none of the view's bars were
    held_out_after: int | None = None


def log_returns(close: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.diff(np.log(close))])


def from_bundle(bundle: str | Path, data: str | None = None) -> RegimeView:
    """Run a bundle over bars (default: the data it was trained on) as the worker would."""
    from regimetry.data import resolve_data
    from regimetry.inference import RegimeModel

    model = RegimeModel(bundle)
    m = model.bundle.manifest
    source = data or m["data"]["source"]
    series = resolve_data(source)
    r = model.run_series(series.values)
    idx = r.offset + np.arange(len(r.regime))
    close = series.values[:, 3]
    return RegimeView(
        f"{m['model_version']} on {series.symbol}",
        source,
        series.times[idx],
        close[idx],
        log_returns(close)[idx],
        r.regime,
        r.z,
        model.bundle.n_clusters,
        1,
        {"model_version": m["model_version"], "bundle": str(model.bundle.path)},
        model.bundle.regime_names,
        int(m["data"]["train_end"]) if source == m["data"]["source"] else None,
    )


def from_config(cfg) -> RegimeView:
    """Train a TrainConfig without exporting it and view its regimes on its own training data."""
    from trainer.pipeline import load_training_data, train

    series, planted = load_training_data(cfg)
    result = train(cfg, series=series, planted=planted, write_bundle=False)
    idx = np.searchsorted(series.times, result.end_time)
    close = series.values[:, 3]
    returns, k = log_returns(close)[idx], cfg.clustering.n_clusters
    names = tuple(result.summary["regime_names"])  # exactly what an export of this config would write
    return RegimeView(
        f"{cfg.name} (config, not exported) on {series.symbol}",
        cfg.data,
        result.end_time,
        close[idx],
        returns,
        result.regimes,
        result.z,
        k,
        cfg.stride,
        {"config_name": cfg.name},
        names,
        int(result.end_time[int(result.summary["data"]["n_train"]) - 1]),
    )


def metrics(view: RegimeView, seed: int = 0) -> dict:
    """The report's metric table (durations in bars)."""
    k, reg = view.k, view.regimes
    p = dg.transition_matrix(reg, k)
    return {
        "labelled bars": int(len(reg)),
        **separation(view.z, reg, seed=seed),
        **dg.balance(reg, k),
        "stickiness": dg.stickiness(p),
        "mean duration (bars)": dg.mean_duration(reg) * view.bars_per_step,
        "entropy rate (nats/step)": dg.entropy_rate(p),
        "stationary entropy (nats)": dg.stationary_entropy(p),
    }


def umap_available() -> bool:
    return importlib.util.find_spec("umap") is not None


@dataclass
class ReportFiles:
    report: Path
    figures: dict  # name -> PNG path


def worth_of(view: RegimeView, cost_bps: float = 2.0):
    """trainer/regime_worth.py on the view's held-out bars (all of them when none was trained on); with the
    split's description. None when fewer than 50 bars are left to judge."""
    from trainer.regime_worth import regime_worth

    keep = np.ones(len(view.times), bool) if view.held_out_after is None else view.times > view.held_out_after
    if keep.sum() < 50:
        return None, ""
    what = (
        "all bars of this report (not the data the model was trained on)"
        if view.held_out_after is None
        else f"the held-out split ({int(keep.sum())} bars after the last training window)"
    )
    return regime_worth(view.times[keep], view.returns[keep], view.regimes[keep], view.k, cost_bps), what


def write_report(
    view: RegimeView,
    out_dir: str | Path,
    max_points: int = 1500,
    seed: int = 0,
    umap: bool | None = None,
    cost_bps: float = 2.0,
) -> ReportFiles:
    """All figures plus report.md linking them; UMAP is drawn when umap-learn is installed (or umap=True)."""
    from trainer import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k, reg = view.k, view.regimes
    p = dg.transition_matrix(reg, k)
    figs: dict[str, Path] = {}
    profiles = dg.regime_profiles(reg, k, view.returns)
    names = view.names or tuple(regime_names(profiles))  # without training names: named on the view's own bars
    sample = plots.evenly(len(reg), max_points)
    methods = ["t-SNE"] + (["UMAP"] if (umap_available() if umap is None else umap) else [])
    for method in methods:
        xy = plots.project_2d(view.z[sample].astype(np.float64), method, seed)
        name = "embedding_" + method.lower().replace("-", "")
        figs[name] = plots.embedding_map(xy, reg[sample], k, method, out / f"{name}.png", names)
    figs["price_regimes"] = plots.price_bands(
        view.times, view.close, reg, k, out / "price_regimes.png", f"{view.title}: close price with regime bands", names
    )
    figs["transition_matrix"] = plots.transition_heatmap(p, out / "transition_matrix.png", names)
    durations = dg.mean_durations(reg, k) * view.bars_per_step
    figs["regime_shares"] = plots.share_bars(dg.shares(reg, k), durations, out / "regime_shares.png", names)
    worth, split = worth_of(view, cost_bps)
    if worth is not None:
        keep = np.ones(len(view.times), bool) if view.held_out_after is None else view.times > view.held_out_after
        figs["regime_filter_equity"] = plots.equity_bands(
            view.times[keep], worth, view.regimes[keep], k, out / "regime_filter_equity.png", names
        )
    table = metrics(view, seed)
    report = out / "report.md"
    report.write_text(markdown(view, table, profiles, figs, out, names) + worth_markdown(worth, split, names))
    return ReportFiles(report, figs)


def markdown(
    view: RegimeView, table: dict, profiles: list[dict], figs: dict, out: Path, names: tuple[str, ...] | None = None
) -> str:
    from regimetry.data import iso_utc as iso

    names = names or view.names or tuple(regime_names(profiles))
    lines = [
        f"# Regime report: {view.title}",
        "",
        f"Data: `{view.source}`, {len(view.regimes)} labelled bars from {iso(view.times[0])} to "
        f"{iso(view.times[-1])}; {view.k} regimes.",
    ]
    lines += [f"{k}: `{v}`" for k, v in view.info.items()]
    lines += ["", "## Metrics", "", "| metric | value |", "| --- | ---: |"]
    lines += [f"| {name} | {v:.4f} |" if isinstance(v, float) else f"| {name} | {v} |" for name, v in table.items()]
    lines += [
        "",
        "Silhouette: higher is better (-1..1). Davies-Bouldin: lower is better. Share entropy: 1 = "
        "perfectly balanced. Stickiness: mean self-transition probability.",
        "",
        "## Regimes",
        "",
        "| regime | name | share | mean duration (bars) | stickiness | bars | mean log return | volatility |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in profiles:
        lines.append(
            f"| {p['id']} | {names[p['id']] if p['id'] < len(names) else ''} | {p['share']:.3f} | "
            f"{p['mean_duration'] * view.bars_per_step:.1f} | {p['stickiness']:.3f} | {p.get('n_bars', '')} | "
            f"{p['mean_return']:.2e} | {p['volatility']:.2e} |"
        )
    source = (
        "They come from the training profiles, as the worker names its events; the other columns are of "
        "the bars of this report."
        if view.names
        else "No training profiles: named on the bars of this report."
    )
    lines += ["", f"{NAMES_NOTE} {source}"]
    lines += ["", "## Figures", ""]
    for name, path in figs.items():
        rel = Path(path).relative_to(out)
        lines += [f"### {name.replace('_', ' ')}", "", f"![{name}]({rel})", ""]
    return "\n".join(lines) + "\n"


def worth_markdown(worth, split: str, names: tuple[str, ...] | None) -> str:
    """The report's "What a regime is worth" section (empty when there were too few bars to judge)."""
    if worth is None:
        return ""

    def pct(v) -> str:
        return "-" if v is None else f"{100 * v:.2f} %"

    def num(v) -> str:
        return "-" if v is None else f"{v:.2f}"

    lines = [
        "",
        "## What a regime is worth",
        "",
        f"On {split}. The regime labelled at bar t is acted on from bar t+1: each row pairs a label with the next "
        f"bar's log return. Annualised with {worth.per_year:.0f} bars per year (the data's own spacing).",
        "",
        "| regime | name | bars | next-bar mean | volatility | Sharpe (ann.) | max drawdown |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in worth.per_regime:
        i = r["regime"]
        lines.append(
            f"| {i} | {names[i] if names and i < len(names) else ''} | {r['bars']} | {r['mean_return']:.2e} | "
            f"{r['volatility']:.2e} | {num(r['sharpe'])} | {pct(r['max_drawdown'])} |"
        )
    s, h = worth.strategy, worth.buy_and_hold
    lines += [
        "",
        f"**Regime filter** (out of the market while regime {worth.excluded_regime} is in force, long otherwise; "
        f"{worth.cost_bps:g} bp per unit of turnover) against **buy-and-hold**:",
        "",
        "| | annual return | annual volatility | Sharpe | max drawdown | time in market | turnover | costs paid |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| regime filter | {pct(s['annual_return'])} | {pct(s['annual_volatility'])} | {num(s['sharpe'])} | "
        f"{pct(s['max_drawdown'])} | {pct(s['time_in_market'])} | {s['turnover_units']:.0f} "
        f"({num(s['trades_per_year'])}/year) | {pct(s['costs_paid'])} |",
        f"| buy-and-hold | {pct(h['annual_return'])} | {pct(h['annual_volatility'])} | {num(h['sharpe'])} | "
        f"{pct(h['max_drawdown'])} | 100.00 % | 1 | {pct(h['costs_paid'])} |",
        "",
        "Log returns, no leverage, no financing or borrowing costs; a single split, so the difference between the "
        "two rows carries the sampling error of one period.",
        "",
    ]
    return "\n".join(lines) + "\n"
