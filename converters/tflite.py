"""Keras model -> .tflite (float, full-integer int8, int16x8) carrying the ``lhp_tf`` metadata.

Conversion path: the model is traced once as a ``tf.function`` at its fixed batch-1 input and
``TFLiteConverter.from_concrete_functions`` converts it, with
``experimental_lower_to_saved_model = False`` so the converter freezes the variables itself
instead of exporting a SavedModel first (public API only). Three other paths work with
Keras 3.15 + TF 2.21 (docs/FACTS.md, section 6): ``from_keras_model``,
``export(format="tf_saved_model")`` + ``from_saved_model``, ``export(format="litert")``.
Measured on this machine with lhp-small (1,225 Keras layers): all give the same op list, a
batch-1 input and full XNNPACK delegation; ``from_keras_model`` took 136 s for the float model
(it goes through a SavedModel export), this path 12.6 s. The same function converts tf_keras
models, so the QAT model (``lhp_tf.quantize.qat``) goes through it too.

Integer models are made from the float .tflite by :mod:`lhp_tf.converters.quantizer`
(ai-edge-quantizer: calibrate, edit ranges, quantise), so the float graph's structure
(:mod:`lhp_tf.converters.deploy`) and how it is quantised stay separate. Int8 is full-integer
with int8 input and output (no float QUANTIZE/DEQUANTIZE at the edges; a board's
preprocessing uses the input tensor's scale and zero point); chosen ops may compute in int16
(mixed precision). Int16x8 (16-bit activations everywhere, 8-bit weights) is an accuracy
reference: XNNPACK runs no int16 op. A QAT model carries its ranges in fake-quant nodes, so
TF's converter quantises it (public flags), and the flatbuffer passes repair the float MULs
it leaves (:func:`lhp_tf.converters.passes.fold_float_islands`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lhp_tf import __version__
from lhp_tf.config import Recipe
from lhp_tf.errors import LhpError
from lhp_tf.kinds import INT16_AUTO as AUTO
from lhp_tf.kinds import LEARNED, LEARNED_START, QUANT_MODES
from lhp_tf.spec import ModelSpec

from .passes import (
    INPUT_NAME,
    add_signature,
    drop_identity_quantize,
    fold_float_islands,
    metadata,
    run_passes,
)


def metadata_for(spec: ModelSpec, quant: str, recipe: Recipe | None = None) -> dict[str, Any]:
    """The ``lhp_tf`` metadata (docs/CONTRACTS.md) of a model of ``spec``: the whole spec, plus
    how the file was made. ``recipe`` (when known) names the model and pins the recipe hash."""
    return {
        "model_name": recipe.name if recipe is not None else spec.arch.name,
        "recipe_hash": recipe.hash() if recipe is not None else None,
        "input_scale": 1.0 / 255.0,
        "input_mean": 0.0,
        "quant": quant,
        "lhp_tf_version": __version__,
        "spec": spec.to_dict(),
    }


def concrete_function(model: Any, batch_size: int | None = None) -> Any:
    """``model``'s inference function traced at its declared input shape; ``batch_size``: the
    batch to trace a dynamic-batch model at (the QAT model is trained at a dynamic batch, and
    building its fake-quant network again at batch 1 would cost as long as the first build)."""
    import tensorflow as tf

    shape = [int(d) if d is not None else None for d in model.inputs[0].shape]
    if shape[0] is None and batch_size is not None:
        shape[0] = batch_size
    if shape[0] is None:
        raise LhpError("TFLite export needs a fixed batch (the model's input batch is dynamic); "
                       "rebuild it with batch_size=1")
    spec = tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)
    if not hasattr(model, "stateless_call"):  # tf_keras (the QAT model): variables, frozen by the converter
        return tf.function(lambda image: model(image, training=False)).get_concrete_function(spec)
    # Keras 3: the weights enter the trace as constants (Keras's public stateless call), so the
    # converter has no variable to freeze (same ops and outputs; part of what
    # benchmarks/convert_time.py measures). Tensor names then lack the model-name prefix: they
    # start at the layer name.
    trainable = [np.asarray(v) for v in model.trainable_variables]
    fixed = [np.asarray(v) for v in model.non_trainable_variables]

    def infer(image: Any) -> Any:
        heatmaps, _ = model.stateless_call([tf.constant(v) for v in trainable], [tf.constant(v) for v in fixed],
                                           image, training=False)
        return heatmaps

    return tf.function(infer).get_concrete_function(spec)


def make_converter(model: Any, batch_size: int | None = None) -> Any:
    """A float ``TFLiteConverter`` for ``model`` (Keras 3 or tf_keras; ``batch_size`` as in
    :func:`concrete_function`)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_function(model, batch_size)], model)
    # Converting the traced graph directly skips the SavedModel round trip TF 2.21 makes by
    # default (lhp-small float: 46 -> 13 s; same ops, same outputs); the converter freezes.
    converter.experimental_lower_to_saved_model = False
    # TF's own CONVERSION_METADATA entry (its version and options) costs a parse and a
    # re-serialisation of the whole flatbuffer in Python; our metadata pass records what a board
    # needs.
    converter.exclude_conversion_metadata = True
    return converter


