"""The Paddle Inference runner: exports (and the bare files of paddleseg's export form) give
the dygraph model's outputs (relative error <= 1e-4) on each CPU engine (oneDNN, OpenVINO, the
plain kernels), legacy and PIR programs; the oneDNN interpolation marking; the GPU/TensorRT
configuration as far as a CPU build of Paddle allows (see test_tensorrt_*). The engine choice
itself: tests/deploy/runners/test_engines.py.

Weights and BatchNorm statistics are random (``helpers.numerics.randomize_``); the exports come
from tests/deploy/test_export.py's ``exports()``."""

import os

import numpy as np
import paddle
import paddle.inference as pi
import pytest
from paddle.base import core
from test_export import MODELS, exports

from helpers.numerics import max_rel_err
from helpers.recording import RecordingConfig
from mobileseg_paddle.deploy import runners as R
from mobileseg_paddle.deploy.deploy_yaml import DeployConfig
from mobileseg_paddle.deploy.runners import paddle_inference as P
from mobileseg_paddle.errors import UserError

TOL = 1e-4


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("engine", ["onednn", "openvino", "plain"])
def test_paddle_inference_matches_dygraph(name, engine, dygraph_case, tmp_path):
    """Each CPU engine, both sizes (one not a multiple of 32) in one predictor; on OpenVINO
    each size twice: the second run is on the program compiled for that size."""
    deploy = DeployConfig(exports()[name]["paddle"])
    opts = R.PredictorOptions(engine=engine, openvino_cache_dir=str(tmp_path))
    cases = dygraph_case(name)
    with R.create_runner(deploy, "paddle", opts) as runner:
        assert runner.backend == "paddle" and runner.opts.engine == engine
        for attempt in range(2 if engine == "openvino" else 1):
            for size, (x, ref) in cases.items():
                out = runner(x)
                assert out.shape == ref.shape
                err = max_rel_err(out, ref)
                assert err <= TOL, f"{name} {engine} {size} ({attempt}): relative error {err:.2e}"
        fixed = {x.shape for x, _ in cases.values()} if engine == "openvino" else set()
        assert set(runner.fixed) == fixed


def test_openvino_compiles_for_at_most_the_shapes_asked(dygraph_case, tmp_path):
    """A shape's own predictor from its second run on, with the input shape written into the
    staged program; the least recently used shape goes beyond ``openvino_fixed_shapes``, and
    no more than twice that many compilations; none with 0."""
    deploy = DeployConfig(exports()["mobilenetv2"]["paddle"])
    (a, ref_a), (b, ref_b) = dygraph_case("mobilenetv2").values()
    opts = R.PredictorOptions(engine="openvino", openvino_cache_dir=str(tmp_path),
                              openvino_fixed_shapes=1)
    with R.create_runner(deploy, "paddle", opts) as runner:
        for x, ref, fixed in ((a, ref_a, []), (a, ref_a, [a.shape]), (b, ref_b, [a.shape]),
                              (b, ref_b, [b.shape]), (a, ref_a, [b.shape])):
            assert max_rel_err(runner(x), ref) <= TOL
            assert list(runner.fixed) == fixed
        assert runner.current is runner.dynamic  # a dropped for b, both compilations spent
    staged = [d for d in os.listdir(tmp_path) if d.endswith("-" + "x".join(map(str, b.shape)))]
    assert len(staged) == 1
    desc = core.ProgramDesc(open(os.path.join(tmp_path, staged[0], "model.pdmodel"), "rb").read())
    assert desc.block(0).var(b"x").shape() == list(b.shape)
    with R.create_runner(deploy, "paddle", opts.replace(openvino_fixed_shapes=0)) as runner:
        for _ in range(3):
            runner(a)
        assert not runner.fixed


