"""INT8 post-training quantization (``mobileseg quant``) end to end on a tiny model: calibration
images from the config's training set, the INT8 export (Paddle, on oneDNN and OpenVINO, and
ONNX) run by ``mobileseg infer``'s runners, agreement with the FP32 export on real images;
bfloat16 on oneDNN; the bad input of the issue, each one error line with nothing written.

The model: MobileSeg-MobileNetV2 x0.25 with random weights and BatchNorm statistics
(``randomize_``), so activations have real magnitudes; the images: the synthetic shapes dataset
(``helpers.train_helpers.make_data``), normalized like training."""

import os
import re

import numpy as np
import paddle
import pytest
import yaml

from helpers.numerics import max_rel_err, randomize_
from helpers.paddle_files import read_params
from helpers.train_helpers import config_dict, make_data, run_module, write_config
from mobileseg_paddle.builder import build_model
from mobileseg_paddle.config import load_config
from mobileseg_paddle.deploy import quant as Q
from mobileseg_paddle.deploy.deploy_yaml import DeployConfig
from mobileseg_paddle.deploy.export import export
from mobileseg_paddle.deploy.lite.program_compat import read_program
from mobileseg_paddle.deploy.runners import PredictorOptions, create_runner

SIZE = 96  # images of the tiny dataset
# measured on three random models of this kind, three algos, both formats: logit error
# 0.015-0.032 of the largest logit, label agreement 0.970-0.998 (a random network's logits are
# close; the trained membrane model agrees on 99.4-99.5%, see the README). OpenVINO's int8 run:
# 0.030-0.043, and 0.072-0.084 on the first image when that ran on the dynamic-size program
# (the runner now compiles an INT8 program for each size from its first run).
MIN_AGREEMENT = 0.95
MAX_LOGIT_ERR = 0.06


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """(config path, weights path, folder) of the tiny randomized model on 8 training images."""
    root = tmp_path_factory.mktemp("quant")
    data = make_data(root / "data", num_train=8, num_val=3, size=SIZE)
    config = write_config(root / "tiny.yml", config_dict(data))
    model, _ = build_model(config, drop_pretrained=True)
    randomize_(model, seed=11)
    weights = str(root / "model.pdparams")
    paddle.save(model.state_dict(), weights)
    return config, weights, root


@pytest.fixture(scope="module")
def exports(case):
    """FP32 and INT8 exports (logits) of the case, Paddle and ONNX."""
    config, weights, root = case
    out = {}
    for fmt in ("paddle", "onnx"):
        out[f"fp32_{fmt}"] = os.path.dirname(export(
            config, str(root / f"fp32_{fmt}"), model_path=weights, output_op="none", fmt=fmt,
            program="legacy", engine="onednn" if fmt == "paddle" else "auto"))
        # the Paddle export's engines timed at the images' size
        tune = dict(tune_shape=(SIZE, SIZE), tune_threads=1) if fmt == "paddle" else {}
        out[f"int8_{fmt}"] = os.path.dirname(Q.quantize(
            config, str(root / f"int8_{fmt}"), model_path=weights, num_calib=8, fmt=fmt,
            output_op="none", **tune))
    return out


def _val_images(config):
    cfg = load_config(config)
    from paddleseg.cvlibs import SegBuilder
    dataset = SegBuilder(cfg).val_dataset
    return [np.asarray(dataset[i]["img"], np.float32)[None] for i in range(len(dataset))]


def test_calibration_images_come_from_the_training_set_through_the_val_transforms(case):
    config, _, _ = case
    images = Q.calibration_images(load_config(config), 4)
    assert len(images) == 4
    for x in images:  # normalized like inference: (pixel / 255 - 0.5) / 0.5, full size
        assert x.shape == (1, 3, SIZE, SIZE) and x.dtype == np.float32
        assert -1.0 <= x.min() < -0.5 and 0.5 < x.max() <= 1.0
    # spread over the set, not the first four
    assert not np.array_equal(images[0], images[1])


@pytest.mark.parametrize("fmt, engine", [("paddle", "onednn"), ("paddle", "openvino"),
                                         ("onnx", "auto")])
