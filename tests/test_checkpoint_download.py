"""Weights from a URL (``pretrained: http://...``): downloaded into paddleseg's cache with its
layout, and a hostile archive (a member with ``..`` or an absolute path, a symbolic or hard
link, a device file, a FIFO) is one error naming the URL and the member, with nothing written
outside the cache, nor inside it (the reliability issue's case). The server is a local
``http.server`` in a thread serving real archives."""

import functools
import http.server
import io
import os
import tarfile
import threading
import zipfile

import numpy as np
import paddle
import pytest
from paddleseg.utils import download as paddleseg_download
from paddleseg.utils import utils as paddleseg_utils
from paddleseg.utils.env import seg_env

import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components, guards paddleseg)
from helpers.numerics import randomize_
from helpers.train_helpers import config_dict, run_module, write_config
from mobileseg_paddle import checkpoint
from mobileseg_paddle.checkpoint import load_pretrained, resolve_weights
from mobileseg_paddle.errors import UserError
from mobileseg_paddle.models.backbones.mobilenetv3 import MobileNetV3_small_x0_35


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(folder served, base URL, the cache folder paddleseg's downloader uses)."""
    srv = tmp_path / "srv"
    srv.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(srv)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    cache = tmp_path / "seghome" / "pretrained_model"
    cache.mkdir(parents=True)  # as paddleseg's seg_env makes it when imported
    monkeypatch.setattr(seg_env, "PRETRAINED_MODEL_HOME", str(cache))
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    try:
        yield srv, f"http://127.0.0.1:{httpd.server_address[1]}", cache
    finally:
        httpd.shutdown()
        httpd.server_close()


def _weights():
    model = randomize_(MobileNetV3_small_x0_35(), 0)
    buf = io.BytesIO()
    paddle.save(model.state_dict(), buf)
    return model, buf.getvalue()


def _add(tar, name, data=None, **attrs):
    info = tarfile.TarInfo(name)
    for k, v in attrs.items():
        setattr(info, k, v)
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _tar(path, extra):
    """An archive as the official ones are (a folder holding model.pdparams), plus ``extra``:
    a function adding members. Returns the weights' model."""
    model, data = _weights()
    with tarfile.open(path, "w:gz") as t:
        _add(t, "evil", type=tarfile.DIRTYPE, mode=0o755)
        _add(t, "evil/model.pdparams", data)
        extra(t)
    return model


def _everything(folder):
    return sorted(os.path.relpath(os.path.join(d, n), folder)
                  for d, dirs, files in os.walk(folder) for n in dirs + files)


def test_a_normal_archive_downloads_into_paddleseg_s_layout_and_loads(server):
    srv, base, cache = server
    model = _tar(srv / "good_model.tar.gz", lambda t: None)
    loaded = load_pretrained(MobileNetV3_small_x0_35(), f"{base}/good_model.tar.gz")
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k].numpy(), v.numpy())
    # paddleseg's layout: <PRETRAINED_MODEL_HOME>/<name before the first dot>/model.pdparams,
    # the archive's top folder renamed to it; no temporary file left
    assert _everything(cache) == ["good_model", "good_model/model.pdparams"]
    # cached: found again without the server
    (srv / "good_model.tar.gz").unlink()
    assert resolve_weights(f"{base}/good_model.tar.gz") == str(cache / "good_model" /
                                                               "model.pdparams")


def test_a_plain_pdparams_url_and_an_existing_paddleseg_cache(server):
    srv, base, cache = server
    model, data = _weights()
    (srv / "mnv3").mkdir()
    (srv / "mnv3" / "model.pdparams").write_bytes(data)
    assert resolve_weights(f"{base}/mnv3/model.pdparams") == str(cache / "mnv3" /
                                                                "model.pdparams")
    assert (cache / "mnv3" / "model.pdparams").read_bytes() == data
    # a cache paddleseg's own downloader filled earlier is used as it is
    (cache / "zoo_model").mkdir()
    (cache / "zoo_model" / "model.pdparams").write_bytes(data)
    assert resolve_weights(f"{base}/zoo_model.tar.gz") == str(cache / "zoo_model" /
                                                              "model.pdparams")
    assert paddleseg_utils.download_pretrained_model is checkpoint.download_weights


def _escape_target(tmp_path):
    """Where a ``..`` member of ours would land (relative to any extraction folder below
    tmp_path/seghome/pretrained_model, old or new): deep enough to leave tmp_path."""
    return "../" * 12 + str(tmp_path / "outside" / "ESCAPED").lstrip("/")


