"""``lhp predict PATH --model MODEL``: landmarks on a photo, a folder of photos or a video.

Writes, into ``--out``, each input annotated with its faces' landmarks (images keep their
name; videos become ``NAME.mp4`` or, where OpenCV has no mp4v encoder, ``NAME.avi`` in MJPG)
and ``predictions.json``::

    {"model": ..., "files": [{"file": ..., "faces": [{"box": [x0, y0, x1, y1],
      "landmarks": [[x, y], ...], "confidence": [...], "score": ...}]}]}

Files that cannot be read are listed as ``"failed": [{"file": ..., "error": ...}]``; the others
are still processed, and the command then exits with 1. The JSON is replaced atomically at the
end (also when interrupted, then with ``"interrupted": true``), so it always describes the
pictures beside it.

``box`` is the face box the model's crop was made from (the detector's box mapped onto the
landmarks' extent, :func:`lhp_tf.face_detect.landmark_box`), ``confidence`` the heatmap peak
per landmark and ``score`` the face detector's. A video's entry holds
``"frames": [{"frame": i, "faces": [...]}]`` instead of ``"faces"``, with a ``"track"`` id per
face when smoothing.
``--smooth ALPHA`` filters video landmarks over time (One-Euro, per face track, see
:mod:`lhp_tf.smoothing`). With a ``.tflite`` model nothing here imports TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lhp_tf.errors import LhpError
from lhp_tf.kinds import DECODERS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
RESULTS_FILE = "predictions.json"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lhp predict", description=__doc__.split("\n")[0])
    p.add_argument("path", help="an image, a folder of images/videos, or a video file")
    p.add_argument("--model", required=True, help="a .tflite (no TensorFlow needed) or a .keras checkpoint")
    p.add_argument("--recipe", help="recipe of a .keras checkpoint outside its run folder")
    p.add_argument("--out", default="lhp_predictions", help="output folder (default: %(default)s)")
    p.add_argument("--json", action="store_true", help=f"print the {RESULTS_FILE} content to stdout")
    p.add_argument("--smooth", type=float, metavar="ALPHA",
                   help="video only: One-Euro smoothing, ALPHA in (0, 1] = weight of a new frame "
                        "when the face is still (0.3 is steady, 1 is off)")
    p.add_argument("--detector", choices=("short", "full"), default="short",
                   help="BlazeFace variant: short (faces within ~2 m, default) or full (small/far faces)")
    p.add_argument("--decoder", choices=DECODERS, default=None,
                   help="heatmap decoder (default: the model's codec)")
    p.add_argument("--max-faces", type=int, default=0, help="keep at most N faces per image (0: all)")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads")
    p.add_argument("--no-draw", action="store_true", help="write only the JSON, no annotated images")
    return p


def collect_inputs(path: Path) -> list[Path]:
    """The files to process: ``path`` itself, or the images and videos in a folder (sorted)."""
    if not path.exists():
        raise LhpError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        if not files:
            raise LhpError(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                           f"or videos ({', '.join(sorted(VIDEO_SUFFIXES))})")
        return files
    return [path]


def read_image(path: Path) -> np.ndarray:
    """A BGR image, or an LhpError naming the file (cv2.imread returns None silently)."""
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise LhpError(f"{path}: cannot read this file as an image (unsupported format or corrupt)")
    return image


def draw_faces(image: np.ndarray, faces: Sequence[Any], points: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """A copy of ``image`` with each face's box and landmarks drawn, sized to the face."""
    out = image.copy()
    for i, face in enumerate(faces):
        pts = face.landmarks if points is None else points[i]
        x0, y0, x1, y1 = (float(v) for v in face.box)
        size = max(x1 - x0, y1 - y0)
        radius = max(1, int(round(size / 90)))
        thick = max(1, int(round(size / 150)))
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)), (255, 160, 0), thick, cv2.LINE_AA)
        for (x, y), c in zip(np.asarray(pts), face.confidence, strict=True):
            # green when the model is sure, red when it is not
            colour = (0, int(255 * min(max(c, 0.0), 1.0)), int(255 * (1 - min(max(c, 0.0), 1.0))))
            cv2.circle(out, (int(round(x)), int(round(y))), radius, colour, -1, cv2.LINE_AA)
    return out


def _write_image(path: Path, image: np.ndarray) -> None:
    from lhp_tf.checkpoint import atomic_write

    ok, buf = cv2.imencode(path.suffix if path.suffix.lower() in IMAGE_SUFFIXES else ".png", image)
    if not ok:
        raise LhpError(f"{path}: OpenCV could not encode this image")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.tobytes()))


def _faces_json(faces: Sequence[Any], points: Sequence[np.ndarray] | None = None) -> list[dict[str, Any]]:
    out = []
    for i, face in enumerate(faces):
        d = face.to_dict()
        if points is not None:
            d["landmarks"] = [[round(float(x), 2), round(float(y), 2)] for x, y in points[i]]
        out.append(d)
    return out


def predict_image(detector: Any, path: Path, out_dir: Path | None, max_faces: int = 0) -> dict[str, Any]:
    """Landmarks of one photo; writes ``out_dir/NAME`` annotated unless ``out_dir`` is None."""
    image = read_image(path)
    faces = detector(image)
    if max_faces > 0:
        faces = faces[:max_faces]
    if out_dir is not None:
        _write_image(out_dir / path.name, draw_faces(image, faces))
    return {"file": str(path), "faces": _faces_json(faces)}


