"""How much accuracy int8 costs: float vs int8 NME on an evaluation bundle, and where it is lost.

Both models are the .tflite files ``lhp convert`` writes from the same checkpoint (or a given
int8 file, e.g. the QAT output), run with the board's runtime (``lhp_tf.runtime``) and scored
with the board's decoder and metric (``lhp_tf.bench``), so the figure is the one a user will
see on the device. The per-layer part is the quantisation debugger's (``layer_error``).

Acceptance: drift at most 0.1 NME points or 2 % of the float NME, whichever is larger.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lhp_tf.converters.deploy import DEFAULT_TARGET as DEPLOY_TARGET

from lhp_tf.errors import LhpError

#: the drift budget: max(ABS_TOLERANCE points, REL_TOLERANCE * float NME)
ABS_TOLERANCE = 0.1
REL_TOLERANCE = 0.02


def tolerance(float_nme: float) -> float:
    """Allowed int8 - float NME, in NME points (percent)."""
    return max(ABS_TOLERANCE, REL_TOLERANCE * float_nme)


def score_tflite(model_path: str | os.PathLike[str], bundle: dict[str, Any], decoder: str) -> tuple[float, np.ndarray]:
    """(NME in percent, predicted image landmarks) of a .tflite on a loaded bundle."""
    from lhp_tf.bench import predict_landmarks
    from lhp_tf.metrics import nme
    from lhp_tf.runtime import TFLiteModel

    model = TFLiteModel(model_path, num_threads=1)
    if model.input_size != tuple(int(v) for v in bundle["input_size"]):
        raise LhpError(f"{model_path}: model input {model.input_size} does not match the bundle's "
                       f"{tuple(int(v) for v in bundle['input_size'])}")
    pred = predict_landmarks(model, bundle, decoder)
    return 100.0 * float(nme(pred, bundle["landmarks"], bundle["norm"]).mean()), pred


def drift_report(checkpoint: str | os.PathLike[str], data: str | os.PathLike[str],
                 recipe: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (),
                 calib_samples: int | None = None, int8_model: str | os.PathLike[str] | None = None,
                 keep_float: int = 0, denylist: Sequence[str] = (), debug_samples: int = 32,
                 top: int = 10, save_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Float vs int8 NME and the ``top`` worst quantised layers, as a JSON-ready dict."""
    from lhp_tf.converters.inference_model import inference_model, load_checkpoint
    from lhp_tf.converters.run_folder import find_recipe
    from lhp_tf.converters.tflite import convert_tflite, representative_dataset, write_bytes

    from lhp_tf.bench import load_bundle

    from .calibration import calibration_images
    from .layer_error import debugger, layer_errors
    from .selective import selective_int8

    rec = find_recipe(checkpoint, recipe, overrides)
    bundle = load_bundle(data)
    trained, spec = load_checkpoint(checkpoint, rec)
    # the deploy graphs `lhp convert` writes (float and int8 forms differ in their pools)
    model = inference_model(trained, spec, where=str(checkpoint), target=DEPLOY_TARGET, quant="int8")
    float_model = inference_model(trained, spec, where=str(checkpoint), target=DEPLOY_TARGET, quant="float")
    target = {"target": DEPLOY_TARGET}
    calib = calibration_images(rec, calib_samples)
    representative = representative_dataset(calib)
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(bundle["images"]), size=min(debug_samples, len(bundle["images"])), replace=False))
    debug_images = bundle["images"][pick].astype(np.float32) / 255.0
    names = [layer.name for layer in model.layers]

    with tempfile.TemporaryDirectory(prefix="lhp_drift_") as tmp:
        out = Path(save_dir) if save_dir is not None else Path(tmp)
        float_path = out / "float.tflite"
        write_bytes(float_path, convert_tflite(float_model, spec, "float", recipe=rec, extra_metadata=target))
        kept: list[str] = []
        if (keep_float or denylist) and int8_model is None:
            data_bytes, kept, errors = selective_int8(model, spec, rec, representative, debug_images, keep_float, denylist)
            int8_path = out / "int8_selective.tflite"
            write_bytes(int8_path, data_bytes)
        else:
            if int8_model is not None:
                int8_path = Path(int8_model)
            else:
                int8_path = out / "int8.tflite"
                write_bytes(int8_path, convert_tflite(model, spec, "int8", representative, rec, extra_metadata=target))
            errors = layer_errors(debugger(model, representative, debug_images, calibration=rec.export.calibration),
                                  names)
        decoder = rec.eval.decoder
        float_nme, float_pred = score_tflite(float_path, bundle, decoder)
        int8_nme, int8_pred = score_tflite(int8_path, bundle, decoder)
    from lhp_tf.metrics import nme

    allowed = tolerance(float_nme)
    return {
        "checkpoint": str(checkpoint), "data": str(data), "images": int(len(bundle["images"])),
        "int8_model": str(int8_model) if int8_model is not None else None,
        "calib_samples": int(len(calib)), "debug_samples": int(len(debug_images)),
        "calibration": rec.export.calibration if int8_model is None else None,
        "float_layers": kept, "decoder": decoder,
        "float_nme": float_nme, "int8_nme": int8_nme, "drift_points": int8_nme - float_nme,
        "drift_relative": (int8_nme - float_nme) / float_nme if float_nme > 0 else None,
        "prediction_nme": 100.0 * float(nme(int8_pred, float_pred, bundle["norm"]).mean()),
        "tolerance_points": allowed, "within_tolerance": bool(int8_nme - float_nme <= allowed),
        "worst_layers": [e.as_dict() for e in errors[:top]],
    }


def format_drift(r: dict[str, Any]) -> str:
    """Human-readable version of :func:`drift_report`."""
    rel = f"{100 * r['drift_relative']:+.2f} %" if r["drift_relative"] is not None else "n/a"
    verdict = "OK" if r["within_tolerance"] else "OVER BUDGET"
    ptq = f"post-training, {r['calib_samples']} calibration images, {r['calibration']} ranges"
    lines = [
        f"checkpoint {r['checkpoint']}  data {r['data']} ({r['images']} images, decoder {r['decoder']})",
        f"int8       {r['int8_model'] or ptq}"
        + (f", float layers: {', '.join(r['float_layers'])}" if r["float_layers"] else ""),
        f"NME float {r['float_nme']:.4f} %  int8 {r['int8_nme']:.4f} %  drift {r['drift_points']:+.4f} points "
        f"({rel}); budget {r['tolerance_points']:.4f}: {verdict}",
        f"int8 vs float landmarks apart by {r['prediction_nme']:.4f} % NME",
        "",
        f"worst quantised tensors (debugger on {r['debug_samples']} bundle images; rmse/scale, "
        f"rounding alone is {1 / np.sqrt(12):.2f}):",
        f"{'rmse/scale':>10}  {'op':<18} {'layer':<32} tensor",
    ]
    for e in r["worst_layers"]:
        lines.append(f"{e['rmse_over_scale']:>10.3f}  {e['op_name']:<18} {e['layer'] or '?':<32} "
                     f"{e['tensor_name'][:90]}")
    return "\n".join(lines)
