"""``mobileseg predict`` on a full disk: paddleseg's predict ignores ``cv2.imwrite``'s False
(libpng's "Write Error") and PIL leaves a truncated mask; ours is one error line naming the
file, exit status 2, and every file left behind is complete (the reliability issue's case)."""

import os
import re

import numpy as np
import paddle
import pytest
from PIL import Image

import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components)
from helpers import digests, small_disk
from helpers.train_helpers import config_dict, write_config
from mobileseg_paddle import cli
from mobileseg_paddle.builder import build_model

PAGE = 4096  # tmpfs counts whole pages
PROGRESS = re.compile(r"\s*\d+/\d+ \[[=>.]*\]( - ETA: \S+| - \d+s \S+)\s*$")


@pytest.fixture
def setup(tmp_path, data):
    """(config, weights, folder of two noise images a.png and b.png, the outputs a normal disk
    gets: {relative path: bytes})."""
    cfg = write_config(tmp_path / "c.yml", config_dict(data))
    model, _ = build_model(cfg, drop_pretrained=True)
    weights = tmp_path / "model.pdparams"
    paddle.save(model.state_dict(), str(weights))
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):  # noise: an overlay of ~12 KB, a mask of a few hundred bytes
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(images / name)
    status, err = _predict(None, cfg, weights, images, tmp_path / "ok")
    assert status == 0, err
    return cfg, weights, images, digests(tmp_path / "ok"), tmp_path / "ok"


def _predict(capsys, cfg, weights, images, save_dir):
    status = cli.main(["predict", "--config", str(cfg), "--device", "cpu", "--model_path",
                       str(weights), "--image_path", str(images), "--save_dir", str(save_dir)])
    if capsys is None:
        return status, []
    out = capsys.readouterr()
    # stderr without paddleseg's progress bar (its "1/2 [====>....] - ETA: 0s" line)
    err = [s for s in out.err.splitlines() if s.strip() and not PROGRESS.match(s)]
    return status, err, out.out, out.err


def _fill(disk, free_pages):
    """Fill the tmpfs ``disk`` but for ``free_pages`` pages."""
    fd = os.open(disk / "fill", os.O_WRONLY | os.O_CREAT)
    size = 0
    try:
        while True:
            size += os.write(fd, b"\0" * PAGE)
    except OSError:
        pass
    os.ftruncate(fd, (size // PAGE - free_pages) * PAGE)
    os.close(fd)


def _pages(n):
    return -(-n // PAGE)


def test_full_disk_from_the_first_overlay_is_one_error_and_writes_nothing(setup, tmp_path,
                                                                          capsys):
    cfg, weights, images, _, _ = setup
    with small_disk(tmp_path / "disk", "3m") as disk:
        _fill(disk, 2)  # 8 KB: not even one overlay
        status, err, out, _ = _predict(capsys, cfg, weights, images, disk / "out")
        assert status == 2, err
        assert len(err) == 1, err
        first = err[0].split("/added_prediction/")[-1].split(":")[0]
        assert first in ("a.png", "b.png"), err
        assert err[0] == (f"mobileseg predict: error: cannot write "
                          f"{disk / 'out' / 'added_prediction' / first}: No space left on "
                          f"device"), err
        assert digests(disk / "out") == {}  # no 0-byte or partial image, no temporary file
        assert "overlays:" not in out and "masks:" not in out  # nothing reported as written


def test_disk_full_after_the_first_image_keeps_it_whole_and_names_the_second(setup, tmp_path,
                                                                             capsys):
    cfg, weights, images, want, ok = setup
    from paddleseg.utils import get_image_list
    first, second = [os.path.basename(p) for p in get_image_list(str(images))[0]]
    room = (_pages(os.path.getsize(ok / "added_prediction" / first))
            + _pages(os.path.getsize(ok / "pseudo_color_prediction" / first)))
    with small_disk(tmp_path / "disk", "3m") as disk:
        # the first image's two files fit, the second's overlay does not
        _fill(disk, room + _pages(os.path.getsize(ok / "added_prediction" / second)) - 1)
        status, err, out, raw_err = _predict(capsys, cfg, weights, images, disk / "out")
        assert status == 2 and len(err) == 1, err
        assert err[0] == (f"mobileseg predict: error: cannot write "
                          f"{disk / 'out' / 'added_prediction' / second}: No space left on "
                          f"device"), err
        got = digests(disk / "out")
        assert got == {k: v for k, v in want.items() if k.endswith(first)}  # whole, as on a
        # normal disk; nothing of the second image, no temporary file
        Image.open(disk / "out" / "added_prediction" / first).load()
        assert "overlays:" not in out
        # the error starts a line of its own, after the progress bar's open line
        assert re.fullmatch(r"\s*1/2 \[=+>\.+\] - ETA: \S+\s*\n" + re.escape(err[0]) + "\n",
                            raw_err), raw_err
