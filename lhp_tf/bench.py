"""``lhp bench``: accuracy, drift and latency of a .tflite on the device itself (no TensorFlow).

Runs on a board that has only numpy and a TFLite interpreter (LiteRT or tflite-runtime)::

    python -m lhp_tf.bench model_int8.tflite --data wflw_test.npz --reference model_float.tflite

The evaluation bundle (``lhp data export-eval``, docs/CONTRACTS.md) carries the crops already
warped, so the board needs no image library. Reports NME / FR / AUC at 0.10 (inter-ocular,
in percent) overall and per subset, the NME drift against a reference model, single-image
latency after warm-up, and how many graph nodes XNNPACK took.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from lhp_tf.codec import landmarks_from_crops
from lhp_tf.errors import LhpError, run_main
from lhp_tf.kinds import DECODERS
from lhp_tf.metrics import auc, failure_rate, nme
from lhp_tf.runtime import TFLiteModel, op_delegation

#: keys every evaluation bundle must carry (docs/CONTRACTS.md, "Evaluation bundle")
BUNDLE_KEYS = ("images", "landmarks", "crop2img", "norm", "subset_names", "subset_masks",
               "format", "split", "input_size")

#: threshold of the failure rate and the AUC, as in the paper's tables
THRESHOLD = 0.10


def load_bundle(path: str | Path) -> dict[str, Any]:
    """Read and validate an evaluation bundle; every problem is an LhpError naming the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in BUNDLE_KEYS if k not in npz.files]
            if missing:
                raise LhpError(f"{path}: evaluation bundle is missing {', '.join(missing)} "
                               f"(has {', '.join(npz.files) or 'nothing'}); re-export it with 'lhp data export-eval'")
            data = {k: npz[k] for k in BUNDLE_KEYS}
    except FileNotFoundError as exc:
        raise LhpError(f"{path}: evaluation bundle not found") from exc
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise LhpError(f"{path}: not a readable .npz evaluation bundle ({exc})") from exc

    images, lms = data["images"], data["landmarks"]
    n = images.shape[0] if images.ndim else 0
    checks = [
        (images.ndim == 4 and images.shape[3] == 3 and images.dtype == np.uint8,
         f"images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}"),
        (lms.ndim == 3 and lms.shape[0] == n and lms.shape[2] == 2,
         f"landmarks must be (N, K, 2) with N = {n}, got {lms.shape}"),
        (data["crop2img"].shape == (n, 2, 3), f"crop2img must be ({n}, 2, 3), got {data['crop2img'].shape}"),
        (data["norm"].shape == (n,), f"norm must be ({n},), got {data['norm'].shape}"),
        (data["subset_masks"].ndim == 2 and data["subset_masks"].shape == (data["subset_names"].shape[0], n),
         f"subset_masks must be (S, {n}) for {data['subset_names'].shape[0]} subset names, "
         f"got {data['subset_masks'].shape}"),
        (data["input_size"].shape == (2,) and images.ndim == 4
         and tuple(int(v) for v in data["input_size"]) == tuple(images.shape[1:3]),
         f"input_size {data['input_size'].tolist()} does not match images {images.shape[1:3]}"),
        (n > 0, "no images"),
    ]
    for ok, message in checks:
        if not ok:
            raise LhpError(f"{path}: {message}")
    _check_values(path, data)
    data["format"] = str(data["format"])
    data["split"] = str(data["split"])
    data["subset_names"] = [str(s) for s in data["subset_names"]]
    data["subset_masks"] = data["subset_masks"].astype(bool)
    return data


def _first_bad(bad: np.ndarray) -> str:
    """'image I (and N more)' for a per-image boolean of problems."""
    idx = np.flatnonzero(bad)
    return f"image {int(idx[0])}" + (f" and {idx.size - 1} more" if idx.size > 1 else "")


def _check_values(path: Path, data: dict[str, Any]) -> None:
    """Refuse numbers that would make the report up: a NaN landmark turns the NME into nan
    and the failure rate into 0 %, an infinite normaliser makes one face's error vanish."""
    with np.errstate(invalid="ignore", over="ignore"):
        lms = np.asarray(data["landmarks"], np.float64)
        bad = ~np.isfinite(lms).all(axis=(1, 2))
        if bad.any():
            raise LhpError(f"{path}: landmarks are NaN or infinite ({_first_bad(bad)}); re-export the bundle")
        norm = np.asarray(data["norm"], np.float64)
        bad = ~np.isfinite(norm) | (norm <= 0)
        if bad.any():
            raise LhpError(f"{path}: norm has non-positive or non-finite inter-ocular distances ({_first_bad(bad)}, "
                           f"{float(norm[np.flatnonzero(bad)[0]])!r})")
        m = np.asarray(data["crop2img"], np.float64)
        det = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
        bad = ~np.isfinite(m).all(axis=(1, 2)) | ~np.isfinite(det) | (np.abs(det) < 1e-12)
        if bad.any():
            raise LhpError(f"{path}: crop2img must be a finite, invertible affine per image ({_first_bad(bad)})")


