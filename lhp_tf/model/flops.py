"""Complexity of a built Keras graph: parameters, plain conv MACs and mmcv-style FLOPs.

Everything is counted from the model's layers and their static output shapes (per image), so
the figures describe the graph that is trained and exported, not a hand formula. Rules follow
mmcv's ``get_model_complexity_info`` (docs/FACTS.md, section 3), one multiply-add = one FLOP:

* conv / depthwise conv: k*k*C_in/groups*C_out*H_out*W_out MACs, plus C_out*H_out*W_out for a bias;
* dense: in*out; BatchNorm: 2 x elements; ReLU: 1 x elements; sigmoid, add, multiply,
  concatenation, split, reshape and shuffle: 0;
* pooling (average, global average, channel mean): input elements; upsampling (nearest or
  bilinear): output elements.

mmcv only sees ``nn.Module`` layers, so the official PyTorch code's functional pooling and
interpolation (CRW, iterative head) go uncounted there; here every pooling and upsampling layer
counts. Parameters are the trainable ones (BN moving statistics are buffers in PyTorch).
``conv_macs`` is the convolutions alone; ``mmcv_flops`` the total. ``breakdown`` maps a block
type (the layer-name prefix: stem, transition, ccw, fusion, head) to its conv MACs.

``lhp flops`` prints these for a recipe or a named preset. TensorFlow is imported lazily.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lhp_tf.errors import LhpError
from lhp_tf.kinds import FUSION_KINDS, HEAD_KINDS
from lhp_tf.model.presets import BLOCK_TYPES


@dataclass
class Complexity:
    """Per-image complexity of one model, with per-block-type breakdowns."""

    name: str
    input_size: tuple[int, int]
    num_landmarks: int
    params: int = 0
    conv_macs: int = 0
    mmcv_flops: int = 0
    breakdown: dict[str, int] = field(default_factory=dict)
    breakdown_mmcv: dict[str, int] = field(default_factory=dict)
    breakdown_params: dict[str, int] = field(default_factory=dict)
    #: conv MACs the official PyTorch forward spends on this layout (see official_duplicate_macs).
    official_conv_macs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def block_type(layer_name: str) -> str:
    """The block a layer belongs to, from its name prefix ("other" for inputs and strays)."""
    for t in BLOCK_TYPES:
        if layer_name.startswith(t):
            return t
    return "other"


def _shapes(t: Any) -> list[tuple[int, ...]]:
    """Static per-image shapes (batch dimension dropped) of a tensor or a list of them."""
    items = t if isinstance(t, (list, tuple)) else [t]
    out = []
    for x in items:
        dims = tuple(x.shape)[1:]
        if any(d is None for d in dims):
            raise LhpError(f"cannot count a layer with a dynamic shape {tuple(x.shape)}")
        out.append(tuple(int(d) for d in dims))
    return out


def _elements(shapes: list[tuple[int, ...]]) -> int:
    return sum(math.prod(s) for s in shapes)


def layer_cost(layer: Any) -> tuple[int, int]:
    """(conv MACs, mmcv-style FLOPs) of one layer, from its class and tensor shapes."""
    kind = type(layer).__name__
    if kind == "InputLayer":
        return 0, 0
    out = _shapes(layer.output)
    if kind in ("Conv2D", "DepthwiseConv2D"):
        kh, kw = layer.kernel_size
        (ho, wo, cout), = out
        if kind == "Conv2D":
            cin = int(layer.kernel.shape[2])  # already C_in / groups
            macs = kh * kw * cin * cout * ho * wo
        else:
            macs = kh * kw * cout * ho * wo
        bias = cout * ho * wo if layer.use_bias else 0
        return macs, macs + bias
    if kind == "Dense":
        (shape,), cin = out, int(layer.kernel.shape[0])
        return 0, cin * math.prod(shape)
    if kind == "BatchNormalization":
        return 0, 2 * _elements(out)
    if kind == "ReLU" or (kind == "Activation" and getattr(layer, "activation", None) is not None
                          and getattr(layer.activation, "__name__", "") == "relu"):
        return 0, _elements(out)
    if kind in ("AveragePooling2D", "GlobalAveragePooling2D", "MaxPooling2D", "ChannelMean"):
        return 0, _elements(_shapes(layer.input))
    if kind in ("UpSampling2D", "NearestUpsample"):
        return 0, _elements(out)
    return 0, 0


_OFFICIAL_DUPLICATE = re.compile(r"^fusion_s\d+m\d+_[1-9]\d*from0_down\d")


def official_duplicate_macs(model: Any) -> int:
    """Conv MACs the official Lite-HRNet code runs twice: in its fusion loop every output i >= 1
    computes the path from branch 0 once to initialise the sum and again inside the loop. The
    published complexity figures include this; our clean fusion computes each path once."""
    return sum(layer_cost(layer)[0] for layer in model.layers
               if _OFFICIAL_DUPLICATE.match(layer.name))


def count(model: Any, name: str | None = None, num_landmarks: int | None = None) -> Complexity:
    """Count a built Keras model (any batch size; figures are per image)."""
    h, w = (int(d) for d in tuple(model.inputs[0].shape)[1:3])
    k = num_landmarks if num_landmarks is not None else int(model.outputs[0].shape[-1])
    c = Complexity(name=name or model.name, input_size=(h, w), num_landmarks=k)
    for t in (*BLOCK_TYPES, "other"):
        c.breakdown[t] = c.breakdown_mmcv[t] = c.breakdown_params[t] = 0
    for layer in model.layers:
        t = block_type(layer.name)
        macs, flops = layer_cost(layer)
        params = sum(math.prod(int(d) for d in v.shape) for v in layer.trainable_weights)
        c.conv_macs += macs
        c.mmcv_flops += flops
        c.params += params
        c.breakdown[t] += macs
        c.breakdown_mmcv[t] += flops
        c.breakdown_params[t] += params
    c.official_conv_macs = c.conv_macs + official_duplicate_macs(model)
    for d in (c.breakdown, c.breakdown_mmcv, c.breakdown_params):
        if d["other"] == 0:
            del d["other"]
    return c


def count_config(cfg: Any, num_landmarks: int) -> Complexity:
    """Build the model a ModelConfig describes and count it."""
    from lhp_tf.model.network import build_model

    model = build_model(cfg, num_landmarks)
    return count(model, name=cfg.arch, num_landmarks=num_landmarks)


def format_table(c: Complexity) -> str:
    h, w = c.input_size
    lines = [f"{c.name}  input {h}x{w}  landmarks {c.num_landmarks}",
             f"{'block':<12}{'params':>12}{'conv MMACs':>14}{'mmcv MFLOPs':>14}{'share':>8}"]
    for t in c.breakdown:
        share = c.breakdown[t] / c.conv_macs if c.conv_macs else 0.0
        lines.append(f"{t:<12}{c.breakdown_params[t]:>12,}{c.breakdown[t] / 1e6:>14.3f}"
                     f"{c.breakdown_mmcv[t] / 1e6:>14.3f}{share:>8.1%}")
    lines.append(f"{'total':<12}{c.params:>12,}{c.conv_macs / 1e6:>14.3f}{c.mmcv_flops / 1e6:>14.3f}")
    lines.append("conv MMACs: convolutions only; mmcv MFLOPs: + bias, BN, ReLU, pooling, upsampling")
    if c.official_conv_macs != c.conv_macs:
        lines.append(f"the official PyTorch code runs {c.official_conv_macs / 1e6:.3f} conv MMACs on this "
                     "layout (it computes each fusion path from branch 0 twice)")
    return "\n".join(lines)


def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` (e.g. 256x192) or a single number for a square input."""
    parts = text.lower().split("x")
    try:
        if len(parts) == 1:
            return int(parts[0]), int(parts[0])
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    raise LhpError(f"--input-size {text!r}: expected HxW, e.g. 256x192")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lhp flops",
        description="Params, conv MACs and mmcv-style FLOPs of a model, counted on the built "
                    "Keras graph, with a breakdown by block type.")
    p.add_argument("recipe", nargs="?", help="recipe YAML (or use --model)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, e.g. --set model.head=v1 (repeatable)")
    p.add_argument("--model", help="preset name instead of a recipe, e.g. lite-hrnet-18")
    p.add_argument("--input-size", help="HxW, e.g. 256x192 (default: recipe's, or 96x96)")
    p.add_argument("--num-landmarks", type=int, help="K (default: recipe's, or 98)")
    p.add_argument("--fusion", choices=FUSION_KINDS)
    p.add_argument("--head", choices=HEAD_KINDS)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def main(argv: Sequence[str]) -> int:
    from dataclasses import replace

    from lhp_tf.config import ModelConfig, load_recipe

    args = _parser().parse_args(list(argv))
    if (args.recipe is None) == (args.model is None):
        raise LhpError("give a recipe or --model NAME (exactly one)")
    if args.recipe is not None:
        recipe = load_recipe(args.recipe, args.set)
        cfg, k = recipe.model, recipe.num_landmarks
    else:
        if args.set:
            raise LhpError("--set needs a recipe; with --model use --input-size, --fusion, --head")
        cfg, k = ModelConfig(arch=args.model), 98
    if args.input_size:
        cfg = replace(cfg, input_size=parse_size(args.input_size))
    if args.num_landmarks is not None:
        if args.num_landmarks <= 0:
            raise LhpError(f"--num-landmarks: must be > 0, got {args.num_landmarks}")
        cfg, k = replace(cfg, num_landmarks=args.num_landmarks), args.num_landmarks
    if args.fusion:
        cfg = replace(cfg, fusion=args.fusion)
    if args.head:
        cfg = replace(cfg, head=args.head)
    k = cfg.num_landmarks or k
    c = count_config(cfg, k)
    print(json.dumps(c.to_dict(), indent=2) if args.json else format_table(c))
    return 0


if __name__ == "__main__":
    import sys

    from lhp_tf.errors import run_main

    sys.exit(run_main(main, prog="lhp flops"))
