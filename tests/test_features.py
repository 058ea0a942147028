"""The feature code is the train/serve contract: batch (trainer) and one-bar-at-a-time (worker) must agree."""

import numpy as np
import pytest

from regimetry.data import load_sample
from regimetry.features import FeatureSpec, Scaler, compute_features, history_needed, latest_features, scaled_windows
from regimetry.synthetic import generate_bars


@pytest.fixture(scope="module", params=["synthetic", "eurusd"])
def bars(request):
    if request.param == "synthetic":
        return generate_bars(n_bars=600).bars.values
    return load_sample("eurusd").values[:600]


def test_batch_equals_incremental(bars):
    spec = FeatureSpec()
    batch = compute_features(bars, spec)
    assert batch.shape == (len(bars) - spec.lookback + 1, spec.n_features)
    assert np.isfinite(batch).all()
    # The worker sees each bar once, with only its trailing history in hand.
    one_by_one = np.stack([latest_features(bars[: i + 1], spec) for i in range(spec.lookback - 1, len(bars))])
    assert np.abs(one_by_one - batch).max() <= 1e-9


def test_stacked_histories_equal_batch(bars):
    """The worker batches many symbols' histories along a leading axis; that must not change a number."""
    spec = FeatureSpec()
    batch = compute_features(bars, spec)
    ends = np.arange(spec.lookback - 1, len(bars), 7)
    stacked = np.stack([bars[e - spec.lookback + 1 : e + 1] for e in ends])
    got = latest_features(stacked, spec)
    assert np.abs(got - batch[ends - spec.lookback + 1]).max() <= 1e-9


def test_feature_window_matches_batch_rows(bars):
    spec = FeatureSpec()
    scaler = Scaler.fit(compute_features(bars, spec))
    w = 20
    need = history_needed(spec, w)
    win = scaled_windows(bars[:need], spec, scaler, w)
    assert win.shape == (1, w, spec.n_features)
    assert np.array_equal(scaled_windows(bars[: need + 5], spec, scaler, w)[:1], win)
    expected = scaler.transform(compute_features(bars, spec))[:w]
    assert np.abs(win[0] - expected).max() <= 1e-6


def test_features_reject_short_history():
    spec = FeatureSpec()
    with pytest.raises(ValueError, match="at least"):
        compute_features(generate_bars(n_bars=200).bars.values[: spec.lookback - 1], spec)


def test_spec_hash_tracks_parameters():
    assert FeatureSpec().hash() == FeatureSpec().hash()
    assert FeatureSpec(rsi=10).hash() != FeatureSpec().hash()
    assert FeatureSpec.from_dict(FeatureSpec(atr=7).to_dict()).hash() == FeatureSpec(atr=7).hash()


def test_scaler_roundtrip_and_clip():
    x = np.random.default_rng(0).normal(3.0, 2.0, (500, 4))
    s = Scaler.fit(x)
    z = s.transform(x)
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-3
    assert Scaler.from_dict(s.to_dict()) == s
    assert s.transform(np.full((1, 4), 1e9)).max() == s.clip
