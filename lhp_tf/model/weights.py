"""Move weights between two builds of one architecture by layer name.

Export rebuilds the trained network at batch 1, the QAT child rebuilds it under tf_keras, the
deploy rewrites rebuild parts of it in another form: the lists of weights of those models need
not come in the same order, but every layer keeps its name (``stem_...``, ``ccw_s0m0b0_...``).
Matching by name and checking every shape makes a wrong pairing an error naming the layer,
never a silent shuffle of tensors of equal shape.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from lhp_tf.errors import LhpError

#: weights of a model, layer name -> that layer's arrays in ``layer.get_weights()`` order
LayerWeights = Mapping[str, Sequence[np.ndarray]]


def _layers(model: Any) -> list[Any]:
    """Every layer with weights, nested models flattened (a wrapped model keeps its layers' names)."""
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            out.extend(_layers(layer))
        elif layer.get_weights():
            out.append(layer)
    return out


#: tf_keras variable names that Keras 3 spells otherwise
_KERAS3_NAMES = {"depthwise_kernel": "kernel"}


def trainable_keys(model: Any) -> dict[int, str]:
    """``{id(variable): "<layer name>/<variable name>"}`` for every trainable weight, in Keras 3's
    spelling (tf_keras calls a depthwise kernel ``depthwise_kernel``; a wrapper such as tfmot's
    QuantizeWrapper counts as the layer it wraps): the name that two builds of one network,
    under either Keras, give the same variable."""
    keys = {}
    for layer in _layers(model):
        inner = getattr(layer, "layer", layer)
        for var in layer.trainable_weights:
            short = var.name.split("/")[-1].split(":")[0]
            keys[id(var)] = f"{inner.name}/{_KERAS3_NAMES.get(short, short)}"
    return keys


def layer_weights(model: Any) -> dict[str, list[np.ndarray]]:
    """``{layer name: [arrays]}`` for every layer that has weights."""
    return {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in _layers(model)}


def assign_layer_weights(model: Any, weights: LayerWeights, where: str,
                         own_weights: Collection[str] = ()) -> None:
    """Set each layer of ``model`` from ``weights[layer.name]``; every layer and array must match.

    ``own_weights`` names layers of ``model`` that keep the weights they were built with (the
    fixed kernels of a deploy rewrite); every other layer must be found, and every entry of
    ``weights`` used.
    """
    used = set()
    for layer in _layers(model):
        if layer.name in own_weights:
            continue
        values = weights.get(layer.name)
        current = layer.get_weights()
        if values is None:
            raise LhpError(f"{where}: layer {layer.name} has no weights in the source model "
                           "(was it built from another architecture?)")
        if len(values) != len(current):
            raise LhpError(f"{where}: layer {layer.name} has {len(current)} weight arrays, "
                           f"the source has {len(values)}")
        for cur, val in zip(current, values, strict=True):
            if tuple(cur.shape) != tuple(np.shape(val)):
                raise LhpError(f"{where}: layer {layer.name}: source shape {tuple(np.shape(val))}, "
                               f"model shape {tuple(cur.shape)} (another architecture?)")
        layer.set_weights([np.asarray(v) for v in values])
        used.add(layer.name)
    unused = sorted(set(weights) - used - set(own_weights))
    if unused:
        shown = ", ".join(unused[:5]) + (f" and {len(unused) - 5} more" if len(unused) > 5 else "")
        raise LhpError(f"{where}: {len(unused)} source layer(s) match no layer of the model: {shown}")


def transfer_weights(source: Any, target: Any, where: str, own_weights: Collection[str] = ()) -> None:
    """Copy ``source``'s weights into ``target`` by layer name (see :func:`assign_layer_weights`)."""
    assign_layer_weights(target, layer_weights(source), where, own_weights)


def save_layer_weights(model: Any, path: str | os.PathLike[str]) -> int:
    """:func:`layer_weights` to an ``.npz`` (keys ``name/index``): how the QAT child receives them."""
    arrays = {f"{name}/{i}": w for name, ws in layer_weights(model).items() for i, w in enumerate(ws)}
    np.savez(path, **arrays)
    return len(arrays)


def load_layer_weights(path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    """The inverse of :func:`save_layer_weights`."""
    out: dict[str, dict[int, np.ndarray]] = {}
    with np.load(path) as z:
        for key in z.files:
            name, _, index = key.rpartition("/")
            out.setdefault(name, {})[int(index)] = z[key]
    return {name: [arrays[i] for i in sorted(arrays)] for name, arrays in out.items()}
