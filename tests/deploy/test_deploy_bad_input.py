"""Bad input to export and inference: one clear error line that names the file or field and
what was expected (``mobileseg <command>: error: ...``), a non-zero exit (``main`` returns 2;
the command line exits with it) and nothing written."""

import os
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import paddle
import pytest
import yaml
from test_export import ROOT, config_path, exports, reference_model

from mobileseg_paddle.deploy import deploy_yaml
from mobileseg_paddle.deploy import export as E
from mobileseg_paddle.deploy import infer as I

ERROR_LINE = re.compile(r"^mobileseg [\w ]+: error: ")


def errors_of(main, argv, capsys):
    """Run a command-line ``main``; return (exit code, its 'error:' lines)."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if ERROR_LINE.match(line)]


def assert_one_error(main, argv, capsys, *fragments):
    code, errors = errors_of(main, argv, capsys)
    assert code == 2
    assert len(errors) == 1, errors
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    if "--save_dir" in argv:  # nothing written
        assert not os.path.exists(argv[argv.index("--save_dir") + 1])
    return errors[0]


@pytest.fixture
def export_copy(tmp_path):
    """A writable copy of the MobileNetV2 export (argmax) and a folder with one good image."""
    src = exports()["mobilenetv2"]["paddle_argmax"]
    dst = tmp_path / "export"
    shutil.copytree(src, dst)
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "ok.png"), np.full((80, 96, 3), 127, np.uint8))
    return dst, images


def infer_argv(export_dir, image_path, save_dir):
    return ["--config", str(export_dir), "--image_path", str(image_path), "--save_dir",
            str(save_dir)]


def _edit_yaml(path, edit):
    with open(path) as f:
        doc = yaml.safe_load(f)
    edit(doc)
    with open(path, "w") as f:
        yaml.safe_dump(doc, f)


# ----------------------------------------------------------------------------------------------
# Inference: export folder and deploy.yaml


def test_missing_deploy_yaml(tmp_path, export_copy, capsys):
    _, images = export_copy
    assert_one_error(I.main, infer_argv(tmp_path / "nowhere", images, tmp_path / "out"), capsys,
                     "deploy.yaml not found", "nowhere")


@pytest.mark.parametrize("missing, kind", [("model.pdmodel", "legacy"),
                                           ("model.pdiparams", "params")])
def test_missing_model_or_params(tmp_path, export_copy, capsys, missing, kind):
    export_dir, images = export_copy
    os.remove(export_dir / missing)
    assert_one_error(I.main, infer_argv(export_dir, images, tmp_path / "out"), capsys,
                     f"{kind} file not found", missing)


def test_deploy_yaml_of_another_version(tmp_path, export_copy, capsys):
    export_dir, images = export_copy
    _edit_yaml(export_dir / "deploy.yaml", lambda d: d[deploy_yaml.DEPLOY_KEY].update(format_version=99))
    assert_one_error(I.main, infer_argv(export_dir, images, tmp_path / "out"), capsys,
                     "format_version 99", "re-export")


def test_deploy_yaml_of_paddleseg_export(tmp_path, export_copy, capsys):
    export_dir, images = export_copy
    _edit_yaml(export_dir / "deploy.yaml", lambda d: d.pop(deploy_yaml.DEPLOY_KEY))
    assert_one_error(I.main, infer_argv(export_dir, images, tmp_path / "out"), capsys,
                     f"no '{deploy_yaml.DEPLOY_KEY}' section", "deploy.yaml")


def test_deploy_yaml_missing_field_or_not_yaml(tmp_path, export_copy, capsys):
    export_dir, images = export_copy
    _edit_yaml(export_dir / "deploy.yaml", lambda d: d[deploy_yaml.DEPLOY_KEY].pop("num_classes"))
    assert_one_error(I.main, infer_argv(export_dir, images, tmp_path / "out"), capsys,
                     "missing or malformed field", "num_classes")
    (export_dir / "deploy.yaml").write_text("Deploy: [unclosed\n")
    assert_one_error(I.main, infer_argv(export_dir, images, tmp_path / "out"), capsys,
                     "not a valid YAML file")


def test_corrupt_model_file(tmp_path, export_copy, capsys):
    export_dir, images = export_copy
    (export_dir / "model.pdmodel").write_bytes(b"\x00garbage" * 100)
    assert_one_error(I.main, infer_argv(export_dir, images, tmp_path / "out"), capsys,
                     "cannot load", "model.pdmodel")


def test_onnxruntime_on_a_paddle_export(tmp_path, export_copy, capsys):
    export_dir, images = export_copy
    assert_one_error(I.main, infer_argv(export_dir, images, tmp_path / "out")
                     + ["--backend", "onnxruntime"], capsys, "--format onnx")


@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="checks the CPU build's refusal")
def test_gpu_on_a_cpu_build(tmp_path, export_copy, capsys):
    export_dir, images = export_copy
    assert_one_error(I.main, infer_argv(export_dir, images, tmp_path / "out")
                     + ["--device", "gpu", "--use_trt", "True"], capsys, "paddlepaddle-gpu")


# ----------------------------------------------------------------------------------------------
# Inference: images, inputs and outputs


def test_unreadable_image(tmp_path, export_copy, capsys):
    export_dir, images = export_copy
    (images / "broken.png").write_text("not a picture")
    assert_one_error(I.main, infer_argv(export_dir, images, tmp_path / "out"), capsys,
                     "cannot read image", "broken.png")


def test_missing_or_empty_image_path(tmp_path, export_copy, capsys):
    export_dir, _ = export_copy
    assert_one_error(I.main, infer_argv(export_dir, tmp_path / "nope.png", tmp_path / "out"),
                     capsys, "--image_path not found", "nope.png")
    (tmp_path / "empty").mkdir()
    assert_one_error(I.main, infer_argv(export_dir, tmp_path / "empty", tmp_path / "out"),
                     capsys, "no images")
    (tmp_path / "list.txt").write_text("missing.jpg\n")
    assert_one_error(I.main, infer_argv(export_dir, tmp_path / "list.txt", tmp_path / "out"),
                     capsys, "line 1", "missing.jpg")


def test_output_folder_not_writable(tmp_path, export_copy, capsys):
    export_dir, images = export_copy
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert_one_error(I.main, infer_argv(export_dir, images, blocker / "out"), capsys,
                     "--save_dir", "is not writable")


def test_wrong_input_rank_channels_or_size():
    seg = I.Segmenter.from_deploy(exports()["mobilenetv2"]["paddle_argmax"])
    with pytest.raises(I.UserError, match=r"rank 3; expected rank 4 \(N, 3, H, W\)"):
        seg.run(np.zeros((3, 64, 64), np.float32))
    with pytest.raises(I.UserError, match="has 4 channels; expected 3"):
        seg.run(np.zeros((1, 4, 64, 64), np.float32))
    with pytest.raises(I.UserError, match=r"expected H x W x 3"):
        seg.predict([np.zeros((64, 64), np.uint8)])
    with pytest.raises(I.UserError, match="smaller than the model's minimum 64x64"):
        seg.predict([np.zeros((40, 100, 3), np.uint8)])
    static = I.Segmenter.from_deploy(exports()["mobilenetv2"]["onnx_128x256"])
    with pytest.raises(I.UserError, match=r"does not fit the exported shape \[1, 3, 128, 256\]"):
        static.run(np.zeros((1, 3, 64, 64), np.float32))


def test_bad_flag_values(tmp_path, export_copy, capsys):
    export_dir, images = export_copy
    assert_one_error(I.main, infer_argv(export_dir, images, tmp_path / "out")
                     + ["--batch_size", "0"], capsys, "--batch_size must be >= 1")


def test_bad_custom_color(tmp_path, export_copy, capsys):
    export_dir, images = export_copy
    assert_one_error(I.main, infer_argv(export_dir, images, tmp_path / "out")
                     + ["--custom_color", "300", "0", "0"], capsys, "--custom_color", "0..255")


def test_command_line_exit_code_and_single_line(tmp_path):
    """Through the interpreter (PaddleSeg's entry script): the process exits with 2 and stderr
    is the one line."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "deploy", "python", "infer.py"),
                           "--config", str(tmp_path / "missing"), "--image_path", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"mobileseg infer: error: deploy.yaml not found: {tmp_path / 'missing'}"]


