"""Report figures are real PNGs of a sensible size, and report.md links every one of them with the metrics."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_plots_from_arrays(tmp_path):
    from trainer import plots

    rng = np.random.default_rng(0)
    reg = np.repeat([0, 2, 1, 0, 2], 40)
    times = 1_700_000_000 + 3600 * np.arange(len(reg))
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(reg))))
    p = np.array([[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.3, 0.0, 0.7]])
    made = [
        plots.price_bands(times, close, reg, 3, tmp_path / "price.png"),
        plots.transition_heatmap(p, tmp_path / "tm.png"),
        plots.share_bars(np.array([0.4, 0.2, 0.4]), np.array([40.0, 40.0, 40.0]), tmp_path / "shares.png"),
        plots.embedding_map(rng.normal(size=(len(reg), 2)), reg, 3, "t-SNE", tmp_path / "map.png"),
        plots.transition_heatmap(p, tmp_path / "tm_named.png", ("calm", "normal up", "turbulent")),
        plots.share_bars(
            np.array([0.4, 0.2, 0.4]),
            np.array([40.0, 40.0, 40.0]),
            tmp_path / "shares_named.png",
            ("calm", "normal up", "turbulent"),
        ),
    ]
    assert plots.regime_label(1, ("calm", "normal up")) == "1 normal up" and plots.regime_label(1) == "regime 1"
    for path in made:
        w, h = png_size(path)
        assert 250 <= w <= 1400 and 200 <= h <= 700, (path.name, w, h)
        assert path.stat().st_size > 5_000  # something was drawn, not an empty canvas
    np.testing.assert_array_equal(plots.evenly(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(plots.evenly(3, 4), [0, 1, 2])


@pytest.mark.slow
def test_report_of_a_bundle(tiny_bundle, tmp_path):
    from trainer import report

    view = report.from_bundle(tiny_bundle)
    assert view.k == 3 and len(view.times) == len(view.regimes) == len(view.z) == len(view.close)
    assert np.all(np.diff(view.times) > 0)
    files = report.write_report(view, tmp_path / "rep", max_points=300, umap=False)
    assert set(files.figures) == {
        "embedding_tsne",
        "price_regimes",
        "transition_matrix",
        "regime_shares",
        "regime_filter_equity",
    }
    text = files.report.read_text()
    for path in files.figures.values():
        png_size(path)
        assert f"]({path.name})" in text
    assert (
        "| silhouette |" in text and "| min_share |" in text and text.count("\n| 2 |") == 2
    )  # regimes and worth tables
    # regimes are named as the worker names them: from the bundle's training profiles
    from regimetry.bundle import load_bundle

    names = load_bundle(tiny_bundle).regime_names
    assert view.names == names and "| regime | name |" in text
    for i, name in enumerate(names):
        assert f"\n| {i} | {name} |" in text
    # the report's metric table is computed from the same regimes the worker would emit
    table = report.metrics(view)
    from regimetry import diagnostics as dg

    assert table["min_share"] == pytest.approx(dg.shares(view.regimes, 3).min())
    # what a regime is worth, on the held-out split only (bars after the bundle's last training window)
    assert "## What a regime is worth" in text and "the held-out split" in text
    assert "| regime filter |" in text and "| buy-and-hold |" in text


def test_regime_worth_by_hand():
    from trainer.regime_worth import max_drawdown, regime_worth

    times = np.arange(6) * 86400 * 365.25 / 5  # 5 bars per year
    returns = np.array([0.0, 0.10, -0.20, 0.05, 0.05, -0.10])
    regimes = np.array([0, 1, 1, 0, 0, 0])  # regime 1 = the most volatile of k = 2: out of the market there
    w = regime_worth(times, returns, regimes, 2, cost_bps=100.0)
    # decisions at bars 0..4 act on returns of bars 1..5: positions 1, 0, 0, 1, 1
    np.testing.assert_array_equal(w.position, [1, 0, 0, 1, 1])
    gross = np.array([0.10, 0.0, 0.0, 0.05, -0.10])
    turnover = np.array([1, 1, 0, 1, 0])
    np.testing.assert_allclose(np.log(w.equity_strategy[1:]) - np.log(w.equity_strategy[:-1]), gross - 0.01 * turnover)
    assert w.strategy["turnover_units"] == 3 and w.strategy["time_in_market"] == pytest.approx(0.6)
    assert w.per_regime[1]["bars"] == 2 and w.per_regime[1]["mean_return"] == pytest.approx((-0.20 + 0.05) / 2)
    assert w.per_year == pytest.approx(5.0)
    assert max_drawdown(np.array([0.1, -0.2, 0.05])) == pytest.approx(1 - np.exp(-0.2))
