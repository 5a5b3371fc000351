"""Speed of the exported MobileSeg models, in the published protocol or on this CPU.

    mobileseg bench --preset cpu      # 1x3x512x1024, all cores, CPU
    mobileseg bench --preset phone    # 1x3x256x256, 1 thread (the phone setting)
    mobileseg bench --preset v100     # Paddle Inference + TensorRT FP32, 1x3x1024x2048

For each model of ``configs/mobileseg`` (random weights and BatchNorm statistics: speed does not
depend on their values) it exports our model (Paddle Inference and ONNX, ``--output_op
argmax``: the served form) and, with ``--backends ... official``, paddleseg 2.8.0's own
MobileSeg with the same weights exported as PaddleSeg's ``tools/export.py`` does. Each backend
runs in its own process; the backends of one model take turns (``--turns`` times
``--runs_per_turn`` timed runs each, after one untimed run), so a change of machine load hits
them alike. Reports the median and spread (p10-p90) of the timed runs and the machine (CPU,
ISA, load average at start and end), prints a markdown table shaped like the published one,
writes a JSON and a PNG of FPS per model. Speed ratios between two backends are the median of
their per-turn ratios. On the CPU presets it also measures this machine's float32
matrix-product rate (sgemm, same thread count, in turns like the backends) and prints each
model's floor: its FLOPs (2 x ``paddle.flops``' multiply-accumulates at the bench shape) over
that rate.

Backends:
  paddle           ours, Paddle Inference, our default configuration (the engine the export
                   measured fastest and recorded in deploy.yaml: ``--engine auto``)
  paddle_onednn    ours, Paddle Inference, CPU with oneDNN
  paddle_openvino  ours, Paddle Inference, CPU with its bundled OpenVINO engine
  paddle_nomkldnn  ours, Paddle Inference, CPU with Paddle's plain kernels (no oneDNN)
  onnxruntime      ours, ONNX export, onnxruntime CPU
  official         paddleseg's export, Paddle Inference CPU: with oneDNN if it runs (on Paddle
                   3.3.1 it fails, which is recorded) else without
  official_ort     paddleseg's model, ONNX (static shape), onnxruntime
  paddle_trt       ours, Paddle Inference + TensorRT on GPU (needs paddlepaddle-gpu)

Precisions (``--precisions fp32,int8,bf16``): each one besides fp32 adds, for the backends
that run it, a column ``<backend>@<precision>`` timed in the same turns as the others, and a
speed-up column (fp32 time / that precision's, median of the per-turn ratios). int8: an export
of ``mobileseg quant`` (Paddle: oneDNN's or OpenVINO's int8; onnxruntime: its QDQ model),
calibrated on inputs drawn like the timed one (speed does not depend on the values); bf16:
the FP32 export on oneDNN in bfloat16. ``PRECISION_BACKENDS`` says which backend runs which.
"""

import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from mobileseg_paddle import resources
from mobileseg_paddle.deploy.deploy_yaml import DeployConfig
from mobileseg_paddle.deploy.infer import collect_shape_ranges
from mobileseg_paddle.deploy.runners import (
    ModelFiles,
    PredictorOptions,
    check_device,
    cpu_count,
    create_runner,
)
from mobileseg_paddle.errors import UserError, one_line, run_main

CONFIG_GLOB = resources.path("configs", "mobileseg", "mobileseg_*_cityscapes_1024x512_80k.yml")

PRESETS = {
    "v100": dict(input_shape=[1, 3, 1024, 2048], threads=0, device="gpu",
                 backends=["paddle_trt"], note="published: V100, Paddle Inference + TensorRT "
                 "FP32, 1x3x1024x2048"),
    "phone": dict(input_shape=[1, 3, 256, 256], threads=1, device="cpu",
                  backends=["paddle", "onnxruntime", "official"],
                  note="published: Snapdragon 855, Paddle Lite, 1 thread, 1x3x256x256; "
                       "here the same input and thread count on this CPU"),
    "cpu": dict(input_shape=[1, 3, 512, 1024], threads=0, device="cpu",
                backends=["paddle", "onnxruntime", "official"],
                note="this CPU, 1x3x512x1024, all cores"),
}
BACKENDS = ("paddle", "paddle_onednn", "paddle_openvino", "paddle_nomkldnn", "onnxruntime",
            "official", "official_ort", "paddle_trt")
# ours on Paddle Inference with one engine fixed (``paddle`` takes the export's recorded one)
ENGINE_BACKENDS = {"paddle_onednn": "onednn", "paddle_openvino": "openvino",
                   "paddle_nomkldnn": "plain"}
