"""deploy/export.py: what an export writes, the deploy-time rewrites (same maths), and that a
failed export leaves nothing behind.

The exports of the five models are shared with the other deploy tests (test_infer.py,
test_deploy_bad_input.py, runners/) through ``exports()``: built once per test session for all
its processes (helpers/shared.py), in two subprocesses (tracing is single-threaded Python, and
Lite-HRNet alone takes most of a minute), through the command line ``main()``. Tests only read
them (or copy them)."""

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import paddle
import pytest
import yaml

import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components)
from helpers import ROOT
from helpers.numerics import max_rel_err, randomize_
from helpers.shared import once
from mobileseg_paddle.builder import without_pretrained
from mobileseg_paddle.deploy import export as E
from mobileseg_paddle.deploy.deploy_yaml import (
    CITYSCAPES_CLASSES,
    CPU_ENGINES,
    DEPLOY_FORMAT_VERSION,
    DEPLOY_KEY,
    DeployConfig,
)
from mobileseg_paddle.models.export_rewrites import DeployModel, prepare_for_deploy

pytestmark = pytest.mark.slow  # trains, traces or exports real models
MODELS = ["mobilenetv2", "mobilenetv3", "litehrnet18", "shufflenetv2", "ghostnet"]
SIZES = [(128, 256), (200, 328)]  # the second is not a multiple of 32
_WORK = tempfile.mkdtemp(prefix="mobileseg-deploy-tests-")
atexit.register(shutil.rmtree, _WORK, True)


def config_path(name):
    return os.path.join(ROOT, "configs", "mobileseg",
                        f"mobileseg_{name}_cityscapes_1024x512_80k.yml")


@functools.lru_cache(maxsize=None)
def reference_model(name):
    """Our model of config ``name`` with random weights and BN statistics (eval mode), and the
    path of its saved weights."""
    from paddleseg.cvlibs import Config, SegBuilder

    cfg = Config(config_path(name))
    cfg.dic["model"] = without_pretrained(cfg.dic["model"])
    model = SegBuilder(cfg).model
    randomize_(model, seed=MODELS.index(name) + 1)
    model.eval()
    path = os.path.join(_WORK, name, "model.pdparams")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    paddle.save(model.state_dict(), path)
    return model, path


def _jobs(name, weights, out):
    """The exports each model gets into folder ``out``: kind -> export argv."""
    # the engine fixed (no timing), except in "paddle_auto"
    base = ["--config", config_path(name), "--model_path", weights]
    fixed = ["--engine", "onednn"]
    jobs = {
        # logits, dynamic H/W; both programs for MobileNetV2, the legacy one (the program the
        # predictor loads) for the others, to save a PIR trace of each
        "paddle": base + ["--save_dir", f"{out}/paddle", "--output_op", "none"] + fixed
        + ([] if name == "mobilenetv2" else ["--program", "legacy"]),
        "onnx_dynamic": base + ["--save_dir", f"{out}/onnx_dynamic", "--output_op", "none",
                                "--format", "onnx"],
    }
    # static exports at both sizes, except Lite-HRNet (a trace costs it ~20 s): the size that
    # is not a multiple of 32 only
    for h, w in SIZES if name != "litehrnet18" else SIZES[1:]:
        jobs[f"onnx_{h}x{w}"] = base + ["--save_dir", f"{out}/onnx_{h}x{w}", "--output_op",
                                        "none", "--format", "onnx",
                                        "--input_shape", "1", "3", str(h), str(w)]
    if name == "mobilenetv2":  # the served form, for the command-line inference tests
        jobs["paddle_argmax"] = base + ["--save_dir", f"{out}/paddle_argmax"] + fixed
        # the engines measured (at a small size), the fastest recorded
        jobs["paddle_auto"] = base + ["--save_dir", f"{out}/paddle_auto", "--program", "legacy",
                                      "--tune_shape", "64", "128", "--tune_threads", "1"]
    return jobs


_WORKER = textwrap.dedent("""
    import json, sys
    from mobileseg_paddle.deploy.export import main
    for argv in json.loads(sys.argv[1]):
        code = main(argv)
        if code:
            sys.exit(f"export failed ({code}): {argv}")
""")


@functools.lru_cache(maxsize=None)
def exports():
    """{model: {kind: export folder}} for all five models (see ``_jobs``)."""
    return once("exports", _build_exports)


