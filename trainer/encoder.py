"""Transformer window encoder and its unsupervised pretraining.

Two objectives, both without labels. Masked-window reconstruction (after Zerveas et al., 2021): a share of
the time steps is hidden and a small decoder rebuilds the whole window from the embedding alone, so the
embedding must carry the window. Temporal contrast (InfoNCE, in the spirit of TNC/TS2Vec): a window's
embedding must pick out the window that follows it from a batch of others, so the embedding favours what
persists across windows, which is what a regime is.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from keras import layers

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
            self.table = self.add_weight(
                name="position",
                shape=(self.length, self.d_model),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
            )
        elif self.method == "sinusoidal":
            table = sinusoidal_table(self.length, self.d_model, self.style)
            self.table = self.add_weight(
                name="position", shape=table.shape, trainable=False, initializer=keras.initializers.Constant(table)
            )
        else:
            raise ValueError(f"unknown encoding method {self.method!r}")

    def call(self, x):
        return x + self.table[None, :, :]

    def get_config(self):
        return {
            **super().get_config(),
            "length": self.length,
            "d_model": self.d_model,
            "method": self.method,
            "style": self.style,
        }


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


def build_decoder(window_size: int, n_features: int, cfg: EncoderConfig) -> keras.Model:
    """Rebuilds every time step from the embedding alone plus a learnable position code (a bottleneck)."""
    inp = keras.Input((cfg.embedding_dim,), name="embedding")
    x = layers.RepeatVector(window_size)(inp)
    x = layers.Dense(cfg.d_model, name="dec_in")(x)
    x = PositionalEncoding(window_size, cfg.d_model, "learnable", name="dec_position")(x)
    x = layers.Dense(cfg.ff_dim, activation="relu", name="dec_hidden")(x)
    return keras.Model(inp, layers.Dense(n_features, name="reconstruction")(x), name="decoder")


def build_projector(cfg: EncoderConfig) -> keras.Model:
    """Small head whose normalised output is compared across windows (kept out of the exported encoder)."""
    inp = keras.Input((cfg.embedding_dim,))
    x = layers.Dense(cfg.d_model, activation="relu")(inp)
    return keras.Model(inp, layers.Dense(cfg.d_model)(x), name="projector")


def mask_windows(x: np.ndarray, ratio: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Zero a random share of the time steps of each window; weights 3 on hidden steps, 1 elsewhere."""
    hidden = rng.random(x.shape[:2]) < ratio
    masked = np.where(hidden[..., None], 0.0, x).astype(np.float32)
    return masked, np.where(hidden, 3.0, 1.0).astype(np.float32)


def objective(encoder: keras.Model, decoder: keras.Model, projector: keras.Model, cfg: EncoderConfig) -> Callable:
    """The two pretraining losses of a batch: (masked reconstruction MSE over the masked bars, InfoNCE of each
    window against its positive). Arrays: masked, target, positive (B, W, F); weight (B, W), 1 where masked."""
    import tensorflow as tf

    tau, lam = cfg.temperature, cfg.contrast_weight

    def losses(masked, target, weight, positive, training):
        ea = encoder(masked, training=training)
        rec = decoder(ea, training=training)
        rec_loss = tf.reduce_sum(weight * tf.reduce_mean(tf.square(rec - target), -1)) / tf.reduce_sum(weight)
        if lam == 0:
            return rec_loss, tf.constant(0.0)
        pa = tf.math.l2_normalize(projector(ea, training=training), -1)
        pb = tf.math.l2_normalize(projector(encoder(positive, training=training), training=training), -1)
        logits = tf.matmul(pa, pb, transpose_b=True) / tau
        labels = tf.range(tf.shape(logits)[0])
        ce = keras.losses.sparse_categorical_crossentropy
        nce = 0.5 * (
            tf.reduce_mean(ce(labels, logits, from_logits=True))
            + tf.reduce_mean(ce(labels, tf.transpose(logits), from_logits=True))
        )
        return rec_loss, nce

    return losses


