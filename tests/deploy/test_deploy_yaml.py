"""deploy.yaml (mobileseg_paddle/deploy/deploy_yaml.py): what it writes for PaddleSeg's tools and
what it accepts when read back. No paddle needed: the file is plain data."""

import copy
import os
import subprocess
import sys

import pytest
import yaml

from helpers import ROOT
from mobileseg_paddle.deploy import deploy_yaml
from mobileseg_paddle.errors import UserError


class _Cfg:
    """The two things ``make`` reads from a paddleseg Config."""

    def __init__(self, transforms, dataset_type="Dataset"):
        self.val_dataset_cfg = {"type": dataset_type, "transforms": transforms}
        self.train_dataset_cfg = {}
        self.dic = {"model": {"type": "MSP_MobileSeg", "backbone": {"type": "MSP_GhostNet_x1_0"}}}


def _info(transforms, **kw):
    args = dict(num_classes=2, shape=[-1, 3, -1, -1], output_op="argmax", fmt="paddle",
                files={"legacy": "model.pdmodel", "params": "model.pdiparams"},
                mean=[0.5] * 3, std=[0.5] * 3, exporter="test", paddle_version="3.3.1")
    args.update(kw)
    return deploy_yaml.make(_Cfg(transforms), **args)


def test_label_only_transforms_never_reach_paddleseg(tmp_path):
    transforms = [{"type": "MSP_MapLabels", "mapping": {255: 1}},
                  {"type": "Resize", "target_size": [512, 512]}, {"type": "Normalize"}]
    info = _info(transforms)
    assert [t["type"] for t in info["Deploy"]["transforms"]] == ["Resize", "Normalize"]
    assert info["Deploy"]["transforms"][1] == {"type": "Normalize", "mean": [0.5] * 3,
                                               "std": [0.5] * 3}
    assert transforms[0]["type"] == "MSP_MapLabels"  # the config itself is not changed


def _write(folder, info):
    folder.mkdir(exist_ok=True)
    for name in info[deploy_yaml.DEPLOY_KEY]["files"].values():
        if not os.path.isabs(name) and ".." not in name:
            (folder / name).write_bytes(b"x")
    return deploy_yaml.write(str(folder), info)


def test_round_trip_and_our_export(tmp_path):
    path = _write(tmp_path / "export", _info([{"type": "Normalize"}]))
    deploy = deploy_yaml.DeployConfig(path)
    assert (deploy.num_classes, deploy.output_kind, deploy.dynamic_hw) == (2, "label_map", True)
    assert deploy.file("legacy") == str(tmp_path / "export" / "model.pdmodel")
    assert deploy_yaml.is_our_export(str(tmp_path / "export"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "deploy.yaml").write_text("Deploy: {model: m.pdmodel}\n")
    assert not deploy_yaml.is_our_export(str(other))
    (other / deploy_yaml.INCOMPLETE_MARKER).write_text("")
    assert deploy_yaml.is_our_export(str(other))  # an interrupted export of ours


@pytest.mark.parametrize("name", ["../outside.pdmodel", "/etc/passwd", "sub/../../x.pdmodel"])
def test_files_must_lie_inside_the_export_folder(tmp_path, name):
    info = _info([{"type": "Normalize"}])
    bad = copy.deepcopy(info)
    bad[deploy_yaml.DEPLOY_KEY]["files"]["legacy"] = name
    path = _write(tmp_path / "export", bad)
    with pytest.raises(UserError) as e:
        deploy_yaml.DeployConfig(path)
    assert str(e.value) == (f"{path}: files.legacy is {name!r}: expected a file name inside the "
                            f"export folder")


def test_reading_needs_no_paddle(tmp_path):
    path = _write(tmp_path / "export", _info([{"type": "Normalize"}]))
    code = ("import sys; from mobileseg_paddle.deploy.deploy_yaml import DeployConfig; "
            f"DeployConfig({path!r}); assert 'paddle' not in sys.modules, 'paddle was imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(open(path))["Deploy"]["model"] == "model.pdmodel"


def test_engine_recorded_and_older_files_without_it(tmp_path):
    """Format 2 records the default CPU engine; a format 1 file (none) loads with oneDNN; an
    ONNX export has none."""
    engine = {"default": "openvino", "chosen": "measured",
              "measured": {"shape": [1, 3, 64, 128], "threads": 1,
                           "ms": {"onednn": 4.0, "openvino": 2.0, "plain": 20.0}}}
    path = _write(tmp_path / "new", _info([{"type": "Normalize"}], engine=engine))
    assert deploy_yaml.DeployConfig(path).engine == "openvino"
    old = _info([{"type": "Normalize"}])
    old[deploy_yaml.DEPLOY_KEY]["format_version"] = 1
    assert "engine" not in old[deploy_yaml.DEPLOY_KEY]
    assert deploy_yaml.DeployConfig(_write(tmp_path / "old", old)).engine == "onednn"
    onnx = _info([{"type": "Normalize"}], fmt="onnx", files={"onnx": "model.onnx"})
    assert deploy_yaml.DeployConfig(_write(tmp_path / "onnx", onnx)).engine is None
    bad = _info([{"type": "Normalize"}], engine={"default": "fast"})
    with pytest.raises(UserError, match="engine 'fast': expected one of onednn, openvino, plain"):
        deploy_yaml.DeployConfig(_write(tmp_path / "bad", bad))
