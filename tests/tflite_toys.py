"""Tiny .tflite models and evaluation bundles whose correct answers are known.

The "blob" model reads landmark k from image channel k: the bundle draws a Gaussian blob at
each landmark in its own channel, and the model is a 4x4 average pool (stride 4, the
heatmap stride) followed by a 1x1 convolution that routes channel k to heatmap k. The
average pool maps a crop point x to (x + 0.5) / 4 - 0.5, the contract's heatmap coordinate,
so a correct decode -> crop -> image pipeline recovers the landmarks almost exactly.
Builders import TensorFlow; only test code on the main environment calls them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

INPUT = 64
K = 3
BLOB_SIGMA = 4.0
NORM = 40.0


def make_bundle(path: Path, n: int = 12, seed: int = 0, input_size: int = INPUT, k: int = K,
                drop: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Write a bundle of blob crops (landmark k drawn in channel k % 3) and return its arrays."""
    rng = np.random.default_rng(seed)
    crop_pts = rng.uniform(12, input_size - 13, size=(n, k, 2))
    yy, xx = np.mgrid[0:input_size, 0:input_size]
    images = np.zeros((n, input_size, input_size, 3), dtype=np.float64)
    for i in range(n):
        for j in range(k):
            x, y = crop_pts[i, j]
            blob = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * BLOB_SIGMA ** 2))
            images[i, :, :, j % 3] = np.maximum(images[i, :, :, j % 3], blob)
    scale = rng.uniform(1.5, 3.0, size=n)
    crop2img = np.zeros((n, 2, 3))
    crop2img[:, 0, 0] = scale
    crop2img[:, 1, 1] = scale
    crop2img[:, :, 2] = rng.uniform(0, 200, size=(n, 2))
    landmarks = np.einsum("nij,nkj->nki", crop2img[:, :, :2], crop_pts) + crop2img[:, None, :, 2]
    arrays = {
        "images": np.round(images * 255).astype(np.uint8),
        "landmarks": landmarks.astype(np.float32),
        "crop2img": crop2img.astype(np.float32),
        "norm": (NORM * scale).astype(np.float32),
        "subset_names": np.array(["first_half", "second_half"]),
        "subset_masks": np.stack([np.arange(n) < n // 2, np.arange(n) >= n // 2]),
        "format": np.array("300w"),
        "split": np.array("toy"),
        "input_size": np.array([input_size, input_size]),
    }
    np.savez(path, **{key: v for key, v in arrays.items() if key not in drop})
    return arrays


def toy_spec(k: int = K, input_size: int = INPUT):
    """The ModelSpec a blob model's metadata carries: K landmarks, stride 4, blob-wide Gaussians."""
    from lhp_tf.codec import HeatmapCodec
    from lhp_tf.model.presets import ArchSpec
    from lhp_tf.spec import ModelSpec

    size = (input_size, input_size)
    return ModelSpec(arch=ArchSpec(name="toy", num_landmarks=k, input_size=size),
                     codec=HeatmapCodec(input_size=size, sigma=BLOB_SIGMA / 4, activation="none"),
                     dataset_format="300w", flip_permutation=tuple(range(k)), box_scale=1.25)


def _metadata(k: int, input_size: int, quant: str) -> dict:
    return {"model_name": "blob", "recipe_hash": "0", "input_scale": 1 / 255, "input_mean": 0,
            "quant": quant, "lhp_tf_version": "test", "spec": toy_spec(k, input_size).to_dict()}


def blob_keras_model(k: int = K, input_size: int = INPUT):
    import keras

    inp = keras.Input((input_size, input_size, 3), batch_size=1)
    x = keras.layers.AveragePooling2D(4)(inp)
    conv = keras.layers.Conv2D(k, 1, use_bias=False)
    out = conv(x)
    model = keras.Model(inp, out)
    route = np.zeros((1, 1, 3, k), dtype=np.float32)
    route[0, 0, np.arange(k) % 3, np.arange(k)] = 1.0
    conv.set_weights([route])
    return model


def convert(model, quant: str, calibration: np.ndarray | None = None) -> bytes:
    """Float or full-integer int8 (int8 input and output) .tflite bytes of a Keras model."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quant == "int8":
        assert calibration is not None

        def representative():
            for image in calibration:
                yield [image[None].astype(np.float32) / 255.0]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def write_blob_models(folder: Path, k: int = K, input_size: int = INPUT) -> dict[str, Path]:
    """Blob model as float and int8 .tflite with lhp_tf metadata, plus a matching bundle."""
    from lhp_tf.tflite_metadata import embed_metadata

    folder.mkdir(parents=True, exist_ok=True)
    bundle = folder / "bundle.npz"
    arrays = make_bundle(bundle, k=k, input_size=input_size)
    model = blob_keras_model(k, input_size)
    paths = {"bundle": bundle}
    for quant in ("float", "int8"):
        raw = convert(model, quant, arrays["images"])
        path = folder / f"blob_{quant}.tflite"
        path.write_bytes(embed_metadata(raw, _metadata(k, input_size, quant)))
        paths[quant] = path
    return paths


def write_resize_model(path: Path) -> Path:
    """conv -> nearest resize -> conv: XNNPACK takes the 2 convs, not the resize (3 nodes)."""
    import keras

    inp = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    x = keras.layers.Resizing(32, 32, interpolation="nearest")(x)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)
    path.write_bytes(convert(keras.Model(inp, x), "float"))
    return path


def write_npu_toy(path: Path) -> Path:
    """An int8 graph with what Ethos-U55 rejects: a rank-5 channel shuffle, a channel MEAN,
    a stride-4 depthwise conv and a x4 half-pixel bilinear resize (plus ops it takes)."""
    import keras
    import tensorflow as tf

    inp = keras.Input((16, 16, 8), batch_size=1)
    x = keras.layers.Conv2D(8, 1)(inp)
    mean = keras.layers.Lambda(lambda t: tf.reduce_mean(t, axis=-1, keepdims=True))(x)
    down = keras.layers.DepthwiseConv2D(4, strides=4)(x)
    shuffled = keras.layers.Lambda(lambda t: tf.reshape(
        tf.transpose(tf.reshape(t, (1, 16, 16, 2, 4)), (0, 1, 2, 4, 3)), (1, 16, 16, 8)))(x)
    up = keras.layers.UpSampling2D(4, interpolation="bilinear")(down)
    y = keras.layers.Add()([shuffled, up, keras.layers.Multiply()([mean, x])])
    calib = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 8))
    path.write_bytes(convert(keras.Model(inp, y), "int8", calib))
    return path


#: TFLite TensorType codes used by :func:`build_graph`
INT8, FLOAT32 = 9, 0


def build_graph(tensors: list[tuple[str, int, float | None]], ops: list[tuple[str, list[int], list[int]]],
           inputs: list[int], outputs: list[int]) -> bytes:
    """A one-subgraph .tflite built by hand, for graph passes that need an exact graph:
    ``tensors`` as (name, TensorType, int8 scale or None), all of shape (1, 4); ``ops`` as
    (builtin name, input tensors, output tensors)."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    model = fb.ModelT()
    model.version = 3
    model.buffers = [fb.BufferT()]
    kinds = sorted({k for k, _, _ in ops})
    model.operatorCodes = []
    for k in kinds:
        code = fb.OperatorCodeT()
        code.builtinCode = getattr(fb.BuiltinOperator, k)
        code.deprecatedBuiltinCode = min(code.builtinCode, 127)
        code.version = 2 if k in ("MUL", "ADD") else 1
        model.operatorCodes.append(code)
    graph = fb.SubGraphT()
    graph.tensors = []
    for name, dtype, scale in tensors:
        t = fb.TensorT()
        t.name, t.type, t.shape, t.buffer = name, dtype, np.array([1, 4], np.int32), 0
        if scale is not None:
            q = fb.QuantizationParametersT()
            q.scale, q.zeroPoint = [scale], [0]
            t.quantization = q
        graph.tensors.append(t)
    graph.operators = []
    for kind, ins, outs in ops:
        op = fb.OperatorT()
        op.opcodeIndex = kinds.index(kind)
        op.inputs, op.outputs = np.array(ins, np.int32), np.array(outs, np.int32)
        if kind == "MUL":
            op.builtinOptionsType = fb.BuiltinOptions.MulOptions
            op.builtinOptions = fb.MulOptionsT()
        graph.operators.append(op)
    graph.inputs, graph.outputs = np.array(inputs, np.int32), np.array(outputs, np.int32)
    model.subgraphs = [graph]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
