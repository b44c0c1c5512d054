"""Selective int8: keep the layers that quantise worst in float, the rest full-integer.

The layers come from the quantisation debugger (``--keep-float N``: the N Keras layers with the
largest ``rmse/scale``) or from the user (``--denylist name,name``, Keras layer names as in
``model.summary()``). Every converter tensor of a chosen layer is denylisted, and the debugger's
quantiser writes the model with int8 input and output (``fully_quantize``); XNNPACK runs the
float islands too, with QUANTIZE/DEQUANTIZE at their edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from lhp_tf.converters.deploy import DEFAULT_TARGET as DEPLOY_TARGET

from lhp_tf.config import Recipe
from lhp_tf.errors import LhpError
from lhp_tf.spec import ModelSpec

from .layer_error import LayerError, debugger, layer_errors


def worst_layers(errors: Sequence[LayerError], count: int) -> list[str]:
    """The ``count`` distinct Keras layers with the largest error, worst first."""
    out: list[str] = []
    for e in errors:
        if e.layer and e.layer not in out:
            out.append(e.layer)
        if len(out) == count:
            break
    return out


def tensors_of(errors: Sequence[LayerError], layers: Sequence[str]) -> list[str]:
    """Converter tensor names belonging to ``layers``."""
    wanted = set(layers)
    return [e.tensor_name for e in errors if e.layer in wanted]


def selective_int8(model: Any, spec: ModelSpec, recipe: Recipe, representative: Any, debug_images: np.ndarray,
                   keep_float: int = 0, denylist: Sequence[str] = ()) -> tuple[bytes, list[str], list[LayerError]]:
    """Int8 .tflite bytes (metadata embedded) with some layers in float; returns the layers kept."""
    from lhp_tf.converters.tflite import metadata_for, quantize_full_integer

    from lhp_tf.tflite_metadata import embed_metadata

    names = [layer.name for layer in model.layers]
    unknown = [d for d in denylist if d not in names]
    if unknown:
        raise LhpError(f"--denylist: no layer named {', '.join(unknown)} in the model "
                       f"(layer names start with stem, transition, ccw, fusion or head)")
    errors = layer_errors(debugger(model, representative, debug_images, calibration=recipe.export.calibration), names)
    keep = list(dict.fromkeys([*denylist, *worst_layers(errors, keep_float)]))
    nodes = tensors_of(errors, keep)
    if keep and not nodes:
        raise LhpError(f"none of the layers {', '.join(keep)} has a quantised tensor to keep in float")
    data = quantize_full_integer(model, representative, denylisted_nodes=nodes,
                                calibration=recipe.export.calibration)
    meta = metadata_for(spec, "int8", recipe)
    meta["float_layers"] = keep
    meta["calibration"] = recipe.export.calibration
    meta["target"] = DEPLOY_TARGET
    return embed_metadata(data, meta), keep, errors
