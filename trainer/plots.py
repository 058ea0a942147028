"""The report's figures, one function per PNG, each taking plain arrays (no model, no file format knowledge).

matplotlib runs on the Agg backend (no display needed, safe in cron and CI). Regime k has the same colour in
every figure (tab10), so a reader can carry a colour from the embedding map to the price chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

DPI = 110


def regime_colour(k: int):
    return plt.get_cmap("tab10")(k % 10)


def regime_label(k: int, names: Sequence[str] | None = None) -> str:
    """ "regime k", or "k <name>" with the bundle's descriptive names (regimetry/naming.py)."""
    from regimetry.naming import label

    return label(k, names)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def evenly(n: int, cap: int) -> np.ndarray:
    """At most ``cap`` evenly spaced indices: a deterministic, time-spread subsample."""
    return np.arange(n) if n <= cap else np.linspace(0, n - 1, cap).round().astype(np.int64)


def project_2d(z: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """2-D map of embeddings: 't-SNE' (scikit-learn) or 'UMAP' (umap-learn, optional extra)."""
    if method == "UMAP":
        import umap

        return umap.UMAP(n_components=2, n_neighbors=min(15, len(z) - 1), random_state=seed).fit_transform(z)
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, (len(z) - 1) / 3.0))
    return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(z)


def embedding_map(
    xy: np.ndarray, regimes: np.ndarray, k: int, method: str, path: Path, names: Sequence[str] | None = None
) -> Path:
    """Scatter of a 2-D projection of the embeddings, one colour per regime."""
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    for r in range(k):
        sel = regimes == r
        if sel.any():
            ax.scatter(
                xy[sel, 0],
                xy[sel, 1],
                s=6,
                alpha=0.7,
                color=regime_colour(r),
                label=regime_label(r, names),
                linewidths=0,
            )
    ax.set_title(f"{method} of window embeddings ({len(xy)} windows), coloured by regime")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=8, loc="best")
    return _save(fig, path)


def regime_bands(ax, t, regimes, k: int, bottom: float, top: float, names=None, alpha: float = 0.28) -> None:
    """A background band in the colour of the regime in force at each bar (t: matplotlib date numbers)."""
    for r in range(k):
        m = regimes == r
        # fill_between colours the segment [i, i+1] only if both ends are selected: add each run's next bar
        # so the bands touch instead of leaving a white gap at every change
        where = m | np.concatenate([[False], m[:-1]])
        ax.fill_between(
            t,
            bottom,
            top,
            where=where,
            step="post",
            color=regime_colour(r),
            alpha=alpha,
            linewidth=0,
            label=regime_label(r, names),
        )


def price_bands(
    times: np.ndarray,
    close: np.ndarray,
    regimes: np.ndarray,
    k: int,
    path: Path,
    title: str = "",
    names: Sequence[str] | None = None,
) -> Path:
    """Close price with a background band in the colour of the regime in force at each bar."""
    t = mdates.date2num(np.asarray(times, dtype="datetime64[s]"))
    fig, ax = plt.subplots(figsize=(11, 4))
    lo, hi = float(np.min(close)), float(np.max(close))
    pad = 0.03 * (hi - lo or 1.0)
    regime_bands(ax, t, regimes, k, lo - pad, hi + pad, names, alpha=0.28)
    ax.plot(t, close, color="black", linewidth=0.7)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlim(t[0], t[-1])
    ax.xaxis.set_major_locator(mdates.AutoDateLocator())
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    ax.set_ylabel("close")
    ax.set_title(title or "Price with regime bands")
    ax.legend(ncol=k, fontsize=8, loc="upper left")
    return _save(fig, path)


def transition_heatmap(p: np.ndarray, path: Path, names: Sequence[str] | None = None) -> Path:
    """Transition matrix P[i, j] = P(next regime j | regime i), annotated."""
    k = len(p)
    fig, ax = plt.subplots(figsize=(1.1 * k + 2.4, 1.0 * k + 1.6))
    im = ax.imshow(p, cmap="viridis", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{p[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=9,
                color="black" if p[i, j] > 0.6 else "white",
            )
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    if names:
        ax.set_xticklabels([regime_label(r, names) for r in range(k)], rotation=30, ha="right", fontsize=8)
        ax.set_yticklabels([regime_label(r, names) for r in range(k)], fontsize=8)
    ax.set_xlabel("next regime")
    ax.set_ylabel("regime")
    ax.set_title("Transition matrix")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def share_bars(shares: np.ndarray, durations: np.ndarray, path: Path, names: Sequence[str] | None = None) -> Path:
    """Share of bars per regime, each bar annotated with the regime's mean duration."""
    k = len(shares)
    fig, ax = plt.subplots(figsize=(1.0 * k + 3.0, 3.6))
    bars = ax.bar(range(k), shares, color=[regime_colour(r) for r in range(k)])
    for b, d in zip(bars, durations):
        ax.annotate(
            f"{b.get_height():.0%}\n{d:.0f} bars",
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.axhline(1.0 / k, color="grey", linestyle="--", linewidth=0.8, label="balanced (1/K)")
    ax.set_xticks(range(k))
    ax.set_xticklabels([regime_label(r, names) for r in range(k)], fontsize=8 if names else None)
    ax.set_ylim(0, max(float(np.max(shares)) * 1.3, 1.0 / k * 1.3))
    ax.set_ylabel("share of bars")
    ax.set_title("Regime shares (label: share, mean duration)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def equity_bands(times, worth, regimes, k: int, path: Path, names: Sequence[str] | None = None) -> Path:
    """The regime filter's and buy-and-hold's equity curves (trainer/regime_worth.py) over regime bands."""
    t = mdates.date2num(np.asarray(times, dtype="datetime64[s]"))
    fig, ax = plt.subplots(figsize=(11, 4))
    lo = float(min(worth.equity_strategy.min(), worth.equity_hold.min()))
    hi = float(max(worth.equity_strategy.max(), worth.equity_hold.max()))
    pad = 0.03 * (hi - lo or 1.0)
    regime_bands(ax, t, regimes, k, lo - pad, hi + pad, names, alpha=0.22)
    ax.plot(t, worth.equity_hold, color="black", linewidth=0.9, label="buy-and-hold")
    ax.plot(
        t,
        worth.equity_strategy,
        color="tab:red",
        linewidth=1.1,
        label=f"regime filter (out in {regime_label(worth.excluded_regime, names)}, {worth.cost_bps:g} bp)",
    )
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlim(t[0], t[-1])
    ax.xaxis.set_major_locator(mdates.AutoDateLocator())
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    ax.set_ylabel("equity (start = 1)")
    ax.set_title("Regime filter vs buy-and-hold (label at bar t acted on from bar t+1)")
    ax.legend(ncol=3, fontsize=7, loc="upper left")
    return _save(fig, path)
