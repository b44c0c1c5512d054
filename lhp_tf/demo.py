"""``lhp demo``: the whole journey in one command, into one report folder.

Synthesise a small 300W-format face set (or use ``--data-root``), train lhp-small briefly,
evaluate it, convert it to float and int8 TFLite, benchmark both with the on-device
benchmark, and write ``OUT/README.md``: NME (Keras, TFLite float, TFLite int8), int8 drift,
latency, parameters and MFLOPs, the CED curve and a grid of predictions. Every figure in the
report is read back from the JSON files this run wrote beside it (``eval/eval.json``,
``bench/float.json``, ``bench/int8.json``), so the report cannot disagree with them.

Each step calls the module that ``lhp train / eval / data export-eval / convert / bench`` run,
in one process (TensorFlow is imported once).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from lhp_tf.config import recipe_file
from lhp_tf.errors import LhpError
from lhp_tf.kinds import DATASET_FORMATS

#: Synthetic demo schedules. ``default`` finishes in under 15 minutes on a 2-core CPU, ``quick``
#: (CI) in a few; neither is meant to reach the paper's accuracy, only to exercise every step
#: on data a model can learn.
SCHEDULES: dict[str, dict[str, Any]] = {
    "default": {"num": 1500, "epochs": 10, "eval_samples": 200, "bundle_samples": 200,
                "calib_samples": 100, "bench_runs": 100, "val_samples": 64, "learned_steps": 400},
    "quick": {"num": 240, "epochs": 2, "eval_samples": 48, "bundle_samples": 48,
              "calib_samples": 16, "bench_runs": 20, "val_samples": 32, "learned_steps": 40},
}

#: The report's Markdown figures are rounded to these decimals; the test compares at this precision.
NME_DECIMALS = 2
MS_DECIMALS = 3


@dataclass
class DemoPlan:
    """What the demo will run: the recipe file, its overrides and the sizes of each step."""

    recipe_path: Path
    overrides: list[str]
    schedule: dict[str, Any]
    data_label: str
    steps: list[str] = field(default_factory=list)


def _scaled_lr_steps(recipe_path: Path, epochs: int) -> list[str]:
    """``train.lr_steps`` moved to the same fractions of a shorter/longer schedule."""
    from lhp_tf.config import load_recipe

    r = load_recipe(recipe_path)
    steps = sorted({min(epochs - 1, max(1, round(s * epochs / r.train.epochs))) for s in r.train.lr_steps})
    steps = [s for s in steps if 0 < s < epochs]
    return [f"train.epochs={epochs}", f"train.lr_steps={steps}"]


def plan(out: Path, quick: bool = False, recipe: str | None = None, data_root: str | None = None,
         fmt: str = "300w", epochs: int | None = None) -> DemoPlan:
    """Choose recipe and overrides: synthetic 300W by default, a real root with ``data_root``."""
    schedule = dict(SCHEDULES["quick" if quick else "default"])
    overrides: list[str] = []
    if data_root is not None:
        root = Path(data_root)
        if not root.is_dir():
            raise LhpError(f"--data-root {root}: no such folder")
        path = recipe_file(recipe or f"{fmt}-small")
        overrides += [f"data.root={root.resolve()}", "data.synthetic=null", f"data.format={fmt}"]
        label = f"{fmt.upper()} at {root}"
    else:
        path = recipe_file(recipe or "synthetic-300w")
        overrides += [f"data.synthetic.num={schedule['num']}", f"data.cache_dir={(out / 'data').resolve()}"]
        label = "synthetic faces"
    if data_root is None:
        from lhp_tf.config import load_recipe

        label = (f"{schedule['num']} synthetic {load_recipe(path).data.format.upper()}-format faces "
                 "(lhp_tf.data.synth)")
    if epochs is not None or data_root is None:
        n = epochs if epochs is not None else schedule["epochs"]
        if n < 1:
            raise LhpError(f"--epochs {n}: must be >= 1")
        overrides += _scaled_lr_steps(path, n)
    overrides += [f"train.val_samples={schedule['val_samples']}", f"export.calib_samples={schedule['calib_samples']}",
                  f"export.learned_steps={schedule['learned_steps']}"]
    return DemoPlan(path, overrides, schedule, label)


class _Clock:
    """Prints each step with the time it took (the report lists them too)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.start = time.perf_counter()
        self.times: dict[str, float] = {}
        self._step: tuple[str, float] | None = None

    def step(self, name: str) -> None:
        self.done()
        self.say(f"[demo {time.perf_counter() - self.start:6.0f} s] {name}")
        self._step = (name, time.perf_counter())

    def done(self) -> None:
        if self._step is not None:
            name, t = self._step
            self.times[name] = round(time.perf_counter() - t, 1)
            self._step = None

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.start, 1)


