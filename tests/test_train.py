"""A short real training run through ``mobileseg train`` (PaddleSeg's trainer on Paddle 3)."""

import os

import numpy as np
import paddle
import pytest
from PIL import Image

import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components)
from helpers.train_helpers import config_dict, make_data, train_log_values, write_config
from mobileseg_paddle import cli, compat

pytestmark = pytest.mark.slow  # trains, traces or exports real models


def test_short_training_run_loss_falls_saves_and_evaluates(tmp_path, capsys):
    data = make_data(tmp_path / "data", num_train=8, num_val=3)
    cfg = write_config(tmp_path / "c.yml", config_dict(data, iters=30, batch_size=4))
    save_dir = tmp_path / "out"
    status = cli.main(["train", "--config", cfg, "--device", "cpu", "--save_dir", save_dir,
                       "--save_interval", "15", "--log_iters", "5", "--do_eval", "--seed", "1"])
    out = capsys.readouterr().out
    assert status == 0

    losses = train_log_values(out, "loss")
    assert len(losses) == 6
    # logged losses are per-batch and noisy (measured ratios 0.80 and below over 30 iterations)
    assert np.mean(losses[-2:]) < 0.9 * np.mean(losses[:2]), losses

    for it in (15, 30):
        ckpt = save_dir / f"iter_{it}"
        compat.check_checkpoint(str(ckpt))
        state = paddle.load(str(ckpt / "model.pdparams"))
        assert state["seg_heads.0.conv_out.weight"].shape[0] == 4
        assert "LR_Scheduler" in paddle.load(str(ckpt / "model.pdopt"))
    assert (save_dir / "best_model" / "model.pdparams").is_file()
    assert not [p for p in os.listdir(save_dir) if p.startswith(".")]  # no staging left

    evals = [line for line in out.splitlines() if "[EVAL] #Images: 3 mIoU:" in line]
    assert len(evals) == 2
    miou = float(evals[-1].split("mIoU: ")[1].split()[0])
    assert 0.0 < miou <= 1.0


def _binary_data(root, n=4, size=48):
    """Images with a bright square; masks stored as 0/255 (the common binary format)."""
    root.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        y, x = rng.integers(4, size - 20, 2)
        mask[y:y + 16, x:x + 16] = 255
        img[mask == 255] += 150
        Image.fromarray(img).save(root / f"{i}.png")
        Image.fromarray(mask).save(root / f"{i}_m.png")
        lines.append(f"{i}.png {i}_m.png\n")
    (root / "train.txt").write_text("".join(lines))
    (root / "val.txt").write_text("".join(lines))
    return root


def test_map_labels_trains_binary_0_255_masks(tmp_path, capsys):
    data = _binary_data(tmp_path / "bin")
    dic = config_dict(data, iters=4, batch_size=2, num_classes=2)
    for ds in ("train_dataset", "val_dataset"):
        dic[ds]["transforms"].insert(0, {"type": "MSP_MapLabels", "mapping": {255: 1}})
    cfg = write_config(tmp_path / "c.yml", dic)

    from paddleseg.cvlibs import SegBuilder
    builder = SegBuilder(cli.load_config(cfg))
    for dataset in (builder.train_dataset, builder.val_dataset):
        values = np.unique(np.concatenate([np.ravel(dataset[i]["label"]) for i in range(4)]))
        assert values.tolist() == [0, 1]

    status = cli.main(["train", "--config", cfg, "--device", "cpu", "--save_dir",
                       tmp_path / "out", "--save_interval", "4", "--log_iters", "2", "--do_eval"])
    out = capsys.readouterr().out
    assert status == 0
    assert "[EVAL] #Images: 4 mIoU:" in out
    compat.check_checkpoint(str(tmp_path / "out" / "iter_4"))


def test_map_labels_threshold_and_must_come_first(tmp_path, capsys):
    from mobileseg_paddle.transforms import MapLabels
    data = {"label": np.array([[0, 127, 128, 255]], np.uint8)}
    assert MapLabels(threshold=128)(data)["label"].tolist() == [[0, 0, 1, 1]]
    assert MapLabels(mapping={255: 1, 127: 255})({"label": np.array([255, 127, 3])})[
        "label"].tolist() == [1, 255, 3]
    with pytest.raises(ValueError, match="exactly one"):
        MapLabels()

    data_dir = _binary_data(tmp_path / "bin")
    dic = config_dict(data_dir, iters=2, num_classes=2)
    dic["train_dataset"]["transforms"].append({"type": "MSP_MapLabels", "mapping": {255: 1}})
    cfg = write_config(tmp_path / "c.yml", dic)
    assert cli.main(["train", "--config", cfg, "--device", "cpu",
                     "--save_dir", tmp_path / "o"]) == 2
    err = capsys.readouterr().err.strip()
    assert "train_dataset.transforms[2]: MSP_MapLabels must be the first" in err
    assert len(err.splitlines()) == 1
