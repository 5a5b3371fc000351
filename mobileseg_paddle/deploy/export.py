"""Export a trained MobileSeg to a Paddle Inference model or to ONNX, with a ``deploy.yaml``.

    mobileseg export --config configs/mobileseg/mobileseg_mobilenetv2_cityscapes_1024x512_80k.yml \
        --model_path output/best_model/model.pdparams --save_dir output/inference

Flags follow PaddleSeg's ``tools/export.py`` (``--config --model_path --save_dir --input_shape
--output_op``) plus ``--format paddle|onnx``. The model's own export rewrites (same maths) and
the exported wrapper are in ``mobileseg_paddle.models.export_rewrites``; ``deploy.yaml`` is
written by ``deploy_yaml``.

What is written (into a temporary folder next to ``save_dir``, renamed into place when complete):

- ``--format paddle``: ``model.pdmodel`` (program, legacy format) and ``model.json`` (the same
  program in Paddle 3's PIR format), sharing one ``model.pdiparams``; ``deploy.yaml``.
  ``deploy.yaml`` points Paddle Inference at ``model.pdmodel``: on Paddle 3.3.1 a PIR program
  that contains an interpolation cannot run with oneDNN (the PIR oneDNN executor does not
  convert the ``double[]`` ``scale`` attribute of ``bilinear_interp``/``nearest_interp``:
  "ConvertPirAttribute2RuntimeAttribute not support ArrayAttribute<DoubleAttribute>"), while
  the same program in the legacy format runs through the oneDNN passes of the analysis
  predictor. ``--program pir`` or ``legacy`` writes only one of them. The legacy program is
  traced in this process (``DygraphOldIrGuard`` with the model's legacy-op builders).
  With the legacy program comes ``model.openvino.pdmodel``: the same network with the context
  module's adaptive pooling in the form OpenVINO's Paddle frontend converts exactly (see
  ``export_rewrites``), for Paddle Inference's OpenVINO engine.
- ``--format onnx``: ``model.onnx`` (through paddle2onnx) and ``deploy.yaml``.
- An INT8 export (``mobileseg quant``): the legacy programs quantized, ``model.pdmodel`` with
  ``model.pdiparams`` and (unless ``--engine onednn``) ``model.openvino.pdmodel`` with its own
  ``model.openvino.pdiparams``.

Engine (``--engine``, Paddle formats): the CPU engine ``mobileseg infer --engine auto`` runs,
recorded in deploy.yaml. ``auto`` times each CPU engine on the written export (``--tune_shape``
for a dynamic export, ``--tune_threads``) and records the fastest with the times; a named
engine is recorded without timing.
"""

import argparse
import os
import shutil
import sys
import tempfile
from typing import NamedTuple

import numpy as np
import paddle

import mobileseg_paddle
from mobileseg_paddle.builder import build_model
from mobileseg_paddle.config import load_config, normalization
from mobileseg_paddle.deploy import deploy_yaml
from mobileseg_paddle.deploy.deploy_yaml import CPU_ENGINES, MIN_INPUT_SIZE, OUTPUT_OPS
from mobileseg_paddle.deploy.runners import ENGINE_CHOICES, INT8_ENGINES, cpu_count, engine_files
from mobileseg_paddle.errors import UserError, run_main
from mobileseg_paddle.models.export_rewrites import (
    DeployModel,
    fast_dy2static,
    legacy_tracing,
    prepare_for_deploy,
)

PROGRAMS = ("both", "legacy", "pir")
DEFAULT_ONNX_OPSET = 13
MIN_ONNX_OPSET = 7  # paddle2onnx's lowest
# --engine auto on a dynamic export: the input size the engines are timed at (the configs'
# training crop, the size the benchmarks publish)
DEFAULT_TUNE_SHAPE = (512, 1024)
# --engine auto: each engine times TUNE_TURNS x TUNE_RUNS_PER_TURN runs, the engines taking
# turns, after TUNE_WARMUP untimed runs (OpenVINO compiles a program for the input size at its
# second run, and its first runs of it are slower than the later ones). With 3 x 2 runs a
# 2-core machine's noise once picked oneDNN for a model OpenVINO ran 20 % faster.
TUNE_TURNS, TUNE_RUNS_PER_TURN, TUNE_WARMUP = 5, 2, 4