def _open_writer(path_stem: Path, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, Path, Path]:
    """An mp4v writer (MJPG .avi where this OpenCV cannot encode mp4v), writing to a temp file."""
    for suffix, codec in ((".mp4", "mp4v"), (".avi", "MJPG")):
        fd, tmp = tempfile.mkstemp(prefix=f".{path_stem.name}.", suffix=suffix, dir=path_stem.parent)
        os.close(fd)
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*codec), fps, size)
        if writer.isOpened():
            return writer, Path(tmp), path_stem.with_suffix(suffix)
        writer.release()
        os.unlink(tmp)
    raise LhpError(f"{path_stem}: this OpenCV build can write neither mp4v nor MJPG video")


def predict_video(detector: Any, path: Path, out_dir: Path | None, smooth: float | None = None,
                  max_faces: int = 0) -> dict[str, Any]:
    """Landmarks on every frame of a video, optionally smoothed per face track."""
    from lhp_tf.smoothing import FaceTracks

    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read() if cap.isOpened() else (False, None)
    if not ok:
        cap.release()
        raise LhpError(f"{path}: cannot read this file as a video (unsupported codec or corrupt)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    tracks = FaceTracks(smooth) if smooth is not None else None
    writer = tmp = final = None
    if out_dir is not None:
        writer, tmp, final = _open_writer(out_dir / path.stem, fps, (frame.shape[1], frame.shape[0]))
    frames: list[dict[str, Any]] = []
    try:
        index = 0
        while ok:
            faces = detector(frame)
            if max_faces > 0:
                faces = faces[:max_faces]
            points = None
            entry: dict[str, Any] = {"frame": index}
            if tracks is not None:
                ids, points = tracks.update([f.box for f in faces], [f.landmarks for f in faces])
                entry["faces"] = _faces_json(faces, points)
                for face_json, tid in zip(entry["faces"], ids, strict=True):
                    face_json["track"] = tid
            else:
                entry["faces"] = _faces_json(faces)
            frames.append(entry)
            if writer is not None:
                writer.write(draw_faces(frame, faces, points))
            ok, frame = cap.read()
            index += 1
    except BaseException:
        if writer is not None:
            writer.release()
            tmp.unlink(missing_ok=True)
        raise
    finally:
        cap.release()
    if writer is not None:
        writer.release()
        os.replace(tmp, final)
    return {"file": str(path), "fps": float(fps), "frames": frames}


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.smooth is not None and not 0.0 < args.smooth <= 1.0:
        raise LhpError(f"--smooth {args.smooth}: ALPHA must be in (0, 1]")
    if args.threads < 1 or args.max_faces < 0:
        raise LhpError("--threads must be >= 1 and --max-faces >= 0")
    from lhp_tf.inference import LandmarkDetector

    inputs = collect_inputs(Path(args.path))
    detector = LandmarkDetector.from_path(args.model, recipe=args.recipe, decoder=args.decoder,
                                          detector=args.detector, num_threads=args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    draw_dir = None if args.no_draw else out_dir
    results: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    log = sys.stderr if args.json else sys.stdout
    finished = False
    folder = Path(args.path).is_dir()
    try:
        for path in inputs:
            try:
                entry = _predict_file(detector, path, draw_dir, args, log)
            except (LhpError, cv2.error) as exc:
                if not folder:
                    raise
                # one unreadable file must not cost the others: report it and go on
                failed.append({"file": str(path), "error": str(exc)})
                print(f"lhp predict: {exc}", file=sys.stderr)
                continue
            results.append(entry)
        finished = True
    finally:
        # Written even when interrupted, so the JSON always describes the pictures beside it
        # (a single input that failed has written nothing, and leaves the old JSON alone).
        doc = {"model": str(args.model), "num_landmarks": detector.spec.num_landmarks, "files": results,
               "failed": failed, **({} if finished else {"interrupted": True})}
        text = json.dumps(doc, indent=1)
        if finished or results or failed:
            from lhp_tf.checkpoint import atomic_write_text

            atomic_write_text(out_dir / RESULTS_FILE, text)
    if args.json:
        print(text)
    else:
        print(f"wrote {out_dir / RESULTS_FILE}" + ("" if args.no_draw else " and the annotated files beside it"))
    if failed:
        print(f"lhp predict: {len(failed)} of {len(inputs)} files failed (listed under \"failed\" in "
              f"{out_dir / RESULTS_FILE})", file=sys.stderr)
        return 1
    return 0


def _predict_file(detector: Any, path: Path, draw_dir: Path | None, args: argparse.Namespace,
                  log: Any) -> dict[str, Any]:
    if path.suffix.lower() in VIDEO_SUFFIXES:
        entry = predict_video(detector, path, draw_dir, args.smooth, args.max_faces)
        counts = [len(f["faces"]) for f in entry["frames"]]
        found = sum(1 for c in counts if c)
        print(f"{path}: {len(counts)} frames, a face in {found}", file=log)
    else:
        entry = predict_image(detector, path, draw_dir, args.max_faces)
        n = len(entry["faces"])
        print(f"{path}: {'no face found' if n == 0 else f'{n} face' + ('s' if n > 1 else '')}", file=log)
    return entry


if __name__ == "__main__":
    from lhp_tf.errors import run_main

    sys.exit(run_main(main, prog="lhp predict"))
