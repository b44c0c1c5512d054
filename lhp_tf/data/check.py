"""Validate a dataset root: sample count and every problem per split (``lhp data check``).

Unlike training (which stops at or skips the first bad line), a check reads everything in
skip mode and also decodes every image, so one run lists all problems at once.
This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2

from lhp_tf.data.datasets import SPLITS, read_samples
from lhp_tf.data.sample import ProblemLog, Sample


def _readable(path: str) -> bool:
    # a reduced decode still parses the whole stream, at a fraction of the cost
    return cv2.imread(path, cv2.IMREAD_REDUCED_GRAYSCALE_8) is not None


def check_root(fmt: str, root: Path, csv_dir: Path | None = None, decode: bool = True) -> dict:
    """``{"splits": {split: {"samples": N, "problems": [...]}}}`` for every split of the format."""
    out: dict = {"format": fmt, "root": str(root), "splits": {}}
    readable: dict[str, bool] = {}
    for split in SPLITS[fmt]:
        log = ProblemLog("skip")
        samples = read_samples(fmt, root, split, log, csv_dir)
        good: list[Sample] = []
        if decode:
            todo = sorted({s.image_path for s in samples} - readable.keys())
            with ThreadPoolExecutor(2) as pool:
                readable.update(zip(todo, pool.map(_readable, todo), strict=True))
        for s in samples:
            if decode and not readable[s.image_path]:
                file, _, line = s.source.rpartition(":")
                log.report(file, int(line) if line.isdigit() else None, f"unreadable image: {s.image_path}")
            else:
                good.append(s)
        out["splits"][split] = {"samples": len(good), "problems": [p.to_dict() for p in log.problems]}
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
    return "\n".join(lines)
