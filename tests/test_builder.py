"""mobileseg_paddle/builder.py: the model of a real config, what ``drop_pretrained`` drops (and
that the caller's config is left alone), strict weight loading, one clear error per bad input,
and the export/Lite wrappers keeping their error types.

The configs name a backbone URL and there is no network here: every build drops the
``pretrained`` keys or gives weights."""

import copy
import os

import numpy as np
import paddle
import pytest
import yaml

import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components)
from helpers import ROOT
from mobileseg_paddle.builder import build_model, without_pretrained
from mobileseg_paddle.errors import UserError
from mobileseg_paddle.models.mobileseg import MobileSeg

CONFIG = os.path.join(ROOT, "configs", "mobileseg",
                      "mobileseg_mobilenetv2_cityscapes_1024x512_80k.yml")
DATA = os.path.join(ROOT, "configs", "_base_", "cityscapes.yml")  # datasets, no model


def write(path, dic):
    path.write_text(yaml.safe_dump(dic))
    return str(path)


def test_builds_the_config_model_in_eval_mode():
    model, cfg = build_model(CONFIG, drop_pretrained=True)
    assert isinstance(model, MobileSeg)
    assert model.num_classes == 19  # Cityscapes
    assert type(model.backbone).__name__ == "MobileNetV2" and model.backbone.scale == 1.0
    assert not any(layer.training for layer in [model, *model.sublayers()])
    assert "pretrained" not in cfg.dic["model"]["backbone"]
    with paddle.no_grad():
        out = model(paddle.rand([1, 3, 64, 64]))
    assert list(out[0].shape) == [1, 19, 64, 64]


def test_drop_pretrained_leaves_the_callers_config_alone():
    node = {"type": "M", "pretrained": "a", "backbone": {"pretrained": "b", "scale": 1.0},
            "heads": [{"pretrained": "c", "k": 2}, 3]}
    before = copy.deepcopy(node)
    assert without_pretrained(node) == {"type": "M", "backbone": {"scale": 1.0},
                                        "heads": [{"k": 2}, 3]}
    assert node == before

    from paddleseg.cvlibs import Config
    cfg = Config(CONFIG)
    dic = copy.deepcopy(cfg.dic)
    assert dic["model"]["backbone"]["pretrained"].startswith("https://")
    _, built = build_model(cfg, drop_pretrained=True)
    assert cfg.dic == dic  # the URL is still there
    assert built is not cfg and "pretrained" not in built.dic["model"]["backbone"]
    assert built.dic["train_dataset"] == dic["train_dataset"]


def test_loads_a_saved_state_dict(tmp_path):
    model, _ = build_model(CONFIG, drop_pretrained=True)
    name = "backbone.conv1._conv.weight"
    weight = model.state_dict()[name]
    changed = np.full(weight.shape, 0.25, "float32")
    weight.set_value(changed)
    weights = tmp_path / "model.pdparams"
    paddle.save(model.state_dict(), str(weights))

    # the default drops ``pretrained`` because weights are given: nothing is downloaded
    for path in (weights, tmp_path):  # a file, or a folder holding model.pdparams
        loaded, cfg = build_model(CONFIG, model_path=str(path))
        np.testing.assert_array_equal(loaded.state_dict()[name].numpy(), changed)
        assert not loaded.training and "pretrained" not in cfg.dic["model"]["backbone"]


def test_errors_name_the_file_or_field(tmp_path):
    def error(*args, **kwargs):
        with pytest.raises(UserError) as e:
            build_model(*args, **kwargs)
        assert isinstance(e.value, ValueError)
        return str(e.value)

    missing = str(tmp_path / "none.yml")
    assert error(missing) == f"--config {missing}: file not found"

    broken = tmp_path / "broken.yml"
    broken.write_text("model: [unclosed\n")
    assert error(str(broken)).startswith(f"--config {broken}: ")

    # paddleseg's Config refuses a file without a model; a loaded Config may have lost it
    no_model = write(tmp_path / "no_model.yml", {"_base_": DATA})
    assert error(no_model) == (f"--config {no_model}: "
                               "No model specified in the configuration file.")
    from paddleseg.cvlibs import Config
    cfg = Config(CONFIG)
    del cfg.dic["model"]
    assert error(cfg) == "config: no 'model' section"

    unknown = write(tmp_path / "unknown.yml", {"_base_": DATA, "model": {"type": "MSP_Nope"}})
    assert error(unknown) == "config model.type: unknown component 'MSP_Nope'"

    # without weights the default keeps the config's pretrained entry (here a missing file)
    nope = tmp_path / "nope.pdparams"
    local = Config(CONFIG).dic
    local["model"]["backbone"]["pretrained"] = str(nope)
    local = write(tmp_path / "local.yml", local)
    assert error(local) == (f"--config {local}: cannot build the model: "
                            f"weights file not found: {nope}")

    assert error(CONFIG, model_path=str(nope)) == f"--model_path: weights file not found: {nope}"

    other = tmp_path / "other.pdparams"
    paddle.save({"head.weight": paddle.zeros([2, 2])}, str(other))
    message = error(CONFIG, model_path=str(other))
    assert message.startswith(f"--model_path: {other} does not fit MobileSeg: ")
    assert "missing keys [backbone." in message and "1 unexpected keys [head.weight]" in message


def test_one_builder_for_every_caller(tmp_path):
    """export and Lite build through builder.build_model: the same errors reach both."""
    from mobileseg_paddle.deploy import export as E

    missing = str(tmp_path / "none.yml")
    with pytest.raises(UserError, match="^--config .*none.yml: file not found$"):
        E.build_model(missing)
    with pytest.raises(UserError, match="^--model_path: weights file not found: "):
        E.build_model(CONFIG, str(tmp_path / "w.pdparams"))
    assert E.build_model is build_model