HOSTILE = {
    "dotdot": (lambda t, esc, tmp: _add(t, "evil/" + esc, b"escaped\n"),
               lambda esc, tmp: "evil/" + esc, "a path with '..'"),
    "absolute": (lambda t, esc, tmp: _add(t, str(tmp / "outside" / "ESCAPED"), b"escaped\n"),
                 lambda esc, tmp: str(tmp / "outside" / "ESCAPED"), "an absolute path"),
    "symlink": (lambda t, esc, tmp: (
        _add(t, "evil/link", type=tarfile.SYMTYPE, linkname=str(tmp / "outside")),
        _add(t, "evil/link/ESCAPED", b"escaped\n")),
        lambda esc, tmp: "evil/link", "a symbolic link"),
    "hardlink": (lambda t, esc, tmp: _add(t, "evil/hard", type=tarfile.LNKTYPE,
                                          linkname=str(tmp / "outside" / "victim")),
                 lambda esc, tmp: "evil/hard", "a hard link"),
    "device": (lambda t, esc, tmp: _add(t, "evil/null", type=tarfile.CHRTYPE, devmajor=1,
                                        devminor=3),
               lambda esc, tmp: "evil/null", "a device file"),
    "fifo": (lambda t, esc, tmp: _add(t, "evil/pipe", type=tarfile.FIFOTYPE),
             lambda esc, tmp: "evil/pipe", "a FIFO"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_archive_is_one_error_and_writes_nothing(server, tmp_path, kind):
    srv, base, cache = server
    add, member, why = HOSTILE[kind]
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim").write_text("the user's file")
    esc = _escape_target(tmp_path)
    _tar(srv / "evil.tar.gz", lambda t: add(t, esc, tmp_path))
    url = f"{base}/evil.tar.gz"
    with pytest.raises(UserError) as e:
        load_pretrained(MobileNetV3_small_x0_35(), url)
    assert str(e.value) == (f"refusing the archive {url}: its member "
                            f"{member(esc, tmp_path)!r} is {why} (a member must be a plain file "
                            f"or folder inside the archive); nothing was extracted")
    assert _everything(tmp_path / "outside") == ["victim"]
    assert (tmp_path / "outside" / "victim").read_text() == "the user's file"
    assert _everything(cache) == []  # no temporary file, no half-extracted folder
    assert not [p for p in _everything(tmp_path) if p.endswith("ESCAPED")]


def test_a_zip_with_a_dotdot_member_is_refused(server, tmp_path):
    srv, base, cache = server
    _, data = _weights()
    esc = _escape_target(tmp_path)
    with zipfile.ZipFile(srv / "evil.zip", "w") as z:
        z.writestr("evil/model.pdparams", data)
        z.writestr("evil/" + esc, b"escaped\n")
    url = f"{base}/evil.zip"
    with pytest.raises(UserError, match=r"^refusing the archive .*evil\.zip: its member "
                                        r"'evil/(\.\./)+.*ESCAPED' is a path with '\.\.'"):
        resolve_weights(url)
    assert _everything(cache) == []
    assert not [p for p in _everything(tmp_path) if p.endswith("ESCAPED")]


def test_paddleseg_s_own_archive_extraction_is_checked_too(server, tmp_path):
    """paddleseg's ``download_file_and_uncompress`` (its dataset downloads) extracts through the
    same member check."""
    srv, base, _ = server
    esc = _escape_target(tmp_path)
    _tar(srv / "evil.tar.gz", lambda t: _add(t, "evil/" + esc, b"escaped\n"))
    (tmp_path / "x").mkdir()
    with pytest.raises(UserError, match="its member 'evil/(../)+.*ESCAPED' is a path with"):
        paddleseg_download.download_file_and_uncompress(
            f"{base}/evil.tar.gz", savepath=str(tmp_path / "dl"), extrapath=str(tmp_path / "x"),
            print_progress=False)
    assert not [p for p in _everything(tmp_path) if p.endswith("ESCAPED")]


def test_the_cli_refuses_a_hostile_pretrained_archive(server, tmp_path, data, monkeypatch):
    """The probe's case through the real command line: a backbone ``pretrained`` URL."""
    srv, base, cache = server
    esc = _escape_target(tmp_path)
    _tar(srv / "evil.tar.gz", lambda t: _add(t, "evil/" + esc, b"escaped\n"))
    dic = config_dict(data)
    dic["model"]["backbone"]["pretrained"] = f"{base}/evil.tar.gz"
    cfg = write_config(tmp_path / "c.yml", dic)
    monkeypatch.setenv("SEG_HOME", str(tmp_path / "seghome"))  # the cache of the subprocess
    proc = run_module("export", "--config", cfg, "--save_dir", tmp_path / "out")
    lines = [s for s in proc.stderr.splitlines() if s.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("mobileseg export: error: "), lines
    assert f"refusing the archive {base}/evil.tar.gz: its member 'evil/../" in lines[0], lines
    assert not [p for p in _everything(tmp_path) if p.endswith("ESCAPED")]
    assert _everything(cache) == []
    assert not (tmp_path / "out").exists()
