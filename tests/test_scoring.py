"""Forecast scoring (regimetry/scoring.py) and the flat-next baseline (regimetry/flat_next.py): hand-computed
figures, no training, no TensorFlow."""

import numpy as np
import pytest
from helpers import run_blocked

from regimetry.evaluation import parse_when
from regimetry.features import FeatureSpec, Scaler, compute_features, history_needed, scaled_windows
from regimetry.flat_next import flat_bar_histories, flat_next_windows, next_window_regimes
from regimetry.regimes import JumpDecoder, RegimeSpace
from regimetry.scoring import (
    adjusted_rand_index,
    change_detection,
    classification_scores,
    confusion_matrix,
    macro_f1,
    next_regime_report,
    per_class_f1,
)
from regimetry.synthetic import generate_bars

STICKY = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7]])


# -- confusion matrix and F1 -------------------------------------------------------------------------------
def test_confusion_and_f1_by_hand():
    true = np.array([0, 0, 1, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0, 2])
    c = confusion_matrix(true, pred, 3)
    assert c.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]  # rows true, columns predicted
    # F1_k = 2 TP / (row sum + column sum): 2/4, 4/5, 4/5
    assert np.allclose(per_class_f1(c), [0.5, 0.8, 0.8])
    s = classification_scores(pred, true, 3)
    assert s["n"] == 7 and s["accuracy"] == pytest.approx(5 / 7)
    assert s["macro_f1"] == pytest.approx(0.7) and s["absent_regimes"] == []
    assert s["confusion"] == c.tolist()


def test_f1_matches_scikit_learn_when_every_regime_occurs():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    true, pred = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    assert np.array_equal(confusion_matrix(true, pred, 4), metrics.confusion_matrix(true, pred, labels=range(4)))
    assert macro_f1(true, pred, 4) == pytest.approx(metrics.f1_score(true, pred, average="macro"))