LABELS = {
    "paddle": "ours: Paddle Inference (default engine)",
    "paddle_onednn": "ours: Paddle Inference (oneDNN)",
    "paddle_openvino": "ours: Paddle Inference (OpenVINO)",
    "paddle_nomkldnn": "ours: Paddle Inference (plain kernels)",
    "onnxruntime": "ours: onnxruntime",
    "official": "paddleseg export: Paddle Inference",
    "official_ort": "paddleseg export: onnxruntime",
    "paddle_trt": "ours: Paddle Inference + TensorRT",
}
PRECISIONS = ("fp32", "int8", "bf16")
PRECISION_BACKENDS = {"int8": ("paddle", "paddle_onednn", "paddle_openvino", "onnxruntime"),
                      "bf16": ("paddle", "paddle_onednn")}  # bf16: on oneDNN
NUM_BENCH_CALIB = 4  # calibration inputs of an int8 bench export


def variant(backend, precision):
    """The result key of ``backend`` at ``precision``: ``paddle``, ``paddle@int8`` ..."""
    return backend if precision == "fp32" else f"{backend}@{precision}"


def split_variant(key):
    backend, _, precision = key.partition("@")
    return backend, precision or "fp32"


def label(key):
    backend, precision = split_variant(key)
    return LABELS[backend] + ("" if precision == "fp32" else f" {precision.upper()}")


def ordered_keys(keys):
    """Result keys in table order: by backend, then by precision."""
    order = [variant(b, p) for b in BACKENDS for p in PRECISIONS]
    return sorted(set(keys), key=lambda k: order.index(k) if k in order else len(order))


# published FPS (PaddleSeg model zoo): (V100 TensorRT FP32 1x3x1024x2048, Snapdragon 855 1 thread
# 1x3x256x256), by our config name, in the published table's order
PUBLISHED_FPS = {
    "mobilenetv2": (67.57, 27.01), "mobilenetv3": (67.39, 32.90),
    "litehrnet18": (10.5, 13.05), "shufflenetv2": (37.09, 39.61), "ghostnet": (35.58, 38.74),
}
PUBLISHED_COLUMN = {"v100": (0, "published V100 TensorRT FPS"),
                    "phone": (1, "published Snapdragon 855 FPS")}




# ----------------------------------------------------------------------------------------------
# Machine and statistics


def _cpuinfo():
    """(the first CPU's model name or None, its flags) from /proc/cpuinfo (empty elsewhere)."""
    name, flags = None, []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name is None:
                    name = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    return name, flags


def cpu_flags():
    """The CPU's feature flags (``avx512f``, ...) as /proc/cpuinfo lists them."""
    return set(_cpuinfo()[1])


def machine_description():
    cpu, (name, flags) = platform.processor() or "unknown", _cpuinfo()
    if name and cpu in ("unknown", "", "x86_64"):
        cpu = name
    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            mem_gb = round(int(f.readline().split()[1]) / 2 ** 20, 1)
    except (OSError, ValueError, IndexError):
        pass
    import paddle
    versions = {"python": platform.python_version(), "paddlepaddle": paddle.__version__}
    for mod in ("onnxruntime", "paddle2onnx", "paddleseg", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            pass
    return {
        "cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": cpu_count(),
        "isa": [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")
                if f in flags],
        "memory_gb": mem_gb, "os": platform.platform(), "load_average": list(os.getloadavg()),
        "versions": versions,
    }


def summarize(times_s):
    """Median and spread of a list of run times (seconds) -> dict in ms."""
    t = np.asarray(times_s) * 1e3
    return {"runs": int(t.size), "median_ms": float(np.median(t)), "min_ms": float(t.min()),
            "p10_ms": float(np.percentile(t, 10)), "p90_ms": float(np.percentile(t, 90)),
            "mean_ms": float(t.mean()), "std_ms": float(t.std()),
            "fps": float(1e3 / np.median(t))}


class Worker:
    """One runner in its own process, timed on command.

    Each backend runs in a separate process so that the thread pools of two runtimes never
    compete: onnxruntime's workers spin after a run and Paddle's OpenMP threads wait actively,
    which, in one process, slows whichever runs next (onnxruntime's median doubled that way
    here). Only one worker runs at a time; the others wait on their input."""

    def __init__(self, spec, log_path):
        env = resources.child_env()
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mobileseg_paddle.deploy.benchmark", "--_worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
            cwd=resources.IMPORT_ROOT)

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.reply()

    def reply(self):
        """The worker's next tagged reply; RuntimeError for its error or its exit."""
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker exited ({self.proc.wait()}); see {self.log.name}")
            if line.startswith(_TAG):
                reply = json.loads(line[len(_TAG):])
                if "error" in reply:
                    raise RuntimeError(reply["error"])
                return reply

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.log.close()


_TAG = "@@bench "
SETTLE_S = 0.3  # idle time before each worker's turn