def test_openvino_runs_on_when_a_size_cannot_be_compiled(dygraph_case, tmp_path, capfd):
    """The folder a size's program is staged in is taken by a file: one note, and that size and
    every later one run on the dynamic program."""
    deploy = DeployConfig(exports()["mobilenetv2"]["paddle"])
    (a, ref_a), _ = dygraph_case("mobilenetv2").values()
    opts = R.PredictorOptions(engine="openvino", openvino_cache_dir=str(tmp_path))
    files = R.ModelFiles.of(deploy, "paddle", engine="openvino")
    open(P._openvino_dir(files, opts, a.shape), "w").close()
    with R.create_runner(deploy, "paddle", opts) as runner:
        for _ in range(3):
            assert max_rel_err(runner(a), ref_a) <= TOL
        assert not runner.fixed and runner.current is runner.dynamic
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "note: --engine openvino: no program compiled for input " + "x".join(map(str, a.shape)))


@pytest.mark.parametrize("name", MODELS)
def test_bf16_on_onednn_stays_near_dygraph(name, dygraph_case, capfd):
    """``--precision bf16``: the ops of ``BF16_OPS`` in bfloat16 (Paddle's default set fails on
    Lite-HRNet-18), both sizes in one predictor. Refused where the CPU has no bfloat16; a note
    where oneDNN emulates it (AVX-512 without AVX512-BF16 or AMX)."""
    deploy = DeployConfig(exports()[name]["paddle"])
    opts = R.PredictorOptions(engine="onednn", precision="bf16")
    if not core.supports_bfloat16():
        with pytest.raises(UserError, match="bfloat16"):
            R.create_runner(deploy, "paddle", opts)
        return
    with R.create_runner(deploy, "paddle", opts) as runner:
        for size, (x, ref) in dygraph_case(name).items():
            out = runner(x)
            err = max_rel_err(out, ref)
            assert 1e-4 < err < 0.05, f"{name} bf16 {size}: relative error {err:.2e}"
            assert (out.argmax(1) == ref.argmax(1)).mean() > 0.97
    emulated = "note: --precision bf16: this CPU has no native bfloat16" in capfd.readouterr().err
    assert emulated == (not core.supports_bfloat16_fast_performance())


def test_pir_program_matches_dygraph(dygraph_case):
    """The PIR program (model.json): oneDNN on (run without the placement pass, see
    make_config) and off."""
    deploy = DeployConfig(exports()["mobilenetv2"]["paddle"])
    for onednn in (True, False):
        runner = R.create_runner(deploy, "paddle",
                                 R.PredictorOptions(program="pir", enable_mkldnn=onednn))
        for size, (x, ref) in dygraph_case("mobilenetv2").items():
            err = max_rel_err(runner(x), ref)
            assert err <= TOL, f"PIR oneDNN={onednn} {size}: relative error {err:.2e}"


def test_bare_program_files_run_as_the_export(dygraph_case, tmp_path):
    """Bare program + parameter files (paddleseg's export has no deploy.yaml): the program
    kind comes from the file name, and Paddle's own set-up (``paddle_defaults``) computes the
    same maths; ``feed``/``run``/``fetch`` is ``runner(x)`` in three steps."""
    folder = exports()["mobilenetv2"]["paddle"]
    params = os.path.join(folder, "model.pdiparams")
    legacy = R.ModelFiles.from_paddle(os.path.join(folder, "model.pdmodel"), params)
    pir = R.ModelFiles.from_paddle(os.path.join(folder, "model.json"), params)
    openvino = R.ModelFiles.from_paddle(os.path.join(folder, "model.openvino.pdmodel"), params)
    assert (legacy.program_kind, pir.program_kind) == ("legacy", "pir")
    x, ref = dygraph_case("mobilenetv2")[(128, 256)]
    for files, opts in ((legacy, R.PredictorOptions().paddle_defaults()),
                        (openvino, R.PredictorOptions(engine="openvino",
                                                    openvino_cache_dir=str(tmp_path))),
                        (legacy, R.PredictorOptions(enable_mkldnn=False).paddle_defaults()),
                        (pir, R.PredictorOptions(enable_mkldnn=False).paddle_defaults()),
                        (pir, R.PredictorOptions())):
        with R.create_runner(files, "auto", opts) as runner:
            assert runner.backend == "paddle"
            err = max_rel_err(runner(x), ref)
            err_at = f"{files.program} {runner.opts.engine}"
            assert err <= TOL, f"{err_at}: relative error {err:.2e}"
            runner.feed(x)
            runner.run()
            assert max_rel_err(runner.fetch(), ref) <= TOL
    with pytest.raises(UserError, match="program file not found: .*nothing.pdmodel"):
        R.ModelFiles.from_paddle(os.path.join(folder, "nothing.pdmodel"), params)