# ----------------------------------------------------------------------------------------------
# Writing programs


def parse_input_shape(values):
    """``--input_shape N C H W`` -> list of 4 ints, -1 (or None) meaning dynamic.
    None -> [-1, 3, -1, -1]."""
    if values is None:
        return [-1, 3, -1, -1]
    if len(values) != 4:
        raise UserError(f"--input_shape: expected 4 values N C H W, got {len(values)}: "
                          f"{' '.join(str(v) for v in values)}")
    shape = []
    for v in values:
        try:
            v = int(v)
        except (TypeError, ValueError):
            raise UserError(f"--input_shape: {v!r} is not an integer") from None
        if v == 0 or v < -1:
            raise UserError(f"--input_shape: sizes must be positive or -1 (dynamic), got {v}")
        shape.append(v)
    if shape[1] != 3:
        raise UserError(f"--input_shape: the models take 3-channel (RGB) images, got C={shape[1]}")
    for name, v in zip("HW", shape[2:]):
        if v != -1 and v < MIN_INPUT_SIZE:
            raise UserError(f"--input_shape: {name}={v} is below the smallest supported size "
                              f"{MIN_INPUT_SIZE}")
    return shape


def _input_spec(shape):
    return [paddle.static.InputSpec([None if v == -1 else v for v in shape], "float32", "x")]


def save_paddle_programs(net, out_dir, shape, program="both", openvino_net=None):
    """Trace ``net`` and save it as ``model.pdmodel`` (legacy) and/or ``model.json`` (PIR)
    with one ``model.pdiparams``; with the legacy program, ``openvino_net`` (the same weights,
    OpenVINO's rewrites) as ``model.openvino.pdmodel``. Returns {"legacy": file, "openvino":
    file, "pir": file} for what was written."""

    if program not in PROGRAMS:
        raise UserError(f"--program: expected one of {PROGRAMS}, got {program!r}")
    spec = _input_spec(shape)
    written = {}
    if program in ("both", "legacy"):
        _save_legacy(net, out_dir, spec)
        written["legacy"] = "model.pdmodel"
        if openvino_net is not None:
            _save_beside(out_dir, "_openvino", "model.pdmodel", "model.openvino.pdmodel",
                         lambda sub: _save_legacy(openvino_net, sub, spec))
            written["openvino"] = "model.openvino.pdmodel"
    if program in ("both", "pir"):
        def save_pir(folder):
            with paddle.pir_utils.DygraphPirGuard(), fast_dy2static():
                static = paddle.jit.to_static(net, input_spec=spec, full_graph=True)
                paddle.jit.save(static, os.path.join(folder, "model"))
        if written:
            _save_beside(out_dir, "_pir", "model.json", "model.json", save_pir)
        else:
            save_pir(out_dir)
        written["pir"] = "model.json"
    return written


def _save_legacy(net, folder, spec):
    # Also Paddle Lite's writer. In this process: the program equals what a process started
    # with FLAGS_enable_pir_api=0 writes (tests/deploy/lite/test_lite_models.py).
    with paddle.pir_utils.DygraphOldIrGuard(), legacy_tracing():
        static = paddle.jit.to_static(net, input_spec=spec, full_graph=True)
        paddle.jit.save(static, os.path.join(folder, "model"))
    info = os.path.join(folder, "model.pdiparams.info")
    if os.path.exists(info):  # training-only metadata, not read by inference
        os.remove(info)


def _save_beside(out_dir, sub_name, name, final_name, save):
    """``save(sub)`` a second program into a scratch sub-folder; keep its program as
    ``final_name`` beside the first, which shares its parameter file."""
    sub = os.path.join(out_dir, sub_name)
    save(sub)
    # every program of an export stores the same parameters in the same order: keep one file
    if not _same_file(os.path.join(sub, "model.pdiparams"),
                      os.path.join(out_dir, "model.pdiparams")):
        raise RuntimeError(f"the programs of {sub_name[1:]} and the first one wrote different "
                           f"parameter files")
    os.replace(os.path.join(sub, name), os.path.join(out_dir, final_name))
    shutil.rmtree(sub)


