"""Keras model -> .tflite (float, full-integer int8, int16x8) carrying the ``lhp_tf`` metadata.

Conversion path: the model is traced once as a ``tf.function`` at its fixed batch-1 input,
its variables are frozen into constants, and ``TFLiteConverter.from_concrete_functions``
converts that graph. REFERENCE section 6 lists three paths that work with Keras 3.15 + TF 2.21
(``from_keras_model``, ``export(format="tf_saved_model")`` + ``from_saved_model``,
``export(format="litert")``). Measured on this machine with lhp-small (1,225 Keras layers):

- all paths give the same op list, a batch-1 input and full XNNPACK delegation;
- ``from_keras_model`` took 136 s for the float model (with Keras 3 it goes through a
  SavedModel export and prints every captured variable), the frozen concrete function 33 s
  (trace 9 s, freeze 13 s, convert 11 s), so every conversion, calibration and the drift
  debugger run 4x faster;
- ``export(format="litert")`` hides the converter: no representative dataset control and no
  ``tf.lite.experimental.QuantizationDebugger`` (which takes a converter object; the frozen
  path gives one);
- the same function converts tf_keras models, so the QAT model (``lhp_tf.quantize.qat``) goes
  through this exact code;
- an unfrozen concrete function keeps READ_VARIABLE ops that fail during int8 calibration:
  hence the freeze.

Int8 is full-integer with int8 input and output (no float QUANTIZE/DEQUANTIZE at the edges,
which a board's preprocessing handles with the input tensor's scale and zero point). Int16x8
(16-bit activations, 8-bit weights) is an accuracy reference: XNNPACK does not run it, and it
keeps float input and output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from lhp_tf import __version__
from lhp_tf.config import Recipe
from lhp_tf.errors import LhpError

from .inference_model import heatmap_activation

QUANT_MODES = ("float", "int8", "int16x8")

#: Heatmap stride of every lhp-tf network (CONTRACTS: 24x24 heatmaps for a 96x96 input).
HEATMAP_STRIDE = 4

RepresentativeDataset = Callable[[], Iterator[list[np.ndarray]]]


def metadata_for(recipe: Recipe, quant: str) -> dict[str, Any]:
    """The ``lhp_tf`` metadata (CONTRACTS list) of a model exported from ``recipe``."""
    from lhp_tf.data.flip import flip_permutation

    k = recipe.num_landmarks
    return {
        "model_name": recipe.name,
        "arch": recipe.model.arch,
        "recipe_hash": recipe.hash(),
        "input_size": [int(v) for v in recipe.model.input_size],
        "input_scale": 1.0 / 255.0,
        "input_mean": 0.0,
        "num_landmarks": int(k),
        "heatmap_stride": HEATMAP_STRIDE,
        "heatmap_activation": heatmap_activation(recipe),
        "flip_permutation": [int(v) for v in flip_permutation(k)],
        "dataset_format": recipe.data.format,
        "box_scale": float(recipe.data.box_scale),
        "quant": quant,
        "lhp_tf_version": __version__,
    }


def representative_dataset(images: Iterable[np.ndarray]) -> RepresentativeDataset:
    """A converter representative dataset yielding one ``(1, H, W, 3)`` float32 image at a time."""
    frozen = [np.asarray(img, dtype=np.float32) for img in images]

    def gen() -> Iterator[list[np.ndarray]]:
        for img in frozen:
            yield [img[None]]

    return gen


def frozen_graph(model: Any) -> Any:
    """``model``'s inference graph at its declared input shape, variables frozen to constants."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    shape = [int(d) if d is not None else None for d in model.inputs[0].shape]
    if shape[0] is None:
        raise LhpError("TFLite export needs a fixed batch (the model's input batch is dynamic); "
                       "rebuild it with batch_size=1")
    spec = tf.TensorSpec(shape, tf.float32, name="image")
    concrete = tf.function(lambda image: model(image, training=False)).get_concrete_function(spec)
    return convert_variables_to_constants_v2(concrete)


def make_converter(model: Any, quant: str, representative: RepresentativeDataset | None = None) -> Any:
    """A configured ``TFLiteConverter`` for ``model`` (Keras 3 or tf_keras) and ``quant``."""
    import tensorflow as tf

    if quant not in QUANT_MODES:
        raise LhpError(f"--quant {quant!r}: expected one of {', '.join(QUANT_MODES)}")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen_graph(model)])
    if quant == "float":
        return converter
    if representative is None:
        raise LhpError(f"--quant {quant}: needs calibration images (a representative dataset)")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    if quant == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    else:
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return converter


def convert_tflite(model: Any, recipe: Recipe, quant: str,
                   representative: RepresentativeDataset | None = None,
                   extra_metadata: dict[str, Any] | None = None) -> bytes:
    """The .tflite bytes of ``model`` (already batch 1, heatmap space) with metadata embedded."""
    from lhp_tf.tflite_metadata import embed_metadata

    converter = make_converter(model, quant, representative)
    data = converter.convert()
    meta = metadata_for(recipe, quant)
    meta.update(extra_metadata or {})
    return embed_metadata(data, meta)


def write_bytes(path: Any, data: bytes) -> None:
    """Write ``data`` atomically: a crash or an error never leaves a half file at ``path``."""
    from pathlib import Path

    from lhp_tf.checkpoint import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