def test_options_refuse_unknown_values():
    for kwargs, flag in (({"device": "npu"}, "--device"), ({"program": "old"}, "--program"),
                         ({"precision": "fp64"}, "--precision"), ({"engine": "fast"}, "--engine")):
        with pytest.raises(UserError, match=flag):
            R.PredictorOptions(**kwargs).check()
    with pytest.raises(UserError, match="--use_trt needs --device gpu"):
        R.PredictorOptions(use_trt=True).check()
    with pytest.raises(UserError, match="--backend"):
        R.create_runner(DeployConfig(exports()["mobilenetv2"]["paddle"]), "tensorflow")
    assert [R.PredictorOptions(**kw).resolve().engine for kw in (
        {}, {"engine": "openvino"}, {"enable_mkldnn": False}, {"device": "gpu"},
        {"device": "gpu", "use_trt": True})] \
        == ["onednn", "openvino", "plain", "gpu", "tensorrt"] == list(R.ENGINES) \
        == list(P.ENGINES)


# ----------------------------------------------------------------------------------------------
# oneDNN interpolation


def test_onednn_marks_only_exact_interpolations():
    with open(os.path.join(exports()["litehrnet18"]["paddle"], "model.pdmodel"), "rb") as f:
        marked = P.mark_onednn_interpolations(f.read())

    desc = core.ProgramDesc(marked)  # keep it referenced: blocks and ops point into it
    block = desc.block(0)
    ops = [block.op(i) for i in range(block.op_size())]
    interp = [op for op in ops if op.type().endswith("_interp_v2")]
    on = [op for op in interp if op.has_attr("use_mkldnn") and op.attr("use_mkldnn")]
    assert on and all(op.type() == "bilinear_interp_v2" and not op.attr("align_corners")
                      for op in on)
    # Lite-HRNet's head upsamples with align_corners=True, which oneDNN computes differently,
    # so it stays on Paddle's kernel. Its nearest upsamplings are gathers in a dynamic-size
    # program (layers.resize_nearest): no nearest interpolation is left to mark.
    assert any(op.attr("align_corners") for op in interp if op not in on)
    assert not any(op.type() == "nearest_interp_v2" for op in interp)
    assert any(op.type() == "gather" for op in ops)


# ----------------------------------------------------------------------------------------------
# GPU and TensorRT: a CPU build of Paddle refuses enable_tensorrt_engine ("To use
# Paddle-TensorRT, please compile with TENSORRT first"), so the configuration is checked on a
# recorder standing in for paddle.inference.Config; the shape-range collection that TensorRT
# dynamic shapes are built from runs for real on the CPU (tests/deploy/test_infer.py).


def _trt_config(deploy, **kw):
    opts = R.PredictorOptions(device="gpu", use_trt=True, **kw)
    return P.make_config(deploy, opts, config_cls=RecordingConfig)


