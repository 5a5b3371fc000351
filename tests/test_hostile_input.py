"""Hostile input to the training-side commands and the config loader: one clear line naming the
file or flag, exit status 2, nothing overwritten, nothing executed, no hang (the reliability
issue's cases; infer and export have theirs in tests/deploy/)."""

import os
import shutil

import numpy as np
import paddle
import pytest
from PIL import Image

import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components)
from helpers import small_disk
from helpers.train_helpers import config_dict, write_config
from mobileseg_paddle import cli
from mobileseg_paddle.builder import build_model


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    err = [s for s in capsys.readouterr().err.splitlines() if s.strip()]
    return status, err


def one_error(capsys, *argv):
    status, err = run(capsys, *argv)
    assert status == 2, err
    assert len(err) == 1, err
    return err[0]


# --- configs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("", "the file is empty; expected a mapping of config keys"),
    ("- 1\n- 2\n", "expected a mapping of config keys, got a YAML list"),
    ("model: [unclosed\n", "not valid YAML: line 2, column 1:"),
])
def test_config_that_is_not_a_mapping(tmp_path, capsys, text, expected):
    cfg = tmp_path / "c.yml"
    cfg.write_text(text)
    line = one_error(capsys, "train", "--config", cfg, "--device", "cpu")
    assert line.startswith(f"mobileseg train: error: --config {cfg}: {expected}"), line


def test_base_cycle(tmp_path, capsys):
    (tmp_path / "a.yml").write_text("_base_: b.yml\nbatch_size: 2\n")
    (tmp_path / "b.yml").write_text("_base_: a.yml\n")
    line = one_error(capsys, "val", "--config", tmp_path / "a.yml", "--device", "cpu")
    assert line.endswith("the _base_ files include each other (a.yml -> b.yml -> a.yml)"), line


def test_python_tag_is_refused_and_not_executed(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    cfg = tmp_path / "c.yml"
    cfg.write_text(f'model: !!python/object/apply:os.system ["touch {marker}"]\n')
    for command in ("train", "val"):
        line = one_error(capsys, command, "--config", cfg, "--device", "cpu")
        assert "a YAML tag that is not plain data" in line and "os.system" in line, line
    line = one_error(capsys, "export", "--config", cfg, "--save_dir", tmp_path / "out")
    assert "a YAML tag that is not plain data" in line, line
    assert not marker.exists()


# --- train ------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--save_interval", "--log_iters", "--keep_checkpoint_max"])
def test_zero_intervals(tmp_path, capsys, data, flag):
    cfg = write_config(tmp_path / "c.yml", config_dict(data))
    line = one_error(capsys, "train", "--config", cfg, "--device", "cpu", "--save_dir",
                     tmp_path / "out", flag, "0")
    assert line == f"mobileseg train: error: {flag} must be >= 1, got 0"


def test_batch_larger_than_the_training_set_fails_at_once(tmp_path, capsys, data):
    cfg = write_config(tmp_path / "c.yml", config_dict(data, batch_size=8))  # 4 samples
    line = one_error(capsys, "train", "--config", cfg, "--device", "cpu", "--save_dir",
                     tmp_path / "out")
    assert "train_dataset: 4 samples, fewer than batch_size 8" in line, line
    assert not (tmp_path / "out").exists()


def test_an_earlier_run_is_not_replaced(tmp_path, capsys, data):
    out = tmp_path / "out"
    (out / "best_model").mkdir(parents=True)
    (out / "best_model" / "model.pdparams").write_bytes(b"the better model")
    (out / "iter_100").mkdir()
    cfg = write_config(tmp_path / "c.yml", config_dict(data))
    line = one_error(capsys, "train", "--config", cfg, "--device", "cpu", "--save_dir", out)
    assert line == (f"mobileseg train: error: --save_dir {out} holds checkpoints of an earlier "
                    f"run (iter_100, best_model): resume with --resume_model {out}/iter_100, "
                    f"choose another --save_dir, or pass --overwrite")
    assert (out / "best_model" / "model.pdparams").read_bytes() == b"the better model"


def test_binary_255_masks_without_map_labels(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            root / "images" / f"{i}.png")
        mask = np.where(rng.random((64, 64)) > 0.5, 255, 0).astype(np.uint8)
        Image.fromarray(mask).save(root / "labels" / f"{i}.png")
        lines.append(f"images/{i}.png labels/{i}.png")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "val.txt").write_text("\n".join(lines[:2]) + "\n")
    dic = config_dict(root, num_classes=2)
    line = one_error(capsys, "train", "--config", write_config(tmp_path / "c.yml", dic),
                     "--device", "cpu", "--save_dir", tmp_path / "out")
    assert "hold only 0 and 255, and 255 is the ignore index" in line, line
    assert "MSP_MapLabels" in line
    # with the transform the same data passes this check (training then starts)
    dic["train_dataset"]["transforms"].insert(0, {"type": "MSP_MapLabels", "mapping": {255: 1}})
    from paddleseg.cvlibs import SegBuilder

    from mobileseg_paddle.checks import check_samples
    from mobileseg_paddle.config import load_config
    check_samples(SegBuilder(load_config(write_config(tmp_path / "d.yml", dic))).train_dataset,
                  "train_dataset")