def _check_model_fits(model: TFLiteModel, bundle: dict[str, Any], bundle_path: Path) -> None:
    size = tuple(int(v) for v in bundle["input_size"])
    if size != model.input_size:
        raise LhpError(f"{model.path}: model input is {model.input_size[0]}x{model.input_size[1]} but "
                       f"{bundle_path} holds {size[0]}x{size[1]} crops; export the bundle at the model's size")
    k = bundle["landmarks"].shape[1]
    if k != model.num_landmarks:
        raise LhpError(f"{model.path}: model predicts {model.num_landmarks} landmarks but {bundle_path} "
                       f"has {k} ({bundle['format']}); wrong model or wrong bundle")


def predict_landmarks(model: TFLiteModel, bundle: dict[str, Any], decoder: str | None = None,
                      flip: bool = False, chunk: int = 64) -> np.ndarray:
    """Image-pixel landmarks ``(N, K, 2)`` for every crop of the bundle.

    Decodes with the model's own codec (its metadata), ``decoder`` overriding its decoder.
    Works ``chunk`` images at a time: a whole WFLW test set of 98-channel heatmaps would
    need over 1 GB in float64 while decoding, more than many boards have.
    """
    perm = None
    if flip:
        perm = model.spec.flip_array() if model.spec is not None else None
        if perm is None:
            raise LhpError(f"{model.path}: --flip needs the flip permutation of the model's lhp_tf metadata")
    codec = model.codec.with_decoder(decoder)
    images = bundle["images"]
    out = np.empty((images.shape[0], model.num_landmarks, 2), dtype=np.float64)
    for start in range(0, images.shape[0], chunk):
        out[start:start + chunk], _ = landmarks_from_crops(
            model.predict, images[start:start + chunk], bundle["crop2img"][start:start + chunk], codec, perm)
    return out


def accuracy(nmes: np.ndarray) -> dict[str, float]:
    """NME, FR and AUC at 0.10 in PERCENT (the metrics module works in fractions)."""
    return {"nme": 100.0 * float(nmes.mean()), "fr": 100.0 * failure_rate(nmes, THRESHOLD),
            "auc": 100.0 * auc(nmes, THRESHOLD), "count": int(nmes.size)}


def measure_latency(model: TFLiteModel, image: np.ndarray, runs: int, warmup: int) -> dict[str, float]:
    """Milliseconds per single-image invoke (batch 1, input already prepared), after warm-up."""
    x = model.prepare(image)
    for _ in range(warmup):
        model.invoke_prepared(x)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        model.invoke_prepared(x)
        times[i] = (time.perf_counter() - start) * 1e3
    return {"mean": float(times.mean()), "p50": float(np.percentile(times, 50)),
            "p90": float(np.percentile(times, 90)), "p99": float(np.percentile(times, 99))}


def _runtime_version(runtime: str) -> str | None:
    try:
        return importlib_metadata.version(runtime.replace("_", "-"))
    except importlib_metadata.PackageNotFoundError:
        return None