def _same_file(a, b):
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def save_onnx(net, out_dir, shape, opset=DEFAULT_ONNX_OPSET):
    """Trace ``net`` to a PIR program in a scratch folder and convert it with paddle2onnx to
    ``out_dir/model.onnx``. Returns "model.onnx"."""
    import paddle2onnx

    with tempfile.TemporaryDirectory(prefix="p2o-", dir=out_dir) as scratch:
        with paddle.pir_utils.DygraphPirGuard(), fast_dy2static():
            static = paddle.jit.to_static(net, input_spec=_input_spec(shape), full_graph=True)
            paddle.jit.save(static, os.path.join(scratch, "model"))
        # optimize_tool="None": paddle2onnx's default ("polygraphy") switches on polygraphy's
        # automatic pip installs (POLYGRAPHY_AUTOINSTALL_DEPS=1), which can replace packages
        # of the environment (it upgraded numpy to 2.x here); its "onnxoptimizer" option
        # fails on paddle2onnx 2.1.0's own pass list. onnxruntime optimizes the graph itself.
        paddle2onnx.export(os.path.join(scratch, "model.json"),
                           os.path.join(scratch, "model.pdiparams"),
                           os.path.join(out_dir, "model.onnx"), opset_version=opset,
                           auto_upgrade_opset=True, enable_onnx_checker=True,
                           optimize_tool="None")
    path = os.path.join(out_dir, "model.onnx")
    if not os.path.isfile(path):
        raise RuntimeError("paddle2onnx did not write model.onnx")
    written = onnx_opset(path)
    if written != opset:  # paddle2onnx raises it to the lowest that expresses every op
        print(f"note: --opset {opset} raised to {written}: the lowest opset that expresses "
              f"every op of this model", file=sys.stderr)
    return "model.onnx"


def onnx_opset(path):
    import onnx
    model = onnx.load(path, load_external_data=False)
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def check_opset(opset):
    import onnx
    highest = onnx.defs.onnx_opset_version()
    if not MIN_ONNX_OPSET <= opset <= highest:
        raise UserError(f"--opset {opset}: expected {MIN_ONNX_OPSET} to {highest} (what "
                        f"paddle2onnx and this onnx {onnx.__version__} write)")


# ----------------------------------------------------------------------------------------------
# Export


class Quantization(NamedTuple):
    """An INT8 export (``mobileseg quant``): calibration inputs, the activation-scale search
    (``quant.ALGOS``) and the ``precision.calibration`` block of deploy.yaml."""
    batches: list
    algo: str
    info: dict
    # "post-training", or "quantization-aware training" for weights of ``train --quant``
    method: str = "post-training"
    # the convolutions' input scales quantization-aware training learned (quant.quantize_program)
    input_scales: dict = None