def test_int8_export_agrees_with_fp32(case, exports, fmt, engine, tmp_path):
    config, _, _ = case
    int8 = DeployConfig(exports[f"int8_{fmt}"])
    assert int8.precision == "int8"
    calib = int8.info["precision"]["calibration"]
    assert calib["images"] == 8 and calib["source"] == "train_dataset"
    assert calib["transforms"] == "val_dataset" and calib["activations"] == Q.DEFAULT_ALGO
    assert DeployConfig(exports[f"fp32_{fmt}"]).precision == "fp32"
    opts = PredictorOptions(cpu_threads=1)
    fp32 = create_runner(DeployConfig(exports[f"fp32_{fmt}"]), "auto", opts)
    q = create_runner(int8, "auto", opts.replace(engine=engine,
                                                 openvino_cache_dir=str(tmp_path)))
    for x in _val_images(config):
        a, b = fp32(x), q(x)
        assert a.shape == b.shape == (1, 4, SIZE, SIZE)
        assert np.abs(a).mean() > 0.1  # real magnitudes, not a dead network
        assert not np.array_equal(a, b)  # it really ran in int8
        assert max_rel_err(b, a) < MAX_LOGIT_ERR
        if engine == "openvino":  # compiled for the size from the first run on
            assert q.current is q.fixed[x.shape] and q.dynamic is None  # never needed
        assert (a.argmax(1) == b.argmax(1)).mean() >= MIN_AGREEMENT


def test_int8_openvino_falls_back_to_the_dynamic_program(case, exports, tmp_path, capfd):
    """The INT8 runner makes no dynamic predictor unless a size cannot be compiled; then one
    note, and the dynamic program runs that size."""
    from mobileseg_paddle.deploy.runners import ModelFiles
    from mobileseg_paddle.deploy.runners import paddle_inference as P
    int8 = DeployConfig(exports["int8_paddle"])
    x = _val_images(case[0])[0]
    opts = PredictorOptions(cpu_threads=1, engine="openvino", openvino_cache_dir=str(tmp_path))
    q = create_runner(int8, "auto", opts)
    assert q.dynamic is None and q.opts.precision == "int8"
    files = ModelFiles.of(int8, "paddle", engine="openvino")
    open(P._openvino_dir(files, q.opts, x.shape), "w").close()  # the staging folder is taken
    out = q(x)
    assert out.shape == (1, 4, SIZE, SIZE) and np.abs(out).mean() > 0.1
    assert q.current is q.dynamic is not None and not q.fixed
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: --engine openvino: no program compiled")


def test_paddle_int8_program_has_int8_weights_in_the_linear_quant_form(exports):
    int8 = DeployConfig(exports["int8_paddle"])
    # no PIR program; OpenVINO's quantized on its own, with its own scales' names
    assert set(int8.files) == {"legacy", "params", "openvino", "openvino_params"}
    fp32_size = os.path.getsize(DeployConfig(exports["fp32_paddle"]).file("params"))
    for program, params in (("legacy", "params"), ("openvino", "openvino_params")):
        assert Q.program_is_quantized(int8.file(program))
        assert os.path.getsize(int8.file(params)) < 0.5 * fp32_size
    assert not Q.program_is_quantized(DeployConfig(exports["fp32_paddle"]).file("legacy"))
    # --engine auto timed the two int8 engines and recorded the faster
    engine = int8.info["engine"]
    ms = engine["measured"]["ms"]
    assert engine["chosen"] == "measured" and set(ms) == {"onednn", "openvino"}
    assert engine["measured"]["shape"] == [1, 3, SIZE, SIZE]
    assert int8.engine == min(ms, key=ms.get)


def test_openvino_int8_scales_are_vectors(exports):
    """OpenVINO's Paddle frontend refuses a 0-D scale; Paddle 3.3.1 saves the per-tensor
    scales 0-D, which the oneDNN program keeps and the OpenVINO program's are made [1]."""
    int8 = DeployConfig(exports["int8_paddle"])
    shapes = {program: {name: a.shape for name, a in read_params(
        read_program(int8.file(program)), int8.file(params)).items()}
        for program, params in (("legacy", "params"), ("openvino", "openvino_params"))}
    assert sum(len(s) == 0 for s in shapes["legacy"].values()) >= 20
    assert not [n for n, s in shapes["openvino"].items() if len(s) == 0]
    assert sum(s == (1,) for s in shapes["openvino"].values()) >= 20


