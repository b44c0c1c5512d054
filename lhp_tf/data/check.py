"""Validate a dataset root: sample count and every problem per split (``lhp data check``).

Unlike training (which stops at or skips the first bad line), a check reads everything in
skip mode and also decodes every image, so one run lists all problems at once.
This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from lhp_tf.data.datasets import SPLITS, read_samples
from lhp_tf.data.sample import ProblemLog, Sample

#: a landmark further outside its image than this fraction of the image's larger side is
#: an annotation error (real datasets have points just past the border, not half a frame)
OUTSIDE_MARGIN = 0.5


def jpeg_truncated(data: bytes) -> bool:
    """Whether a JPEG stream stops before its end-of-image marker.

    libjpeg decodes a truncated file with a warning, filling the rest grey, so a decode
    alone passes it. Inside entropy-coded data 0xFF is always followed by 0x00 or a restart
    marker, so an EOI (FF D9) after the last start-of-scan (FF DA) means the scan was finished.
    """
    if not data.startswith(b"\xff\xd8"):
        return False
    return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda") or data.rfind(b"\xff\xd9") < 0


def _inspect(path: str) -> tuple[str | None, tuple[int, int] | None]:
    """(problem or None, approximate (H, W)) of an image file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return f"unreadable image: {path} ({exc.strerror or exc})", None
    # the decoder training uses (imread; imdecode is stricter on truncated files); a reduced
    # decode still parses the whole stream, at a fraction of the cost
    img = cv2.imread(path, cv2.IMREAD_REDUCED_GRAYSCALE_8) if data else None
    if img is None:
        return f"unreadable image: {path}", None
    if jpeg_truncated(data):
        return f"truncated image: {path} (the JPEG stops before its end marker; decoders fill the rest grey)", None
    return None, (img.shape[0] * 8, img.shape[1] * 8)


def outside_problem(sample: Sample, size: tuple[int, int]) -> str | None:
    """Landmarks far outside the decoded image (a wrong file, scale or coordinate origin)."""
    h, w = size
    m = OUTSIDE_MARGIN * max(h, w)
    lm = sample.landmarks
    bad = (lm[:, 0] < -m) | (lm[:, 0] > w + m) | (lm[:, 1] < -m) | (lm[:, 1] > h + m)
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    return (f"landmarks far outside the image: point {i} at ({lm[i, 0]:.1f}, {lm[i, 1]:.1f}) in an "
            f"image of about {w}x{h} ({int(bad.sum())} such points): {sample.image_path}")


def check_root(fmt: str, root: Path, csv_dir: Path | None = None, decode: bool = True) -> dict:
    """``{"splits": {split: {"samples": N, "problems": [...]}}}`` for every split of the format.

    ``"error"`` is set when no split holds a single sample (an empty root or the wrong format).
    """
    out: dict = {"format": fmt, "root": str(root), "splits": {}}
    seen: dict[str, tuple[str | None, tuple[int, int] | None]] = {}
    for split in SPLITS[fmt]:
        log = ProblemLog("skip")
        samples = read_samples(fmt, root, split, log, csv_dir)
        good: list[Sample] = []
        if decode:
            todo = sorted({s.image_path for s in samples} - seen.keys())
            with ThreadPoolExecutor(2) as pool:
                seen.update(zip(todo, pool.map(_inspect, todo), strict=True))
        for s in samples:
            problem = None
            if decode:
                problem, size = seen[s.image_path]
                if problem is None and size is not None:
                    problem = outside_problem(s, size)
            if problem is not None:
                file, _, line = s.source.rpartition(":")
                log.report(file, int(line) if line.isdigit() else None, problem)
            else:
                good.append(s)
        out["splits"][split] = {"samples": len(good), "problems": [p.to_dict() for p in log.problems]}
    if not any(r["samples"] for r in out["splits"].values()):
        out["error"] = (f"{root}: no usable {fmt} sample in any split; is --format right for this root "
                        f"(300w: afw/, helen/, lfpw/, ibug/ with .pts; wflw: WFLW_annotations/)?")
    return out


def format_report(report: dict) -> str:
    lines = [f"{report['format']} dataset at {report['root']}"]
    width = max(len(s) for s in report["splits"])
    for split, r in report["splits"].items():
        lines.append(f"  {split:<{width}}  {r['samples']:6d} samples  {len(r['problems'])} problems")
    for split, r in report["splits"].items():
        for p in r["problems"]:
            where = f"{p['file']}:{p['line']}" if p["line"] is not None else p["file"]
            lines.append(f"{split}: {where}: {p['error']}")
    if report.get("error"):
        lines.append(f"error: {report['error']}")
    return "\n".join(lines)