def export(config, save_dir, model_path=None, input_shape=None, output_op="argmax",
           fmt="paddle", program="both", opset=DEFAULT_ONNX_OPSET, model=None, engine="auto",
           tune_shape=None, tune_threads=0, quant=None):
    """Export and return the path of the written deploy.yaml.

    ``model`` (optional) is an already built and loaded model to export instead of building
    one from ``config`` and ``model_path`` (``config`` still provides transforms and names).
    ``engine``: the default CPU engine recorded (auto: the fastest of ``measure_engines`` at
    ``tune_shape`` (H, W) with ``tune_threads``, 0 meaning all usable CPUs). ``quant`` (a
    ``Quantization``): an INT8 export (see quant.py): the legacy program quantized, and unless
    ``engine`` is onednn OpenVINO's with its own parameters; auto times the two engines."""
    if output_op not in OUTPUT_OPS:
        raise UserError(f"--output_op: expected one of {OUTPUT_OPS}, got {output_op!r}")
    if fmt not in ("paddle", "onnx"):
        raise UserError(f"--format: expected paddle or onnx, got {fmt!r}")
    shape = parse_input_shape(input_shape)
    if fmt == "onnx":
        check_opset(opset)
    save_dir = os.path.abspath(save_dir)
    _check_save_dir(save_dir)
    if program not in PROGRAMS:
        raise UserError(f"--program: expected one of {PROGRAMS}, got {program!r}")
    if quant is not None:
        _check_int8(fmt, program, engine)
    tune_input = _check_engine(engine, fmt, program, shape, tune_shape, tune_threads)
    _check_foreign(save_dir, _written_files(fmt, program, quant is not None, engine))
    if model is None:
        model, cfg = build_model(config, model_path)
    else:
        cfg = load_config(config, sections=("model",))
    net = DeployModel(prepare_for_deploy(model, target=fmt), output_op,
                      channels_last_argmax=(fmt == "paddle"))
    # OpenVINO's TopK reduces over the channels where they are (its layout is channels-last
    # already); the NHWC transpose before it cost more than the argmax itself
    # (an INT8 export quantized for oneDNN only has no OpenVINO program)
    openvino_net = DeployModel(prepare_for_deploy(model, target="openvino"), output_op,
                               channels_last_argmax=False) \
        if fmt == "paddle" and (quant is None or engine != "onednn") else None

    with _export_lock(save_dir):
        journal_lost = _recover(save_dir)  # an export into it that was killed mid-switch
        _check_save_dir(save_dir)  # again: another export may have finished meanwhile
        _remove_leftovers(save_dir)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(save_dir)}.partial-",
                               dir=os.path.dirname(save_dir))
        try:
            if quant is not None:
                files = _save_int8(net, openvino_net, tmp, shape, fmt, opset, quant)
                engine_info = choose_engine(tmp, files, engine, tune_input, tune_threads,
                                            "int8") if fmt == "paddle" else None
            elif fmt == "paddle":
                files = save_paddle_programs(net, tmp, shape, program, openvino_net)
                files["params"] = "model.pdiparams"
                engine_info = choose_engine(tmp, files, engine, tune_input, tune_threads)
            else:
                files, engine_info = {"onnx": save_onnx(net, tmp, shape, opset)}, None
            mean, std = normalization(cfg)
            precision = None if quant is None else {
                "name": "int8", "method": quant.method, "calibration": dict(quant.info)}
            info = deploy_yaml.make(cfg, int(model.num_classes), shape, output_op, fmt, files,
                                    mean, std, f"mobileseg_paddle {mobileseg_paddle.__version__}",
                                    paddle.__version__, config, engine_info, precision)
            deploy_yaml.write(tmp, info)
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it private
            _move_into_place(tmp, save_dir, journal_lost)
        except OSError as e:  # a full disk, a folder made read-only meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(f"--save_dir {save_dir}: cannot write the export: "
                            f"{e.strerror or e}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return os.path.join(save_dir, deploy_yaml.FILENAME)


def _check_int8(fmt, program, engine):
    if fmt == "paddle" and program == "pir":
        raise UserError("--program pir: an INT8 export is a legacy program (what oneDNN's INT8 "
                        "passes and Lite read); leave --program out")
    if fmt == "paddle" and engine not in ("auto",) + INT8_ENGINES:
        raise UserError(f"--engine {engine}: an INT8 export runs on the int8 kernels of "
                        f"{' or '.join(INT8_ENGINES)}")


def _save_int8(net, openvino_net, tmp, shape, fmt, opset, quant):
    """The FP32 program(s) (legacy; with ``openvino_net`` OpenVINO's too) or ONNX model of
    ``net`` in a scratch folder, quantized into ``tmp``. Returns the files block.

    OpenVINO's program is calibrated on its own: its variables (the scales' names) differ from
    the oneDNN program's, so it brings its own parameter file, and its per-tensor scales are
    stored with shape [1] (``quant._scales_as_vectors``)."""
    from mobileseg_paddle.deploy import quant as q

    with tempfile.TemporaryDirectory(prefix="fp32-", dir=tmp) as scratch:
        if fmt == "paddle":
            save_paddle_programs(net, scratch, shape, "legacy", openvino_net)
            q.quantize_program(scratch, tmp, quant.batches, quant.algo,
                               input_scales=quant.input_scales)
            files = {"legacy": "model.pdmodel", "params": "model.pdiparams"}
            if openvino_net is not None:
                q.quantize_program(scratch, tmp, quant.batches, quant.algo,
                                   model_filename="model.openvino.pdmodel", vector_scales=True,
                                   input_scales=quant.input_scales)
                files.update(openvino="model.openvino.pdmodel",
                             openvino_params="model.openvino.pdiparams")
            return files
        save_onnx(net, scratch, shape, opset)
        q.quantize_onnx(os.path.join(scratch, "model.onnx"), os.path.join(tmp, "model.onnx"),
                        quant.batches, quant.algo)
        return {"onnx": "model.onnx"}


