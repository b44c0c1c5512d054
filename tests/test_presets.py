"""A run folder's recipe pins the architecture, so a later preset change cannot orphan a checkpoint."""

from __future__ import annotations

import dataclasses

from lhp_tf.config import ModelConfig
from lhp_tf.model import presets


def test_pinned_config_survives_a_preset_change(monkeypatch) -> None:
    cfg = ModelConfig(arch="lhp-small", head="v1")
    pinned = presets.pinned(cfg, 68)
    before = presets.resolve(pinned, 68)
    assert before == presets.resolve(cfg, 68) and before.head == "v1"
    changed = dataclasses.replace(presets.PRESETS["lhp-small"], channels=(8, 16, 32, 64))
    monkeypatch.setitem(presets.PRESETS, "lhp-small", changed)
    assert presets.resolve(cfg, 68).channels == (8, 16, 32, 64)
    assert presets.resolve(pinned, 68) == before