def test_tensorrt_configuration(tmp_path):
    deploy = DeployConfig(exports()["mobilenetv2"]["paddle"])
    shape_file = tmp_path / "shape.pbtxt"
    shape_file.write_text("")
    cache = tmp_path / "engines"
    cfg = _trt_config(deploy, precision="fp16", shape_range_file=str(shape_file),
                      trt_cache_dir=str(cache), trt_use_static=True, min_subgraph_size=5,
                      max_batch_size=2)
    assert cfg.called("__init__") == [((os.path.join(deploy.dir, "model.pdmodel"),
                                        os.path.join(deploy.dir, "model.pdiparams")), {})]
    assert cfg.called("enable_use_gpu") == [((512, 0), {})]
    assert cfg.called("set_optim_cache_dir") == [((str(cache),), {})] and cache.is_dir()
    assert cfg.called("enable_tensorrt_engine") == [((), dict(
        workspace_size=1 << 30, max_batch_size=2, min_subgraph_size=5,
        precision_mode=pi.PrecisionType.Half, use_static=True, use_calib_mode=False))]
    assert cfg.called("enable_tuned_tensorrt_dynamic_shape") == [((str(shape_file), True), {})]
    assert not cfg.called("enable_mkldnn") and not cfg.called("disable_gpu")

    int8 = _trt_config(deploy, precision="int8", trt_calib_mode=True,
                       shape_range_file=str(shape_file))
    (_, kwargs), = int8.called("enable_tensorrt_engine")
    assert kwargs["precision_mode"] == pi.PrecisionType.Int8 and kwargs["use_calib_mode"]
    fp32 = _trt_config(deploy, shape_range_file=str(shape_file))
    (_, kwargs), = fp32.called("enable_tensorrt_engine")
    assert kwargs["precision_mode"] == pi.PrecisionType.Float32

    # a dynamic-shape export needs the shape ranges; a fixed-shape one does not
    with pytest.raises(UserError, match="shape ranges"):
        _trt_config(deploy)
    deploy.input_shape, deploy.dynamic_hw = [1, 3, 128, 256], False
    assert not _trt_config(deploy).called("enable_tuned_tensorrt_dynamic_shape")
    with pytest.raises(UserError, match="not found"):
        _trt_config(deploy, shape_range_file=str(tmp_path / "missing.pbtxt"))


def test_cpu_configuration_and_collection_mode(tmp_path):
    """The CPU engines and the shape-range collection mode, on the same recorder."""
    deploy = DeployConfig(exports()["mobilenetv2"]["paddle"])
    onednn = P.make_config(deploy, R.PredictorOptions(cpu_threads=3), RecordingConfig)
    assert onednn.called("__init__") == [((), {})]  # the marked program goes in as a buffer
    assert onednn.called("set_cpu_math_library_num_threads") == [((3,), {})]
    assert onednn.called("enable_mkldnn") and onednn.called("enable_memory_optim")
    assert not onednn.called("collect_shape_range_info")
    shapes = str(tmp_path / "shapes.pbtxt")
    plain = P.make_config(deploy, R.PredictorOptions(
        enable_mkldnn=False, memory_optim=False, collect_shape_range_file=shapes),
        RecordingConfig)
    assert plain.called("disable_mkldnn") and not plain.called("enable_mkldnn")
    assert plain.called("collect_shape_range_info") == [((shapes,), {})]
    assert not plain.called("enable_memory_optim")
    pir = P.make_config(deploy, R.PredictorOptions(program="pir"), RecordingConfig)
    assert pir.called("delete_pass") == [(("onednn_placement_pass",), {})]
    assert not pir.called("enable_memory_optim")
    pir = P.make_config(deploy, R.PredictorOptions(program="pir").paddle_defaults(),
                        RecordingConfig)
    assert not pir.called("delete_pass")


@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="checks the CPU build's refusal")
def test_gpu_and_tensorrt_refused_on_a_cpu_build():
    with pytest.raises(UserError, match="CPU build"):
        R.check_device(R.PredictorOptions(device="gpu"))
    deploy = DeployConfig(exports()["mobilenetv2"]["paddle"])
    with pytest.raises(UserError, match="paddlepaddle-gpu"):
        R.create_runner(deploy, "paddle", R.PredictorOptions(device="gpu", use_trt=True))


class _Logits(paddle.nn.Layer):
    """(N, 3, H, W) -> its logits at 1/8 (a pooling and a 1x1 conv) upsampled to (H, W): by
    ``layers.upsample_logits`` (OpenVINO's form) or ``resize_to`` (the reference)."""

    def __init__(self, phases, runtime_logit_size=False):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 19, 1)
        self.phases = phases
        self.runtime_logit_size = runtime_logit_size

    def forward(self, x):
        from mobileseg_paddle.models.layers import resize_to, upsample_logits
        logits = self.conv(paddle.nn.functional.avg_pool2d(x, 8, 8, ceil_mode=True))
        if self.runtime_logit_size:  # as Lite-HRNet's shuffles: no static H, W left
            size = paddle.shape(logits)
            logits = paddle.reshape(logits, [0, 0, size[2], size[3]])
        return (upsample_logits if self.phases else resize_to)(logits, x)