# ----------------------------------------------------------------------------------------------
# Export


def test_export_bad_paths_and_shapes(tmp_path, capsys):
    _, weights = reference_model("mobilenetv2")
    cfg = config_path("mobilenetv2")
    out = str(tmp_path / "out")
    assert_one_error(E.main, ["--config", str(tmp_path / "none.yml"), "--save_dir", out],
                     capsys, "--config", "none.yml", "file not found")
    assert_one_error(E.main, ["--config", cfg, "--model_path", str(tmp_path / "w.pdparams"),
                              "--save_dir", out], capsys, "--model_path", "not found",
                     "w.pdparams")
    assert_one_error(E.main, ["--config", cfg, "--model_path", weights, "--save_dir", out,
                              "--input_shape", "1", "3", "512"], capsys,
                     "--input_shape: expected 4 values N C H W")
    assert_one_error(E.main, ["--config", cfg, "--model_path", weights, "--save_dir", out,
                              "--input_shape", "1", "1", "512", "512"], capsys,
                     "3-channel (RGB)", "C=1")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert_one_error(E.main, ["--config", cfg, "--model_path", weights, "--save_dir",
                              str(blocker / "out")], capsys, "--save_dir", "is a file")
    assert not os.path.exists(out)


def test_export_weights_of_another_model(tmp_path, capsys):
    _, ghostnet_weights = reference_model("ghostnet")
    line = assert_one_error(E.main, ["--config", config_path("mobilenetv2"), "--model_path",
                                     ghostnet_weights, "--save_dir", str(tmp_path / "out")],
                            capsys, "--model_path:", "missing keys", "unexpected keys")
    assert "backbone." in line  # names the keys
    assert not os.path.exists(tmp_path / "out")