def make_runner(spec):
    """The runner a worker times (see ``bench_model`` for the specs)."""
    kind, threads = spec["kind"], spec["threads"]
    if kind == "deploy":
        opts = PredictorOptions(**dict(spec.get("options", {}), cpu_threads=threads))
        return create_runner(DeployConfig(spec["path"]), "auto", opts)
    if kind == "raw_paddle":
        # paddleseg's export as its users run it: Paddle Inference's own set-up
        opts = PredictorOptions(cpu_threads=threads, enable_mkldnn=spec["mkldnn"])
        return create_runner(ModelFiles.from_paddle(spec["model"], spec["params"]), "paddle",
                             opts.paddle_defaults())
    if kind == "raw_onnx":
        return create_runner(ModelFiles.from_onnx(spec["path"]), "onnxruntime",
                             PredictorOptions(cpu_threads=threads))
    if kind == "files":  # a program and its parameters, set up as ``options`` say
        files = ModelFiles.from_paddle(spec["program"], spec["params"],
                                       precision=spec.get("precision", "fp32"))
        return create_runner(files, "paddle", PredictorOptions(
            **dict(spec.get("options", {}), cpu_threads=threads)))
    if kind == "sgemm":
        return sgemm_runner(spec["n"], threads)
    raise ValueError(kind)


SGEMM_N = 2048  # square float32 matrix product timed for the floor: large enough for peak rate


def sgemm_runner(n, threads):
    """A callable that multiplies two n x n float32 matrices with onnxruntime's MatMul (its
    MLAS sgemm, at ``threads`` threads like the models), ignoring its argument."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    b = rng.standard_normal((n, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
        [onnx.numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    a = rng.standard_normal((n, n)).astype(np.float32)
    return lambda _x: sess.run(None, {"a": a})[0]


def worker_main(spec_json):
    """Serve ``run N`` (time N runs after one untimed run), ``save PATH`` (last output as
    .npy) and ``quit`` on stdin; replies are single JSON lines tagged with ``_TAG``."""
    spec = json.loads(spec_json)

    def reply(obj):
        sys.stdout.write(_TAG + json.dumps(obj) + "\n")
        sys.stdout.flush()

    try:
        run = make_runner(spec)
        x = _input(spec["shape"], spec["seed"])
        out = None
        for _ in range(max(spec["warmup"], 1)):
            out = run(x)
        reply({"ready": True})
    except Exception as e:
        reply({"error": one_line(e)})
        return 1
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        try:
            if cmd[0] == "run":
                out = run(x)  # untimed: the first run after a pause wakes the threads up
                times = []
                for _ in range(int(cmd[1])):
                    t0 = time.perf_counter()
                    out = run(x)
                    times.append(time.perf_counter() - t0)
                reply({"times": times})
            elif cmd[0] == "save":
                np.save(cmd[1], out)
                reply({"saved": cmd[1]})
        except Exception as e:
            reply({"error": one_line(e)})
    return 0


def time_in_turns(specs, blocks, per_block, work_dir, log=print):
    """Start a worker per spec, then ``blocks`` times let each worker time ``per_block`` runs
    in turn (so load changes hit all alike). Returns ({name: [[seconds of one turn], ...]},
    {name: output}, {name: error line})."""
    workers, errors, times, outs = {}, {}, {}, {}
    try:
        for name, spec in specs.items():
            w = Worker(spec, os.path.join(work_dir, f"worker-{name}.log"))
            try:
                w.reply()  # "ready", or the error that kept it from starting
                workers[name] = w
                times[name] = []
            except RuntimeError as e:
                errors[name] = one_line(e)
                w.close()
        for _ in range(blocks):
            for name, w in list(workers.items()):
                # the previous worker's OpenMP threads spin for about 0.1 s after its runs:
                # OpenMP's barriers suffer most from a core taken away (oneDNN, plain kernels)
                time.sleep(SETTLE_S)
                try:
                    times[name].append(w.ask(f"run {per_block}")["times"])
                except RuntimeError as e:
                    errors[name] = one_line(e)
                    workers.pop(name).close()
        for name, w in workers.items():
            if specs[name]["kind"] == "sgemm":
                continue
            path = os.path.join(work_dir, f"output-{name}.npy")
            w.ask(f"save {path}")
            outs[name] = np.load(path)
    finally:
        for w in workers.values():
            w.close()
    return times, outs, errors


# ----------------------------------------------------------------------------------------------
# Models and exports


def model_configs(names=None):
    paths = glob.glob(CONFIG_GLOB)
    found = {os.path.basename(p).split("_")[1]: p for p in paths}
    order = list(PUBLISHED_FPS)
    found = dict(sorted(found.items(), key=lambda kv: (
        order.index(kv[0]) if kv[0] in order else len(order), kv[0])))
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise UserError(f"--models: unknown {missing}; available: {sorted(found)}")
        return {n: found[n] for n in names}
    return found


def build_pair(config_path, seed=0, official=False):
    """(our model with random weights and BN statistics, paddleseg's model with the same
    state or None, paddleseg Config)."""
    import copy

    from paddleseg.cvlibs import Config, SegBuilder

    import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components)
    from mobileseg_paddle.builder import without_pretrained
    from mobileseg_paddle.models.weights import copy_state_, randomize_

    cfg = Config(config_path)
    cfg.dic["model"] = without_pretrained(cfg.dic["model"])
    ours = SegBuilder(cfg).model
    randomize_(ours, seed)
    ours.eval()
    theirs = None
    if official:
        off_cfg = copy.deepcopy(cfg)
        off_cfg.dic["model"] = _official_names(off_cfg.dic["model"])
        theirs = SegBuilder(off_cfg).model
        copy_state_(theirs, ours)
        theirs.eval()
    return ours, theirs, cfg


def _official_names(node):
    """Our ``MSP_`` component names -> paddleseg's own."""
    if isinstance(node, dict):
        out = {k: _official_names(v) for k, v in node.items()}
        if isinstance(out.get("type"), str) and out["type"].startswith("MSP_"):
            out["type"] = out["type"][len("MSP_"):]
        return out
    if isinstance(node, list):
        return [_official_names(v) for v in node]
    return node


