"""Keras -> ONNX (tf2onnx.convert.from_function) with a parity check that fails loudly.

Inputs and outputs are named explicitly (a dict output in the tf.function) because the names tf2onnx picks
differ between export paths; the names actually found in the ONNX graph are what the manifest records.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PARITY_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    pass


def to_onnx(
    model, input_shape: tuple[int, ...], input_name: str, output_name: str, path: Path, opset: int = 17
) -> dict:
    """Convert with a dynamic batch axis; returns {file, input, output, opset}."""
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, *input_shape), tf.float32, name=input_name),)

    @tf.function(input_signature=spec)
    def serve(x):
        return {output_name: model(x, training=False)}

    model_proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    path.write_bytes(model_proto.SerializeToString())
    import onnx

    onnx.checker.check_model(str(path))
    g = onnx.load(str(path)).graph
    return {"file": path.name, "input": g.input[0].name, "output": g.output[0].name, "opset": opset}


def check_parity(model, info: dict, path: Path, samples: np.ndarray, batch_sizes=(1, 256)) -> float:
    """Max |ONNX - Keras| over held-out samples at each batch size; raises ExportError past the tolerance."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for bs in batch_sizes:
        x = np.ascontiguousarray(samples[: max(bs, 1)], dtype=np.float32)
        if len(x) < bs:  # not enough held-out samples: repeat them to reach the batch size
            x = np.resize(x, (bs, *x.shape[1:])).astype(np.float32)
        ref = np.asarray(model(x, training=False))
        got = sess.run([info["output"]], {info["input"]: x})[0]
        diff = float(np.abs(ref - got).max())
        worst = max(worst, diff)
        if not diff <= PARITY_TOLERANCE:
            raise ExportError(
                f"ONNX parity check failed for {path.name} at batch {bs}: max abs diff {diff:.3g} > "
                f"{PARITY_TOLERANCE}; the exported graph does not compute what Keras computes"
            )
    return worst