def float_tflite(model: Any) -> bytes:
    """The float .tflite of ``model``, with the ``serving_default`` signature."""
    return run_passes(make_converter(model).convert(), [add_signature])


def qat_tflite(model: Any, images: Sequence[np.ndarray], meta: dict[str, Any]) -> bytes:
    """Full-integer int8 of a QAT model, ``meta`` embedded: its fake-quant nodes set the ranges;
    ``images`` only give the converter sample inputs for the int8 input and output. A model of
    dynamic batch is converted at batch 1."""
    import tensorflow as tf

    frozen = [np.asarray(img, dtype=np.float32) for img in images]

    def representative() -> Iterator[list[np.ndarray]]:
        for img in frozen:
            yield [img[None]]

    converter = make_converter(model, batch_size=1)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return run_passes(converter.convert(), [fold_float_islands(), add_signature, metadata(meta)])


def check_int16(int16: Sequence[str], recipe: Recipe | None) -> None:
    """``--int16`` as given: ``auto`` alone, and with a recipe (its training faces score the trials)."""
    if AUTO in int16 and len(int16) > 1:
        raise LhpError(f"--int16 {','.join(int16)}: give 'auto' alone, not with other selectors")
    if AUTO in int16 and recipe is None:
        raise LhpError("--int16 auto scores its trials on the recipe's training faces: pass --recipe "
                       "(or keep recipe.yaml beside the checkpoint)")


@dataclass
class Converted:
    """A conversion's result (``data``, metadata embedded) and what it was made from: the float
    .tflite of the same graph and, for integer models, its calibrated range table."""

    data: bytes
    float_model: bytes
    table: Any = None


def convert_tflite(model: Any, spec: ModelSpec, quant: str, images: Sequence[np.ndarray] | None = None,
                   recipe: Recipe | None = None, extra_metadata: dict[str, Any] | None = None,
                   calibration: str | None = None, int16: Sequence[str] = (), *, trained: Any = None,
                   target: str | None = None, checkpoint: str | os.PathLike[str] | None = None) -> bytes:
    """The .tflite bytes of ``model`` (already batch 1, heatmap space) with metadata embedded
    (:func:`convert`)."""
    return convert(model, spec, quant, images, recipe, extra_metadata, calibration, int16, trained=trained,
                   target=target, checkpoint=checkpoint).data