def export_official(model, out_dir, shape, fmt="paddle"):
    """Export paddleseg's model as PaddleSeg 2.8's tools/export.py does on Paddle 3 (its
    WrappedModel with argmax, ``paddle.jit.to_static`` with default settings, ``jit.save``:
    a PIR program), or to ONNX through paddle2onnx."""
    import paddle
    from paddleseg.deploy.export import WrappedModel

    net = WrappedModel(model, "argmax")
    net.eval()
    spec = [paddle.static.InputSpec([None if v == -1 else v for v in shape], "float32", "x")]
    os.makedirs(out_dir, exist_ok=True)
    static = paddle.jit.to_static(net, input_spec=spec)
    paddle.jit.save(static, os.path.join(out_dir, "model"))
    if fmt == "onnx":
        import paddle2onnx
        paddle2onnx.export(os.path.join(out_dir, "model.json"),
                           os.path.join(out_dir, "model.pdiparams"),
                           os.path.join(out_dir, "model.onnx"), opset_version=13,
                           optimize_tool="None")
    return out_dir


# ----------------------------------------------------------------------------------------------
# One model


def bench_model(name, config_path, args, work_dir, log=print):
    """Export one model and time it on every requested backend; returns result rows."""
    from mobileseg_paddle.deploy.export import export

    shape = list(args.input_shape)
    paddle_shape = shape if args.shape_mode == "static" else [-1, 3, -1, -1]
    threads = args.threads or cpu_count()
    want = list(args.backends)
    t0 = time.time()
    ours, theirs, cfg = build_pair(config_path, args.seed,
                                   official=any(b.startswith("official") for b in want))
    backbone = cfg.dic["model"]["backbone"]["type"].replace("MSP_", "")
    mdir = os.path.join(work_dir, name)
    common = {"threads": threads, "shape": shape, "seed": args.seed, "warmup": args.warmup}
    specs, notes, engine_note = {}, {}, None
    if {"paddle", "paddle_trt", *ENGINE_BACKENDS} & set(want):
        # the default export, which measures its engines at the bench shape and threads when
        # the default configuration (paddle) is timed; the named engines need no measurement
        d = os.path.dirname(export(config_path, os.path.join(mdir, "paddle"),
                                   input_shape=paddle_shape, output_op="argmax", fmt="paddle",
                                   program="legacy", model=ours,
                                   engine="auto" if "paddle" in want else "onednn",
                                   tune_shape=shape[2:], tune_threads=threads))
        engine_note = DeployConfig(d).engine if "paddle" in want else None
        # OpenVINO compiles into the work folder, not the user's cache (exports here are temporary)
        cache = {"openvino_cache_dir": os.path.join(mdir, "openvino_cache")}
        if "paddle" in want:
            specs["paddle"] = dict(common, kind="deploy", path=d, options=cache)
        for b, engine in ENGINE_BACKENDS.items():
            if b in want:
                specs[b] = dict(common, kind="deploy", path=d, options=dict(cache, engine=engine))
        if "paddle_trt" in want:
            specs["paddle_trt"] = dict(common, kind="deploy", path=d, options=dict(
                device="gpu", use_trt=True, precision="fp32", max_batch_size=shape[0],
                trt_cache_dir=os.path.join(mdir, "trt_cache"),
                shape_range_file=_shape_ranges(DeployConfig(d), shape, mdir)))
    if "onnxruntime" in want:  # timed on a static-shape export, as published
        d = os.path.dirname(export(config_path, os.path.join(mdir, "onnx"), input_shape=shape,
                                   output_op="argmax", fmt="onnx", model=ours))
        specs["onnxruntime"] = dict(common, kind="deploy", path=d)
    specs.update(precision_specs(config_path, ours, args, want, specs, paddle_shape, mdir))
    if "official" in want:
        od = export_official(theirs, os.path.join(mdir, "official"), paddle_shape)
        specs["official"] = dict(common, kind="raw_paddle", model=os.path.join(od, "model.json"),
                                 params=os.path.join(od, "model.pdiparams"), mkldnn=True)
    if "official_ort" in want:
        od = export_official(theirs, os.path.join(mdir, "official_onnx"), shape, fmt="onnx")
        specs["official_ort"] = dict(common, kind="raw_onnx", path=os.path.join(od, "model.onnx"))
    flops = None
    if args.floor:
        import contextlib
        import io

        import paddle
        with contextlib.redirect_stdout(io.StringIO()):  # its per-layer-type notes
            flops = 2 * int(paddle.flops(ours, shape, print_detail=False))
        specs["sgemm"] = dict(common, kind="sgemm", n=SGEMM_N, shape=[1], warmup=2)
    log(f"  exported in {time.time() - t0:.0f} s" +
        (f" (default engine measured: {engine_note})" if engine_note else "") +
        f"; timing {list(specs)} ({args.warmup} warm-up runs, {args.blocks} turns of "
        f"{args.per_block} runs, {threads} threads)")

    if "official" in specs:
        # paddleseg's export as its users run it: with oneDNN if that works, else without
        probe, _, err = time_in_turns({"official": specs["official"]}, 0, 0, mdir)
        if "official" in err:
            notes["official"] = f"off (with oneDNN it fails: {err['official']})"
            log(f"  paddleseg export with oneDNN fails: {err['official']}")
            specs["official"] = dict(specs["official"], mkldnn=False)
        else:
            notes["official"] = "on"
    turns, outs, errors = time_in_turns(specs, args.blocks, args.per_block, mdir)
    floor = None
    if "sgemm" in turns and "sgemm" not in errors:
        rate = 2 * SGEMM_N ** 3 / np.median([t for turn in turns.pop("sgemm") for t in turn])
        floor = {"flops": flops, "sgemm_gflops": rate / 1e9, "floor_ms": flops / rate * 1e3}
    ref = outs.get("paddle")
    rows = []
    for b in specs:
        if b == "sgemm":
            continue
        row = {"model": name, "backbone": backbone, "backend": b, "label": label(b),
               "precision": split_variant(b)[1], "input_shape": shape, "threads": threads,
               "export_shape": shape if split_variant(b)[0] in ("onnxruntime", "official_ort")
               else paddle_shape}
        if b in notes:
            row["onednn"] = notes[b]
        if b == "paddle" and engine_note:
            row["engine"] = engine_note
        if floor:
            row.update(floor)
        if b in errors:
            row.update(status="failed", error=errors[b])
        else:
            row.update(status="ok", turn_medians_ms=[float(np.median(t)) * 1e3
                                                     for t in turns[b]],
                       **summarize([t for turn in turns[b] for t in turn]))
            if ref is not None and b != "paddle" and b in outs and outs[b].shape == ref.shape:
                row["label_agreement_with_paddle"] = float((outs[b] == ref).mean())
        rows.append(row)
    return rows


