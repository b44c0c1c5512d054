"""A tiny trained-looking run folder shared by the converter and quantisation tests.

lhp-small with one module per stage at 64x64 keeps conversions at a few seconds. The
network's own initialisation gives near-zero heatmaps (tiny head weights), which would make
every float/int8/ONNX comparison pass trivially, so kernels are redrawn He-normal: outputs
then vary over several units, like a trained model's logits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_OVERRIDES = (
    "model.modules=[1,1,1]", "model.blocks=[1,1,1]", "model.input_size=[64,64]",
    "data.synthetic.num=24", "data.synthetic.image_size=128", "export.calib_samples=8",
    # BCE, the paper's loss, so exports carry the appended sigmoid the tests check for.
    "train.loss=bce",
    # the calibration without a training loop: 'learned' (the default) has its own tests
    # (tests/test_learned_ranges.py), the many int8 conversions here would each learn for minutes
    "export.calibration=auto",
)


def make_run(folder: Path, cache: Path) -> Path:
    """Write ``folder/best.keras`` and ``folder/recipe.yaml``; returns the checkpoint path."""
    from lhp_tf.config import dump_recipe, load_recipe
    from lhp_tf.model.kbackend import keras
    from lhp_tf.model.network import LandmarkNet
    from lhp_tf.spec import ModelSpec

    repo = Path(__file__).resolve().parents[1]
    recipe = load_recipe(repo / "recipes" / "synthetic-300w.yaml",
                         [*TINY_OVERRIDES, f"data.cache_dir={cache}"])
    model = LandmarkNet(ModelSpec.from_recipe(recipe))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        if not (depthwise or isinstance(layer, keras.layers.Conv2D)):
            continue
        values = layer.get_weights()
        k = values[0]
        fan_in = k.shape[0] * k.shape[1] * (1 if depthwise else k.shape[2])
        values[0] = rng.normal(0.0, np.sqrt(2.0 / fan_in), k.shape).astype(np.float32)
        layer.set_weights(values)
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / "best.keras"
    model.save(ckpt)
    (folder / "recipe.yaml").write_text(dump_recipe(recipe))
    return ckpt
