"""Regime names from training profiles (regimetry/naming.py): volatility rank, drift suffix, uniqueness, and
the compute-at-load path for bundles whose manifest has no names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regimetry.naming import drift_suffix, make_unique, manifest_names, regime_names, volatility_ladder

ROOT = Path(__file__).resolve().parents[1]


def prof(i: int, vol: float, mean: float = 0.0, n: int | None = 1000, share: float = 0.25) -> dict:
    p = {
        "id": i,
        "share": share,
        "mean_duration": 10.0,
        "stickiness": 0.9,
        "row_entropy": 0.1,
        "mean_return": mean,
        "volatility": vol,
    }
    if n is not None:
        p["n_bars"] = n
    return p


@pytest.mark.parametrize(
    "k, want",
    [
        (2, ["calm", "turbulent"]),
        (3, ["calm", "normal", "turbulent"]),
        (4, ["calm", "normal", "turbulent", "crisis"]),
        (5, ["calm", "quiet", "normal", "turbulent", "crisis"]),
        (6, ["calm", "quiet", "normal 1", "normal 2", "turbulent", "crisis"]),
    ],
)
def test_names_follow_the_volatility_rank_not_the_id(k, want):
    vols = [1.0 + (i + 1) % k for i in range(k)]  # rotated: the most volatile is id k - 2, the calmest id k - 1
    names = regime_names([prof(i, v) for i, v in enumerate(vols)])
    rank = sorted(range(k), key=lambda i: vols[i])
    assert rank[0] == k - 1 and [names[i] for i in rank] == want
    assert volatility_ladder(k) == want and len(set(names)) == k


def test_profiles_in_any_order_are_named_in_id_order():
    ps = [prof(2, 3.0), prof(0, 1.0), prof(1, 2.0)]
    assert regime_names(ps) == ["calm", "normal", "turbulent"]


def test_drift_suffix_only_where_the_mean_is_significant():
    # t = |mean| / (vol / sqrt(n)): vol 0.01, n 400 -> se 5e-4; the threshold is t > 2, i.e. |mean| > 1e-3
    assert drift_suffix(1.2e-3, 0.01, 400) == " up"
    assert drift_suffix(-1.2e-3, 0.01, 400) == " down"
    assert drift_suffix(0.9e-3, 0.01, 400) == ""
    assert drift_suffix(-0.9e-3, 0.01, 400) == ""
    assert drift_suffix(1.2e-3, 0.01, 100) == ""  # same mean, fewer bars: not significant
    assert drift_suffix(1.2e-3, 0.01, None) == ""  # no count (older bundle): never suffixed
    assert drift_suffix(1e-9, 0.0, 10) == " up"  # constant returns: any non-zero mean is significant
    assert drift_suffix(0.0, 0.0, 10) == "" and drift_suffix(5.0, 1.0, 1) == ""
    names = regime_names([prof(0, 0.01, 2e-3, 400), prof(1, 0.02, -5e-4, 400), prof(2, 0.03, -3.1e-3, 400)])
    assert names == ["calm up", "normal", "turbulent down"]


def test_unseen_regimes_and_collisions_get_the_id():
    ps = [prof(0, 0.0, n=0, share=0.0), prof(1, 0.02), prof(2, 0.0, n=0, share=0.0), prof(3, 0.01)]
    assert regime_names(ps) == ["unseen 0", "turbulent", "unseen 2", "calm"]
    # without n_bars, share tells seen from unseen
    assert regime_names([prof(0, 0.0, n=None, share=0.0), prof(1, 0.01, n=None)]) == ["unseen", "normal"]
    assert make_unique(["calm", "calm", "turbulent"], [0, 1, 2]) == ["calm 0", "calm 1", "turbulent"]
    out = make_unique(["a", "a", "a 1"], [1, 2, 3])  # appending the id may collide again: still unique
    assert len(set(out)) == 3 and out[1] == "a 2"


def test_manifest_names_use_stored_names_else_compute_them():
    ps = [prof(0, 0.01, 2e-3, 400), prof(1, 0.03), prof(2, 0.02)]
    m = {"n_clusters": 3, "regime_profiles": ps}
    assert manifest_names(m) == ("calm up", "turbulent", "normal")
    stored = {"n_clusters": 3, "regime_profiles": [{**p, "name": f"x{p['id']}"} for p in ps]}
    assert manifest_names(stored) == ("x0", "x1", "x2")
    dup = {"n_clusters": 3, "regime_profiles": [{**p, "name": "same"} for p in ps]}
    assert manifest_names(dup) == ("same 0", "same 1", "same 2")
    partial = {"n_clusters": 3, "regime_profiles": [{**ps[0], "name": "x"}, ps[1], ps[2]]}
    assert manifest_names(partial) == ("calm up", "turbulent", "normal")  # not all named: all computed
    missing = {"n_clusters": 3, "regime_profiles": ps[:2]}
    assert manifest_names(missing) == ("calm up", "turbulent", "regime 2")


def test_committed_bundle_names_equal_what_load_would_compute():
    """The committed manifest carries names (and n_bars) added after export: the manifest is not in its own
    `files` list and no `hashes` entry covers regime_profiles, so the bundle still verifies. Its stored
    names must be exactly what the compute-at-load rule gives, and a copy without them gets the same names."""
    from regimetry.bundle import load_bundle

    b = load_bundle(ROOT / "exported_models")
    profiles = b.manifest["regime_profiles"]
    assert all("name" in p and "n_bars" in p for p in profiles)
    assert [p["name"] for p in profiles] == regime_names(profiles)
    assert b.regime_names == tuple(p["name"] for p in profiles)
    bare = json.loads(json.dumps(b.manifest))
    for p in bare["regime_profiles"]:
        del p["name"]
    assert manifest_names(bare) == b.regime_names
    # n_bars agrees with the shares and the bundle's own regimes.csv training rows
    rows = (b.path / "regimes.csv").read_text().splitlines()[1:]
    train = [int(r.split(",")[2]) for r in rows if r.endswith(",train")]
    assert [p["n_bars"] for p in profiles] == [train.count(k) for k in range(b.n_clusters)]
    assert all(p["share"] == pytest.approx(p["n_bars"] / len(train)) for p in profiles)