def precision_specs(config_path, model, args, want, specs, paddle_shape, mdir):
    """The worker specs of the precisions besides fp32 (``--precisions``), for the requested
    backends that run them; the int8 exports are made here."""
    from mobileseg_paddle.deploy.quant import quantize

    shape, out = list(args.input_shape), {}
    calib = [_input(shape, args.seed + 1 + k) for k in range(NUM_BENCH_CALIB)]
    # the INT8 export's engines are measured for the default configuration (paddle) only;
    # paddle_openvino needs OpenVINO's program (openvino writes both), paddle_onednn oneDNN's
    int8_engine = ("auto" if "paddle" in want else
                   "openvino" if "paddle_openvino" in want else "onednn")
    for precision in args.precisions:
        if precision == "fp32":
            continue
        backends = [b for b in PRECISION_BACKENDS[precision] if b in want]
        for b in backends:
            base = specs.get(b)
            if base is None:
                continue
            if precision == "bf16":
                out[variant(b, precision)] = dict(base, options=dict(
                    base.get("options", {}), engine="onednn", precision="bf16"))
                continue
            fmt = "onnx" if b == "onnxruntime" else "paddle"
            folder = os.path.join(mdir, f"{fmt}_int8")
            if not os.path.isfile(os.path.join(folder, "deploy.yaml")):
                quantize(config_path, folder, model=model, batches=calib, fmt=fmt,
                         input_shape=shape if fmt == "onnx" else paddle_shape,
                         output_op="argmax", **({} if fmt == "onnx" else dict(
                             engine=int8_engine, tune_shape=shape[2:],
                             tune_threads=args.threads or cpu_count())))
            # paddle: the engine the INT8 export recorded; paddle_<engine>: that engine
            out[variant(b, precision)] = dict(base, path=folder)
    return out