def pretrain(
    encoder: keras.Model,
    train: np.ndarray,
    val: np.ndarray,
    cfg: EncoderConfig,
    seed: int,
    positive_offset: int,
    on_epoch: Callable[[int, dict], None] | None = None,
    anchors: np.ndarray | None = None,
    val_anchors: np.ndarray | None = None,
) -> list[dict]:
    """Masked reconstruction + temporal contrast, fresh masks and batch order every epoch from seeded draws.

    Reconstruction alone makes the embedding describe the window's fast detail (trend wiggles, single bars);
    regimes are what persists. The contrastive term (InfoNCE, in-batch negatives) pulls a window towards the
    window ``positive_offset`` rows later, which shares no bar with it but usually shares its regime, and away
    from random other windows, so what survives in the embedding is what stays put from one window to the
    next: volatility, volume and drift levels.

    anchors / val_anchors: the rows of train / val whose positive (``positive_offset`` rows later) is in the same
    series (a universe lays several end to end: trainer/windows.py); None: every row that has one.
    """
    import tensorflow as tf

    w, f = train.shape[1:]
    decoder, projector = build_decoder(w, f, cfg), build_projector(cfg)
    opt = keras.optimizers.Adam(cfg.learning_rate)
    lam = cfg.contrast_weight
    weights = encoder.trainable_variables + decoder.trainable_variables
    if lam:
        weights += projector.trainable_variables
    losses = objective(encoder, decoder, projector, cfg)

    @tf.function(reduce_retracing=True)
    def step(masked, target, weight, positive):
        with tf.GradientTape() as tape:
            rec_loss, nce = losses(masked, target, weight, positive, True)
            loss = rec_loss + lam * nce
        opt.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return rec_loss, nce

    def pairs(x: np.ndarray) -> int:
        return max(0, len(x) - positive_offset)

    anchors = np.arange(pairs(train)) if anchors is None else np.asarray(anchors, dtype=np.int64)
    val_anchors = np.arange(pairs(val)) if val_anchors is None else np.asarray(val_anchors, dtype=np.int64)
    if len(anchors) < cfg.batch_size or len(val_anchors) < 2:
        raise ValueError(
            f"too few windows for pretraining: {len(train)} train / {len(val)} validation windows with "
            f"positive offset {positive_offset}; use more data or a smaller window"
        )
    rng = np.random.default_rng(seed)
    val_masked, val_weight = mask_windows(val[val_anchors], cfg.mask_ratio, np.random.default_rng(seed + 1))
    history = []
    for epoch in range(cfg.epochs):
        masked, weight = mask_windows(train, cfg.mask_ratio, rng)
        order = anchors[rng.permutation(len(anchors))]
        tot = np.zeros(2)
        n_batches = 0
        for i in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):  # full batches: same negatives count
            idx = order[i : i + cfg.batch_size]
            r, c = step(masked[idx], train[idx], weight[idx], train[idx + positive_offset])
            tot += (float(r), float(c))
            n_batches += 1
        vr, vc = losses(val_masked, val[val_anchors], val_weight, val[val_anchors + positive_offset], False)
        row = {
            "epoch": epoch + 1,
            "loss": float(tot.sum() / n_batches),
            "reconstruction": float(tot[0] / n_batches),
            "contrast": float(tot[1] / n_batches),
            "val_reconstruction": float(vr),
            "val_contrast": float(vc),
        }
        row["val_loss"] = row["val_reconstruction"] + lam * row["val_contrast"]
        history.append(row)
        if on_epoch:
            on_epoch(epoch, row)
    return history


def embed(encoder: keras.Model, windows: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Raw (unscaled) embeddings of windows, in inference mode."""
    return np.asarray(encoder.predict(windows, batch_size=batch_size, verbose=0), dtype=np.float32)
