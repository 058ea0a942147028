"""Transformer window encoder and its unsupervised masked-window pretraining (after Zerveas et al., 2021).

Pretraining hides a share of the time steps of each window and asks a small decoder to rebuild the whole
window from the embedding alone (broadcast over time plus a position code). The decoder sees nothing but
the embedding, so the embedding is forced to carry what distinguishes one window from another; the masking
keeps the encoder from learning a plain copy.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

import keras
from keras import layers, ops

from trainer.config import EncoderConfig


def sinusoidal_table(length: int, d_model: int, style: str = "interleaved") -> np.ndarray:
    """(length, d_model) sinusoidal position codes.

    interleaved: sin on even dimensions, cos on odd ones, pair i at frequency 1/10000^(2i/d) (Vaswani et al.).
    stacked: the same d/2 frequencies, all sines first, then all cosines.
    """
    half = d_model // 2
    pos = np.arange(length, dtype=np.float64)[:, None]
    freq = 1.0 / (10000.0 ** (np.arange(half, dtype=np.float64) * 2.0 / d_model))
    angles = pos * freq[None, :]
    sin, cos = np.sin(angles), np.cos(angles)
    if style == "stacked":
        table = np.concatenate([sin, cos], axis=1)
    elif style == "interleaved":
        table = np.empty((length, 2 * half))
        table[:, 0::2], table[:, 1::2] = sin, cos
    else:
        raise ValueError(f"unknown encoding style {style!r}")
    return table.astype(np.float32)


@keras.saving.register_keras_serializable("regimetry")
class PositionalEncoding(layers.Layer):
    """Adds a learnable or a fixed sinusoidal position code to projected features."""

    def __init__(self, length: int, d_model: int, method: str = "sinusoidal", style: str = "interleaved", **kw):
        super().__init__(**kw)
        self.length, self.d_model, self.method, self.style = length, d_model, method, style

    def build(self, input_shape):
        if self.method == "learnable":
            self.table = self.add_weight(name="position", shape=(self.length, self.d_model),
                                         initializer=keras.initializers.RandomNormal(stddev=0.02))
        elif self.method == "sinusoidal":
            table = sinusoidal_table(self.length, self.d_model, self.style)
            self.table = self.add_weight(name="position", shape=table.shape, trainable=False,
                                         initializer=keras.initializers.Constant(table))
        else:
            raise ValueError(f"unknown encoding method {self.method!r}")

    def call(self, x):
        return x + self.table[None, :, :]

    def get_config(self):
        return {**super().get_config(), "length": self.length, "d_model": self.d_model,
                "method": self.method, "style": self.style}


def _block(x, cfg: EncoderConfig, i: int):
    attn = layers.MultiHeadAttention(cfg.heads, cfg.d_model // cfg.heads, dropout=cfg.dropout, name=f"mha_{i}")(x, x)
    x = layers.LayerNormalization(epsilon=1e-6, name=f"ln_attn_{i}")(x + layers.Dropout(cfg.dropout)(attn))
    ff = layers.Dense(cfg.ff_dim, activation="relu", name=f"ff1_{i}")(x)
    ff = layers.Dense(cfg.d_model, name=f"ff2_{i}")(ff)
    return layers.LayerNormalization(epsilon=1e-6, name=f"ln_ff_{i}")(x + layers.Dropout(cfg.dropout)(ff))


def build_encoder(window_size: int, n_features: int, cfg: EncoderConfig) -> keras.Model:
    """(batch, window, features) -> (batch, embedding_dim)."""
    inp = keras.Input((window_size, n_features), name="window")
    x = layers.Dense(cfg.d_model, name="project")(inp)
    x = PositionalEncoding(window_size, cfg.d_model, cfg.encoding_method, cfg.encoding_style, name="position")(x)
    for i in range(cfg.depth):
        x = _block(x, cfg, i)
    pooled = layers.Concatenate(name="pool")([layers.GlobalAveragePooling1D()(x), x[:, -1, :]])
    emb = layers.Dense(cfg.embedding_dim, name="embedding")(pooled)
    return keras.Model(inp, emb, name="encoder")


def build_autoencoder(encoder: keras.Model, window_size: int, n_features: int, cfg: EncoderConfig) -> keras.Model:
    """Encoder + a decoder that rebuilds every time step from the embedding and a learnable position code."""
    inp = keras.Input((window_size, n_features), name="masked_window")
    emb = encoder(inp)
    x = layers.RepeatVector(window_size)(emb)
    x = layers.Dense(cfg.d_model, name="dec_in")(x)
    x = PositionalEncoding(window_size, cfg.d_model, "learnable", name="dec_position")(x)
    x = layers.Dense(cfg.ff_dim, activation="relu", name="dec_hidden")(x)
    out = layers.Dense(n_features, name="reconstruction")(x)
    return keras.Model(inp, out, name="masked_autoencoder")


def mask_windows(x: np.ndarray, ratio: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Zero a random share of the time steps of each window; weights 3 on hidden steps, 1 elsewhere."""
    hidden = rng.random(x.shape[:2]) < ratio
    masked = np.where(hidden[..., None], 0.0, x).astype(np.float32)
    return masked, np.where(hidden, 3.0, 1.0).astype(np.float32)


def pretrain(encoder: keras.Model, train: np.ndarray, val: np.ndarray, cfg: EncoderConfig, seed: int,
             on_epoch: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Masked-window reconstruction; fresh masks every epoch from a seeded generator. Returns the history."""
    w, f = train.shape[1:]
    auto = build_autoencoder(encoder, w, f, cfg)
    auto.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="mse")
    rng = np.random.default_rng(seed)
    val_masked, val_weight = mask_windows(val, cfg.mask_ratio, np.random.default_rng(seed + 1))
    history = []
    for epoch in range(cfg.epochs):
        masked, weight = mask_windows(train, cfg.mask_ratio, rng)
        h = auto.fit(masked, train, sample_weight=weight, batch_size=cfg.batch_size, epochs=1, shuffle=True,
                     validation_data=(val_masked, val, val_weight), verbose=0)
        row = {"epoch": epoch + 1, "loss": float(h.history["loss"][-1]), "val_loss": float(h.history["val_loss"][-1])}
        history.append(row)
        if on_epoch:
            on_epoch(epoch, row)
    return history


def embed(encoder: keras.Model, windows: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Raw (unscaled) embeddings of windows, in inference mode."""
    return np.asarray(encoder.predict(windows, batch_size=batch_size, verbose=0), dtype=np.float32)