def _write_json(path: Path, data: Any) -> None:
    from lhp_tf.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def prediction_grid(images: Sequence[Path], out: Path, columns: int = 3) -> Path | None:
    """Tile the evaluation's sample images (green truth, red prediction) into one PNG."""
    import cv2

    from lhp_tf.checkpoint import atomic_write

    tiles = [t for t in (cv2.imread(str(p)) for p in images) if t is not None]
    if not tiles:
        return None
    h, w = tiles[0].shape[:2]
    tiles = [cv2.resize(t, (w, h)) for t in tiles]
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    ok, buf = cv2.imencode(".png", np.concatenate(rows, axis=0))
    if not ok:
        raise LhpError(f"{out}: OpenCV could not encode the prediction grid")
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(buf.tobytes()))
    return out


def _default_photo() -> Path | None:
    """The packaged public-domain portrait (lhp_tf/assets/README.md)."""
    return Path(__file__).resolve().parent / "assets" / "astronaut.jpg"


def predict_photo(model: Path, photo: Path, out: Path) -> int:
    """``lhp predict`` on one real photo with the exported model; returns the number of faces."""
    import cv2

    from lhp_tf.checkpoint import atomic_write
    from lhp_tf.inference import LandmarkDetector
    from lhp_tf.predict import draw_faces, read_image

    image = read_image(photo)
    faces = LandmarkDetector.from_path(model)(image)
    ok, buf = cv2.imencode(".png", draw_faces(image, faces))
    if not ok:
        raise LhpError(f"{out}: OpenCV could not encode the photo prediction")
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(buf.tobytes()))
    return len(faces)


