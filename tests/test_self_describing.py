"""The model describes itself: a checkpoint and its .tflite carry the whole ModelSpec, so export,
evaluation and the board need no recipe to know what the model is."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lhp_tf.config import load_recipe
from lhp_tf.spec import ModelSpec

#: Table 2a's fusion ablations: widths and fusion differ from lhp-large, the preset they name
FUSION_ABLATIONS = ("ablations/wflw-fusion-pointwise", "ablations/wflw-fusion-bottleneck",
                    "ablations/wflw-fusion-group")


@pytest.mark.parametrize("name", FUSION_ABLATIONS)
def test_ablation_metadata_names_its_fusion_head_and_widths(name: str) -> None:
    """What every export embeds (``metadata_for``) says which ablation row the model is."""
    from lhp_tf.converters.tflite import metadata_for

    recipe = load_recipe(name)
    spec = ModelSpec.from_dict(metadata_for(ModelSpec.from_recipe(recipe), "int8", recipe)["spec"])
    assert spec.arch.fusion == recipe.model.fusion != "scaf"
    assert spec.arch.channels == tuple(recipe.model.channels) != (40, 80, 160, 320)
    assert spec.arch.head == "mr" and spec.arch.name == "lhp-large"


@pytest.mark.slow
def test_ablation_tflite_names_its_fusion_head_and_widths(tmp_path: Path) -> None:
    """Converted from the checkpoint alone (no recipe beside it), float; one row end to end."""
    name = "ablations/wflw-fusion-group"
    from lhp_tf.checkpoint import save_keras
    from lhp_tf.cli import main
    from lhp_tf.model.network import LandmarkNet
    from lhp_tf.tflite_metadata import read_metadata

    # one module per stage keeps the conversion short; fusion, head and widths are the recipe's
    recipe = load_recipe(name, ["model.modules=[1,1,1]"])
    ckpt = tmp_path / "best.keras"
    save_keras(LandmarkNet(ModelSpec.from_recipe(recipe)), ckpt)
    out = tmp_path / "model.tflite"
    assert main(["convert", str(ckpt), "-o", str(out)]) == 0
    spec = ModelSpec.from_dict(read_metadata(out)["spec"])
    assert spec == ModelSpec.from_recipe(recipe)
    assert spec.arch.fusion == recipe.model.fusion != "scaf"
    assert spec.arch.channels == tuple(recipe.model.channels) != (40, 80, 160, 320)
    assert spec.arch.head == "mr" and spec.arch.name == "lhp-large"


@pytest.mark.slow
def test_board_benchmark_matches_lhp_eval_with_no_recipe_at_hand(export_run: Path, tmp_path: Path) -> None:
    """``lhp eval`` on the checkpoint and ``lhp bench`` on its float .tflite plus a bundle of
    the same split give the same NME; the board side sees only the two files."""
    from lhp_tf.converters.export import export_checkpoint
    from lhp_tf.converters.run_folder import find_recipe

    from lhp_tf.bench import benchmark
    from lhp_tf.data.bundle import build_bundle, write_bundle
    from lhp_tf.evaluate import evaluate

    recipe = find_recipe(export_run)
    split = recipe.data.val_split
    result = evaluate(recipe, export_run, max_samples=None)
    board = tmp_path / "board"
    board.mkdir()
    write_bundle(board / "eval.npz", build_bundle(recipe, split))
    model = tmp_path / "model.tflite"
    export_checkpoint(export_run, model, quant="float")
    shutil.move(model, board / "model.tflite")
    report = benchmark(board / "model.tflite", board / "eval.npz", runs=1, warmup=0)
    assert report["images"] == result["splits"][split]["n"]
    assert report["nme"] == pytest.approx(result["splits"][split]["nme"], abs=1e-3)
    assert report["codec"] == ModelSpec.from_recipe(recipe).codec.to_dict()


@pytest.mark.slow
def test_export_takes_the_activation_from_the_checkpoint_not_the_recipe(tmp_path: Path) -> None:
    """An MSE-trained checkpoint converted with a BCE recipe of the same shapes keeps its
    linear output: the recipe only names calibration images, it cannot add a sigmoid."""
    from lhp_tf.converters.export import export_checkpoint

    from lhp_tf.checkpoint import save_keras
    from lhp_tf.config import dump_recipe
    from lhp_tf.model.network import LandmarkNet
    from lhp_tf.runtime import TFLiteModel

    tiny = ["model.modules=[1]", "model.blocks=[1]", "model.channels=[16, 32]", "model.input_size=[64,64]"]
    mse = load_recipe("synthetic-300w", [*tiny, "train.loss=mse"])
    bce = load_recipe("synthetic-300w", [*tiny, "train.loss=bce"])
    net = LandmarkNet(ModelSpec.from_recipe(mse))
    ckpt = tmp_path / "best.keras"
    save_keras(net, ckpt)
    (tmp_path / "bce.yaml").write_text(dump_recipe(bce))
    out = tmp_path / "model.tflite"
    export_checkpoint(ckpt, out, quant="float", recipe=tmp_path / "bce.yaml")
    model = TFLiteModel(out)
    assert model.spec.codec.activation == "none"
    image = np.full((1, 64, 64, 3), 128, np.uint8)
    logits = net(image.astype(np.float32) / 255.0).numpy()
    # the logits themselves: a sigmoid would have moved every value by about 0.5
    np.testing.assert_allclose(model.predict(image), logits, atol=1e-4)


def test_old_checkpoint_without_spec_needs_its_recipe(tmp_path: Path) -> None:
    from lhp_tf.errors import LhpError
    from lhp_tf.model.network import build_model, load_trained

    recipe = load_recipe("synthetic-300w", ["model.modules=[1]", "model.blocks=[1]", "model.channels=[16, 32]"])
    ckpt = tmp_path / "old.keras"
    build_model(recipe.model, recipe.num_landmarks).save(ckpt)
    with pytest.raises(LhpError, match="carries no model spec"):
        load_trained(ckpt)
    _, spec = load_trained(ckpt, recipe)
    assert spec == ModelSpec.from_recipe(recipe)
    wflw = load_recipe("synthetic-wflw")
    with pytest.raises(LhpError, match="68 landmarks but the recipe"):
        from lhp_tf.model.network import LandmarkNet

        new = tmp_path / "new.keras"
        LandmarkNet(spec).save(new)
        load_trained(new, wflw)


def test_weights_move_by_layer_name_and_refuse_another_architecture() -> None:
    from lhp_tf.errors import LhpError
    from lhp_tf.model.network import build_from_spec
    from lhp_tf.model.weights import layer_weights, transfer_weights

    base = ["model.modules=[1]", "model.blocks=[1]", "model.channels=[16, 32]"]
    spec = ModelSpec.from_recipe(load_recipe("synthetic-300w", base)).arch
    a, b = build_from_spec(spec), build_from_spec(spec, batch_size=1)
    rng = np.random.default_rng(0)
    a.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in a.get_weights()])
    transfer_weights(a, b, "test")
    for name, ws in layer_weights(a).items():
        for x, y in zip(ws, layer_weights(b)[name], strict=True):
            np.testing.assert_array_equal(x, y)
    other = ModelSpec.from_recipe(load_recipe("synthetic-300w", [*base[:2], "model.channels=[16, 64]"])).arch
    with pytest.raises(LhpError, match="shape"):
        transfer_weights(a, build_from_spec(other), "test")
