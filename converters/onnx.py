"""Keras model -> ONNX with tf2onnx (the paper timed its models with ONNX Runtime).

The model is traced as a ``tf.function`` with a named input ``image`` and output ``heatmap``
(``tf2onnx.convert.from_function``): it needs neither a SavedModel on disk nor Keras 2 APIs,
and the names are the same whatever the Keras layer names are. Opset 17 by default (>= 13
gives per-channel quantisation ops and the Resize semantics the bilinear upsampling needs).
"""

from __future__ import annotations

from typing import Any

from lhp_tf.errors import LhpError

DEFAULT_OPSET = 17
MIN_OPSET = 13


def convert_onnx(model: Any, opset: int = DEFAULT_OPSET) -> bytes:
    """Serialized ONNX of ``model``; the batch is whatever the model's input declares."""
    import tensorflow as tf
    import tf2onnx

    if opset < MIN_OPSET:
        raise LhpError(f"--opset {opset}: must be >= {MIN_OPSET}")
    shape = list(model.inputs[0].shape)
    spec = (tf.TensorSpec(shape, tf.float32, name="image"),)

    @tf.function
    def forward(image: Any) -> dict[str, Any]:
        return {"heatmap": model(image, training=False)}

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset)
    return proto.SerializeToString()
