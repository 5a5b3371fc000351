"""Bad input: one clear error line naming the file or field, and exit status 2."""


import numpy as np
import paddle
from PIL import Image

import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components)
from helpers.train_helpers import config_dict, run_module, write_config
from mobileseg_paddle import cli


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return status, err


def train_fails(capsys, tmp_path, dic, *extra):
    cfg = write_config(tmp_path / "c.yml", dic)
    status, err = run(capsys, "train", "--config", cfg, "--device", "cpu", "--save_dir",
                      tmp_path / "out", "--iters", "2", "--log_iters", "1", *extra)
    assert status == 2, err
    assert len(err.splitlines()) == 1, err
    return err


def test_missing_image(tmp_path, capsys, data):
    (data / "images" / "train_0002.png").unlink()
    err = train_fails(capsys, tmp_path, config_dict(data))
    assert "image not found:" in err and "train_0002.png" in err


def test_unreadable_image(tmp_path, capsys, data):
    (data / "images" / "train_0001.png").write_bytes(b"this is not an image")
    err = train_fails(capsys, tmp_path, config_dict(data))
    assert "cannot read image" in err and "train_0001.png" in err


def test_corrupt_png_named_when_loaded(tmp_path, capsys, data):
    path = data / "images" / "train_0000.png"
    path.write_bytes(path.read_bytes()[:200])  # header intact, pixel data cut off
    dic = config_dict(data, batch_size=4)
    err = train_fails(capsys, tmp_path, dic)
    assert "cannot load image" in err and "train_0000.png" in err


def test_label_size_differs_from_image(tmp_path, capsys, data):
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(data / "labels" / "train_0003.png")
    err = train_fails(capsys, tmp_path, config_dict(data))
    assert "labels/train_0003.png is 48x32 but image" in err and "is 64x64" in err


def test_label_values_out_of_range(tmp_path, capsys, data):
    label = np.zeros((64, 64), np.uint8)
    label[:8, :8] = 7
    label[8:16, :8] = 255  # the ignore index is allowed
    Image.fromarray(label).save(data / "labels" / "train_0001.png")
    err = train_fails(capsys, tmp_path, config_dict(data, batch_size=4))
    assert "labels/train_0001.png has values [7] outside [0, 4)" in err


def test_val_label_values_out_of_range(tmp_path, capsys, data):
    Image.fromarray(np.full((64, 64), 9, np.uint8)).save(data / "labels" / "val_0000.png")
    cfg = write_config(tmp_path / "c.yml", config_dict(data))
    status, err = run(capsys, "val", "--config", cfg, "--device", "cpu")
    assert status == 2 and len(err.splitlines()) == 1
    assert "labels/val_0000.png has values [9]" in err


def test_empty_file_list(tmp_path, capsys, data):
    (data / "train.txt").write_text("\n")
    err = train_fails(capsys, tmp_path, config_dict(data))
    assert "train.txt is empty" in err


def test_malformed_file_list(tmp_path, capsys, data):
    (data / "train.txt").write_text("images/train_0000.png labels/train_0000.png\n"
                                    "images/train_0001.png\n")
    err = train_fails(capsys, tmp_path, config_dict(data))
    assert "train.txt line 2: expected '<image> <label>'" in err


def test_unknown_config_keys(tmp_path, capsys, data):
    dic = config_dict(data)
    dic["itres"] = 5
    assert "config: unknown key 'itres' (did you mean 'iters'?)" in train_fails(
        capsys, tmp_path, dic)
    dic = config_dict(data)
    dic["model"]["cm_out_chs"] = 64
    assert ("config model: MSP_MobileSeg has no parameter 'cm_out_chs' (did you mean "
            "'cm_out_ch'?)") in train_fails(capsys, tmp_path, dic)
    dic = config_dict(data)
    dic["model"]["backbone"]["type"] = "MSP_MobileNetV9"
    assert "config model.backbone.type: unknown component 'MSP_MobileNetV9'" in train_fails(
        capsys, tmp_path, dic)


def test_wrong_config_types(tmp_path, capsys, data):
    dic = config_dict(data)
    dic["batch_size"] = "four"
    assert "config batch_size: expected a positive integer, got 'four'" in train_fails(
        capsys, tmp_path, dic)
    dic = config_dict(data)
    dic["model"]["cm_out_ch"] = "64"
    assert "config model.cm_out_ch: expected an integer, got str '64'" in train_fails(
        capsys, tmp_path, dic)
    dic = config_dict(data)
    dic["lr_scheduler"]["learning_rate"] = "1e-3"
    assert "config lr_scheduler.learning_rate: expected a number, got str '1e-3'" in (
        train_fails(capsys, tmp_path, dic))
    dic = config_dict(data)
    dic["loss"]["types"] = [{"type": "MSP_OhemCrossEntropyLoss", "min_kept": 1.5}] * 3
    assert "config loss.types[0].min_kept: expected an integer" in train_fails(
        capsys, tmp_path, dic)


def _weights(tmp_path, data, num_classes):
    from paddleseg.cvlibs import SegBuilder
    cfg = write_config(tmp_path / f"w{num_classes}.yml",
                       config_dict(data, num_classes=num_classes))
    path = tmp_path / f"w{num_classes}.pdparams"
    paddle.save(SegBuilder(cli.load_config(cfg)).model.state_dict(), str(path))
    return path


def test_model_path_missing_or_other_num_classes(tmp_path, capsys, data):
    cfg = write_config(tmp_path / "c.yml", config_dict(data))
    for command in (["val"], ["predict", "--image_path", data / "images"]):
        status, err = run(capsys, *command, "--config", cfg, "--device", "cpu",
                          "--model_path", tmp_path / "nope.pdparams")
        assert status == 2 and err == (f"mobileseg {command[0]}: error: --model_path: weights file "
                                       f"not found: {tmp_path / 'nope.pdparams'}"), err

    other = _weights(tmp_path, data, num_classes=3)
    for command in (["val"], ["predict", "--image_path", data / "images"]):
        status, err = run(capsys, *command, "--config", cfg, "--device", "cpu",
                          "--model_path", other)
        assert status == 2 and len(err.splitlines()) == 1, err
        assert "num_classes mismatch" in err and "trained for 3 classes" in err
        assert "num_classes=4" in err


def test_predict_missing_and_corrupt_images(tmp_path, capsys, data):
    cfg = write_config(tmp_path / "c.yml", config_dict(data))
    weights = _weights(tmp_path, data, num_classes=4)
    status, err = run(capsys, "predict", "--config", cfg, "--device", "cpu", "--model_path",
                      weights, "--image_path", tmp_path / "missing_dir")
    assert status == 2 and "--image_path" in err and "not found" in err
    (data / "images" / "val_0001.png").write_bytes(b"\x89PNG broken")
    status, err = run(capsys, "predict", "--config", cfg, "--device", "cpu", "--model_path",
                      weights, "--image_path", data / "images")
    assert status == 2 and "cannot read image" in err and "val_0001.png" in err


def test_real_command_exit_status_and_single_line(tmp_path, data):
    dic = config_dict(data)
    dic["model"]["num_classes"] = "4"
    cfg = write_config(tmp_path / "c.yml", dic)
    proc = run_module("train", "--config", cfg, "--device", "cpu", timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
    assert lines == [lines[-1]] and lines[-1].startswith("mobileseg train: error: --config")
