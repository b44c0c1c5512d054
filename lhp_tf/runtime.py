"""Run an exported .tflite with whatever interpreter the board has (numpy only, no TensorFlow).

Prefers LiteRT (``ai-edge-litert``, the maintained interpreter) and falls back to the older
``tflite-runtime`` that many ARM board images ship. Both enable XNNPACK by default for float
models; :func:`op_delegation` tells how much of the graph it actually took.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lhp_tf.codec import HeatmapCodec
from lhp_tf.errors import LhpError
from lhp_tf.spec import ModelSpec
from lhp_tf.tflite_metadata import check_tflite, read_metadata, read_model_bytes

INSTALL_HINT = ("no TFLite interpreter found: install one with 'pip install ai-edge-litert' "
                "(or 'pip install tflite-runtime' with numpy<2 on boards that only have that)")


def _interpreter_module() -> tuple[Any, str]:
    """The interpreter module and its name, LiteRT first."""
    try:
        from ai_edge_litert import interpreter as mod

        return mod, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as mod
    except ImportError as exc:
        raise LhpError(f"{INSTALL_HINT} ({exc})") from exc
    return mod, "tflite_runtime"


def runtime_name() -> str:
    """``"ai_edge_litert"`` or ``"tflite_runtime"``: which interpreter this environment uses."""
    return _interpreter_module()[1]


def load_interpreter(path: str | os.PathLike[str], num_threads: int = 1,
                     xnnpack: bool = True) -> tuple[Any, str]:
    """Load and allocate a .tflite; returns ``(interpreter, runtime name)``.

    ``xnnpack=False`` builds the interpreter without the default delegates (the reference
    kernels), which :func:`op_delegation` compares against.
    """
    mod, name = _interpreter_module()
    path = Path(path)
    buf, label = read_model_bytes(path)
    check_tflite(buf, label)
    kwargs: dict[str, Any] = {"model_path": str(path), "num_threads": int(num_threads)}
    if not xnnpack:
        kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = mod.Interpreter(**kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LhpError(f"{path}: the TFLite interpreter ({name}) cannot load this model: {first}") from exc
    return interpreter, name


def op_delegation(path: str | os.PathLike[str], num_threads: int = 1) -> dict[str, Any]:
    """How many of the graph's nodes XNNPACK took.

    Returns ``{"total": N, "delegated": M, "partitions": P, "not_delegated": {op: count}}``:
    every partition boundary is a hand-over between XNNPACK and the reference kernels, and
    the ops left out are what to change in the architecture for speed.

    Both interpreters list the model's own nodes first and append one ``DELEGATE`` node per
    partition the delegate claimed; a partition's node reads the partition's inputs and writes
    its outputs. Walking back from each partition's outputs through the original nodes, and
    stopping at the partition's inputs, visits exactly the nodes it replaced.
    """
    interpreter, _ = load_interpreter(path, num_threads=num_threads, xnnpack=True)
    ops = interpreter._get_ops_details()
    original = [op for op in ops if op["op_name"] != "DELEGATE"]
    partitions = [op for op in ops if op["op_name"] == "DELEGATE"]
    producer: dict[int, int] = {}
    for op in original:
        for t in op["outputs"]:
            producer[int(t)] = int(op["index"])
    by_index = {int(op["index"]): op for op in original}
    delegated: set[int] = set()
    for part in partitions:
        boundary = {int(t) for t in part["inputs"]}
        stack = [int(t) for t in part["outputs"]]
        seen_tensors: set[int] = set()
        while stack:
            t = stack.pop()
            if t in seen_tensors or t in boundary or t not in producer:
                continue
            seen_tensors.add(t)
            node = producer[t]
            delegated.add(node)
            stack.extend(int(i) for i in by_index[node]["inputs"] if int(i) >= 0)
    left: dict[str, int] = {}
    for op in original:
        if int(op["index"]) not in delegated:
            left[op["op_name"]] = left.get(op["op_name"], 0) + 1
    return {"total": len(original), "delegated": len(delegated), "partitions": len(partitions),
            "not_delegated": dict(sorted(left.items()))}


class TFLiteModel:
    """A landmark .tflite: uint8 images in, float32 heatmaps out, whatever its quantisation.

    Preprocessing follows the model's ``lhp_tf`` metadata: model input
    ``x = (pixel - input_mean) * input_scale`` (1/255 and 0 by default), then quantised with the
    input tensor's scale/zero-point when the model takes integers. Integer outputs are
    dequantised. Inference runs one image at a time (batch 1, the exported graph's shape).

    ``spec`` is the :class:`lhp_tf.spec.ModelSpec` the metadata carries (None for a .tflite
    from elsewhere); ``codec`` decodes its heatmaps: the spec's, or for a foreign model a
    default codec at the stride its tensor shapes imply.
    """

    def __init__(self, path: str | os.PathLike[str], num_threads: int = 1) -> None:
        self.path = Path(path)
        self.interpreter, self.runtime = load_interpreter(self.path, num_threads=num_threads)
        try:
            self.metadata: dict[str, Any] | None = read_metadata(self.path)
        except LhpError:
            self.metadata = None
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise LhpError(f"{self.path}: expected one input and one output tensor, "
                           f"got {len(inputs)} and {len(outputs)}")
        self._in, self._out = inputs[0], outputs[0]
        shape = tuple(int(d) for d in self._in["shape"])
        if len(shape) != 4 or shape[3] != 3:
            raise LhpError(f"{self.path}: input tensor shape {shape} is not (1, H, W, 3)")
        if shape[0] != 1:
            self.interpreter.resize_tensor_input(self._in["index"], [1, *shape[1:]])
            self.interpreter.allocate_tensors()
            self._in = self.interpreter.get_input_details()[0]
            self._out = self.interpreter.get_output_details()[0]
        out_shape = tuple(int(d) for d in self._out["shape"])
        if len(out_shape) != 4:
            raise LhpError(f"{self.path}: output tensor shape {out_shape} is not (1, h, w, K)")
        self.input_size: tuple[int, int] = (shape[1], shape[2])
        self.heatmap_size: tuple[int, int] = (out_shape[1], out_shape[2])
        self.num_landmarks: int = out_shape[3]
        meta = self.metadata or {}
        self.input_scale = float(meta.get("input_scale", 1.0 / 255.0))
        self.input_mean = float(meta.get("input_mean", 0.0))
        self.spec: ModelSpec | None = None
        if "spec" in meta:
            self.spec = ModelSpec.from_dict(meta["spec"], f"{self.path}: metadata spec")
            if self.spec.input_size != self.input_size or self.spec.num_landmarks != self.num_landmarks:
                raise LhpError(f"{self.path}: metadata describes {self.spec.input_size} inputs and "
                               f"{self.spec.num_landmarks} landmarks, the graph {self.input_size} and "
                               f"{self.num_landmarks}")
        self.codec = self.spec.codec if self.spec is not None else HeatmapCodec(
            input_size=self.input_size, stride=max(1, round(shape[1] / out_shape[1])))
        self.input_dtype = np.dtype(self._in["dtype"])
        self.output_dtype = np.dtype(self._out["dtype"])

    @staticmethod
    def _qparams(detail: dict[str, Any]) -> tuple[float, int]:
        scale, zero = detail.get("quantization", (0.0, 0))
        return float(scale), int(zero)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """One uint8 (H, W, 3) image -> the (1, H, W, 3) input tensor value."""
        x = (image.astype(np.float32) - self.input_mean) * self.input_scale
        if np.issubdtype(self.input_dtype, np.integer):
            scale, zero = self._qparams(self._in)
            if scale == 0:
                raise LhpError(f"{self.path}: integer input tensor without quantisation parameters")
            info = np.iinfo(self.input_dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        return x.astype(self.input_dtype)[None]

    def dequantize(self, out: np.ndarray) -> np.ndarray:
        """Raw output tensor value -> float32 heatmaps."""
        if np.issubdtype(self.output_dtype, np.integer):
            scale, zero = self._qparams(self._out)
            return ((out.astype(np.float32) - zero) * scale).astype(np.float32)
        return out.astype(np.float32)

    def invoke_prepared(self, x: np.ndarray) -> None:
        """Run one already prepared input (what latency measurements time)."""
        self.interpreter.set_tensor(self._in["index"], x)
        self.interpreter.invoke()

    def predict(self, images_uint8: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3) uint8`` crops -> ``(N, h, w, K) float32`` heatmaps."""
        images = np.asarray(images_uint8)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1:] != (*self.input_size, 3):
            raise LhpError(f"{self.path}: the model takes {self.input_size[0]}x{self.input_size[1]}x3 "
                           f"images, got an array of shape {images.shape}")
        out = np.empty((images.shape[0], *self.heatmap_size, self.num_landmarks), dtype=np.float32)
        for i, image in enumerate(images):
            self.invoke_prepared(self.prepare(image))
            out[i] = self.dequantize(self.interpreter.get_tensor(self._out["index"])[0])
        return out