def _build_exports(folder):
    plan = {}
    for name in MODELS:  # the weights beside the exports: the builder's _WORK goes at its exit
        weights = os.path.join(folder, name, "model.pdparams")
        os.makedirs(os.path.dirname(weights), exist_ok=True)
        shutil.copyfile(reference_model(name)[1], weights)
        plan[name] = _jobs(name, weights, os.path.join(folder, name))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def run(name):
        proc = subprocess.run([sys.executable, "-c", _WORKER, json.dumps(list(plan[name].values()))],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"exports of {name} failed:\n{proc.stderr[-3000:]}")

    # Lite-HRNet first: its traces take as long as the four others together
    order = sorted(MODELS, key=lambda n: n != "litehrnet18")
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(run, order))
    return {name: {kind: argv[argv.index("--save_dir") + 1] for kind, argv in jobs.items()}
            for name, jobs in plan.items()}


def read_deploy(folder):
    with open(os.path.join(folder, "deploy.yaml")) as f:
        return yaml.safe_load(f)


# ----------------------------------------------------------------------------------------------
# What is written


def test_paddle_export_folder_and_deploy_yaml():
    folder = exports()["mobilenetv2"]["paddle"]
    assert sorted(os.listdir(folder)) == ["deploy.yaml", "model.json", "model.openvino.pdmodel",
                                         "model.pdiparams", "model.pdmodel"]
    doc = read_deploy(folder)
    ours = doc[DEPLOY_KEY]
    assert ours["format_version"] == DEPLOY_FORMAT_VERSION
    assert ours["files"] == {"legacy": "model.pdmodel", "openvino": "model.openvino.pdmodel",
                             "pir": "model.json", "params": "model.pdiparams"}
    assert ours["engine"] == {"default": "onednn", "chosen": "--engine"}
    assert ours["num_classes"] == 19
    assert ours["class_names"] == CITYSCAPES_CLASSES
    assert "palette" not in ours  # one palette for every command: mobileseg_paddle.palette
    assert ours["normalize"] == {"scale": "1/255", "mean": [0.5] * 3, "std": [0.5] * 3}
    assert ours["input"]["shape"] == [-1, 3, -1, -1]
    assert ours["input"]["size_policy"]["mode"] == "keep"
    assert ours["output"] == {"op": "none", "kind": "logits", "dtype": "float32",
                              "shape": ["N", 19, "H", "W"]}
    assert ours["model"]["backbone"] == "MSP_MobileNetV2_x1_0"
    # the block PaddleSeg's own deploy tools read
    assert doc["Deploy"]["model"] == "model.pdmodel"
    assert doc["Deploy"]["params"] == "model.pdiparams"
    assert doc["Deploy"]["transforms"] == [{"type": "Normalize", "mean": [0.5] * 3,
                                           "std": [0.5] * 3}]
    # nothing left next to it by the temporary-folder mechanism
    assert not [f for f in os.listdir(os.path.dirname(folder)) if ".partial-" in f]


def test_legacy_only_export_and_argmax_output():
    legacy = exports()["ghostnet"]["paddle"]
    assert sorted(os.listdir(legacy)) == ["deploy.yaml", "model.openvino.pdmodel",
                                          "model.pdiparams", "model.pdmodel"]
    ours = read_deploy(exports()["mobilenetv2"]["paddle_argmax"])[DEPLOY_KEY]
    assert ours["output"] == {"op": "argmax", "kind": "label_map", "dtype": "int32",
                              "shape": ["N", "H", "W"]}


