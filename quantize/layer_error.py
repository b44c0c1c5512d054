"""Per-layer int8 error from TFLite's quantisation debugger, worst layers first.

``tf.lite.experimental.QuantizationDebugger`` builds an instrumented int8 model in which every
quantised op's output is compared with the float op's output on the same input. For each
tensor we keep the RMSE of that difference divided by the tensor's quantisation step
(``rmse/scale``): about 0.29 (the RMSE of uniform rounding noise, 1/sqrt(12)) is as good as
int8 gets, and a layer far above it is where the int8 model departs from the float one. The
tensor names are those of the float graph (``.../ccw_s1m0b0_conv1/...``), so the worst
entries map back to Keras layer names for selective quantisation.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: rmse/scale of pure rounding noise (uniform error over one quantisation step).
ROUNDING_FLOOR = 1.0 / np.sqrt(12.0)

_SCOPE_SUFFIX = re.compile(r"_\d+$")


@dataclass
class LayerError:
    """One quantised tensor's error against the float model."""

    tensor_name: str
    op_name: str
    layer: str
    rmse_over_scale: float
    mean_abs_error: float
    max_abs_error: float
    scale: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def keras_layer_of(tensor_name: str, layer_names: Iterable[str]) -> str:
    """The Keras layer a converter tensor name comes from (``''`` when none can be told).

    A fused op's name lists its parts separated by ``;`` (``.../relu/Relu;.../conv/convolution``);
    the last part names the op that carries the weights. Tracing appends ``_1`` to scopes.
    """
    known = set(layer_names)
    for part in reversed(tensor_name.split(";")):
        for scope in reversed(part.split("/")):
            for candidate in (scope, _SCOPE_SUFFIX.sub("", scope)):
                if candidate in known:
                    return candidate
    return ""


def debugger(model: Any, representative: Any, debug_images: Iterable[np.ndarray],
             denylisted_nodes: Sequence[str] = (), calibration: str = "minmax") -> Any:
    """A ``QuantizationDebugger`` of ``model`` calibrated with ``representative`` (``calibration``
    as for the int8 model it explains)."""
    import tensorflow as tf
    from lhp_tf.converters.tflite import calibrated_converter

    frozen = [np.asarray(img, dtype=np.float32) for img in debug_images]

    def debug_dataset() -> Any:
        for img in frozen:
            yield [img[None]]

    converter = calibrated_converter(model, representative, calibration)
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=list(denylisted_nodes) or None, fully_quantize=True)
    return tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=debug_dataset,
                                                     debug_options=options)


def layer_errors(dbg: Any, layer_names: Iterable[str] = ()) -> list[LayerError]:
    """Run the debugger and return every quantised tensor's error, worst first."""
    names = list(layer_names)
    dbg.run()
    buf = io.StringIO()
    dbg.layer_statistics_dump(buf)
    buf.seek(0)
    rows = []
    for row in csv.DictReader(buf):
        scale = float(row["scale"])
        mse = float(row["mean_squared_error"])
        rows.append(LayerError(
            tensor_name=row["tensor_name"], op_name=row["op_name"], layer=keras_layer_of(row["tensor_name"], names),
            rmse_over_scale=float(np.sqrt(mse) / scale) if scale > 0 else float("inf"),
            mean_abs_error=float(row["mean_error"]) if row.get("mean_error") else float("nan"),
            max_abs_error=float(row["max_abs_error"]), scale=scale))
    rows.sort(key=lambda r: -r.rmse_over_scale)
    return rows
