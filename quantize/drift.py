"""How much accuracy int8 costs: float vs int8 NME on an evaluation bundle, and where it is lost.

Both models are the .tflite files ``lhp convert`` writes from the same checkpoint (or a given
int8 file, e.g. the QAT output), run with the board's runtime (``lhp_tf.runtime``) and scored
with the board's decoder and metric (``lhp_tf.bench``), so the figure is the one a user will
see on the device. The per-op part ranks the ops of the post-training int8 model (its float
graph and range table, also when a given ``--int8`` model is scored) by how much of their
signal int8 rounding destroys (:func:`lhp_tf.converters.quantizer.rank_ops`): a diagnostic,
not what ``--int16 auto`` walks (:mod:`lhp_tf.quantize.mixed`).

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
                 int16: Sequence[str] = (), debug_samples: int = 32,
                 top: int = 10, save_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Float vs int8 NME and the ``top`` worst quantised ops, as a JSON-ready dict."""
    from lhp_tf.converters.inference_model import inference_model, load_checkpoint
    from lhp_tf.converters.quantizer import SEARCH_IMAGES, rank_ops
    from lhp_tf.converters.run_folder import find_recipe
    from lhp_tf.converters.tflite import convert, write_bytes

    from lhp_tf.bench import load_bundle
    from lhp_tf.tflite_metadata import read_metadata

    from .calibration import calibration_images

    if int8_model is not None and int16:
        raise LhpError("--int16 chooses how post-training int8 is made; it does not apply to a given --int8 model")
    if debug_samples < 1 or top < 0:
        raise LhpError(f"--debug-samples must be >= 1 and --top >= 0 (got {debug_samples} and {top})")
    rec = find_recipe(checkpoint, recipe, overrides)
    bundle = load_bundle(data)
    trained, spec = load_checkpoint(checkpoint, rec)
    # the deploy graphs `lhp convert` writes (float and int8 forms differ in their pools)
    model = inference_model(trained, spec, where=str(checkpoint), target=DEPLOY_TARGET, quant="int8")
    float_model = inference_model(trained, spec, where=str(checkpoint), target=DEPLOY_TARGET, quant="float")
    calib = calibration_images(rec, calib_samples)

    with tempfile.TemporaryDirectory(prefix="lhp_drift_") as tmp:
        out = Path(save_dir) if save_dir is not None else Path(tmp)
        float_path = out / "float.tflite"
        write_bytes(float_path, convert(float_model, spec, "float", recipe=rec, target=DEPLOY_TARGET).data)
        ptq = convert(model, spec, "int8", calib, rec, int16=int16, trained=trained, target=DEPLOY_TARGET,
                      checkpoint=checkpoint)
        if int8_model is not None:
            int8_path = Path(int8_model)
        else:
            int8_path = out / ("int8_mixed.tflite" if int16 else "int8.tflite")
            write_bytes(int8_path, ptq.data)
        meta = read_metadata(int8_path) if int8_model is None else {}
        ranked = rank_ops(ptq.float_model, ptq.table, calib[:debug_samples])
        decoder = rec.eval.decoder
        float_nme, float_pred = score_tflite(float_path, bundle, decoder)
        int8_nme, int8_pred = score_tflite(int8_path, bundle, decoder)
    from lhp_tf.metrics import nme

    allowed = tolerance(float_nme)
    return {
        "checkpoint": str(checkpoint), "data": str(data), "images": int(len(bundle["images"])),
        "int8_model": str(int8_model) if int8_model is not None else None,
        "calib_samples": int(len(calib)), "debug_samples": int(min(debug_samples, len(calib), SEARCH_IMAGES)),
        "calibration": rec.export.calibration if int8_model is None else None,
        "calibration_chosen": meta.get("calibration_chosen"), "calibration_errors": meta.get("calibration_errors"),
        "int16_selection": list(int16), "int16_ops": meta.get("int16_ops", []),
        "int16_auto": meta.get("int16_auto"), "decoder": decoder,
        "float_nme": float_nme, "int8_nme": int8_nme, "drift_points": int8_nme - float_nme,
        "drift_relative": (int8_nme - float_nme) / float_nme if float_nme > 0 else None,
        "prediction_nme": 100.0 * float(nme(int8_pred, float_pred, bundle["norm"]).mean()),
        "tolerance_points": allowed, "within_tolerance": bool(int8_nme - float_nme <= allowed),
        "worst_ops": [e.as_dict() for e in ranked[:top]],
    }


def format_drift(r: dict[str, Any]) -> str:
    """Human-readable version of :func:`drift_report`."""
    rel = f"{100 * r['drift_relative']:+.2f} %" if r["drift_relative"] is not None else "n/a"
    verdict = "OK" if r["within_tolerance"] else "OVER BUDGET"
    chosen = f" ({r['calibration_chosen']} chosen)" if r.get("calibration_chosen") else ""
    ptq = f"post-training, {r['calib_samples']} calibration images, {r['calibration']} ranges{chosen}"
    lines = [
        f"checkpoint {r['checkpoint']}  data {r['data']} ({r['images']} images, decoder {r['decoder']})",
        f"int8       {r['int8_model'] or ptq}"
        + (f", {len(r['int16_ops'])} int16 ops: {', '.join(r['int16_ops'])}" if r["int16_ops"] else ""),
        f"NME float {r['float_nme']:.4f} %  int8 {r['int8_nme']:.4f} %  drift {r['drift_points']:+.4f} points "
        f"({rel}); budget {r['tolerance_points']:.4f}: {verdict}",
        f"int8 vs float landmarks apart by {r['prediction_nme']:.4f} % NME",
        "",
        f"worst int8 ops (noise-to-signal: RMS int8 rounding/clipping over the RMS spread of the float "
        f"values, on {r['debug_samples']} calibration images):",
        f"{'noise/signal':>12}  {'op':<18} output tensor",
    ]
    for e in r["worst_ops"]:
        lines.append(f"{e['noise_to_signal']:>12.4f}  {e['op']:<18} {e['name'][:100]}")
    return "\n".join(lines)