def test_argmax_form_of_each_program(tmp_path):
    """oneDNN's program reduces over the last axis of an NHWC transpose, OpenVINO's over the
    channels as they are; both give dygraph's labels."""
    from paddle.base import core

    from mobileseg_paddle.deploy.runners import PredictorOptions, create_runner

    folder = exports()["mobilenetv2"]["paddle_argmax"]

    def tail(name):
        with open(os.path.join(folder, name), "rb") as f:
            desc = core.ProgramDesc(f.read())
        block = desc.block(0)  # (a view into desc)
        ops = [block.op(i) for i in range(block.op_size())]
        return [op.type() for op in ops][-3:], [op.attr("axis") for op in ops
                                                if op.type() == "arg_max"]
    assert tail("model.pdmodel") == (["transpose2", "arg_max", "fetch"], [3])
    assert tail("model.openvino.pdmodel")[1] == [1]
    assert "transpose2" not in tail("model.openvino.pdmodel")[0]
    model, _ = reference_model("mobilenetv2")
    x = np.random.default_rng(3).standard_normal((1, 3, 96, 160)).astype("float32")
    with paddle.no_grad():
        want = paddle.argmax(model(paddle.to_tensor(x))[0], axis=1).numpy()
    for engine in ("onednn", "openvino"):
        opts = PredictorOptions(engine=engine, openvino_cache_dir=str(tmp_path))
        with create_runner(DeployConfig(folder), "paddle", opts) as runner:
            for _ in range(2):  # OpenVINO: the dynamic program, then the one for this size
                got = runner(x)
                assert got.dtype == np.int32 and np.mean(got == want) >= 0.9999, engine


def test_engine_auto_is_measured_recorded_and_run(tmp_path):
    """``--engine auto`` (timed at --tune_shape 64 128, 1 thread): every CPU engine timed, the
    fastest recorded, and run by ``--engine auto``."""
    from mobileseg_paddle.deploy.runners import PredictorOptions, create_runner

    folder = exports()["mobilenetv2"]["paddle_auto"]
    engine = read_deploy(folder)[DEPLOY_KEY]["engine"]
    measured = engine["measured"]
    assert (engine["chosen"], measured["shape"], measured["threads"]) == (
        "measured", [1, 3, 64, 128], 1)
    assert sorted(measured["ms"]) == sorted(CPU_ENGINES)
    assert all(isinstance(t, float) and t > 0 for t in measured["ms"].values())
    assert engine["default"] == min(measured["ms"], key=measured["ms"].get)
    deploy = DeployConfig(folder)
    assert deploy.engine == engine["default"]
    with create_runner(deploy, "auto", PredictorOptions(openvino_cache_dir=str(tmp_path))) as runner:
        assert runner.opts.engine == engine["default"]


def test_engine_refusals(tmp_path):
    model, _ = reference_model("mobilenetv2")
    cases = [
        (dict(engine="fast"), "--engine: expected one of auto, onednn, openvino, plain, got "
                              "'fast'"),
        (dict(engine="onednn", fmt="onnx"), "--engine onednn: engines are Paddle Inference's; "
                                            "an ONNX export runs on onnxruntime (leave --engine "
                                            "out)"),
        (dict(engine="openvino", program="pir"), "--engine openvino runs the legacy program: "
                                                 "export it with --program both or legacy"),
        (dict(tune_shape=[32, 64]), "--tune_shape: expected H W, each at least 64, got 32 64"),
        (dict(tune_shape=[64, 64], input_shape=[1, 3, 128, 128]),
         "--tune_shape 64 64: the export's input size is fixed (128x128); leave --tune_shape "
         "out"),
    ]
    for kwargs, message in cases:
        with pytest.raises(E.UserError) as e:
            E.export(config_path("mobilenetv2"), str(tmp_path / "out"), model=model, **kwargs)
        assert str(e.value) == message
    assert os.listdir(tmp_path) == []


def test_onnx_exports_static_and_dynamic_shapes():
    import onnx

    folders = exports()["litehrnet18"]
    dyn = onnx.load(os.path.join(folders["onnx_dynamic"], "model.onnx"))
    dims = dyn.graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == 3
    assert all(d.dim_value == 0 for d in (dims[2], dims[3]))  # symbolic: dynamic H and W
    h, w = SIZES[1]
    static = onnx.load(os.path.join(folders[f"onnx_{h}x{w}"], "model.onnx"))
    assert [d.dim_value for d in static.graph.input[0].type.tensor_type.shape.dim] == [1, 3, h, w]
    ours = read_deploy(folders[f"onnx_{h}x{w}"])[DEPLOY_KEY]
    assert ours["files"] == {"onnx": "model.onnx"}
    assert ours["input"]["size_policy"] == {"mode": "resize", "size": [h, w], "note": ours[
        "input"]["size_policy"]["note"]}
    # the context module's pooling is the matrix-product form: MobileNetV2 (no other pooling)
    # has no AveragePool left, which paddle2onnx would size wrongly at 200x328
    mv2 = onnx.load(os.path.join(exports()["mobilenetv2"][f"onnx_{h}x{w}"], "model.onnx"))
    assert not [n for n in mv2.graph.node if n.op_type == "AveragePool"]
    assert [n for n in mv2.graph.node if n.op_type == "MatMul"]