def speed_ratio(slow, fast):
    """Median over turns of ``slow``'s median time / ``fast``'s (rows of one model): how many
    times faster ``fast`` ran, from side-by-side turns."""
    a, b = slow.get("turn_medians_ms"), fast.get("turn_medians_ms")
    if a and b and len(a) == len(b):
        return float(np.median(np.asarray(a) / np.asarray(b)))
    return slow["median_ms"] / fast["median_ms"]


def _input(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(np.float32)


def _shape_ranges(dep, shape, mdir):
    """TensorRT shape ranges for a dynamic export, collected on the CPU at the bench shape."""
    if not dep.dynamic_hw:
        return None
    img = np.zeros((shape[2], shape[3], 3), np.uint8)
    return collect_shape_ranges(dep, [img], os.path.join(mdir, "shape_range.pbtxt"))


# ----------------------------------------------------------------------------------------------
# Reports


def format_table(rows, machine, protocol):
    """A markdown table shaped like the published one: one line per model, FPS (and ms) per
    backend, and the speed ratio of ours (Paddle Inference) to paddleseg's export."""
    backends = ordered_keys(r["backend"] for r in rows)
    lines = [f"Protocol: {protocol['note']}; input {'x'.join(map(str, protocol['input_shape']))}, "
             f"{rows[0]['threads'] if rows else '?'} threads, {protocol['warmup']} warm-up runs, "
             f"median of {protocol['repeats']} runs (p10-p90 in brackets), each backend in "
             f"its own process, backends taking {protocol['turns']} turns.",
             f"Machine: {machine['cpu']} ({', '.join(machine['isa'])}), "
             f"{machine['usable_cpus']} usable CPUs, {machine['memory_gb']} GB; load average "
             f"{machine['load_average'][0]:.2f} at start, "
             f"{machine.get('load_average_end', [float('nan')])[0]:.2f} at end; "
             + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()), ""]
    published = PUBLISHED_COLUMN.get(protocol.get("preset"))
    if published and list(protocol["input_shape"]) != PRESETS[protocol["preset"]]["input_shape"]:
        published = None  # the published figures are for the preset's shape only
    head = ["Model", "Backbone"] + ([published[1]] if published else []) + [
        f"{label(b)} FPS (ms)" for b in backends]
    if "paddle" in backends and "official" in backends:
        head.append("ours / paddleseg export speed")
    pairs = [(a, b) for a, b in (("paddle", "onnxruntime"), ("paddle@int8", "onnxruntime@int8"))
             if a in backends and b in backends]
    speedups = [(split_variant(k)[0], k) for k in backends
                if "@" in k and split_variant(k)[0] in backends]
    head += [f"{label(a).replace('ours: ', '')} / {label(b).replace('ours: ', '')} speed"
             for a, b in pairs]
    head += [f"{label(k).replace('ours: ', '')} speed-up over FP32" for _, k in speedups]
    has_floor = any(r.get("floor_ms") for r in rows)
    if has_floor:
        head += ["GFLOP", "floor ms (FLOPs / sgemm)", "Paddle Inference / floor"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    models = list(dict.fromkeys(r["model"] for r in rows))
    for m in models:
        by = {r["backend"]: r for r in rows if r["model"] == m}
        cells = [m, next(iter(by.values()))["backbone"]]
        if published:
            fps = PUBLISHED_FPS.get(m)
            cells.append(f"{fps[published[0]]:.2f}" if fps else "-")
        for b in backends:
            r = by.get(b)
            if r is None:
                cells.append("-")
            elif r["status"] != "ok":
                cells.append(f"failed: {r['error'][:60]}")
            else:
                cells.append(f"{r['fps']:.2f} ({r['median_ms']:.1f} [{r['p10_ms']:.1f}-"
                             f"{r['p90_ms']:.1f}])")
        ratio_pairs = [("paddle", "official")] if "official" in backends and "paddle" in \
            backends else []
        for a, b in ratio_pairs + pairs + [(k, base) for base, k in speedups]:
            ra, rb = by.get(a), by.get(b)
            ok = ra and rb and ra["status"] == "ok" and rb["status"] == "ok"
            cells.append(f"{speed_ratio(rb, ra):.2f}x" if ok else "-")
        if has_floor:
            any_row = next(iter(by.values()))
            pr = by.get("paddle")
            if any_row.get("floor_ms"):
                cells += [f"{any_row['flops'] / 1e9:.2f}", f"{any_row['floor_ms']:.1f}",
                          f"{pr['median_ms'] / any_row['floor_ms']:.2f}x"
                          if pr and pr["status"] == "ok" else "-"]
            else:
                cells += ["-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    engines = {r["model"]: r["engine"] for r in rows if r.get("engine")}
    if engines:
        lines.append("")
        lines.append("Default engine recorded by each export (measured at this shape and "
                     "thread count): " + ", ".join(f"{m} {e}" for m, e in engines.items()))
    floors = [r for r in rows if r.get("sgemm_gflops")]
    if floors:
        rates = [r["sgemm_gflops"] for r in floors]
        lines.append(f"float32 matrix product (onnxruntime MatMul {SGEMM_N}x{SGEMM_N}, "
                     f"{floors[0]['threads']} threads): {min(rates):.0f}-{max(rates):.0f} "
                     f"GFLOP/s over the run")
    notes = [r for r in rows if r.get("onednn")]
    if notes:
        lines.append("")
        lines.append(f"paddleseg export, Paddle Inference oneDNN: {notes[0]['onednn']}")
    return "\n".join(lines)


def plot_fps(rows, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    backends = ordered_keys(r["backend"] for r in rows if r["status"] == "ok")
    width = 0.8 / max(len(backends), 1)
    fig, ax = plt.subplots(figsize=(2 + 1.8 * len(models), 4.5))
    for i, b in enumerate(backends):
        fps = [next((r["fps"] for r in rows if r["model"] == m and r["backend"] == b
                     and r["status"] == "ok"), 0.0) for m in models]
        pos = [k + (i - (len(backends) - 1) / 2) * width for k in range(len(models))]
        bars = ax.bar(pos, fps, width, label=label(b))
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models)
    ax.set_ylabel("frames per second (median)")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.25)  # room for the legend above the bars
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# Command line


def build_parser():
    p = argparse.ArgumentParser(prog="mobileseg bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--models", default=None,
                   help="comma-separated config names (mobilenetv2,mobilenetv3,litehrnet18,"
                        "shufflenetv2,ghostnet); default all")
    p.add_argument("--backends", default=None, help=f"comma-separated, from {BACKENDS}")
    p.add_argument("--precisions", default="fp32",
                   help=f"comma-separated, from {PRECISIONS}: each besides fp32 timed in the same "
                        f"turns on the backends that run it")
    p.add_argument("--input_shape", nargs=4, type=int, default=None, metavar=("N", "C", "H", "W"))
    p.add_argument("--threads", type=int, default=None, help="0: all usable CPUs")
    p.add_argument("--shape_mode", default="dynamic", choices=("static", "dynamic"),
                   help="Paddle exports (ours and paddleseg's) with dynamic H/W (the default "
                        "export) or for the bench shape; onnxruntime always gets a "
                        "static-shape export, its fastest")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs after loading")
    p.add_argument("--turns", type=int, default=5,
                   help="backends take turns this many times...")
    p.add_argument("--runs_per_turn", type=int, default=4, help="...timing this many runs each")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work_dir", default=None, help="where exports go (default: a temp folder)")
    p.add_argument("--save_json", default="bench_results.json")
    p.add_argument("--save_png", default=None,
                   help="the FPS chart (default: bench_fps.png beside --save_json; '' for none)")
    p.add_argument("--save_table", default=None, help="also write the table (markdown)")
    p.add_argument("--floor", default=None, choices=("on", "off"),
                   help="measure the float32 matrix-product rate and print each model's floor "
                        "(default: on for CPU presets)")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--_worker"]:
        return worker_main(argv[1])
    args = build_parser().parse_args(argv)
    return run_main("bench", lambda: _run(args))


def protocol_note(args, preset):
    """The preset's description, or what was overridden: a custom shape or thread count is not
    the published protocol."""
    custom = []
    if list(args.input_shape) != preset["input_shape"]:
        custom.append(f"input {'x'.join(map(str, args.input_shape))}")
    if args.threads != preset["threads"]:
        custom.append(f"{args.threads or cpu_count()} threads")
    if not custom:
        return preset["note"]
    return (f"{args.preset} preset with {' and '.join(custom)} (not the preset's "
            f"{'x'.join(map(str, preset['input_shape']))}, "
            f"{preset['threads'] or 'all'} threads)")


def _check_outputs(args):
    """The result files are written after the whole run: a folder that cannot hold them is
    refused before it starts, not after twenty minutes of timing."""
    if args.save_png is None:
        args.save_png = os.path.join(os.path.dirname(args.save_json), "bench_fps.png")
    for flag in ("save_json", "save_png", "save_table"):
        path = getattr(args, flag)
        if not path:
            continue
        if os.path.isdir(path):
            raise UserError(f"--{flag} {path}: is a folder; expected a file name")
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise UserError(f"--{flag} {path}: cannot create its folder ({e.strerror})") from None
        if not os.access(folder, os.W_OK):
            raise UserError(f"--{flag} {path}: its folder {folder} is not writable")


def _run(args):
    args.blocks, args.per_block = args.turns, args.runs_per_turn
    preset = PRESETS[args.preset]
    args.input_shape = args.input_shape or preset["input_shape"]
    args.threads = preset["threads"] if args.threads is None else args.threads
    args.floor = (args.floor or ("on" if preset["device"] == "cpu" else "off")) == "on"
    args.backends = args.backends.split(",") if args.backends else preset["backends"]
    bad = [b for b in args.backends if b not in BACKENDS]
    if bad:
        raise UserError(f"--backends: unknown {bad}; expected some of {BACKENDS}")
    args.precisions = list(dict.fromkeys(args.precisions.split(",")))
    bad = [p for p in args.precisions if p not in PRECISIONS]
    if bad or "fp32" not in args.precisions:
        raise UserError(f"--precisions {','.join(args.precisions)}: expected fp32 and any of "
                        f"{', '.join(PRECISIONS[1:])}, comma-separated (the speed-ups are "
                        f"against fp32)")
    for p in args.precisions[1:]:
        if not set(PRECISION_BACKENDS[p]) & set(args.backends):
            raise UserError(f"--precisions {p}: none of --backends {','.join(args.backends)} "
                            f"runs it (it runs on {', '.join(PRECISION_BACKENDS[p])})")
    if args.input_shape[1] != 3 or min(args.input_shape) < 1:
        raise UserError(f"--input_shape: expected N 3 H W, got {args.input_shape}")
    if args.turns < 1 or args.runs_per_turn < 1:
        raise UserError("--turns and --runs_per_turn must be >= 1")
    if "paddle_trt" in args.backends:
        check_device(PredictorOptions(device="gpu", use_trt=True))
    configs = model_configs(args.models.split(",") if args.models else None)
    _check_outputs(args)
    machine = machine_description()
    protocol = {"preset": args.preset, "note": protocol_note(args, preset),
                "input_shape": args.input_shape,
                "threads": args.threads or cpu_count(), "warmup": args.warmup,
                "turns": args.turns, "runs_per_turn": args.runs_per_turn,
                "repeats": args.turns * args.runs_per_turn, "shape_mode": args.shape_mode,
                "isolation": "one process per backend, backends take turns",
                "output_op": "argmax", "backends": args.backends,
                "precisions": args.precisions}
    print(f"protocol: {protocol['note']}; input {'x'.join(map(str, args.input_shape))}, "
          f"{protocol['threads']} threads, {args.warmup} warm-up runs, backends taking "
          f"{args.turns} turns of {args.runs_per_turn} runs")
    print(f"machine: {machine['cpu']}, {machine['usable_cpus']} CPUs, load "
          f"{machine['load_average'][0]:.2f}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mobileseg-bench-") as tmp:
        work = args.work_dir or tmp
        for name, path in configs.items():
            print(f"{name}:")
            model_rows = bench_model(name, path, args, work)
            rows += model_rows
            for r in model_rows:
                print(f"  {r['backend']:21s} " + (
                    f"{r['median_ms']:8.1f} ms  [{r['p10_ms']:.1f}-{r['p90_ms']:.1f}]  "
                    f"{r['fps']:6.2f} FPS" if r["status"] == "ok" else
                    f"failed: {r['error']}"))
    machine["load_average_end"] = list(os.getloadavg())
    table = format_table(rows, machine, protocol)
    print()
    print(table)
    with open(args.save_json, "w") as f:
        json.dump({"machine": machine, "protocol": protocol, "results": rows,
                   "published_fps": {k: {"v100_trt_fp32_1024x2048": v[0],
                                         "snapdragon855_1thread_256x256": v[1]}
                                     for k, v in PUBLISHED_FPS.items()}}, f, indent=2)
    if args.save_table:
        with open(args.save_table, "w") as f:
            f.write(table + "\n")
    if args.save_png:
        shape = "x".join(map(str, protocol["input_shape"]))
        plot_fps(rows, args.save_png, f"MobileSeg, {shape}, {protocol['threads']} thread(s), "
                                      f"{machine['cpu']} ({args.preset} preset)")
    print(f"\nwrote {args.save_json}" + (f", {args.save_png}" if args.save_png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