def run(out: Path, p: DemoPlan, say: Callable[[str], None] = print,
        photo: Path | None = None) -> dict[str, Any]:
    """Run every step of ``p`` into ``out``; returns the summary also written to ``report.json``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from lhp_tf.bench import benchmark
    from lhp_tf.config import load_recipe
    from lhp_tf.converters.export import export_checkpoint
    from lhp_tf.data.bundle import build_bundle, write_bundle
    from lhp_tf.data.datasets import dataset_root
    from lhp_tf.evaluate import evaluate
    from lhp_tf.quantize.learned_ranges import learn_for_checkpoint, learns
    from lhp_tf.train import train

    s = p.schedule
    recipe = load_recipe(p.recipe_path, p.overrides)
    clock = _Clock(say)
    clock.step(f"data: {p.data_label}")
    dataset_root(recipe.data)

    clock.step(f"train: {recipe.name}, {recipe.model.arch}, {recipe.train.epochs} epoch(s) -> {out / 'run'}")
    train(recipe, out / "run")
    ckpt = out / "run" / "best.keras"
    if learns(recipe):
        clock.step(f"learn the int8 ranges, {recipe.export.learned_steps} steps (lhp quantize ranges; "
                   "lhp train does it too)")
        learn_for_checkpoint(ckpt)

    clock.step("evaluate the Keras checkpoint (lhp eval)")
    evaluate(recipe, ckpt, out / "eval", max_samples=s["eval_samples"])

    split = recipe.data.val_split
    bundle = out / "eval_bundle.npz"
    clock.step(f"export the {split!r} split as an evaluation bundle (lhp data export-eval)")
    write_bundle(bundle, build_bundle(recipe, split, s["bundle_samples"]))

    models = {q: out / "models" / f"{recipe.model.arch}_{q}.tflite" for q in ("float", "int8")}
    for q, path in models.items():
        clock.step(f"convert to {q} TFLite (lhp convert) -> {path}")
        export_checkpoint(ckpt, path, to="tflite", quant=q, calib_samples=s["calib_samples"])

    bench: dict[str, Any] = {}
    for q, path in models.items():
        clock.step(f"benchmark {q} on the bundle (lhp bench, 1 thread)")
        ref = models["float"] if q == "int8" else None
        bench[q] = benchmark(path, bundle, reference=ref, threads=1, runs=s["bench_runs"],
                             warmup=min(10, s["bench_runs"]))
        _write_json(out / "bench" / f"{q}.json", bench[q])

    photo_faces = None
    if photo is not None:
        clock.step(f"landmarks on a real photo with the int8 model (lhp predict {photo.name})")
        photo_faces = predict_photo(models["int8"], photo, out / "photo.png")

    clock.step("report")
    grid = prediction_grid(sorted((out / "eval").glob("sample_*.png")), out / "predictions.png")
    clock.done()
    summary = {
        "recipe": recipe.name, "recipe_hash": recipe.hash(), "data": p.data_label,
        "overrides": p.overrides, "epochs": recipe.train.epochs, "arch": recipe.model.arch,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "timings_s": clock.times, "total_s": clock.total,
        "files": {"checkpoint": "run/best.keras", "eval": "eval/eval.json", "ced": "eval/ced.png",
                  "predictions": "predictions.png" if grid else None, "bundle": bundle.name,
                  "float": str(models["float"].relative_to(out)), "int8": str(models["int8"].relative_to(out)),
                  "bench_float": "bench/float.json", "bench_int8": "bench/int8.json",
                  "photo": "photo.png" if photo_faces is not None else None},
        "photo": None if photo is None else {"source": str(photo), "faces": photo_faces},
    }
    _write_json(out / "report.json", summary)
    from lhp_tf.checkpoint import atomic_write_text

    atomic_write_text(out / "README.md", render_report(out))
    return summary


def _f(x: float | None, d: int) -> str:
    return "n/a" if x is None else f"{x:.{d}f}"


def render_report(out: Path) -> str:
    """The Markdown report, built only from the JSON files in ``out`` (re-runnable on its own)."""
    summary = json.loads((out / "report.json").read_text())
    ev = json.loads((out / summary["files"]["eval"]).read_text())
    bf = json.loads((out / summary["files"]["bench_float"]).read_text())
    bi = json.loads((out / summary["files"]["bench_int8"]).read_text())
    split = bf["split"]
    n, m = NME_DECIMALS, MS_DECIMALS
    files = summary["files"]
    lines = [
        "# lhp-tf demo report",
        "",
        f"{summary['created']}: `{summary['recipe']}` (recipe hash {summary['recipe_hash']}), "
        f"{summary['arch']}, {summary['epochs']} epoch(s) on {summary['data']}. "
        f"The whole run took {summary['total_s'] / 60:.1f} min.",
        "",
        "This is a short schedule to show every step working, not a trained model: train on "
        "WFLW or 300W with the full recipes for the paper's accuracy (see the project README).",
        "",
        f"## Accuracy on the {split!r} split (NME %, inter-ocular)",
        "",
        "| model | images | NME % | FR@0.1 % | AUC@0.1 % |",
        "|---|---|---|---|---|",
    ]
    if split in ev["splits"]:
        r = ev["splits"][split]
        lines.append(f"| Keras checkpoint (`lhp eval`) | {r['n']} | {_f(r['nme'], n)} | {_f(r['fr'], n)} | {_f(r['auc'], n)} |")
    for label, b in (("TFLite float (`lhp bench`)", bf), ("TFLite int8 (`lhp bench`)", bi)):
        lines.append(f"| {label} | {b['images']} | {_f(b['nme'], n)} | {_f(b['fr'], n)} | {_f(b['auc'], n)} |")
    d = bi["drift"]
    lines += [
        "",
        f"int8 drift against float: {d['nme_points']:+.{n}f} NME points; the two models' landmarks "
        f"are {_f(d['prediction_nme'], n)} % NME apart.",
        "",
        "## Cost",
        "",
        "| model | params | MFLOPs (mmcv-style) | latency mean ms | p50 ms | p90 ms | file |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, b, key in (("float", bf, "float"), ("int8", bi, "int8")):
        lat = b["latency_ms"]
        size_kb = (out / files[key]).stat().st_size / 1024
        lines.append(f"| {label} | {ev['params']} | {_f(ev['mflops'], n)} | {_f(lat['mean'], m)} | "
                     f"{_f(lat['p50'], m)} | {_f(lat['p90'], m)} | `{files[key]}` ({size_kb:.0f} KiB) |")
    lines += [
        "",
        f"Latency: {bf['runtime']} {bf['runtime_version'] or ''}, {bf['threads']} thread, batch 1, "
        f"XNNPACK took {bf['ops']['delegated']}/{bf['ops']['total']} (float) and "
        f"{bi['ops']['delegated']}/{bi['ops']['total']} (int8) nodes, on the machine that ran the demo.",
        "",
        "## Figures",
        "",
        f"![CED]({files['ced']})",
        "",
    ]
    if files.get("predictions"):
        lines += ["Predictions (red) and ground truth (green):", "", f"![predictions]({files['predictions']})", ""]
    if files.get("photo"):
        ph = summary["photo"]
        lines += [f"The int8 model on a real photo (`{Path(ph['source']).name}`, {ph['faces']} face(s) found "
                  "by the bundled BlazeFace detector):", "", f"![photo]({files['photo']})", ""]
    lines += [
        "## Files",
        "",
        f"- `{files['checkpoint']}`: the Keras checkpoint, with `run/recipe.yaml` (the resolved recipe)",
        f"- `{files['float']}`, `{files['int8']}`: the exported models (with `lhp_tf` metadata)",
        f"- `{files['eval']}`, `{files['bench_float']}`, `{files['bench_int8']}`: every figure above",
        f"- `{files['bundle']}`: the evaluation bundle a board needs for `lhp bench`",
        "",
        "## Steps (seconds)",
        "",
        *(f"- {name}: {sec:.0f}" for name, sec in summary["timings_s"].items()),
        "",
        "Re-run a step by hand:",
        "",
        "```",
        f"lhp eval run/recipe.yaml --checkpoint {files['checkpoint']} --out eval",
        f"lhp convert {files['checkpoint']} --to tflite --quant int8 -o {files['int8']}",
        f"lhp bench {files['int8']} --data {files['bundle']} --reference {files['float']}",
        f"lhp predict photo.jpg --model {files['int8']}",
        "```",
        "",
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lhp demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="lhp_demo", help="report folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="a few minutes instead of ~15 (what CI runs)")
    p.add_argument("--recipe", help="recipe to train, a name or a file (default: synthetic-300w, "
                                    "or FORMAT-small with --data-root)")
    p.add_argument("--data-root", help="a real 300W or WFLW folder instead of synthetic faces")
    p.add_argument("--format", choices=DATASET_FORMATS, default="300w", help="format of --data-root")
    p.add_argument("--epochs", type=int, help="training epochs (learning-rate steps scale along)")
    p.add_argument("--photo", help="a photo to put landmarks on at the end (default: the "
                                   "packaged public-domain portrait)")
    return p


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    if (out / "run" / "state.npz").exists() or (out / "report.json").exists():
        raise LhpError(f"{out}: already holds a demo run; choose another --out or remove it")
    p = plan(out, args.quick, args.recipe, args.data_root, args.format, args.epochs)
    photo = Path(args.photo) if args.photo else _default_photo()
    if photo is not None and not photo.is_file():
        raise LhpError(f"--photo {photo}: no such file")
    out.mkdir(parents=True, exist_ok=True)
    run(out, p, photo=photo)
    print(f"\nreport: {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    from lhp_tf.errors import run_main

    sys.exit(run_main(main, prog="lhp demo"))
