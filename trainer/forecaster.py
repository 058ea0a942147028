"""Forecasters of the next embedding from the last L embeddings (all in the clustering geometry).

Each predicts a *change* added to the last embedding, so an untrained forecaster starts as persistence and
training can only earn its way past it; whether it does is what the evaluation reports.
  stratum        recurrent: one LSTM over the history
  stratum_attn   attention: self-attention over the history with a position code, read at the last step
  stratum_hydra  multi-branch: LSTM, dilated convolution and attention heads side by side, merged
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from keras import layers

from trainer.config import ForecasterConfig
from trainer.encoder import PositionalEncoding


def sequences(z: np.ndarray, length: int, step: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Histories z[t-(L-1)step .. t] and targets z[t+step]; returns (X, y, t) over every valid t."""
    span = (length - 1) * step
    t = np.arange(span, len(z) - step)
    idx = t[:, None] - step * np.arange(length - 1, -1, -1)[None, :]
    return z[idx], z[t + step], t


def _attention(x, units: int, heads: int, prefix: str):
    h = layers.Dense(units, name=f"{prefix}_in")(x)
    h = PositionalEncoding(x.shape[1], units, "sinusoidal", "interleaved", name=f"{prefix}_pos")(h)
    a = layers.MultiHeadAttention(heads, units // heads, name=f"{prefix}_mha")(h, h)
    h = layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_ln")(h + a)
    return h[:, -1, :]


def build_forecaster(length: int, dim: int, cfg: ForecasterConfig) -> keras.Model:
    inp = keras.Input((length, dim), name="history")
    last = inp[:, -1, :]
    if cfg.name == "stratum":
        h = layers.LSTM(cfg.units, name="lstm")(inp)
    elif cfg.name == "stratum_attn":
        h = _attention(inp, cfg.units, 4, "attn")
    elif cfg.name == "stratum_hydra":
        u = max(8, cfg.units // 2)
        rec = layers.LSTM(u, name="hydra_lstm")(inp)
        conv = layers.Conv1D(u, 3, padding="causal", dilation_rate=2, activation="relu", name="hydra_conv")(inp)
        conv = layers.GlobalAveragePooling1D(name="hydra_conv_pool")(conv)
        att = _attention(inp, u, 2, "hydra_attn")
        h = layers.Concatenate(name="hydra_merge")([rec, conv, att])
        h = layers.Dense(cfg.units, activation="relu", name="hydra_mix")(h)
    else:
        raise ValueError(f"unknown forecaster {cfg.name!r}")
    delta = layers.Dense(dim, name="delta", kernel_initializer="zeros")(h)
    out = layers.Add(name="next_embedding")([last, delta])
    return keras.Model(inp, out, name=cfg.name)


def _loss(name: str):
    return keras.losses.MeanSquaredError() if name == "mse" else keras.losses.CosineSimilarity()


def train_forecaster(
    x: np.ndarray, y: np.ndarray, cfg: ForecasterConfig, on_epoch: Callable[[int, dict], None] | None = None
) -> tuple[keras.Model, list[dict]]:
    """Fit on chronologically ordered sequences; the last 10% are the validation tail (no shuffling across it)."""
    model = build_forecaster(x.shape[1], x.shape[2], cfg)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=_loss(cfg.loss))
    n_val = max(1, len(x) // 10)
    cb = [keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch and on_epoch(e, logs))]
    h = model.fit(
        x[:-n_val],
        y[:-n_val],
        validation_data=(x[-n_val:], y[-n_val:]),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=cb,
    )
    hist = [
        {"epoch": i + 1, "loss": float(a), "val_loss": float(b)}
        for i, (a, b) in enumerate(zip(h.history["loss"], h.history["val_loss"]))
    ]
    return model, hist