# ----------------------------------------------------------------------------------------------
# Deploy-time rewrites keep the maths


@pytest.mark.parametrize("name", ["mobilenetv2", "litehrnet18"])
def test_conv_bias_folding_is_exact(name):
    model, _ = reference_model(name)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    deployed = prepare_for_deploy(model)
    folded = [k for k in before if k.endswith(".bias") and k not in deployed.state_dict()]
    assert len(folded) > 5  # the head's ConvBNReLU biases
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((1, 3, *SIZES[1]))
                         .astype("float32"))
    with paddle.no_grad():
        ref, out = model(x)[0].numpy(), deployed(x)[0].numpy()
    assert max_rel_err(out, ref) <= 1e-5
    # the model given to the exporter is not modified
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in model.state_dict().items())


def test_channels_last_argmax_equals_argmax():
    model, _ = reference_model("mobilenetv2")
    x = paddle.to_tensor(np.random.default_rng(1).standard_normal((2, 3, 96, 160))
                         .astype("float32"))
    with paddle.no_grad():
        want = paddle.argmax(model(x)[0], axis=1).numpy()
        got = DeployModel(model, "argmax", channels_last_argmax=True)(x).numpy()
    assert got.dtype == np.int32 and got.shape == (2, 96, 160)
    assert np.array_equal(got, want)


# ----------------------------------------------------------------------------------------------
# Writing into place


def _fake_programs(net, out_dir, shape, program="both", openvino_net=None):
    with open(os.path.join(out_dir, "model.pdmodel"), "w") as f:
        f.write("program")
    with open(os.path.join(out_dir, "model.pdiparams"), "w") as f:
        f.write("params")
    return {"legacy": "model.pdmodel"}


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    model, _ = reference_model("mobilenetv2")

    def boom(*args, **kwargs):
        open(os.path.join(args[1], "model.pdmodel"), "w").close()  # half-written
        raise RuntimeError("disk full")

    monkeypatch.setattr(E, "save_paddle_programs", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        E.export(config_path("mobilenetv2"), str(tmp_path / "out"), model=model)
    assert os.listdir(tmp_path) == []


def test_reexport_replaces_only_a_previous_export(tmp_path, monkeypatch):
    model, _ = reference_model("mobilenetv2")
    monkeypatch.setattr(E, "save_paddle_programs", _fake_programs)
    out = tmp_path / "out"
    E.export(config_path("mobilenetv2"), str(out), model=model, engine="onednn")
    (out / "results").mkdir()  # the user's own files inside an old export stay
    (out / "results" / "a.png").write_text("a result")
    E.export(config_path("mobilenetv2"), str(out), model=model, output_op="softmax",
             engine="plain")
    assert sorted(os.listdir(out)) == ["deploy.yaml", "model.pdiparams", "model.pdmodel",
                                       "results"]
    assert (out / "results" / "a.png").read_text() == "a result"
    assert read_deploy(str(out))[DEPLOY_KEY]["output"]["kind"] == "probabilities"
    assert sorted(os.listdir(tmp_path)) == ["out"]
    # a folder that is not an export is never replaced
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    with pytest.raises(E.UserError, match="holds no export of mobileseg"):
        E.export(config_path("mobilenetv2"), str(other), model=model)
    assert (other / "keep.txt").read_text() == "user data"


def test_input_shape_parsing():
    assert E.parse_input_shape(None) == [-1, 3, -1, -1]
    assert E.parse_input_shape(["1", "3", "512", "1024"]) == [1, 3, 512, 1024]
    assert E.parse_input_shape(["-1", "3", "-1", "-1"]) == [-1, 3, -1, -1]
    for bad, msg in [(["1", "3", "512"], "expected 4 values"), (["1", "4", "64", "64"], "3-channel"),
                     (["1", "3", "32", "64"], "below the smallest"), (["1", "3", "a", "64"],
                                                                     "not an integer")]:
        with pytest.raises(E.UserError, match=msg):
            E.parse_input_shape(bad)
