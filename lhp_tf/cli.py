"""The ``lhp`` command: a thin dispatcher over one module per subcommand.

Each subcommand lives in the module that owns its concept and exposes ``main(argv) -> int``.
Modules are imported only when their subcommand runs, so ``lhp --help`` and the device-side
``lhp bench`` never import TensorFlow.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from lhp_tf.errors import run_main

#: subcommand -> (module with ``main(argv)``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("lhp_tf.demo", "synthesise, train, evaluate, convert and benchmark in one go"),
    "train": ("lhp_tf.train", "train a model from a recipe (same as python -m lhp_tf.train)"),
    "eval": ("lhp_tf.evaluate", "evaluate a checkpoint: NME/FR/AUC per split, like the paper's Table 1"),
    "data": ("lhp_tf.data.cli", "check, synthesise, export or show WFLW / 300W data"),
    "flops": ("lhp_tf.model.flops", "params, conv MACs and mmcv-style FLOPs with a per-block breakdown"),
    "convert": ("lhp_tf.converters.cli", "convert a checkpoint to TFLite (float/int8/int16x8), ONNX or SavedModel"),
    "quantize": ("lhp_tf.quantize.cli", "int8 drift report, mixed int8/int16 precision and QAT"),
    "bench": ("lhp_tf.bench", "on-device benchmark of a .tflite: NME, drift and latency (no TensorFlow)"),
    "predict": ("lhp_tf.predict", "landmarks on photos, folders or videos"),
    "recipes": ("lhp_tf.recipes", "list the packaged recipes (commands take these names or a YAML path)"),
    "npu-check": ("lhp_tf.npu_check", "will an Ethos-U NPU run a .tflite: Vela placement, CPU fallbacks, estimate"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: lhp <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'lhp <command> --help' for a command's options. Every command takes --verbose",
              "to show TensorFlow's native log lines, which are hidden by default."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    entry = argv is None
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] == "--version":
        from lhp_tf import __version__

        print(__version__)
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"lhp: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    if entry:  # a command-line entry: let run_main read sys.argv (and quiet TensorFlow)
        sys.argv = [f"lhp {name}", *rest]
        return run_main(module.main, prog=f"lhp {name}")
    return run_main(module.main, rest, prog=f"lhp {name}")


if __name__ == "__main__":
    sys.exit(main())
