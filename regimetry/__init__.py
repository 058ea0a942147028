"""Shared, light core of regimetry-stream: features, bundle contract, classifier, diagnostics.

Nothing here imports TensorFlow; the worker depends on this package and on nothing from trainer/."""

__version__ = "0.1.0"
