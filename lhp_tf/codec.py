"""The heatmap codec: the one object that knows how landmarks become heatmaps and back.

Training draws Gaussian targets with it (``lhp_tf.data.pipeline`` uses its stride, sigma and
coordinate formula), and ``lhp eval``, ``lhp bench``, inference and ``lhp predict`` decode
with it, through :func:`landmarks_from_crops`. Its fields travel inside the checkpoint
(``lhp_tf.spec.ModelSpec``) and the .tflite metadata, so a board decodes exactly as the
exporter meant, with numpy only (this module imports neither TensorFlow nor Keras).

Coordinates (docs/CONTRACTS.md): pixel centres at integer positions; a crop point ``x`` sits at
heatmap coordinate ``u = (x + 0.5) / stride - 0.5``.

The DARK decoder's Gaussian modulation kernel follows sigma (:func:`dark_kernel_for`), as
mmpose ties its blur kernel to sigma: the kernel that recovers sub-pixel peaks best depends on
how wide the trained Gaussians are (``benchmarks/dark_kernel.py`` measures it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lhp_tf import decode as dec
from lhp_tf.errors import LhpError
from lhp_tf.kinds import ACTIVATION, DECODERS
from lhp_tf.model.presets import STEM_STRIDE

#: stride of the heatmaps relative to the input crop: the shuffle stem's
HEATMAP_STRIDE = STEM_STRIDE


def dark_kernel_for(sigma: float) -> int:
    """The DARK blur kernel (odd tap count) for heatmaps drawn with ``sigma`` heatmap pixels.

    The odd size whose OpenCV default sigma (``0.3 * ((k - 1) / 2 - 1) + 0.8``) is closest to
    ``0.4 * sigma``, at least 3. ``benchmarks/dark_kernel.py`` measured the sub-pixel error of
    every kernel on noisy 24x24 Gaussian heatmaps: the best kernel was 3 for sigma 1 to 2 and 5
    for sigma 2.5 and 3, which this rule picks. mmpose's rule (kernel sigma equal to the
    target's: 11 taps for sigma 2) was 2-4x worse at this resolution, where a wide blur drags
    the peak towards the reflected border. On the trained synthetic lhp-small (sigma 2, 300
    held-out faces) NME was 4.5711 % with 3 taps, 4.5714 % with the former fixed 5 and 5.0563 %
    with 11 (``python benchmarks/dark_kernel.py --run runs/synthetic-300w``).
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    k = 2 * ((0.4 * sigma - 0.8) / 0.3 + 1) + 1
    return max(3, int(2 * round((k - 1) / 2) + 1))


