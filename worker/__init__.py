"""The live worker: Kafka bars in, regime events out, state in Redis, metrics over HTTP.

Import graph on purpose: numpy, onnxruntime, redis, faust, prometheus-client and the light `regimetry`
core. Never TensorFlow, never trainer/, never pickle (tests/test_worker_imports.py guards this).
"""