def test_openvino_upsamples_integer_factors_in_phases_and_others_by_interpolation(tmp_path):
    """``layers.upsample_logits`` in a dynamic-size program on OpenVINO: at each size (factors
    of 8 on both axes; 325/41 and 8) the program compiled for it picks its form and drops the
    other, the program run at any size has no phase form left (``interpolated_tail``), and
    all equal Paddle's interpolation; so does a fixed-size program (the phase form alone)."""
    from mobileseg_paddle.deploy.export import _save_legacy

    paddle.seed(0)
    net, ref_net = _Logits(True), _Logits(False)
    ref_net.set_state_dict(net.state_dict())
    net.eval()
    ref_net.eval()
    _save_legacy(net, str(tmp_path / "m"), [paddle.static.InputSpec([1, 3, -1, -1], "float32")])
    program = str(tmp_path / "m" / "model.pdmodel")
    with open(program, "rb") as f:
        original = f.read()
    def types(program_bytes):
        desc = core.ProgramDesc(program_bytes)  # keep it referenced: the block points into it
        block = desc.block(0)
        return [block.op(i).type() for i in range(block.op_size())]

    phase_ops = {"where", "pad3d", "flatten_contiguous_range", "elementwise_mul"}
    stripped = P.interpolated_tail(original)
    assert phase_ops <= set(types(original))
    assert not phase_ops & set(types(stripped))
    assert "bilinear_interp_v2" in types(stripped)
    assert P.interpolated_tail(stripped) is stripped  # nothing left to strip
    files = R.ModelFiles.from_paddle(program, str(tmp_path / "m" / "model.pdiparams"))
    opts = R.PredictorOptions(engine="openvino", openvino_cache_dir=str(tmp_path / "ov"))
    rng = np.random.RandomState(0)
    with R.create_runner(files, "paddle", opts) as runner:
        for hw in ((160, 320), (325, 456)):
            x = rng.uniform(-3, 3, (1, 3) + hw).astype("float32")
            ref = ref_net(paddle.to_tensor(x)).numpy()
            for attempt in range(2):  # the program of any size, then the size's own
                err = max_rel_err(runner(x), ref)
                assert err <= 1e-5, f"{hw} ({attempt}): relative error {err:.2e}"
            assert runner.current is runner.fixed[x.shape]
    _save_legacy(net, str(tmp_path / "f"), [paddle.static.InputSpec([1, 3, 48, 80], "float32")])
    program = str(tmp_path / "f" / "model.pdmodel")
    with open(program, "rb") as f:
        fixed = set(types(f.read()))
    assert {"pad3d", "flatten_contiguous_range"} <= fixed and not {"where", "bilinear_interp_v2"} & fixed
    files = R.ModelFiles.from_paddle(program, str(tmp_path / "f" / "model.pdiparams"))
    x = rng.uniform(-3, 3, (1, 3, 48, 80)).astype("float32")
    with R.create_runner(files, "paddle", opts) as runner:
        err = max_rel_err(runner(x), ref_net(paddle.to_tensor(x)).numpy())
        assert err <= 1e-5, f"fixed size: relative error {err:.2e}"
    # a fixed-size input whose logits' size is known only at run time
    mixed = _Logits(True, runtime_logit_size=True)
    mixed.set_state_dict(net.state_dict())
    mixed.eval()
    _save_legacy(mixed, str(tmp_path / "x"), [paddle.static.InputSpec([1, 3, 48, 80], "float32")])
    files = R.ModelFiles.from_paddle(str(tmp_path / "x" / "model.pdmodel"),
                                     str(tmp_path / "x" / "model.pdiparams"))
    with R.create_runner(files, "paddle", opts) as runner:
        err = max_rel_err(runner(x), ref_net(paddle.to_tensor(x)).numpy())
        assert err <= 1e-5, f"fixed input, logits of run-time size: relative error {err:.2e}"