def _producers(program):
    """{variable: the op writing it} of a legacy program's first block."""
    return {a: op for op in program.blocks[0].ops for o in op.outputs for a in o.arguments}


@pytest.mark.parametrize("program", ["legacy", "openvino"])
def test_int8_logits_stay_float(exports, program):
    """Between the classifier conv and the output (upsampling, here no argmax) no
    quantize/dequantize pair is left (``quant._float_tail``), while the convs' inputs keep
    theirs: no int8 kernel reads the logits, and rounding them to 8 bits tied classes."""
    int8 = DeployConfig(exports["int8_paddle"])
    prog = read_program(int8.file(program))
    made_by = _producers(prog)
    fetch = next(op for op in prog.blocks[0].ops if op.type == "fetch")
    tail, classifiers, stack, seen = set(), [], [fetch.inputs[0].arguments[0]], set()
    while stack:  # every op the output depends on, back to the convs
        var = stack.pop()
        if var in seen or var not in made_by:
            continue
        seen.add(var)
        op = made_by[var]
        if op.type in ("conv2d", "depthwise_conv2d"):
            classifiers.append(op)
            continue
        tail.add(op.type)
        stack.extend(a for i in op.inputs for a in i.arguments)
    assert not tail & set(Q.QUANT_OPS), tail
    # OpenVINO's program also has the phase form of the upsampling (layers.upsample_logits)
    assert {"bilinear_interp_v2", "pad3d", "where"} & tail == (
        {"bilinear_interp_v2"} if program == "legacy" else {"bilinear_interp_v2", "pad3d",
                                                             "where"})
    assert classifiers
    for classifier in classifiers:
        conv_input = next(a for i in classifier.inputs if i.parameter == "Input"
                          for a in i.arguments)
        assert made_by[conv_input].type == "dequantize_linear"
    # every quantize_linear left is read (through its dequantize) by a quantizable op or an
    # op on the way to one: none reads a variable only the output depends on
    readers = {}
    for op in prog.blocks[0].ops:
        for i in op.inputs:
            for a in i.arguments:
                readers.setdefault(a, []).append(op.type)
    assert sum(op.type == "quantize_linear" for op in prog.blocks[0].ops) >= 20
    assert all(readers.get(a) for op in prog.blocks[0].ops if op.type == "quantize_linear"
               for o in op.outputs for a in o.arguments)


def test_float_tail_keeps_pairs_that_reach_a_quantized_op():
    """``_float_tail`` on a hand-built program: conv -> QDQ -> pool -> QDQ -> conv -> QDQ ->
    interp -> fetch keeps the first two pairs (a conv reads them, through the pooling) and
    removes the last, renaming the fetched variable."""
    with Q._legacy_static():
        main = paddle.static.Program()
        with paddle.static.program_guard(main, paddle.static.Program()):
            x = paddle.static.data("x", [1, 4, 8, 8], "float32")
            block = main.global_block()

            def qdq(v):
                scale = block.create_var(name=v.name + "@scale", shape=[1], dtype="float32",
                                         persistable=True)
                zero = block.create_var(name=v.name + "@zero", shape=[1], dtype="float32",
                                        persistable=True)
                q = block.create_var(name=v.name + ".quantized", shape=v.shape, dtype=v.dtype)
                d = block.create_var(name=v.name + ".quantized.dequantized", shape=v.shape,
                                     dtype=v.dtype)
                for kind, src, dst in (("quantize_linear", v, q), ("dequantize_linear", q, d)):
                    block.append_op(type=kind, inputs={"X": src, "Scale": scale,
                                                       "ZeroPoint": zero},
                                    outputs={"Y": dst}, attrs={"quant_axis": -1, "bit_length": 8})
                return d

            w = paddle.static.create_parameter([4, 4, 1, 1], "float32")
            h = paddle.nn.functional.conv2d(qdq(x), w)
            h = paddle.nn.functional.max_pool2d(qdq(h), 2)
            h = paddle.nn.functional.conv2d(qdq(h), w)
            out = paddle.nn.functional.interpolate(qdq(h), scale_factor=2.0, mode="bilinear")
            fetch = [qdq(out)]
        names = [v.name for v in fetch]
        fetch = Q._float_tail(main, fetch)
        ops = [op.type for op in main.global_block().ops]
    assert ops.count("quantize_linear") == ops.count("dequantize_linear") == 3
    assert ops[-1] == "bilinear_interp_v2" and "dequantize_linear" not in ops[ops.index(
        "conv2d", ops.index("pool2d")):]
    assert names[0].endswith(".quantized.dequantized") and fetch[0].name == out.name


