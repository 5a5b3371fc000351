"""Our Lite model in Paddle-Lite-Demo's ``human_segmentation`` app: what that app's C++ feeds
and reads (Pipeline.cc at Paddle-Lite-Demo 82f329f), computed here the app's way, with the steps
deploy/lite/README.md gives: ``--output_op argmax`` (the app reads ``data<int64_t>()`` of shape
(1, H, W)), INPUT_MEAN/INPUT_STD = 255 x the manifest's (the app does not divide by 255)."""

import cv2
import numpy as np
import paddle
import pytest

from helpers.lite import require_lite_runtime
from helpers.numerics import randomize_
from mobileseg_paddle.builder import build_model
from mobileseg_paddle.deploy.lite.convert import convert
from mobileseg_paddle.deploy.lite.pipeline import preprocess
from mobileseg_paddle.deploy.lite.predict import run_nb

pytestmark = pytest.mark.lite

CONFIG = "configs/mobileseg/mobileseg_mobilenetv2_cityscapes_1024x512_80k.yml"
H, W = 192, 160


def app_input(image_path, mean, std):
    """Segmentation::Preprocess + NHWC3ToNC3HW: BGR->RGB, cv::resize (bilinear), float pixels
    0..255, (x - mean) * (1 / std) per channel, NCHW."""
    rgb = cv2.cvtColor(cv2.imread(image_path), cv2.COLOR_BGR2RGB)
    rgb = cv2.resize(rgb, (W, H)).astype(np.float32)
    scale = (1.0 / np.asarray(std, np.float32)).astype(np.float32)
    x = (rgb - np.asarray(mean, np.float32)) * scale
    return x.transpose(2, 0, 1)[np.newaxis].astype(np.float32)


def test_the_apps_input_and_output_fit_our_argmax_model(tmp_path):
    runtime = require_lite_runtime()
    from helpers import ROOT
    config = f"{ROOT}/{CONFIG}"
    model = build_model(config, None, drop_pretrained=True)[0]
    randomize_(model, seed=3)
    weights = str(tmp_path / "model.pdparams")
    paddle.save(model.state_dict(), weights)
    manifest = convert(config, weights, str(tmp_path / "lite"), [1, 3, H, W], "x86",
                       runtime=runtime, log=lambda m: None, output_op="argmax")

    rng = np.random.default_rng(0)  # a smooth picture with structure, 300x260
    image = cv2.resize(rng.integers(0, 256, (15, 13, 3)).astype(np.uint8), (260, 300),
                       interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(tmp_path / "photo.png"), image)
    mean = [255 * m for m in manifest["input"]["mean"]]  # the README's INPUT_MEAN: 127.5 x3
    std = [255 * s for s in manifest["input"]["std"]]
    assert mean == std == [127.5] * 3

    x_app = app_input(str(tmp_path / "photo.png"), mean, std)
    x_ours = preprocess(str(tmp_path / "photo.png"), H, W, manifest["input"]["mean"],
                        manifest["input"]["std"])
    assert np.abs(x_app - x_ours).max() <= 2e-2  # resize rounding (uint8 vs float) only

    labels_app = run_nb(str(tmp_path / "lite"), x_app, runtime=runtime)[0]
    labels_ours = run_nb(str(tmp_path / "lite"), x_ours, runtime=runtime)[0]
    assert labels_app.dtype == np.int64 and labels_app.shape == (1, H, W)  # data<int64_t>()
    assert len(np.unique(labels_ours)) > 1
    agreement = np.mean(labels_app == labels_ours)
    assert agreement >= 0.99