def _check_engine(engine, fmt, program, shape, tune_shape, tune_threads):
    """Refuse an engine the export cannot serve; return the input shape to time engines at
    (None when nothing is timed)."""
    if engine not in ENGINE_CHOICES:
        raise UserError(f"--engine: expected one of {', '.join(ENGINE_CHOICES)}, got {engine!r}")
    if fmt != "paddle":
        if engine != "auto":
            raise UserError(f"--engine {engine}: engines are Paddle Inference's; an ONNX export "
                            f"runs on onnxruntime (leave --engine out)")
        return None
    if engine == "openvino" and program == "pir":
        raise UserError("--engine openvino runs the legacy program: export it with --program "
                        "both or legacy")
    if tune_threads < 0:
        raise UserError(f"--tune_threads must be >= 0 (0: all usable CPUs), got {tune_threads}")
    fixed = [v for v in shape[2:] if v != -1]
    if tune_shape is not None:
        tune_shape = [int(v) for v in tune_shape]
        if len(tune_shape) != 2 or min(tune_shape) < MIN_INPUT_SIZE:
            raise UserError(f"--tune_shape: expected H W, each at least {MIN_INPUT_SIZE}, got "
                            f"{' '.join(map(str, tune_shape))}")
        if len(fixed) == 2 and tune_shape != shape[2:]:
            raise UserError(f"--tune_shape {tune_shape[0]} {tune_shape[1]}: the export's input "
                            f"size is fixed ({shape[2]}x{shape[3]}); leave --tune_shape out")
    if engine != "auto":
        return None
    hw = list(tune_shape or (shape[2:] if len(fixed) == 2 else DEFAULT_TUNE_SHAPE))
    hw = [v if v != -1 else d for v, d in zip(hw, DEFAULT_TUNE_SHAPE)]  # one dynamic side
    return [max(shape[0], 1), 3] + hw


def choose_engine(folder, files, engine, tune_input, threads=0, precision="fp32"):
    """The ``engine`` block of deploy.yaml: ``engine`` as asked, or (auto) the fastest of
    ``measure_engines`` on the export in ``folder``."""
    if engine != "auto":
        return {"default": engine, "chosen": "--engine"}
    threads = threads or cpu_count()
    ms = measure_engines(folder, files, tune_input, threads, precision=precision)
    timed = {e: t for e, t in ms.items() if t is not None}
    if not timed:
        raise UserError("--engine auto: no CPU engine of Paddle Inference ran the export")
    return {"default": min(timed, key=timed.get), "chosen": "measured",
            "measured": {"shape": list(tune_input), "threads": threads, "ms": ms}}


