"""Configuration search: grid expansion, the composite score, ranking, outputs and resuming."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml
from research_helpers import csv_of, nested, run_cli, write_yaml

from trainer import scorecard
from trainer.search_spec import expand, load_search


def spec_file(tmp_path, grid: dict, base: dict | None = None, **extra):
    from fixtures_bundle import TINY

    doc = {"base": nested({**TINY, **(base or {})}), "output": str(tmp_path / "out"), "grid": grid, **extra}
    return write_yaml(tmp_path / "search.yaml", doc)


def test_expand_collapses_unused_styles_and_reports_invalid(tmp_path):
    path = spec_file(
        tmp_path,
        {
            "encoding_method": ["learnable", "sinusoidal"],
            "encoding_style": ["interleaved", "stacked"],
            "n_clusters": [1, 3],
        },
    )
    cands, invalid = expand(load_search(path))
    # learnable x {interleaved, stacked} is one model; n_clusters=1 is refused by the config validation
    assert [(c.params["encoding_method"], c.params["encoding_style"]) for c in cands] == [
        ("learnable", "-"),
        ("sinusoidal", "interleaved"),
        ("sinusoidal", "stacked"),
    ]
    assert len(invalid) == 4 and all("n_clusters" in bad["error"] for bad in invalid)
    assert all(c.config["clustering"]["n_clusters"] == 3 and c.config["encoder"]["d_model"] == 16 for c in cands)
    # ids depend on the resolved config only: a reordered grid finds the same candidates
    again = spec_file(
        tmp_path,
        {
            "n_clusters": [3],
            "encoding_style": ["stacked", "interleaved"],
            "encoding_method": ["sinusoidal", "learnable"],
        },
    )
    assert {c.id for c in expand(load_search(again))[0]} == {c.id for c in cands}


def test_search_file_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        load_search(write_yaml(tmp_path / "a.yaml", {"grid": {"stride": [1]}, "gird": {}}))
    with pytest.raises(ValueError, match="non-empty lists"):
        load_search(write_yaml(tmp_path / "b.yaml", {"grid": {"stride": []}}))
    with pytest.raises(ValueError, match="weights"):
        load_search(write_yaml(tmp_path / "c.yaml", {"grid": {"stride": [1]}, "score": {"weights": {"speed": 1}}}))


def test_composite_score_by_hand():
    m = {
        "n_clusters": 4,
        "silhouette": 0.3,
        "davies_bouldin": 1.0,
        "share_entropy": 0.9,
        "min_share": 0.2,
        "mean_duration_bars": 24.0,
        "validation_eta2": 0.05,
        "validation_dwell_ratio": 2.0,
        "validation_refit_stability": 0.625,
    }
    s = scorecard.score(m)
    assert s["separation"] == pytest.approx(0.5 * 0.3 + 0.5 / 2)
    assert s["balance"] == pytest.approx(0.5 * 0.9 + 0.5 * 0.8)
    assert s["persistence"] == pytest.approx(1 - math.exp(-1))
    assert s["informative"] == pytest.approx(1 - math.exp(-1))
    assert s["steadiness"] == pytest.approx(0.0)  # dwell doubled out of the fit span
    assert s["stability"] == pytest.approx(0.5)  # (0.625 - 1/4) / (3/4)
    assert scorecard.score({**m, "validation_dwell_ratio": 1.0})["steadiness"] == pytest.approx(1.0)
    w = scorecard.DEFAULT_WEIGHTS
    assert s["composite"] == pytest.approx(sum(w[c] * s[c] for c in w) / sum(w.values()))
    # negative silhouette and NaN Davies-Bouldin count as no separation; weights renormalise
    worse = scorecard.score(
        {**m, "silhouette": -0.2, "davies_bouldin": float("nan")},
        scorecard.ScoreSpec.from_dict({"weights": {c: (1 if c == "separation" else 0) for c in w}}),
    )
    assert worse["separation"] == 0.0 and worse["composite"] == 0.0
    assert scorecard.score({**m, "min_share": 0.01})["balance"] < s["balance"]


def test_rank_orders_by_composite_and_puts_failures_last():
    from trainer.search import rank

    base = {
        "n_clusters": 3,
        "silhouette": 0.2,
        "davies_bouldin": 1.5,
        "share_entropy": 0.9,
        "min_share": 0.2,
        "mean_duration_bars": 10.0,
    }
    recs = [
        {"id": "a", "status": "ok", "metrics": base},
        {"id": "b", "status": "failed", "metrics": None},
        {"id": "c", "status": "ok", "metrics": {**base, "silhouette": 0.5}},
    ]
    ranked = rank(recs, scorecard.ScoreSpec())
    assert [r["id"] for r in ranked] == ["c", "a", "b"] and [r["rank"] for r in ranked] == [1, 2, 3]
    assert ranked[-1]["score"] is None


@pytest.mark.slow
def test_tiny_grid_search_ranks_writes_best_config_and_resumes(tmp_path):
    from regimetry.synthetic import generate_bars
    from trainer.config import load_config

    data = csv_of(generate_bars(n_bars=1500, seed=3).bars, tmp_path / "bars.csv")
    path = spec_file(tmp_path, {"n_clusters": [2, 3]}, base={"data": str(data)}, workers=2, shortlist=1)
    res = run_cli(["search", "--config", str(path)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    rows = list(csv.DictReader(open(out / "ranking.csv")))
    assert [r["status"] for r in rows] == ["ok", "ok"] and {r["n_clusters"] for r in rows} == {"2", "3"}
    scores = [float(r["score_composite"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= scores[0] <= 1
    short = json.loads((out / "shortlist.json").read_text())
    assert len(short["shortlist"]) == 1 and short["shortlist"][0]["id"] == rows[0]["id"]
    best = load_config(out / "best_config.yaml")
    assert best.clustering.n_clusters == int(rows[0]["n_clusters"]) and best.data == str(data)
    assert yaml.safe_load((out / "best_config.yaml").read_text()) == short["shortlist"][0]["config"]

    records = {p.name: p.read_text() for p in (out / "candidates").glob("*.json")}
    assert len(records) == 2
    rerun = run_cli(["search", "--config", str(path)])
    assert rerun.exit_code == 0 and "trained 0, resumed 2" in rerun.output
    assert {p.name: p.read_text() for p in (out / "candidates").glob("*.json")} == records  # untouched

    # an interrupted search: one record missing -> only that candidate is trained again
    lost = out / "candidates" / f"{rows[1]['id']}.json"
    lost.unlink()
    third = run_cli(["search", "--config", str(path), "--workers", "1"])
    assert third.exit_code == 0 and "trained 1, resumed 1" in third.output
    # seeded: the same numbers again (up to float rounding: the first run used one TF thread per process)
    assert json.loads(lost.read_text())["metrics"] == pytest.approx(json.loads(records[lost.name])["metrics"], rel=1e-5)