def _ops_and_params(folder):
    """The multiset of (op type, inputs, outputs) of a legacy program and its params bytes."""
    from paddle.base import core
    with open(os.path.join(folder, "model.pdmodel"), "rb") as f:
        desc = core.ProgramDesc(f.read())
    block = desc.block(0)  # borrowed from desc, which must outlive it
    ops = sorted((op.type(), *(tuple(op.input(k)) for k in sorted(op.input_names())),
                  *(tuple(op.output(k)) for k in sorted(op.output_names())))
                 for op in (block.op(i) for i in range(block.op_size())))
    with open(os.path.join(folder, "model.pdiparams"), "rb") as f:
        return ops, f.read()


def test_linear_time_graph_edits_write_the_same_program(exports, tmp_path, monkeypatch):
    """Paddle's own graph edits and ours (``_linear_time_graph_edits``) quantize a program
    into the same ops and weights, and Paddle's methods are back afterwards."""
    import contextlib

    from paddle.base.framework import IrGraph
    before = dict(IrGraph.__dict__)
    src = DeployConfig(exports["fp32_paddle"]).file("legacy")
    batches = [np.random.default_rng(k).normal(size=(1, 3, SIZE, SIZE)).astype(np.float32)
               for k in range(2)]
    Q.quantize_program(os.path.dirname(src), str(tmp_path / "ours"), batches)
    assert dict(IrGraph.__dict__) == before
    monkeypatch.setattr(Q, "_linear_time_graph_edits", contextlib.nullcontext)
    Q.quantize_program(os.path.dirname(src), str(tmp_path / "paddle"), batches)
    ours, paddles = _ops_and_params(tmp_path / "ours"), _ops_and_params(tmp_path / "paddle")
    assert sum(op[0] == "quantize_linear" for op in ours[0]) >= 20
    assert ours == paddles


