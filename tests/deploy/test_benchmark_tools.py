"""The benchmarks: benchmarks/inference_stages.py cuts both exports at the low-resolution
logits (the cut graphs must compute exactly that tensor, or the stage timings compare different
work) and groups kernels alike for both runtimes; ``mobileseg bench``'s statistics, table and
plot; the modules the onnxruntime workers import load no paddle; the fused inverted-residual
kernels of benchmarks/fused_inverted_residual.py compute what the dygraph stem and units compute."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from helpers import ROOT
from helpers.numerics import max_rel_err
from mobileseg_paddle import resources
from mobileseg_paddle.deploy import benchmark as B
from mobileseg_paddle.deploy.deploy_yaml import DeployConfig
from mobileseg_paddle.deploy.export import export
from mobileseg_paddle.deploy.runners import PredictorOptions, create_runner

CONFIG = os.path.join(ROOT, "configs", "mobileseg",
                      "mobileseg_mobilenetv2_cityscapes_1024x512_80k.yml")


def _benchmark_module(name):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stages_module():
    return _benchmark_module("inference_stages")


def test_cut_exports_output_the_low_resolution_logits(tmp_path):
    stages = _stages_module()
    model, _, _ = B.build_pair(CONFIG, seed=3)
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 256)).astype(np.float32)
    with paddle.no_grad():
        feats = model.backbone(paddle.to_tensor(x))
        decoded = model.ppseg_head([feats[i] for i in model.backbone_indices])
        expected = model.seg_heads[0](decoded[0]).numpy()
    assert expected.shape == (1, 19, 16, 32) and np.abs(expected).mean() > 0.05

    paddle_dir = os.path.dirname(export(CONFIG, str(tmp_path / "paddle"), model=model,
                                        input_shape=[-1, 3, -1, -1], fmt="paddle",
                                        program="legacy", engine="onednn"))
    onnx_dir = os.path.dirname(export(CONFIG, str(tmp_path / "onnx"), model=model,
                                      input_shape=list(x.shape), fmt="onnx"))
    cut_paddle = stages.cut_paddle(paddle_dir, str(tmp_path / "paddle_lowres"))
    cut_onnx = stages.cut_onnx(onnx_dir, str(tmp_path / "onnx_lowres"))

    opts = PredictorOptions(cpu_threads=1)
    got_paddle = create_runner(DeployConfig(cut_paddle), "paddle", opts)(x)
    got_onnx = create_runner(DeployConfig(cut_onnx), "onnxruntime", opts)(x)
    assert got_paddle.shape == got_onnx.shape == expected.shape
    assert max_rel_err(got_paddle, expected) < 1e-4
    assert max_rel_err(got_onnx, expected) < 1e-4
    # the served exports themselves are untouched
    served = create_runner(DeployConfig(paddle_dir), "paddle", opts)(x)
    assert served.shape == (1, 128, 256) and served.dtype == np.int32


def _onednn_exec(kind, desc, ms):
    return (f"onednn_verbose,v1,primitive,exec,cpu,{kind},brgconv:avx512_core,forward_inference,"
            "src:f32:a:blocked:acdb::f0 wei:f32:a:blocked:Acdb32a::f0,"
            f"attr-post-ops:eltwise_clip:0:6,alg:convolution_direct,{desc},{ms}")


def _ort_node(op, x_shape, w_shape):
    return {"cat": "Node", "name": "Conv_1_kernel_time", "dur": 1000,
            "args": {"op_name": op, "input_type_shape": [{"float": x_shape}, {"float": w_shape}]}}


def test_kernel_groups_match_between_onednn_log_and_onnxruntime_profile():
    """The per-kernel comparison puts a convolution in the same group whichever runtime ran it
    (lines and events in the formats oneDNN 3.6 and onnxruntime 1.32 write)."""
    stages = _stages_module()
    cases = [  # (oneDNN descriptor, onnxruntime input and weight shapes, group)
        ("mb1_ic3oc32_ih512oh256kh3sh2dh0ph1_iw1024ow512kw3sw2dw0pw1",
         [1, 3, 512, 1024], [32, 3, 3, 3], "conv: first (3 input channels)"),
        ("g32mb1_ic32oc32_ih256oh256kh3sh1dh0ph1_iw512ow512kw3sw1dw0pw1",
         [1, 32, 256, 512], [32, 1, 3, 3], "conv: depthwise"),
        ("mb1_ic32oc16_ih256oh256kh1sh1dh0ph0_iw512ow512kw1sw1dw0pw0",
         [1, 32, 256, 512], [16, 32, 1, 1], "conv: other"),
        ("g2mb1_ic64oc64_ih32oh32kh3sh1dh0ph1_iw64ow64kw3sw1dw0pw1",  # grouped, not depthwise
         [1, 64, 32, 64], [64, 32, 3, 3], "conv: other"),
    ]
    for desc, x_shape, w_shape, group in cases:
        assert stages.onednn_group(_onednn_exec("convolution", desc, "1.2").split(",")) == group
        assert stages.onnxruntime_group(_ort_node("Conv", x_shape, w_shape)) == group
    reorder = ("onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,"
               "src:f32::blocked:acdb::f0 dst:f32::blocked:abcd::f0,,,1x320x16x32,0.0778809")
    assert stages.onednn_group(reorder.split(",")) == "reorder"
    assert stages.onnxruntime_group(_ort_node("Resize", [1, 19, 64, 128], [4])) == "Resize"


def test_deploy_modules_import_without_paddle():
    """The onnxruntime runner and the benchmark workers import these modules: they must not
    load paddle (or paddleseg, which loads it) at import time, or every onnxruntime measurement
    runs beside Paddle's OpenMP and oneDNN libraries (running one: tests/deploy/runners)."""
    modules = ["mobileseg_paddle.deploy.infer", "mobileseg_paddle.deploy.benchmark",
               "mobileseg_paddle.deploy.runners", "mobileseg_paddle.deploy.runners.onnxruntime",
               "mobileseg_paddle.deploy.deploy_yaml", "mobileseg_paddle.palette",
               "mobileseg_paddle.errors"]
    code = (f"import sys, {', '.join(modules)}; "
            "print(sorted(m for m in ('paddle', 'paddleseg') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=resources.child_env(),
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
    # the paddle side is where paddle is loaded (and is, so the check above can fail)
    code = ("import sys, mobileseg_paddle.deploy.runners.paddle_inference; "
            "print('paddle' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], env=resources.child_env(),
                          capture_output=True, text=True, check=True).stdout.strip() == "True"


# ----------------------------------------------------------------------------------------------
# Benchmark report (its timing runs are not tests; the statistics and the outputs are)


def test_benchmark_statistics_table_and_plot(tmp_path):
    stats = B.summarize([0.010, 0.012, 0.011, 0.050])
    assert stats["runs"] == 4 and stats["median_ms"] == pytest.approx(11.5)
    assert stats["fps"] == pytest.approx(1000 / 11.5) and stats["min_ms"] == pytest.approx(10)
    rows = []
    for backend, ms in (("paddle", 80.0), ("onnxruntime", 100.0), ("official", 400.0)):
        rows.append(dict(model="mobilenetv2", backbone="MobileNetV2_x1_0", backend=backend,
                         threads=2, status="ok", **B.summarize([ms / 1000] * 3)))
    rows.append(dict(model="ghostnet", backbone="GhostNet_x1_0", backend="paddle", threads=2,
                     status="failed", error="boom"))
    machine = dict(cpu="test CPU", isa=["avx2"], usable_cpus=2, memory_gb=8,
                   load_average=[0.1, 0, 0], load_average_end=[0.2, 0, 0],
                   versions={"paddlepaddle": "x"})
    protocol = dict(preset="phone", note="n", input_shape=[1, 3, 256, 256], warmup=1,
                    repeats=3, turns=1)
    table = B.format_table(rows, machine, protocol).splitlines()
    head = next(line for line in table if line.startswith("| Model"))
    assert "published Snapdragon 855 FPS" in head
    mv2 = next(line for line in table if line.startswith("| mobilenetv2"))
    assert "| 27.01 |" in mv2 and "12.50 (80.0" in mv2
    assert "| 5.00x |" in mv2 and "| 1.25x |" in mv2  # vs paddleseg's export, vs onnxruntime
    assert "failed: boom" in next(line for line in table if line.startswith("| ghostnet"))
    png = B.plot_fps(rows, str(tmp_path / "fps.png"), "test")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_speed_ratio_is_the_median_of_per_turn_ratios():
    slow = dict(median_ms=10.0, turn_medians_ms=[10.0, 30.0, 12.0])
    fast = dict(median_ms=10.0, turn_medians_ms=[5.0, 10.0, 12.0])
    # per turn 2.0, 3.0, 1.0 -> 2.0 (the overall medians alone would say 1.0)
    assert B.speed_ratio(slow, fast) == pytest.approx(2.0)
    assert B.speed_ratio(dict(median_ms=9.0), dict(median_ms=3.0)) == pytest.approx(3.0)


def test_floor_columns_and_protocol_of_an_overridden_shape():
    rows = [dict(model="mobilenetv2", backbone="MobileNetV2_x1_0", backend=b, threads=2,
                 status="ok", flops=6.7e9, sgemm_gflops=100.0, floor_ms=67.0, engine="onednn",
                 **B.summarize([ms / 1000] * 3))
            for b, ms in (("paddle", 80.4), ("onnxruntime", 100.0))]
    machine = dict(cpu="test CPU", isa=["avx2"], usable_cpus=2, memory_gb=8,
                   load_average=[0.1, 0, 0], versions={})
    args = B.build_parser().parse_args(["--preset", "phone", "--input_shape", "1", "3", "64",
                                        "128"])
    args.threads = 1
    note = B.protocol_note(args, B.PRESETS["phone"])
    assert "input 1x3x64x128" in note and "256x256" in note and "published" not in note
    protocol = dict(preset="phone", note=note, input_shape=[1, 3, 64, 128], warmup=1,
                    repeats=3, turns=1)
    table = B.format_table(rows, machine, protocol)
    head = next(line for line in table.splitlines() if line.startswith("| Model"))
    assert "published" not in head and "floor ms" in head  # no published figure at 64x128
    mv2 = next(line for line in table.splitlines() if line.startswith("| mobilenetv2"))
    assert "| 6.70 | 67.0 | 1.20x |" in mv2 and "| 1.24x |" in mv2
    assert "mobilenetv2 onednn" in table and "100-100 GFLOP/s" in table
    args = B.build_parser().parse_args(["--preset", "phone"])
    args.input_shape, args.threads = [1, 3, 256, 256], 1
    assert B.protocol_note(args, B.PRESETS["phone"]) == B.PRESETS["phone"]["note"]


def test_sgemm_runner_computes_the_matrix_product():
    run = B.sgemm_runner(64, 1)
    c = run(None)
    rng = np.random.default_rng(0)
    b = rng.standard_normal((64, 64)).astype(np.float32)
    a = rng.standard_normal((64, 64)).astype(np.float32)
    assert c.shape == (64, 64) and max_rel_err(c, a @ b) < 1e-5


def test_precision_columns_and_speed_ups():
    rows = [dict(model="mobilenetv2", backbone="MobileNetV2_x1_0", backend=b, threads=2,
                 status="ok", **B.summarize([ms / 1000] * 3))
            for b, ms in (("paddle", 80.0), ("paddle@int8", 40.0), ("paddle@bf16", 50.0),
                          ("onnxruntime", 100.0), ("onnxruntime@int8", 60.0))]
    machine = dict(cpu="test CPU", isa=["avx2"], usable_cpus=2, memory_gb=8,
                   load_average=[0.1, 0, 0], versions={})
    protocol = dict(preset="cpu", note="n", input_shape=[1, 3, 512, 1024], warmup=1, repeats=3,
                    turns=1)
    table = B.format_table(rows, machine, protocol).splitlines()
    head = [c.strip() for c in next(s for s in table if s.startswith("| Model")).split("|")]
    row = [c.strip() for c in next(s for s in table if s.startswith("| mobilenetv2")).split("|")]
    cell = dict(zip(head, row))
    assert cell["Paddle Inference (default engine) / onnxruntime speed"] == "1.25x"
    assert cell["Paddle Inference (default engine) INT8 / onnxruntime INT8 speed"] == "1.50x"
    assert cell["Paddle Inference (default engine) INT8 speed-up over FP32"] == "2.00x"
    assert cell["Paddle Inference (default engine) BF16 speed-up over FP32"] == "1.60x"
    assert cell["onnxruntime INT8 speed-up over FP32"] == "1.67x"
    assert cell["ours: Paddle Inference (default engine) INT8 FPS (ms)"].startswith("25.00 (40.0")


@pytest.mark.parametrize("flags, fragment", [
    (["--precisions", "int8"], "expected fp32 and any of"),
    (["--precisions", "fp32,int4"], "expected fp32 and any of"),
    (["--precisions", "fp32,bf16", "--backends", "onnxruntime"], "none of --backends"),
])
def test_bad_precisions(flags, fragment, capsys):
    assert B.main(["--models", "mobilenetv2", *flags]) == 2
    err = [s for s in capsys.readouterr().err.splitlines() if "error:" in s]
    assert len(err) == 1 and fragment in err[0], err


def test_result_files_checked_before_the_run(tmp_path, capsys):
    """The results are written after the whole run: a place that cannot hold them is one error
    before any timing, and the chart goes beside the JSON, not into the working directory."""
    blocker = tmp_path / "a_file"
    blocker.write_text("keep")
    for flags, fragment in [
            (["--save_json", str(blocker / "r.json")], "cannot create its folder"),
            (["--save_json", str(tmp_path / "r.json"), "--save_table", str(tmp_path)],
             "is a folder; expected a file name")]:
        assert B.main(["--models", "mobilenetv2", "--floor", "off", *flags]) == 2
        err = [s for s in capsys.readouterr().err.splitlines() if "error:" in s]
        assert len(err) == 1 and fragment in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    assert blocker.read_text() == "keep"
    args = B.build_parser().parse_args(["--save_json", str(tmp_path / "out" / "r.json")])
    B._check_outputs(args)
    assert args.save_png == str(tmp_path / "out" / "bench_fps.png")
    assert (tmp_path / "out").is_dir()


def test_bench_times_int8_and_bf16_beside_fp32(tmp_path):
    """The whole ``--precisions`` path at a small size: every variant runs, in the same turns."""
    out = tmp_path / "bench.json"
    code = B.main(["--preset", "phone", "--models", "mobilenetv2", "--input_shape", "1", "3",
                   "64", "64", "--backends", "paddle_onednn,paddle_openvino,onnxruntime",
                   "--precisions",
                   "fp32,int8,bf16", "--turns", "2", "--runs_per_turn", "1", "--warmup", "1",
                   "--floor", "off", "--work_dir", str(tmp_path / "work"), "--save_json",
                   str(out), "--save_png", ""])
    assert code == 0
    import json
    rows = {r["backend"]: r for r in json.load(open(out))["results"]}
    want = {"paddle_onednn", "paddle_onednn@int8", "paddle_openvino", "paddle_openvino@int8",
            "onnxruntime", "onnxruntime@int8"}
    assert want <= set(rows)
    for key in want:
        assert rows[key]["status"] == "ok", rows[key]
        assert len(rows[key]["turn_medians_ms"]) == 2
    assert rows["paddle_onednn@int8"]["precision"] == "int8"
    assert rows["paddle_openvino@int8"]["precision"] == "int8"
    assert "paddle_openvino@bf16" not in rows  # bf16 is oneDNN's
    # without the default configuration (paddle) timed, no export measures its engines
    from mobileseg_paddle.deploy.deploy_yaml import DeployConfig
    for name in ("paddle", "paddle_int8"):
        dep = DeployConfig(str(tmp_path / "work" / "mobilenetv2" / name))
        assert dep.info["engine"]["chosen"] == "--engine" and "openvino" in dep.files
    from paddle.base import core
    bf16 = rows["paddle_onednn@bf16"]
    assert bf16["status"] == ("ok" if core.supports_bfloat16() else "failed"), bf16


@pytest.mark.skipif("avx512f" not in B.cpu_flags(), reason="the fused kernel is AVX-512 code")
def test_fused_kernels_match_the_dygraph_stem_and_units(tmp_path):
    """MobileNetV2's stem and 17 units (random weights and BN statistics) through the C kernels,
    at a size whose rows end in every remainder the kernel's loops have (80, 40, 20, 10, 5
    columns) and an odd width after the last stride: what dygraph computes."""
    fir = _benchmark_module("fused_inverted_residual")
    kernel = fir.compile_kernel(str(tmp_path))
    backbone = B.build_pair(CONFIG, 3)[0].backbone
    units = [u for stage in backbone.stages for u in stage.units]
    assert len(units) == 17 and sum(u.shortcut for u in units) == 10
    image = np.random.default_rng(0).standard_normal([1, 3, 64, 160]).astype("float32")
    with paddle.no_grad():
        x = backbone.conv1(paddle.to_tensor(image)).numpy()
        reference = fir.Units(units)(paddle.to_tensor(x)).numpy()
    stem = fir.FusedStem(kernel, backbone.conv1, image.shape)(image)
    assert stem.shape == x.shape == (1, 32, 32, 80) and max_rel_err(stem, x) <= 1e-4
    chain = fir.FusedChain(kernel, units, x.shape[1:])
    times = [[] for _ in units]
    out = chain(x, times)
    assert out.shape == reference.shape == (1, 320, 2, 5)
    assert max_rel_err(out, reference) <= 1e-4
    assert np.abs(reference).max() > 1  # real magnitudes, not a vanishing signal
    assert all(len(t) == 1 and t[0] > 0 for t in times)
    # the FMA-peak loop counts what its threads did (24 chains each): the script's FLOPs
    assert kernel.fma_loop(24 * 12 * 100) == 24 * 12 * 100  # divides among 1-4, 6, 12 threads
    with pytest.raises(fir.UserError, match=r"16->96->24 channels at 32x31, stride 2"):
        fir.FusedChain(kernel, units, (32, 32, 31))
