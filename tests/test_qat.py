"""Quantization-aware fine-tuning (``mobileseg train --quant``) through PaddleSeg's trainer, on a
tiny MobileSeg-MobileNetV2 x0.25 with random weights and BatchNorm statistics: what the
checkpoint holds, the INT8 export of that checkpoint (``mobileseg quant``) with the input scales
training learned (checked exactly on a two-convolution program) or calibrated ones, and
resuming."""

import os
import re
import shutil

import numpy as np
import paddle
import paddle.nn as nn
import pytest

from helpers.numerics import max_rel_err, randomize_
from helpers.train_helpers import config_dict, make_data, run_module, write_config
from mobileseg_paddle import qat
from mobileseg_paddle.builder import build_model
from mobileseg_paddle.checkpoint import load_pretrained
from mobileseg_paddle.config import load_config
from mobileseg_paddle.deploy import quant as Q
from mobileseg_paddle.deploy.deploy_yaml import DeployConfig
from mobileseg_paddle.deploy.runners import PredictorOptions, create_runner
from mobileseg_paddle.errors import UserError

pytestmark = pytest.mark.slow  # trains and exports real models

SIZE, ITERS = 96, 6


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(config, starting weights, save_dir, stdout) of ``train --quant`` for ITERS iterations
    from randomized weights, checkpoints at ITERS/2 and ITERS (a subprocess, as users run it:
    the optimizer state is keyed by parameter names, which depend on what the process built
    before)."""
    root = tmp_path_factory.mktemp("qat")
    data = make_data(root / "data", num_train=8, num_val=3, size=SIZE)
    config = write_config(root / "tiny.yml", config_dict(data, iters=ITERS, lr=0.01))
    model, _ = build_model(config, drop_pretrained=True)
    randomize_(model, seed=11)
    start = str(root / "start.pdparams")
    paddle.save(model.state_dict(), start)
    save_dir = root / "out"
    proc = run_module("train", "--config", config, "--device", "cpu", "--quant", "--model_path",
                      start, "--save_dir", save_dir, "--save_interval", ITERS // 2, "--seed", 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return config, start, save_dir, proc.stdout


def test_every_convolution_trains_fake_quantized_from_the_given_weights(run):
    config, start, save_dir, stdout = run
    model, _ = build_model(config, drop_pretrained=True)
    convs = [name for name, m in model.named_sublayers() if isinstance(m, nn.Conv2D)]
    assert len(convs) > 40  # depthwise ones included
    assert f"quantization-aware training: {len(convs)} convolutions fake-quantized" in stdout
    state = paddle.load(str(save_dir / f"iter_{ITERS}" / "model.pdparams"))
    own = model.state_dict()
    quanters = {f"{c}._fake_quant_{k}" for c in convs
                for k in ("weight._scale", "input._scale", "input._state", "input._accum")}
    assert set(state) == set(own) | quanters
    for c in convs:
        out_channels = own[f"{c}.weight"].shape[0]
        assert list(state[f"{c}._fake_quant_weight._scale"].shape) == [out_channels]
        scale = float(state[f"{c}._fake_quant_input._scale"].numpy()[0])
        assert np.isfinite(scale) and scale > 0, c  # the moving average of the inputs' abs-max
    # fine-tuned from the given weights: moved, but not far in 6 small steps
    first = paddle.load(start)
    trained = [n for n, p in model.named_parameters() if not p.stop_gradient]
    changes = [max_rel_err(state[k].numpy(), first[k].numpy()) for k in trained]
    assert max(changes) > 1e-4 and np.median(changes) < 0.2, (max(changes), np.median(changes))


@pytest.mark.parametrize("qat_scales", Q.QAT_SCALES)
def test_int8_export_of_the_checkpoint(run, tmp_path, capsys, qat_scales):
    """``mobileseg quant`` takes the checkpoint's float part as the weights, and records how
    they were trained. trained: every convolution's input quantized with the scale training
    learned, so the export computes what the evaluated QAT model simulates; calibrated: found
    again in eval mode, so it stays near the float model."""
    config, _, save_dir, _ = run
    weights = str(save_dir / f"iter_{ITERS}" / "model.pdparams")
    dep = DeployConfig(os.path.dirname(Q.quantize(
        config, str(tmp_path / "int8"), model_path=weights, num_calib=8, output_op="none",
        engine="onednn", qat_scales=qat_scales)))
    assert dep.precision == "int8"
    assert dep.info["precision"]["method"] == "quantization-aware training"
    assert dep.info["precision"]["calibration"]["activations"] == (
        "trained (avg where training learned none)" if qat_scales == "trained" else "avg")

    # every convolution of the program (the training-only auxiliary heads are not in it)
    found = re.findall(r"input scales of (\d+) of (\d+) convolutions from quantization-aware "
                       r"training", capsys.readouterr().out)
    if qat_scales == "trained":
        assert len(found) == 1 and found[0][0] == found[0][1] and int(found[0][0]) > 40
    else:
        assert not found
    fp32, _ = build_model(config, weights)  # a float model takes the float weights
    simulated, _ = build_model(config, drop_pretrained=True)
    qat.quantization_aware(simulated)
    load_pretrained(simulated, weights, resuming=True)  # with the trained scales
    simulated.eval()
    runner = create_runner(dep, "auto", PredictorOptions(cpu_threads=1))
    from paddleseg.cvlibs import SegBuilder
    val = SegBuilder(load_config(config)).val_dataset
    try:
        for i in range(len(val)):
            x = np.asarray(val[i]["img"], np.float32)[None]
            with paddle.no_grad():
                f = fp32(paddle.to_tensor(x))[0].numpy()
                s = simulated(paddle.to_tensor(x))[0].numpy()
            q = runner(x)
            assert np.abs(f).mean() > 0.1  # real magnitudes
            # the evaluated QAT model does round (its scales: moving averages of train-mode
            # batches, which random weights make far from eval mode's)
            assert max_rel_err(s, f) > 0.01
            same_f, same_s = (q.argmax(1) == f.argmax(1)).mean(), (q.argmax(1) == s.argmax(1)).mean()
            if qat_scales == "trained":
                # with those scales the export follows the simulation, not the float model:
                # measured 82.6-85.5 % of the labels against 72.0-75.6 %
                assert same_s > same_f + 0.05
            else:
                # measured 0.084-0.127 of the largest logit, 96.0-97.8 % of the labels
                assert 0 < max_rel_err(q, f) < 0.2 and same_f >= 0.94
    finally:
        runner.close()


def _one_error(proc, *fragments):
    errors = [s for s in proc.stderr.splitlines() if s.startswith("mobileseg train: error: ")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    for f in fragments:
        assert f in errors[0], errors[0]


def test_resume_keeps_quantizing_and_refuses_a_mismatch(run, tmp_path):
    config, start, save_dir, _ = run
    half = save_dir / f"iter_{ITERS // 2}"
    # resumed with --quant: it continues to ITERS, the scales carried on from the checkpoint
    out = tmp_path / "resumed"
    shutil.copytree(half, out / half.name)
    proc = run_module("train", "--config", config, "--device", "cpu", "--quant", "--save_dir",
                      out, "--resume_model", out / half.name, "--save_interval", ITERS // 2,
                      "--log_iters", 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"iter: {ITERS // 2 + 1}/{ITERS}" in proc.stdout
    assert f"iter: {ITERS // 2}/" not in proc.stdout
    assert qat.has_quanters(paddle.load(str(out / f"iter_{ITERS}" / "model.pdparams")))

    # without --quant: one line, nothing trained
    proc = run_module("train", "--config", config, "--device", "cpu", "--save_dir", out,
                      "--resume_model", out / half.name)
    _one_error(proc, "quantization-aware training", "resume it with --quant")
    # a float checkpoint resumed with --quant
    flt = tmp_path / "float" / half.name
    shutil.copytree(half, flt)
    state = paddle.load(str(flt / "model.pdparams"))
    paddle.save(qat.float_state(state), str(flt / "model.pdparams"))
    proc = run_module("train", "--config", config, "--device", "cpu", "--quant", "--save_dir",
                      flt.parent, "--resume_model", flt)
    _one_error(proc, "a float checkpoint", "--quant --model_path")
    assert sorted(os.listdir(flt.parent)) == [half.name]


def test_float_state_keeps_keys_that_only_look_like_quantizers():
    w = np.zeros([2, 1, 1, 1], np.float32)
    state = {"a.weight": w, "a._fake_quant_weight._scale": np.ones(2, np.float32),
             "b._fake_quant_input._scale": np.ones(1, np.float32)}  # no b.weight: not a quantizer
    assert set(qat.float_state(state)) == {"a.weight", "b._fake_quant_input._scale"}


class _TwoConvs(nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2D(3, 8, 3, padding=1), nn.Conv2D(8, 4, 1)

    def forward(self, x):
        return self.conv2(nn.functional.relu(self.conv1(x)))


def _conv_input_scales(folder):
    """The input scale of each convolution of the quantized program ``folder/model.pdmodel``."""
    with Q._legacy_static():
        scope, exe = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
        with paddle.static.scope_guard(scope):
            program, _, _ = paddle.static.load_inference_model(os.path.join(folder, "model"), exe)
            ops = program.global_block().ops
            dequantized = {op.output("Y")[0]: op.input("Scale")[0] for op in ops
                           if op.type == "dequantize_linear"}
            return [float(np.array(scope.find_var(dequantized[op.input("Input")[0]])
                                   .get_tensor()).reshape(-1)[0])
                    for op in ops if op.type in Q.CONV_OPS]


def test_lite_int8_of_the_checkpoint_keeps_the_trained_scales(run, tmp_path, capsys):
    """``mobileseg lite --precision int8`` of the checkpoint quantizes each convolution's input
    with the scale training learned, as ``mobileseg quant`` does, and records it (with
    ``qat_scales="calibrated"`` the program's scales are none of the trained ones)."""
    from helpers.lite import require_lite_runtime
    from mobileseg_paddle.deploy.lite.convert import convert

    lite = require_lite_runtime()
    config, _, save_dir, _ = run
    weights = str(save_dir / f"iter_{ITERS}" / "model.pdparams")
    log = []
    manifest = convert(config, weights, str(tmp_path / "lite"), [1, 3, SIZE, SIZE], "arm",
                       runtime=lite, log=log.append, precision="int8", num_calib=8)
    assert manifest["precision"] == {"arm": "int8"}
    assert manifest["calibration"]["activations"] == "trained (avg where training learned none)"
    assert any("weights of quantization-aware training" in m and "as trained" in m for m in log)
    found = re.findall(r"input scales of (\d+) of (\d+) convolutions", capsys.readouterr().out)
    assert len(found) == 1 and found[0][0] == found[0][1] and int(found[0][0]) > 40
    # the program given to opt (kept beside the .nb) holds the trained scales
    trained = np.array(list(qat.input_scales(paddle.load(weights, return_numpy=True)).values()))
    program = _conv_input_scales(str(tmp_path / "lite"))
    assert len(program) == int(found[0][0])
    assert all(np.isclose(trained, s, rtol=1e-6, atol=0).any() for s in program)


def test_trained_input_scales_replace_the_calibrated_ones(tmp_path):
    """The program's input scale of each convolution is the one of the checkpoint's quantizer
    for the convolution with that weight; without them, the calibrated one (larger here)."""
    from mobileseg_paddle.deploy.export import save_paddle_programs

    paddle.seed(3)
    net = _TwoConvs()
    net.eval()
    save_paddle_programs(net, str(tmp_path / "fp32"), [1, 3, 16, 16], "legacy")
    qnet = _TwoConvs()
    qat.quantization_aware(qnet)
    qnet.set_state_dict(net.state_dict())
    state = {k: v.numpy() for k, v in qnet.state_dict().items()}
    state["conv1._fake_quant_input._scale"] = np.array([0.75], np.float32)
    state["conv2._fake_quant_input._scale"] = np.array([0.125], np.float32)
    batches = [np.random.default_rng(i).uniform(-4, 4, (1, 3, 16, 16)).astype("float32")
               for i in range(4)]

    def conv_input_scales(input_scales):
        out = str(tmp_path / ("trained" if input_scales else "calibrated"))
        Q.quantize_program(str(tmp_path / "fp32"), out, batches, input_scales=input_scales)
        return _conv_input_scales(out)

    assert conv_input_scales(qat.input_scales(state)) == [0.75, 0.125]
    calibrated = conv_input_scales(None)
    assert calibrated[0] > 3.5 and calibrated[1] > 0.125  # abs-max of the batches, averaged


@pytest.mark.parametrize("bad", [[0.0], [float("nan")], [-1.0], [1.0, 2.0]])
def test_a_trained_scale_that_is_no_scale_is_one_error(bad):
    state = {"a.weight": np.ones((2, 3, 1, 1), np.float32),
             "a._fake_quant_input._scale": np.array(bad, np.float32)}
    with pytest.raises(UserError, match=r"^a\._fake_quant_input\._scale: expected one positive "
                                        r"finite scale, got \["):
        qat.input_scales(state)
    state["a._fake_quant_input._scale"] = np.array([0.5], np.float32)
    assert list(qat.input_scales(state).values()) == [0.5]
