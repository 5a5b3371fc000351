"""``mobileseg val`` (flip, multi-scale, sliding window) and ``mobileseg predict`` on a folder.

The weights make the model predict class 0 everywhere (zero output convolution: all logits tie,
argmax gives 0), so the expected metrics follow from the labels alone and every test-time
augmentation must give the same answer."""

import numpy as np
import paddle
import pytest
from PIL import Image

import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components)
from helpers.train_helpers import NUM_CLASSES, config_dict, make_data, write_config
from mobileseg_paddle import cli

pytestmark = pytest.mark.slow  # trains, traces or exports real models


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from paddleseg.cvlibs import SegBuilder
    root = tmp_path_factory.mktemp("vp")
    data = make_data(root / "data", num_train=2, num_val=3, size=64)
    cfg = write_config(root / "c.yml", config_dict(data))
    model = SegBuilder(cli.load_config(cfg)).model
    state = model.state_dict()
    state["seg_heads.0.conv_out.weight"] = paddle.zeros_like(state["seg_heads.0.conv_out.weight"])
    weights = root / "model.pdparams"
    paddle.save(state, str(weights))
    labels = [np.asarray(Image.open(data / "labels" / f"val_{i:04d}.png")) for i in range(3)]
    background = float(np.mean([(lab == 0).mean() for lab in labels]))
    return data, cfg, weights, background


@pytest.mark.parametrize("extra", [
    [],
    ["--aug_eval", "--flip_horizontal", "--flip_vertical", "--scales", "0.75", "1.0", "1.25"],
    ["--is_slide", "--crop_size", "48", "48", "--stride", "32", "32"],
])
def test_val_metrics(setup, capsys, extra):
    data, cfg, weights, background = setup
    args = cli.build_parser().parse_args(
        ["val", "--config", cfg, "--device", "cpu", "--model_path", str(weights), *extra])
    result = cli.run_val(args)
    # class 0 predicted everywhere: IoU_0 = accuracy = background share, other IoUs 0
    assert result["acc"] == pytest.approx(background, rel=1e-6)
    assert result["class_iou"] == pytest.approx([background] + [0.0] * (NUM_CLASSES - 1))
    assert result["miou"] == pytest.approx(background / NUM_CLASSES, rel=1e-6)
    out = capsys.readouterr().out
    assert "[EVAL] #Images: 3 mIoU:" in out


def test_val_command_prints_miou(setup, capsys):
    data, cfg, weights, background = setup
    assert cli.main(["val", "--config", cfg, "--device", "cpu", "--model_path", weights,
                     "--aug_eval", "--flip_horizontal"]) == 0
    assert f"mIoU={background / NUM_CLASSES:.4f}" in capsys.readouterr().out


def test_predict_folder_writes_masks_and_overlays(setup, tmp_path, capsys):
    data, cfg, weights, _ = setup
    images = data / "images"
    assert cli.main(["predict", "--config", cfg, "--device", "cpu", "--model_path", weights,
                     "--image_path", images, "--save_dir", tmp_path]) == 0
    names = sorted(p.name for p in images.iterdir())
    masks = sorted(p.name for p in (tmp_path / "pseudo_color_prediction").iterdir())
    overlays = sorted(p.name for p in (tmp_path / "added_prediction").iterdir())
    assert masks == overlays == names
    mask = Image.open(tmp_path / "pseudo_color_prediction" / names[0])
    assert mask.mode == "P" and mask.size == (64, 64)
    assert (np.asarray(mask) == 0).all()  # class 0 everywhere
    overlay = np.asarray(Image.open(tmp_path / "added_prediction" / names[0]))
    image = np.asarray(Image.open(images / names[0]))
    assert overlay.shape == image.shape
    # paddleseg blends 0.6 * image + 0.4 * colour of the class; class 0 is (128, 0, 0)
    np.testing.assert_allclose(overlay.astype(float), 0.6 * image + 0.4 * np.array([128, 0, 0]),
                               atol=1.01)
