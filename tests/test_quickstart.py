"""The offline quick start, shortened (few images, few iterations): every step runs and the
outputs it announces exist."""

import json

import numpy as np
import pytest
from PIL import Image

from mobileseg_paddle import quickstart, synthetic

pytestmark = pytest.mark.slow  # trains, traces or exports real models


def test_synthetic_data_is_deterministic_and_labelled(tmp_path):
    a = synthetic.generate(str(tmp_path / "a"), num_train=3, num_val=1, size=64, seed=5)
    b = synthetic.generate(str(tmp_path / "b"), num_train=3, num_val=1, size=64, seed=5)
    for name in ("images/train_0002.png", "labels/val_0000.png"):
        assert np.array_equal(np.asarray(Image.open(f"{a}/{name}")),
                              np.asarray(Image.open(f"{b}/{name}")))
    labels = np.stack([np.asarray(Image.open(f"{a}/labels/train_{i:04d}.png")) for i in range(3)])
    assert set(np.unique(labels)) <= set(range(synthetic.NUM_CLASSES)) and labels.max() > 0
    with open(f"{a}/train.txt") as f:
        assert f.read().splitlines()[0] == "images/train_0000.png labels/train_0000.png"


def test_shortened_quickstart(tmp_path, capsys):
    out = tmp_path / "qs"
    status = quickstart.main(["--out_dir", str(out), "--iters", "6", "--batch_size", "4",
                              "--num_train", "8", "--num_val", "3", "--image_size", "64",
                              "--num_predict", "2", "--log_iters", "2"])
    captured = capsys.readouterr()
    printed = captured.out
    assert status == 0, captured.err[-2000:]
    assert "[TRAIN] epoch: 3, iter: 6/6" in printed and "ETA" in printed  # progress lines
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and len(metrics["class_iou"]) == 4
    assert f"validation mIoU : {metrics['miou']:.4f}" in printed
    overlays = sorted(p.name for p in (out / "predict" / "added_prediction").iterdir())
    assert overlays == ["val_0000.png", "val_0001.png"]
    assert len(list((out / "predict" / "pseudo_color_prediction").iterdir())) == 2
    assert (out / "output" / "iter_6" / "model.pdparams").is_file()
    for where in ("data", "quickstart.yml", "added_prediction", "iter_6/model.pdparams"):
        assert where in printed