def test_val_scale_zero(tmp_path, capsys, data):
    cfg = write_config(tmp_path / "c.yml", config_dict(data))
    line = one_error(capsys, "val", "--config", cfg, "--device", "cpu", "--aug_eval",
                     "--scales", "0")
    assert line == "mobileseg val: error: --scales must be positive, got 0.0"


# --- predict ----------------------------------------------------------------------------------

@pytest.fixture
def weights(tmp_path, data):
    cfg = write_config(tmp_path / "c.yml", config_dict(data))
    model, _ = build_model(cfg, drop_pretrained=True)
    path = tmp_path / "model.pdparams"
    paddle.save(model.state_dict(), str(path))
    return cfg, path


def _predict(capsys, weights, image_path, save_dir):
    cfg, path = weights
    return run(capsys, "predict", "--config", cfg, "--device", "cpu", "--model_path", path,
               "--image_path", image_path, "--save_dir", save_dir)


def test_predict_tiny_image(tmp_path, capsys, weights):
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "dot.png")
    status, err = _predict(capsys, weights, tmp_path / "dot.png", tmp_path / "res")
    assert status == 2 and err == [f"mobileseg predict: error: image {tmp_path / 'dot.png'} is "
                                   f"1x1 pixels; expected at least 32x32"], err


def test_predict_list_entries_never_escape_or_overwrite(tmp_path, capsys, weights, data):
    images = tmp_path / "pics"
    (images / "list").mkdir(parents=True)
    src = sorted((data / "images").iterdir())[0]
    shutil.copy(src, images / "a.png")
    before = (images / "a.png").read_bytes()
    (images / "list" / "images.txt").write_text("../../pics/a.png\n")
    status, err = _predict(capsys, weights, images / "list" / "images.txt", images)
    assert status == 2 and len(err) == 1 and "would overwrite the input image" in err[0], err
    status, err = _predict(capsys, weights, images / "list" / "images.txt", tmp_path / "res")
    assert status == 2 and len(err) == 1 and "would be written outside --save_dir" in err[0], err
    assert (images / "a.png").read_bytes() == before
    # same stem, two extensions: two masks would share one name
    shutil.copy(src, images / "list" / "b.png")
    Image.open(src).save(images / "list" / "b.jpg")
    status, err = _predict(capsys, weights, images / "list", tmp_path / "res")
    assert status == 2 and len(err) == 1 and "would both be written to" in err[0], err
    assert not (tmp_path / "res").exists()


def test_predict_skips_a_file_name_that_is_not_utf8(tmp_path, capsys, weights, data):
    folder = tmp_path / "pics"
    folder.mkdir()
    src = sorted((data / "images").iterdir())[0]
    shutil.copy(src, folder / "good.png")
    shutil.copy(src, os.path.join(os.fsencode(folder), b"bad\xff.png"))
    status, _ = _predict(capsys, weights, folder, tmp_path / "res")
    assert status == 0
    assert os.listdir(tmp_path / "res" / "pseudo_color_prediction") == ["good.png"]


def test_full_disk_during_a_checkpoint_save(tmp_path, capsys, data):
    """One error line; no partial file, staging folder or empty iter_N left; the earlier
    checkpoint stays loadable."""
    with small_disk(tmp_path / "disk", "900k") as disk:
        cfg = write_config(tmp_path / "c.yml", config_dict(data, iters=4))
        status, err = run(capsys, "train", "--config", cfg, "--device", "cpu", "--save_dir",
                          disk / "out", "--save_interval", "2", "--log_iters", "1")
        assert status == 2 and len(err) == 1, err
        assert err[0].startswith(f"mobileseg train: error: cannot write {disk / 'out'}"), err
        assert "No space left on device" in err[0]
        left = sorted(os.listdir(disk / "out"))
        assert not [n for n in left if n.startswith(".")], left  # no staging, no temp file
        for name in left:  # what is there is complete
            assert sorted(os.listdir(disk / "out" / name)) == ["model.pdopt", "model.pdparams"]
            paddle.load(str(disk / "out" / name / "model.pdparams"))