def test_absent_regime_is_named_and_left_out_of_macro_f1():
    true = np.array([0, 0, 1, 1])
    pred = np.array([0, 3, 1, 1])  # regime 3 is predicted but never true; regime 2 never appears
    s = classification_scores(pred, true, 4)
    assert s["absent_regimes"] == [2, 3]
    assert s["per_class_f1"][2] is None and s["per_class_f1"][3] is None
    # F1_0 = 2*1 / (2 + 1) = 2/3 (the 3-prediction is a miss of regime 0), F1_1 = 1: mean over {0, 1} only
    assert s["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)
    rep = next_regime_report(np.array([0, 0, 1, 1]), true, pred, np.full((4, 4), 0.25), 4)
    assert rep["absent_regimes"]["all_steps"] == [2, 3]
    assert rep["all_steps"]["forecaster"]["macro_f1"] == pytest.approx(5 / 6)
    assert any("never occur" in n and "2, 3" in n for n in rep["notes"])


def test_empty_split():
    s = classification_scores(np.zeros(0, int), np.zeros(0, int), 3)
    assert s["n"] == 0 and s["accuracy"] is None and s["macro_f1"] is None


# -- change detection --------------------------------------------------------------------------------------
def test_change_detection_precision_recall():
    current = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    actual = np.array([0, 1, 0, 1, 2, 2, 0, 2])  # changes at steps 1, 4, 6
    pred = np.array([1, 1, 0, 1, 0, 2, 0, 1])  # calls changes at 0, 1, 4, 6, 7; right at 1 and 6
    cd = change_detection(current, actual, pred)
    assert (cd["actual_changes"], cd["predicted_changes"], cd["true_positives"]) == (3, 5, 2)
    assert (cd["false_alarms"], cd["wrong_regime"]) == (2, 1)  # steps 0, 7; step 4 (said 0, was 2)
    assert cd["precision"] == pytest.approx(2 / 5) and cd["recall"] == pytest.approx(2 / 3)
    assert cd["f1"] == pytest.approx(2 * 0.4 * (2 / 3) / (0.4 + 2 / 3)) and cd["notes"] == []


def test_change_detection_undefined_is_zero_with_a_note():
    current = np.array([0, 0, 1])
    cd = change_detection(current, np.array([1, 0, 1]), current)  # persistence never calls a change
    assert cd["precision"] == cd["recall"] == cd["f1"] == 0.0 and cd["recall"] == 0.0
    assert any("precision undefined" in n for n in cd["notes"])
    cd = change_detection(current, current, np.array([1, 0, 1]))  # no actual change at all
    assert cd["recall"] == 0.0 and any("recall undefined" in n for n in cd["notes"])


# -- the report and its verdict ----------------------------------------------------------------------------
def _sequence():
    """A sticky regime path with six changes; current = path[:-1], actual_next = path[1:]."""
    path = np.array([0] * 10 + [1] * 8 + [2] * 9 + [0] * 7 + [1] * 10 + [2] * 6 + [0] * 5)
    return path[:-1], path[1:]


def test_forecaster_loses_to_flat_next_on_change_f1():
    cur, nxt = _sequence()
    rep = next_regime_report(cur, nxt, cur.copy(), STICKY, 3, flat_next=nxt.copy())
    assert rep["candidates"] == ["forecaster", "persistence", "markov", "flat_next"]
    assert set(rep["change_detection"]) == set(rep["all_steps"]) == set(rep["change_steps"]) == set(rep["candidates"])
    assert rep["change_detection"]["flat_next"]["f1"] == 1.0
    assert rep["forecaster_beats_baselines"] is False
    v = rep["verdict"]
    assert v.startswith("forecaster does NOT beat the baselines")
    assert "loses to flat_next on change-step F1 (0.000 vs 1.000)" in v
    assert "ties with persistence on change-step F1" in v and "loses to flat_next on macro-F1" in v
    assert rep["comparisons"]["flat_next"]["change_f1"]["outcome"] == "loses"
    assert rep["comparisons"]["persistence"]["macro_f1"]["outcome"] == "ties"


def test_forecaster_loses_on_macro_f1_only():
    cur, nxt = _sequence()
    pred = nxt.copy()  # every change called right ...
    alarms = np.flatnonzero(cur == nxt)[::3]
    pred[alarms] = (cur[alarms] + 1) % 3  # ... but many false alarms
    rep = next_regime_report(cur, nxt, pred, STICKY, 3)
    cd = rep["change_detection"]["forecaster"]
    assert cd["recall"] == 1.0 and 0 < cd["precision"] < 1
    assert rep["comparisons"]["persistence"]["change_f1"]["outcome"] == "beats"
    assert rep["comparisons"]["persistence"]["macro_f1"]["outcome"] == "loses"
    assert rep["forecaster_beats_baselines"] is False
    assert "loses to persistence on macro-F1" in rep["verdict"] and "loses to markov on macro-F1" in rep["verdict"]
    assert "change-step F1" not in rep["verdict"].split(":", 1)[1]
    assert "flat_next baseline not computed" in rep["verdict"]
    assert set(rep["all_steps"]) == {"forecaster", "persistence", "markov"}  # no flat_next given, none reported


def test_forecaster_beating_every_baseline():
    cur, nxt = _sequence()
    rep = next_regime_report(cur, nxt, nxt.copy(), STICKY, 3, flat_next=cur.copy())
    assert rep["forecaster_beats_baselines"] is True
    assert rep["verdict"].startswith("forecaster beats every baseline (persistence, markov, flat_next)")
    for key in (
        "all_steps",
        "change_steps",
        "change_detection",
        "n_classes",
        "markov_equals_persistence",
        "verdict",
        "comparisons",
        "notes",
    ):
        assert key in rep
    a = rep["all_steps"]["forecaster"]
    assert {"n", "accuracy", "macro_f1", "confusion"} <= set(a) and a["accuracy"] == 1.0


def test_markov_equal_to_persistence_is_flagged():
    cur, nxt = _sequence()
    rep = next_regime_report(cur, nxt, nxt, STICKY, 3)
    assert rep["markov_sticky"] and rep["markov_equals_persistence"]
    assert any("markov equals persistence" in n for n in rep["notes"])
    assert rep["all_steps"]["markov"] == rep["all_steps"]["persistence"]
    loose = STICKY.copy()
    loose[1] = [0.1, 0.3, 0.6]  # from regime 1 the chain expects 2
    rep = next_regime_report(cur, nxt, nxt, loose, 3)
    assert not rep["markov_sticky"] and not rep["markov_equals_persistence"]


# -- adjusted Rand index, times ----------------------------------------------------------------------------
def test_adjusted_rand_index():
    assert adjusted_rand_index([0, 0, 1, 1], [5, 5, 3, 3]) == 1.0  # a relabelling
    # contingency [[2, 0], [1, 1]]: index 1, expected (2 * 3) / 6 = 1, max 2.5 -> (1 - 1) / (2.5 - 1) = 0
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.0)
    # [[2, 1, 0], [0, 1, 2]]: index 2, sums C(3) + C(3) = 6 and 1 + 1 + 1 = 3, C(6) = 15
    assert adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(
        (2 - (6 * 3 / 15)) / ((6 + 3) / 2 - 6 * 3 / 15)
    )
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 3, 400), rng.integers(0, 4, 400)
    b[:200] = a[:200]
    assert adjusted_rand_index(a, b) == pytest.approx(metrics.adjusted_rand_score(a, b))


def test_parse_when():
    assert parse_when("2017-10-01") == 1506816000
    assert parse_when("2017-10-01", end=True) == 1506816000 + 86399  # a bare end date covers its day
    assert parse_when("2017-10-01T09:00Z") == parse_when("2017-10-01T10:00+01:00") == 1506848400
    assert parse_when("1506848400") == parse_when(1506848400) == 1506848400
    assert parse_when(None) is None
    with pytest.raises(ValueError, match="not an ISO date"):
        parse_when("yesterday")


# -- flat-next ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bars():
    return generate_bars(n_bars=400, seed=5).bars.values


