"""PaddleSeg's own ``deploy/python/infer.py`` (v2.8.0, from the vendored source, run as users
run it: ``python infer.py``, without our package) on ``mobileseg export`` folders gives the
label maps of ``mobileseg infer``, pixel for pixel: the default argmax export, and a logits
export (``--output_op none``) with PaddleSeg's ``--with_argmax``.

The config has ``MSP_MapLabels`` (a label-only transform PaddleSeg cannot build) and a
non-default ``Normalize``: deploy.yaml's ``Deploy.transforms`` must leave the first out and keep
the second. Weights and BatchNorm statistics are random (``randomize_``)."""

import os
import subprocess
import sys

import cv2
import numpy as np
import paddle
import pytest
import yaml
from PIL import Image

from helpers import vendor
from helpers.numerics import randomize_
from helpers.train_helpers import config_dict, make_data, run_module, write_config

pytestmark = pytest.mark.slow  # trains, traces or exports real models

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.3, 0.25]
SIZES = [(64, 64), (75, 101), (130, 96)]  # (H, W); not multiples of the stride 32
# both runs on the same kernels (oneDNN) and threads: label maps are compared exactly, and a
# pixel whose two best logits nearly tie could flip between different kernels
SAME_BACKEND = ["--enable_mkldnn", "True", "--cpu_threads", "2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from paddleseg.cvlibs import SegBuilder

    import mobileseg_paddle.register  # noqa: F401
    from mobileseg_paddle.config import load_config
    root = tmp_path_factory.mktemp("ps_infer")
    infer_py = os.path.join(vendor.unpack("v2.8.0", root / "src"), "deploy", "python", "infer.py")
    dic = config_dict(make_data(root / "data", num_train=2, num_val=1))
    for ds in ("train_dataset", "val_dataset"):
        dic[ds]["transforms"] = [{"type": "MSP_MapLabels", "mapping": {255: 0}},
                                 {"type": "Normalize", "mean": MEAN, "std": STD}]
    cfg = write_config(root / "c.yml", dic)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        cv2.imwrite(str(images / f"im{i}.png"), cv2.resize(small, (w, h)))
    model = SegBuilder(load_config(cfg)).model
    model.eval()
    for seed in range(20):  # many random models predict one class everywhere: take one that does not
        randomize_(model, seed=seed)
        if len(_dygraph_classes(model, images)) >= 3:
            break
    else:
        pytest.fail("no random model predicts three classes on the test images")
    weights = str(root / "model.pdparams")
    paddle.save(model.state_dict(), weights)
    return root, infer_py, cfg, weights, images


def _dygraph_classes(model, images):
    classes = set()
    for name in os.listdir(images):
        rgb = cv2.cvtColor(cv2.imread(str(images / name)), cv2.COLOR_BGR2RGB)
        x = (rgb.astype(np.float32) / 255 - MEAN) / STD
        with paddle.no_grad():
            logits = model(paddle.to_tensor(x.transpose(2, 0, 1)[None].astype(np.float32)))[0]
        classes.update(np.unique(logits.argmax(1).numpy()).tolist())
    return classes


def _export(setup, output_op):
    root, _, cfg, weights, _ = setup
    out = root / f"export_{output_op}"
    proc = run_module("export", "--config", cfg, "--model_path", weights, "--save_dir", out,
                      "--output_op", output_op, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _paddleseg_labels(setup, export, extra, tmp_path):
    _, infer_py, _, _, images = setup
    out = tmp_path / "paddleseg"
    proc = subprocess.run([sys.executable, infer_py, "--config", str(export / "deploy.yaml"),
                           "--image_path", str(images), "--save_dir", str(out), "--device", "cpu",
                           *SAME_BACKEND, *extra], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    labels = {}
    for name in sorted(os.listdir(images)):
        mask = Image.open(out / name)  # pseudo-colour PNG: palette indices are the class ids
        assert mask.mode == "P"
        labels[name] = np.asarray(mask)
    return labels


def _our_labels(setup, export, tmp_path):
    from mobileseg_paddle.deploy import infer
    _, _, _, _, images = setup
    out = tmp_path / "ours"
    assert infer.main(["--config", str(export), "--image_path", str(images), "--save_dir",
                       str(out), "--save_overlay", "False", *SAME_BACKEND]) == 0
    return {name: cv2.imread(str(out / "masks" / name), cv2.IMREAD_UNCHANGED)
            for name in sorted(os.listdir(images))}


@pytest.mark.parametrize("output_op, extra", [("argmax", []), ("none", ["--with_argmax"])])
def test_paddleseg_infer_gives_our_label_maps(setup, output_op, extra, tmp_path):
    export = _export(setup, output_op)
    transforms = yaml.safe_load((export / "deploy.yaml").read_text())["Deploy"]["transforms"]
    assert transforms == [{"type": "Normalize", "mean": MEAN, "std": STD}]

    theirs = _paddleseg_labels(setup, export, extra, tmp_path)
    ours = _our_labels(setup, export, tmp_path)
    assert list(theirs) == list(ours) == [f"im{i}.png" for i in range(len(SIZES))]
    for (name, a), (h, w) in zip(theirs.items(), SIZES):
        assert a.shape == ours[name].shape == (h, w)
        np.testing.assert_array_equal(a, ours[name], err_msg=name)
    # the maps hold several classes (see setup), not one constant
    assert len(np.unique(np.concatenate([m.ravel() for m in ours.values()]))) >= 3
