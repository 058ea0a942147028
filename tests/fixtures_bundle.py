"""A small real bundle (TensorFlow training + tf2onnx export) shared by every test that needs a model."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = {
    "name": "tiny",
    "data": "synthetic",
    "seed": 11,
    "window_size": 16,
    "encoder.d_model": 16,
    "encoder.heads": 2,
    "encoder.depth": 1,
    "encoder.ff_dim": 32,
    "encoder.embedding_dim": 8,
    "encoder.epochs": 2,
    "clustering.n_clusters": 3,
    "clustering.max_reference": 1500,
    "forecaster.input_length": 4,
    "forecaster.units": 16,
    "forecaster.epochs": 2,
}


def tiny_config(output_dir: Path, **extra):
    from trainer.config import load_config

    return load_config(None, {**TINY, "output_dir": str(output_dir), **extra})


@pytest.fixture(scope="session")
def tiny_training(tmp_path_factory):
    """TrainResult of the tiny profile (bundle_dir, manifest, summary, regimes, end_time, z)."""
    from trainer.pipeline import train

    return train(tiny_config(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_training) -> Path:
    """Path of the tiny bundle folder (manifest.json, encoder.onnx, forecaster.onnx, classifier.npz)."""
    return tiny_training.bundle_dir
