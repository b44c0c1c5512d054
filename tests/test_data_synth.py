"""The synthetic face model: mirror symmetry, landmarks on the drawn features, speed-independent checks."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from lhp_tf.data import synth
from lhp_tf.data.flip import flip_landmarks


def _params(seed: int, **force) -> synth.FaceParams:
    rng = np.random.default_rng(seed)
    return synth.sample_params(rng, 160, frozenset(force.get("attrs", ())), hard=0.0)


@pytest.mark.parametrize("seed, attrs", [(0, ()), (1, ("largepose",)), (2, ("expression", "occlusion")),
                                         (3, ("blur",)), (4, ("illumination", "makeup"))])
def test_mirrored_parameters_draw_the_mirrored_face(seed, attrs):
    p = _params(seed, attrs=attrs)
    img, l68, l98 = synth.render(p)
    mimg, m68, m98 = synth.render(synth.mirror(p))
    np.testing.assert_allclose(m68, flip_landmarks(l68, p.size), atol=1e-3)
    np.testing.assert_allclose(m98, flip_landmarks(l98, p.size), atol=1e-3)
    diff = np.abs(mimg.astype(np.int16) - cv2.flip(img, 1).astype(np.int16))
    assert diff.mean() < 1.5, diff.mean()
    assert np.percentile(diff, 99) < 40


def test_mirror_is_an_involution():
    p = _params(7, attrs=("occlusion", "blur"))
    img, l68, l98 = synth.render(p)
    img2, m68, m98 = synth.render(synth.mirror(synth.mirror(p)))
    np.testing.assert_allclose(m98, l98, atol=1e-4)
    assert np.abs(img2.astype(int) - img).max() <= 1


def test_landmarks_sit_on_drawn_features():
    # plain frontal face, no blur or occluder: dark eyelid line, lip colour, face edge
    p = dataclasses.replace(_params(11), yaw=0.0, roll=0.0, pitch=0.0, blur_sigma=0.0, motion=(0.0, 0.0),
                            occluder=None, gain=1.0, lips=(40.0, 40.0, 200.0), skin=(150.0, 170.0, 210.0),
                            hair=(30.0, 30.0, 30.0), bg_shapes=(), bg_colors=((0.0, 255.0, 0.0),) * 2)
    img, l68, _ = synth.render(p)

    def at(i: int) -> np.ndarray:
        x, y = np.round(l68[i]).astype(int)
        return img[y, x].astype(float)

    for i in (37, 38, 43, 44):                      # upper eyelids: dark line
        assert at(i).max() < 110, (i, at(i))
    for i in (50, 52, 57, 56, 58):                  # lips: red dominant
        b, g, r = at(i)
        assert r > 120 and r > 1.8 * g, (i, at(i))
    for i in (19, 24):                              # brows: hair-dark
        assert at(i).max() < 90, (i, at(i))
    for i in (1, 4, 12, 15):                        # jaw points on the face/background edge
        x, y = np.round(l68[i]).astype(int)
        patch = img[y - 2:y + 3, x - 2:x + 3].reshape(-1, 3).astype(float)
        greenish = (patch[:, 1] > 200) & (patch[:, 0] < 60)
        assert 0 < greenish.sum() < len(patch), i


def test_attributes_change_the_picture():
    base = _params(21)
    _, l68, _ = synth.render(base)
    turned = synth.render(dataclasses.replace(base, yaw=35.0))[1]
    nose = 30
    # turning to the image right moves the nose tip right relative to the face centre
    assert (turned[nose, 0] - turned[:17, 0].mean()) > (l68[nose, 0] - l68[:17, 0].mean()) + 3
    opened = synth.render(dataclasses.replace(base, mouth_open=0.35))[1]
    assert opened[66, 1] - opened[62, 1] > l68[66, 1] - l68[62, 1] + 5


def test_generate_distributes_over_every_split(tmp_path):
    counts = synth.generate("wflw", tmp_path / "w", 24, seed=1, image_size=64, workers=1)
    assert counts["train"] == 18 and counts["test"] == 6
    assert all(counts[a] >= 1 for a in synth.ATTRS)
    counts = synth.generate("300w", tmp_path / "p", 8, seed=1, image_size=64, workers=1)
    assert len(counts) == 8 and all(v == 1 for v in counts.values())