def convert(model: Any, spec: ModelSpec, quant: str, images: Sequence[np.ndarray] | None = None,
            recipe: Recipe | None = None, extra_metadata: dict[str, Any] | None = None,
            calibration: str | None = None, int16: Sequence[str] = (), *, trained: Any = None,
            target: str | None = None, checkpoint: str | os.PathLike[str] | None = None) -> Converted:
    """``model`` (already batch 1, heatmap space) as .tflite, with metadata embedded.

    ``images`` calibrate int8/int16x8. ``calibration`` overrides the recipe's
    ``export.calibration`` (``mse`` without a recipe). ``int16`` selects ops that keep int16
    activations in an int8 model: selectors of :func:`lhp_tf.converters.quantizer.select_ops`,
    or ``auto`` (:mod:`lhp_tf.quantize.mixed`; needs the recipe, whose training faces it scores on).
    ``learned`` calibration takes the ranges saved beside ``checkpoint`` for this ``target``
    (which the metadata records) or trains them on the int8 deploy graph's simulation of
    ``trained``, the Keras model ``model`` was made from (:mod:`lhp_tf.quantize.learned_ranges`);
    int16x8 takes its ``mse`` start.
    """
    from . import quantizer

    if quant not in QUANT_MODES:
        raise LhpError(f"--quant {quant!r}: expected one of {', '.join(QUANT_MODES)}")
    if int16 and quant != "int8":
        raise LhpError(f"--int16: mixed precision is for --quant int8, not {quant}")
    check_int16(int16, recipe)
    meta = metadata_for(spec, quant, recipe)
    if target is not None:
        meta["target"] = target
    meta.update(extra_metadata or {})
    float_model = float_tflite(model)
    if quant == "float":
        return Converted(run_passes(float_model, [metadata(meta)]), float_model)
    if images is None or not len(images):
        raise LhpError(f"--quant {quant}: needs calibration images")
    meta["calibration"] = calibration or (recipe.export.calibration if recipe is not None else "mse")
    probe = None
    if meta["calibration"] == "auto" and recipe is not None:
        from lhp_tf.quantize.calibration import probe_images

        probe = probe_images(recipe, quantizer.PROBE_IMAGES)
    learned = meta["calibration"] == LEARNED
    table = quantizer.calibrate(float_model, images, LEARNED_START if learned else meta["calibration"], probe)
    if learned and quant == "int8":
        from lhp_tf.quantize import learned_ranges as lr

        steps = recipe.export.learned_steps if recipe is not None else lr.STEPS
        ranges = lr.learned_ranges(trained, float_model, table, images, target or lr.DEFAULT_TARGET, steps,
                                   checkpoint)
        lr.apply(table, float_model, ranges)
        meta["calibration_learned"] = {**ranges.stats, "steps": steps}
    elif learned:
        meta["calibration_chosen"] = LEARNED_START
    if table.errors:  # auto: which ranges, and why
        meta["calibration_chosen"] = table.method
        meta["calibration_errors"] = table.errors

    def finish(data: bytes) -> bytes:
        """The integer model's passes; ``meta`` is read when called (the int16 choice is added late)."""
        return run_passes(data, [drop_identity_quantize, metadata(meta)])

    if quant == "int16x8":
        return Converted(finish(quantizer.quantize(float_model, table, all_int16=True)), float_model, table)
    chosen: list[str] = []
    if list(int16) == [AUTO]:
        from lhp_tf.quantize.calibration import augmented_bundle
        from lhp_tf.quantize.mixed import AUTO_FACES, auto_int16

        bundle = augmented_bundle(recipe, AUTO_FACES)
        choice = auto_int16(float_model, table, bundle, recipe.eval.decoder, finish)
        chosen, meta["int16_auto"] = choice.ops, choice.as_dict()
    elif int16:
        chosen = quantizer.select_ops(float_model, int16)
    data = quantizer.quantize(float_model, table, chosen)
    meta["int16_selection"] = list(int16)
    meta["int16_ops"] = quantizer.int16_ops(data)
    return Converted(finish(data), float_model, table)


def write_bytes(path: Any, data: bytes) -> None:
    """Write ``data`` atomically: a crash or an error never leaves a half file at ``path``."""
    from lhp_tf.checkpoint import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)