def measure_engines(folder, files, shape, threads, turns=TUNE_TURNS, precision="fp32"):
    """{engine: median ms of a run (feed, run, fetch) at ``shape``} for each CPU engine (of an
    INT8 export: each of ``INT8_ENGINES``) on the export's programs in ``folder``; None for an
    engine that cannot run it. Each engine runs in a process of its own and the engines take
    turns, as in ``mobileseg bench``: in one process the OpenMP threads Paddle leaves spinning
    after a oneDNN run slow the OpenVINO run next."""
    from mobileseg_paddle.deploy.benchmark import time_in_turns

    engines = INT8_ENGINES if precision == "int8" else CPU_ENGINES
    specs = {}
    # OpenVINO's compile cache of a program that is about to move: a scratch folder
    with tempfile.TemporaryDirectory(prefix="mobileseg-engines-") as work:
        for engine in engines:
            program, params = engine_files(files, engine,
                                           "legacy" if "legacy" in files else "pir")
            if program in files:
                specs[engine] = dict(kind="files", program=os.path.join(folder, files[program]),
                                     params=os.path.join(folder, files[params]),
                                     precision=precision, threads=threads, shape=list(shape),
                                     seed=0,
                                     warmup=TUNE_WARMUP, options=dict(
                                         engine=engine, openvino_cache_dir=work))
        times, _, errors = time_in_turns(specs, turns, TUNE_RUNS_PER_TURN, work)
    ms = {}
    for engine in engines:
        if engine in errors:
            print(f"note: --engine auto: {engine} cannot run this export: {errors[engine]}",
                  file=sys.stderr)
        runs = [t for turn in times.get(engine, []) for t in turn]
        ms[engine] = round(float(np.median(runs)) * 1e3, 2) if runs and engine not in errors \
            else None
    return ms


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_save_dir(save_dir):
    """``save_dir`` may be new, empty, or an export of ours (a deploy.yaml with our block); any
    other folder is refused, so a mistyped path or a project folder holding some unrelated
    deploy.yaml never loses a file."""
    if os.path.exists(save_dir):
        if not os.path.isdir(save_dir):
            raise UserError(f"--save_dir {save_dir} exists and is not a folder")
        if os.listdir(save_dir) and not deploy_yaml.is_our_export(save_dir):
            raise UserError(f"--save_dir {save_dir} is not empty and holds no export of "
                            f"mobileseg (no deploy.yaml of ours); choose a new or empty folder")
    probe = os.path.dirname(save_dir) or "."
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UserError(f"--save_dir {save_dir}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        raise UserError(f"--save_dir {save_dir}: folder {probe} is not writable")


def _our_files(save_dir, journal_lost=False):
    """The files a previous export of ours wrote in ``save_dir`` (those it may replace), its
    deploy.yaml first. When its deploy.yaml cannot tell (an older format version, or
    ``journal_lost``: an export interrupted by an older version, a marker without a journal),
    the export file names present are ours (``_check_save_dir`` has found the folder ours)."""
    try:
        if journal_lost:
            raise UserError("no journal")
        old = deploy_yaml.DeployConfig(save_dir, allow_recovery=False)
    except UserError:
        return [n for n in deploy_yaml.EXPORT_FILES
                if os.path.isfile(os.path.join(save_dir, n))]
    names = [name for name in old.files.values() if os.path.dirname(name) == ""]
    return [deploy_yaml.FILENAME] + [n for n in dict.fromkeys(names) if n != deploy_yaml.FILENAME]


def _written_files(fmt, program, int8=False, engine="auto"):
    """The names an export of ``fmt``/``program`` (an INT8 one for ``engine``) writes."""
    if fmt == "onnx":
        return ["model.onnx", deploy_yaml.FILENAME]
    if int8:
        openvino = [] if engine == "onednn" else ["model.openvino.pdmodel",
                                                  "model.openvino.pdiparams"]
        return ["model.pdmodel", "model.pdiparams"] + openvino + [deploy_yaml.FILENAME]
    legacy = ["model.pdmodel", "model.openvino.pdmodel"]
    programs = {"legacy": legacy, "pir": ["model.json"]}.get(program, legacy + ["model.json"])
    return programs + ["model.pdiparams", deploy_yaml.FILENAME]


def _check_foreign(save_dir, new, old=None):
    """Refuse to replace a file of ``save_dir`` that the export there does not name (the
    user's own ``model.json`` beside an export without one)."""
    if not os.path.isdir(save_dir):
        return
    if old is None:
        old = _our_files(save_dir, os.path.lexists(
            os.path.join(save_dir, deploy_yaml.INCOMPLETE_MARKER)))
    foreign = [n for n in new if n not in old and os.path.lexists(os.path.join(save_dir, n))]
    if foreign:
        raise UserError(f"--save_dir {save_dir}: {', '.join(foreign)} is not a file of the export "
                        f"there (its deploy.yaml does not name it) and would be replaced; move "
                        f"it away or choose another folder")


def _recover(save_dir):
    """An export into ``save_dir`` that was killed while switching files: undo or finish it
    (``deploy_yaml.recover``), before anything else (under the lock). Returns True when the
    folder holds an export interrupted by an older version (no journal to follow: its marker
    stays, and this export's journal replaces it)."""
    if not os.path.isdir(save_dir):
        return False
    try:
        return deploy_yaml.recover(save_dir) == "unknown"
    except OSError as e:
        raise UserError(f"--save_dir {save_dir}: cannot recover the interrupted export in it: "
                        f"{e.strerror or e}") from None


def _remove_leftovers(save_dir):
    """Staging folders of an export of ``save_dir`` that was killed (under the lock, no other
    export of this folder is running; ``_recover`` has run)."""
    parent, name = os.path.split(save_dir)
    for entry in os.listdir(parent):
        if entry.startswith(f".{name}.partial-"):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _move_into_place(tmp, save_dir, journal_lost=False):
    """Put the completed export of ``tmp`` into ``save_dir``. A new folder is one rename. In an
    existing one only the files of the previous export of ours are replaced or removed, through
    the journal of ``deploy_yaml`` (``write_journal``, backups, deploy.yaml moved in last as
    the commit point): a kill at any moment leaves either the previous export or the new one,
    complete, once ``deploy_yaml.recover`` has run (the next export or the next load runs it).
    Everything else in the folder (results, a checkpoint) stays."""
    if not os.path.exists(save_dir):
        os.rename(tmp, save_dir)
        return
    new = sorted(n for n in os.listdir(tmp) if n != deploy_yaml.FILENAME) + [deploy_yaml.FILENAME]
    old = _our_files(save_dir, journal_lost)
    _check_foreign(save_dir, new, old)
    journal = {"staging": tmp, "old": old, "new": new}
    deploy_yaml.write_journal(save_dir, tmp, old, new)
    try:
        for name in old:  # deploy.yaml first
            path = os.path.join(save_dir, name)
            if os.path.lexists(path):
                os.rename(path, os.path.join(save_dir, deploy_yaml.backup_name(name)))
        for name in new:  # deploy.yaml last: the commit point
            os.rename(os.path.join(tmp, name), os.path.join(save_dir, name))
    except BaseException:
        deploy_yaml.undo_switch(save_dir, journal)  # the previous export back, then re-raise
        raise
    deploy_yaml.finish_switch(save_dir, journal)


_export_lock = deploy_yaml.export_lock  # one export at a time per parent folder (flock)


# ----------------------------------------------------------------------------------------------
# Command line


def build_parser():
    p = argparse.ArgumentParser(
        prog="mobileseg export",
        description="Export a MobileSeg model to Paddle Inference or ONNX, with a deploy.yaml.")
    p.add_argument("--config", required=True, help="the training config (.yml)")
    p.add_argument("--model_path", default=None,
                   help="trained weights (model.pdparams); without it the config's pretrained "
                        "weights (or random ones) are exported")
    p.add_argument("--save_dir", default="./output/inference_model",
                   help="folder to write (replaced if it holds a previous export)")
    p.add_argument("--input_shape", nargs="+", default=None, metavar="DIM",
                   help="input shape N C H W; -1 for a dynamic dimension (default: -1 3 -1 -1)")
    p.add_argument("--output_op", default="argmax", choices=OUTPUT_OPS,
                   help="argmax: int32 label map; softmax: probabilities; none: logits")
    p.add_argument("--format", default="paddle", choices=("paddle", "onnx"))
    p.add_argument("--program", default="both", choices=PROGRAMS,
                   help="paddle format only: legacy model.pdmodel, PIR model.json, or both")
    p.add_argument("--opset", type=int, default=DEFAULT_ONNX_OPSET, help="ONNX opset version")
    p.add_argument("--engine", default="auto", choices=ENGINE_CHOICES,
                   help="paddle format: the CPU engine Paddle Inference runs by default (recorded "
                        "in deploy.yaml); auto: the fastest measured on this export")
    p.add_argument("--tune_shape", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="--engine auto on a dynamic export: the input size the engines are "
                        f"timed at (default {DEFAULT_TUNE_SHAPE[0]} {DEFAULT_TUNE_SHAPE[1]})")
    p.add_argument("--tune_threads", type=int, default=0,
                   help="--engine auto: CPU threads the engines are timed with (0: all usable)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)

    def run():
        path = export(args.config, args.save_dir, model_path=args.model_path,
                      input_shape=args.input_shape, output_op=args.output_op, fmt=args.format,
                      program=args.program, opset=args.opset, engine=args.engine,
                      tune_shape=args.tune_shape, tune_threads=args.tune_threads)
        engine = deploy_yaml.DeployConfig(path).engine
        print(f"exported to {os.path.dirname(path)} (deploy.yaml, {args.format}"
              + (f", engine {engine})" if engine else ")"))

    return run_main("export", run)