def test_flat_bar_histories_layout(bars):
    h = 50
    ends = np.array([60, 100, 399])
    hist = flat_bar_histories(bars, ends, h)
    assert hist.shape == (3, h, 5)
    for row, e in zip(hist, ends):
        assert np.array_equal(row[:-1], bars[e - h + 2 : e + 1])
        c, v = bars[e, 3], bars[e, 4]
        assert np.array_equal(row[-1], [c, c, c, c, v])
    two = flat_bar_histories(bars, ends, h, n_flat=2)
    assert np.array_equal(two[:, -2], two[:, -1]) and np.array_equal(two[:, :-2], hist[:, 1:-1])
    with pytest.raises(ValueError, match="end_index"):
        flat_bar_histories(bars, np.array([h - 3]), h)


def test_flat_next_windows_equal_a_hand_extended_history(bars):
    spec, w = FeatureSpec(), 12
    scaler = Scaler.fit(compute_features(bars[:300], spec))
    h = history_needed(spec, w)
    ends = np.array([h - 2, 150, 222, 399])  # the first needs exactly h - 1 real bars
    got = flat_next_windows(bars, ends, spec, scaler, w, block=3)
    assert got.shape == (4, w, spec.n_features) and got.dtype == np.float32
    for g, e in zip(got, ends):
        c, v = bars[e, 3], bars[e, 4]
        extended = np.vstack([bars[: e + 1], [[c, c, c, c, v]]])  # the whole history plus one flat bar
        want = scaled_windows(extended, spec, scaler, w)[-1]  # the window ending at the flat bar
        np.testing.assert_allclose(g, want, atol=1e-5)
    # and the window one step later on real bars differs from the flat one only in what the new bar brings
    real_next = scaled_windows(bars[: 151 + 1], spec, scaler, w)[-1]
    np.testing.assert_allclose(got[1][:-1], real_next[:-1], atol=1e-5)


def test_next_window_regimes_is_the_decoder_one_bar_ahead():
    rng = np.random.default_rng(2)
    n, d, f, k = 40, 4, 6, 3
    space = RegimeSpace((1, 3), (1.0, 0.5), 1.0, rng.normal(size=(k, 2 + d)))
    dec = JumpDecoder(penalty=2.0, memory=1000)
    rows, z = rng.normal(size=(n + 1, f)), rng.normal(size=(n + 1, d))
    costs = space.costs(space.geometry(rows, z))
    w = dec.decode_series(costs)  # memory > n: no restart, exact recursion
    windows = np.zeros((n, 5, f))
    windows[:, -1] = rows[1:]
    got = next_window_regimes(space, dec, w[:-1], windows, z[1:])
    assert np.array_equal(got, w[1:].argmin(1))


def test_core_scoring_imports_without_scikit_learn_or_tensorflow():
    r = run_blocked(
        """
        import numpy as np
        import regimetry.scoring as s, regimetry.flat_next
        cur = np.array([0, 0, 1, 1, 2]); nxt = np.array([0, 1, 1, 2, 2])
        r = s.next_regime_report(cur, nxt, nxt, np.eye(3), 3, flat_next=cur)
        assert r["forecaster_beats_baselines"] and s.adjusted_rand_index(cur, nxt) < 1
        print("ok")
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


# -- command line ------------------------------------------------------------------------------------------
def _app():
    from regimetry import cli

    if not any(c.name == "evaluate" for c in cli.app.registered_commands):
        cli._register()
    return cli.app


def _text(result) -> str:
    return " ".join((result.output + (getattr(result, "stderr", "") or "")).split())


def test_evaluate_without_data_fails_and_lists_the_sources(tmp_path):
    from typer.testing import CliRunner

    result = CliRunner().invoke(_app(), ["evaluate", "--bundle", str(tmp_path)])
    assert result.exit_code != 0
    text = _text(result)
    assert "--data is required" in text
    for source in ("'eurusd'", "'synthetic'", "CSV/parquet", "'bundle'"):
        assert source in text


def test_train_name_from_data_and_validation(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import trainer.pipeline
    from trainer.cli import name_from_data

    assert name_from_data("synthetic") == "synthetic" and name_from_data("EURUSD") == "eurusd"
    assert name_from_data("/data/My Bars (2019).csv") == "my-bars-2019"
    seen = {}

    class Result:
        summary, bundle_dir = {}, None

    def fake_train(cfg, progress=None):
        seen["name"] = cfg.name
        return Result()

    monkeypatch.setattr(trainer.pipeline, "train", fake_train)
    runner = CliRunner()
    bars = str(tmp_path / "gbpusd_h1.csv")
    for args, want in (
        (["--data", bars], "gbpusd_h1"),
        (["--data", "synthetic"], "synthetic"),
        (["--data", bars, "--name", "mine"], "mine"),
        ([], "eurusd"),
    ):
        seen.clear()
        result = runner.invoke(_app(), ["train", "--output", str(tmp_path), *args])
        assert result.exit_code == 0, _text(result)
        assert seen["name"] == want, args
    result = runner.invoke(_app(), ["train", "--name", "bad name/x"])
    assert result.exit_code != 0 and "bundle name" in _text(result)
