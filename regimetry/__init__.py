"""Shared, light core of regimetry-stream: features, regime geometry and decoder, bundle contract, diagnostics.

Nothing here imports TensorFlow; the worker depends on this package and on nothing from trainer/."""

__version__ = "0.1.0"
