"""The trainer: TensorFlow/Keras side of regimetry-stream (never imported by the worker)."""

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF C++ logs are noise here (Python errors still raise)
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # oneDNN reorders float sums: bit-identical reruns need it off
logging.getLogger("tf2onnx").setLevel(logging.WARNING)