def test_onnx_int8_export_is_qdq_with_int8_weights(exports):
    import onnx
    model = onnx.load(DeployConfig(exports["int8_onnx"]).file("onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8_weights = [i for i in model.graph.initializer
                    if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert len(int8_weights) >= 10


def test_infer_command_runs_the_int8_export(case, exports, tmp_path):
    config, _, root = case
    images = os.path.join(root, "data", "images")
    proc = run_module("infer", "--config", exports["int8_paddle"], "--image_path", images,
                      "--save_dir", tmp_path / "out", "--print_detail", "True")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"engine: {DeployConfig(exports['int8_paddle']).engine}" in proc.stdout
    assert len(os.listdir(tmp_path / "out" / "masks")) == len(os.listdir(images))


def test_bf16_on_onednn_agrees_with_fp32(case, exports):
    from paddle.base import core
    config, _, _ = case
    dep = DeployConfig(exports["fp32_paddle"])
    if not core.supports_bfloat16():
        with pytest.raises(Exception, match="bfloat16"):
            create_runner(dep, "paddle", PredictorOptions(precision="bf16"))(
                _val_images(config)[0])
        return
    fp32 = create_runner(dep, "paddle", PredictorOptions(cpu_threads=1))
    bf16 = create_runner(dep, "paddle", PredictorOptions(cpu_threads=1, precision="bf16"))
    for x in _val_images(config):
        a, b = fp32(x), bf16(x)
        assert not np.array_equal(a, b)
        assert max_rel_err(b, a) < 0.05  # bfloat16 keeps 8 bits of mantissa
        assert (a.argmax(1) == b.argmax(1)).mean() >= 0.98


def test_quant_eval_reports_miou_of_both(case, tmp_path):
    config, weights, root = case
    proc = run_module("quant", "--config", config, "--model_path", weights, "--save_dir",
                      tmp_path / "q", "--num_calib", "4", "--engine", "onednn", "--eval",
                      timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # quantized for oneDNN only: no OpenVINO program, and infer says how to get one
    dep = DeployConfig(tmp_path / "q")
    assert set(dep.files) == {"legacy", "params"} and dep.engine == "onednn"
    assert not (tmp_path / "q" / "model.openvino.pdmodel").exists()
    out = tmp_path / "out"
    error = _one_error(run_module("infer", "--config", tmp_path / "q", "--image_path",
                                  os.path.join(root, "data", "images"), "--save_dir", out,
                                  "--engine", "openvino"), "--engine openvino",
                       "quantize it again with --engine auto or openvino", prefix="infer")
    assert "model.openvino.pdmodel" in error and not out.exists()
    line = [s for s in proc.stdout.splitlines() if s.startswith("val_dataset (3 images)")]
    assert line, proc.stdout[-2000:]
    m = re.search(r"mIoU fp32 ([\d.]+), int8 ([\d.]+) .* agreement ([\d.]+)%", line[0])
    fp32, int8, agreement = map(float, m.groups())
    assert 0 <= fp32 <= 1 and abs(int8 - fp32) < 0.05 and agreement >= 100 * MIN_AGREEMENT


# --- bad input: one line, exit status 2, nothing written ------------------------------------------

def _one_error(proc, *fragments, prefix="quant"):
    errors = [s for s in proc.stderr.splitlines()
              if s.startswith(f"mobileseg {prefix}: error: ")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1, proc.stderr[-2000:]
    for f in fragments:
        assert f in errors[0], errors[0]
    return errors[0]


def test_too_few_calibration_images(case, tmp_path):
    config, weights, _ = case
    out = tmp_path / "q"
    _one_error(run_module("quant", "--config", config, "--model_path", weights, "--save_dir",
                          out, "--num_calib", "2"), "--num_calib 2", f"at least {Q.MIN_NUM_CALIB}")
    _one_error(run_module("quant", "--config", config, "--model_path", weights, "--save_dir",
                          out, "--num_calib", "20"), "--num_calib 20", "only 8 images")
    assert not out.exists()


def test_config_without_a_training_set(case, tmp_path):
    config, weights, _ = case
    with open(config) as f:
        dic = yaml.safe_load(f)
    dic.pop("train_dataset")
    bare = write_config(tmp_path / "no_train.yml", dic)
    out = tmp_path / "q"
    _one_error(run_module("quant", "--config", bare, "--model_path", weights, "--save_dir", out,
                          "--num_calib", "4"), "no_train.yml", "train_dataset")
    assert not out.exists()


def test_already_quantized_model(case, exports, tmp_path):
    config, _, _ = case
    out = tmp_path / "q"
    for given in (exports["int8_paddle"], os.path.join(exports["int8_paddle"], "model.pdiparams")):
        _one_error(run_module("quant", "--config", config, "--model_path", given, "--save_dir",
                              out, "--num_calib", "4"), "already quantized")
    assert not out.exists()
    with pytest.raises(Exception, match="already quantized"):
        Q.quantize_program(exports["int8_paddle"], str(tmp_path / "again"), [np.zeros(1)])


def test_onnx_has_no_mse_calibration(case, tmp_path):
    config, weights, _ = case
    _one_error(run_module("quant", "--config", config, "--model_path", weights, "--save_dir",
                          tmp_path / "q", "--format", "onnx", "--algo", "mse"), "--algo mse")
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("flags, fragment", [
    (["--engine", "plain"], "runs on int8 kernels"),
    (["--enable_mkldnn", "False"], "runs on int8 kernels"),
    (["--precision", "fp32"], "this is an INT8 export"),
    (["--precision", "bf16"], "this is an INT8 export"),
    (["--program", "pir"], "INT8 export is a legacy program"),
    (["--backend", "onnxruntime"], "onnxruntime needs an export made with --format onnx"),
])
def test_int8_export_given_to_a_backend_that_cannot_run_it(case, exports, tmp_path, flags,
                                                           fragment):
    _, _, root = case
    out = tmp_path / "out"
    proc = run_module("infer", "--config", exports["int8_paddle"], "--image_path",
                      os.path.join(root, "data", "images"), "--save_dir", out, *flags)
    errors = [s for s in proc.stderr.splitlines() if s.startswith("mobileseg infer: error: ")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert fragment in errors[0], errors[0]
    assert not out.exists()


def test_fp32_export_asked_for_int8_or_fp16_on_the_cpu(exports):
    dep = DeployConfig(exports["fp32_paddle"])
    with pytest.raises(Exception, match="mobileseg quant"):
        create_runner(dep, "paddle", PredictorOptions(precision="int8"))
    with pytest.raises(Exception, match="TensorRT"):
        create_runner(dep, "paddle", PredictorOptions(precision="fp16"))
    with pytest.raises(Exception, match="bf16 runs on oneDNN"):
        create_runner(DeployConfig(exports["fp32_onnx"]), "onnxruntime",
                      PredictorOptions(precision="bf16"))


def test_tensorrt_and_onednn_configuration_of_an_int8_export(exports, tmp_path):
    """TensorRT INT8 is not runnable on this CPU build (untested on a GPU): its configuration is
    checked on test_paddle_inference's recorder. An INT8 export brings its scales (no
    calibration mode); on the CPU it switches oneDNN's int8 passes on, or runs OpenVINO's
    program."""
    from helpers.recording import RecordingConfig
    from mobileseg_paddle.deploy.runners import paddle_inference as P

    int8 = DeployConfig(exports["int8_paddle"])
    shapes = tmp_path / "shape.pbtxt"
    shapes.write_text("")
    trt = P.make_config(int8, PredictorOptions(device="gpu", use_trt=True,
                                               shape_range_file=str(shapes),
                                               trt_calib_mode=True), RecordingConfig)
    (_, kwargs), = trt.called("enable_tensorrt_engine")
    import paddle.inference as pi
    assert kwargs["precision_mode"] == pi.PrecisionType.Int8 and not kwargs["use_calib_mode"]
    with pytest.raises(Exception, match="INT8 export"):
        P.make_config(int8, PredictorOptions(device="gpu", use_trt=True, precision="fp16",
                                             shape_range_file=str(shapes)), RecordingConfig)
    cpu = P.make_config(int8, PredictorOptions(engine="onednn"), RecordingConfig)
    assert cpu.called("enable_mkldnn")
    assert cpu.called("enable_mkldnn_int8") == [((set(P.ONEDNN_INT8_OPS),), {})]
    # OpenVINO: its own program and parameters, in its float32 mode (the program's
    # quantize/dequantize pairs make its convolutions int8)
    ov = P.make_config(int8, PredictorOptions(engine="openvino",
                                              openvino_cache_dir=str(tmp_path)), RecordingConfig)
    (args, _), = ov.called("enable_openvino_engine")
    assert args == (pi.PrecisionType.Float32,) and not ov.called("enable_mkldnn_int8")
    (staged, _), = ov.called("__init__")  # in OpenVINO's cache folder: the parameters linked,
    # the program a copy without the phase form of the upsampling (interpolated_tail)
    assert os.path.realpath(staged[1]) == os.path.realpath(int8.file("openvino_params"))
    with open(int8.file("openvino"), "rb") as f:
        program = f.read()
    with open(staged[0], "rb") as f:
        assert f.read() == P.interpolated_tail(program) != program
    fp32 = DeployConfig(exports["fp32_paddle"])
    bf16 = P.make_config(fp32, PredictorOptions(precision="bf16"), RecordingConfig)
    assert bf16.called("enable_mkldnn_bfloat16") and not bf16.called("enable_mkldnn_int8")
    assert bf16.called("set_bfloat16_op") == [((set(P.BF16_OPS),), {})]