@dataclass(frozen=True)
class HeatmapCodec:
    """Landmarks <-> heatmaps for one model.

    ``activation`` is what the exported model applies to its logits (``sigmoid`` after BCE,
    ``none`` after MSE); ``dark_kernel`` 0 means "derived from sigma".
    """

    input_size: tuple[int, int] = (96, 96)
    stride: int = HEATMAP_STRIDE
    sigma: float = 1.5
    activation: str = "sigmoid"
    decoder: str = "dark"
    dark_kernel: int = 0

    def __post_init__(self) -> None:
        size = self.input_size
        if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(_is_int(v) for v in size)):
            raise LhpError(f"codec: input_size must be two integers (H, W), got {size!r}")
        object.__setattr__(self, "input_size", (int(size[0]), int(size[1])))
        for key in ("stride", "dark_kernel"):
            if not _is_int(getattr(self, key)):
                raise LhpError(f"codec: {key} must be an integer, got {getattr(self, key)!r}")
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float)):
            raise LhpError(f"codec: sigma must be a number, got {self.sigma!r}")
        h, w = self.input_size
        if self.stride < 1 or h % self.stride or w % self.stride:
            raise LhpError(f"codec: input size {h}x{w} is not a multiple of the heatmap stride {self.stride}")
        if not self.sigma > 0:
            raise LhpError(f"codec: sigma must be > 0, got {self.sigma}")
        if self.activation not in ACTIVATION.values():
            raise LhpError(f"codec: activation {self.activation!r}: expected one of "
                           f"{', '.join(sorted(set(ACTIVATION.values())))}")
        if self.decoder not in DECODERS:
            raise LhpError(f"codec: decoder {self.decoder!r}: expected one of {', '.join(DECODERS)}")
        if self.dark_kernel == 0:
            object.__setattr__(self, "dark_kernel", dark_kernel_for(self.sigma))
        if self.dark_kernel < 1 or self.dark_kernel % 2 == 0:
            raise LhpError(f"codec: dark_kernel must be a positive odd integer, got {self.dark_kernel}")

    @property
    def heatmap_size(self) -> tuple[int, int]:
        return self.input_size[0] // self.stride, self.input_size[1] // self.stride

    def with_decoder(self, decoder: str | None) -> HeatmapCodec:
        """The same codec decoding with ``decoder`` (None: unchanged)."""
        return self if decoder is None else dataclasses.replace(self, decoder=decoder)

    # ------------------------------------------------------------------ coordinates

    def crop_to_heatmap(self, points: Any) -> Any:
        """Crop pixels -> heatmap pixels. Plain arithmetic: works on numpy arrays and TF tensors."""
        return (points + 0.5) / self.stride - 0.5

    def heatmap_to_crop(self, points: Any) -> Any:
        """Heatmap pixels -> crop pixels (inverse of :meth:`crop_to_heatmap`)."""
        return (points + 0.5) * self.stride - 0.5

    # ------------------------------------------------------------------ encode / decode

    def encode(self, points: np.ndarray) -> np.ndarray:
        """Gaussian targets ``(N, h, w, K)`` float32 for crop points ``(N, K, 2)``.

        The numpy reference of what the tf.data pipeline draws (a test holds them equal).
        """
        pts = np.asarray(points, dtype=np.float64)
        uv = self.crop_to_heatmap(pts)
        h, w = self.heatmap_size
        gx = np.exp(-np.square(np.arange(w)[None, None, :] - uv[..., 0:1]) / (2 * self.sigma ** 2))
        gy = np.exp(-np.square(np.arange(h)[None, None, :] - uv[..., 1:2]) / (2 * self.sigma ** 2))
        return np.einsum("nkh,nkw->nhwk", gy, gx).astype(np.float32)

    def decode(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, h, w, K)`` heatmaps -> ``(crop points (N, K, 2), peak values (N, K))``."""
        if self.decoder == "dark":
            coords, maxvals = dec.decode_dark(heatmaps, kernel=self.dark_kernel)
        else:
            coords, maxvals = dec.decode_argmax(heatmaps)
        return self.heatmap_to_crop(coords.astype(np.float64)), maxvals

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["input_size"] = list(self.input_size)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "codec") -> HeatmapCodec:
        if not isinstance(data, Mapping):
            raise LhpError(f"{where}: expected a mapping of codec fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LhpError(f"{where}: unknown codec field(s) {', '.join(unknown)} "
                           "(written by a newer lhp-tf?)")
        try:
            return cls(**{k: (tuple(v) if k == "input_size" else v) for k, v in data.items()})
        except LhpError as exc:
            raise LhpError(f"{where}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise LhpError(f"{where}: invalid codec ({exc})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


#: heatmaps of a batch of crops: ``run(crops (N, H, W, 3)) -> (N, h, w, K)``
HeatmapFn = Callable[[Any], Any]


def landmarks_from_crops(run: HeatmapFn, crops: Any, crop2img: np.ndarray, codec: HeatmapCodec,
                         flip_permutation: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The one decode path: crops -> heatmaps -> crop points -> image points.

    ``run`` is the model (a TFLite interpreter on uint8 crops, a Keras model on float crops);
    with ``flip_permutation`` each heatmap is averaged with the one of the mirrored crop,
    mirrored back with left and right landmarks swapped (flip test). Returns image-pixel
    landmarks ``(N, K, 2)`` float64 and peak values ``(N, K)``.
    """
    heatmaps = np.asarray(run(crops), dtype=np.float32)
    if flip_permutation is not None:
        mirrored = np.asarray(run(crops[:, :, ::-1, :]), dtype=np.float32)
        heatmaps = 0.5 * (heatmaps + dec.flip_heatmaps_back(mirrored, flip_permutation))
    points, maxvals = codec.decode(heatmaps)
    return dec.crop_to_image(points, crop2img), maxvals
