"""A picture of what the model is fed (``lhp data show``): crops, landmarks, heatmap targets.

Each tile is one pipeline output: the input crop with the target landmarks (green; red
when their weight is 0), the heatmap maximum over landmarks blended in red, and a cyan
cross at the sub-pixel centre the model's codec decodes from each heatmap. When the cross and the dot
agree after rotation, scaling and flipping, the augmentation and the targets agree.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from lhp_tf.codec import HeatmapCodec


def draw_tile(image: np.ndarray, points: np.ndarray, weight: np.ndarray, heatmap: np.ndarray,
              codec: HeatmapCodec, scale: int = 3) -> np.ndarray:
    """One tile (RGB uint8, ``scale`` times the crop size); crosses decoded with ``codec``."""
    h, w = image.shape[:2]
    img = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    hm = cv2.resize(heatmap.max(-1), (w, h), interpolation=cv2.INTER_LINEAR)
    img = (img * (1 - 0.35 * hm[..., None]) + np.array([255, 0, 0]) * 0.35 * hm[..., None]).astype(np.uint8)
    big = cv2.resize(img, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
    centres = codec.decode(heatmap[None])[0][0]
    for (x, y), ok, (cx, cy) in zip(points, weight, centres, strict=True):
        p = (int(round((x + 0.5) * scale - 0.5)), int(round((y + 0.5) * scale - 0.5)))
        cv2.circle(big, p, 2, (0, 255, 0) if ok else (255, 0, 0), -1, cv2.LINE_AA)
        if ok:
            q = (int(round((cx + 0.5) * scale - 0.5)), int(round((cy + 0.5) * scale - 0.5)))
            cv2.drawMarker(big, q, (0, 255, 255), cv2.MARKER_CROSS, 5, 1)
    return big


def show(recipe, split: str, out: Path, augment: bool, num: int = 16, seed: int = 0) -> Path:
    """Write a grid of ``num`` pipeline outputs of ``split`` to ``out`` (PNG)."""
    from lhp_tf.data import pipeline
    from lhp_tf.data.datasets import read_split
    from lhp_tf.spec import ModelSpec

    samples = read_split(recipe.data, split)
    batch = next(iter(pipeline.batches(recipe, samples, seed, 0, augment=augment, batch_size=num)))
    b = {k: v.numpy() for k, v in batch.items()}
    codec = ModelSpec.from_recipe(recipe).codec
    tiles = [draw_tile(b["image"][i], b["points"][i], b["weight"][i], b["heatmap"][i], codec)
             for i in range(len(b["image"]))]
    cols = int(np.ceil(np.sqrt(len(tiles))))
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + cols], axis=1) for i in range(0, len(tiles), cols)]
    grid = cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", grid)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(buf.tobytes())
    os.replace(tmp, out)
    return out