def benchmark(model_path: str | Path, data_path: str | Path, reference: str | Path | None = None,
              threads: int = 1, runs: int = 100, warmup: int = 10, decoder: str | None = None,
              flip: bool = False) -> dict[str, Any]:
    """The whole benchmark as a JSON-ready dict (accuracy figures in percent)."""
    data_path = Path(data_path)
    bundle = load_bundle(data_path)
    model = TFLiteModel(model_path, num_threads=threads)
    _check_model_fits(model, bundle, data_path)
    pred = predict_landmarks(model, bundle, decoder, flip)
    nmes = nme(pred, bundle["landmarks"], bundle["norm"])
    overall = accuracy(nmes)
    subsets = {name: accuracy(nmes[mask]) for name, mask in zip(bundle["subset_names"], bundle["subset_masks"], strict=True)
               if mask.any()}
    meta = model.metadata or {}
    codec = model.codec.with_decoder(decoder)
    report: dict[str, Any] = {
        "model": str(model.path), "data": str(data_path), "format": bundle["format"],
        "split": bundle["split"], "images": int(nmes.size),
        "runtime": model.runtime, "runtime_version": _runtime_version(model.runtime),
        "quant": meta.get("quant", "int8" if np.issubdtype(model.input_dtype, np.integer) else "float"),
        "has_metadata": model.metadata is not None, "decoder": codec.decoder,
        "codec": codec.to_dict(), "flip": flip, "threads": threads,
        "nme": overall["nme"], "fr": overall["fr"], "auc": overall["auc"], "subsets": subsets,
        "reference_nme": None, "drift": None,
    }
    if reference is not None:
        ref = TFLiteModel(reference, num_threads=threads)
        _check_model_fits(ref, bundle, data_path)
        ref_pred = predict_landmarks(ref, bundle, decoder, flip)
        ref_nme = 100.0 * float(nme(ref_pred, bundle["landmarks"], bundle["norm"]).mean())
        report["reference"] = str(ref.path)
        report["reference_nme"] = ref_nme
        report["drift"] = {
            "nme_points": overall["nme"] - ref_nme,
            "relative": (overall["nme"] - ref_nme) / ref_nme if ref_nme > 0 else None,
            # how far the two models' landmarks are from each other, whatever the ground truth
            "prediction_nme": 100.0 * float(nme(pred, ref_pred, bundle["norm"]).mean()),
        }
    report["latency_ms"] = measure_latency(model, bundle["images"][0], runs, warmup)
    report["ops"] = op_delegation(model.path, num_threads=threads)
    return report


def _left_out(ops: dict[str, int]) -> str:
    return "; not taken: " + ", ".join(f"{name} x{n}" for name, n in ops.items()) if ops else ""


def format_report(r: dict[str, Any]) -> str:
    """Human-readable summary of :func:`benchmark`'s dict."""
    lines = [
        f"model    {r['model']}  ({r['quant']}, {r['runtime']} {r['runtime_version'] or ''}, "
        f"{r['threads']} thread(s))".rstrip(),
        f"data     {r['data']}  ({r['format']} {r['split']}, {r['images']} images, decoder {r['decoder']}"
        f"{', flip test' if r['flip'] else ''})",
        "",
        f"{'subset':<16} {'n':>6} {'NME %':>8} {'FR@0.1 %':>9} {'AUC@0.1 %':>10}",
        f"{'all':<16} {r['images']:>6} {r['nme']:>8.3f} {r['fr']:>9.2f} {r['auc']:>10.2f}",
    ]
    for name, s in r["subsets"].items():
        lines.append(f"{name:<16} {s['count']:>6} {s['nme']:>8.3f} {s['fr']:>9.2f} {s['auc']:>10.2f}")
    if r["drift"] is not None:
        d = r["drift"]
        rel = f"{100 * d['relative']:+.1f} %" if d["relative"] is not None else "n/a"
        lines += ["", f"reference {r['reference']}: NME {r['reference_nme']:.3f} %, drift "
                  f"{d['nme_points']:+.3f} points ({rel}), landmarks apart by {d['prediction_nme']:.3f} % NME"]
    lat = r["latency_ms"]
    lines += ["", f"latency  mean {lat['mean']:.3f} ms  p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  "
              f"p99 {lat['p99']:.3f} (batch 1, after warm-up)",
              f"XNNPACK  {r['ops']['delegated']} of {r['ops']['total']} nodes delegated in "
              f"{r['ops']['partitions']} partition(s)" + _left_out(r["ops"]["not_delegated"])]
    if not r["has_metadata"]:
        lines.append("note: the model carries no lhp_tf metadata; assumed input scale 1/255, mean 0")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lhp bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help=".tflite to benchmark")
    p.add_argument("--data", required=True, help="evaluation bundle .npz ('lhp data export-eval')")
    p.add_argument("--reference", help="reference .tflite (usually the float model) to measure drift against")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--runs", type=int, default=100, help="timed single-image runs (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--decoder", choices=DECODERS, default=None,
                   help="heatmap decoder (default: the model's codec, from its metadata)")
    p.add_argument("--flip", action="store_true", help="flip test: average with the mirrored crop's heatmaps")
    p.add_argument("--json", action="store_true", help="print the report as JSON (accuracy in percent)")
    return p


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.threads < 1 or args.runs < 1 or args.warmup < 0:
        raise LhpError("--threads and --runs must be >= 1 and --warmup >= 0")
    report = benchmark(args.model, args.data, args.reference, args.threads, args.runs, args.warmup,
                       args.decoder, args.flip)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, prog="lhp bench"))
