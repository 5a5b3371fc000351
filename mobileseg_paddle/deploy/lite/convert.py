"""Checkpoint -> Paddle Lite ``.nb`` models (ARM for the phone, x86 for host checks) + manifest.

Steps; the arguments, the Lite runtime and the model are checked first, the files are written
into a temporary folder beside ``save_dir`` that is moved in place only when complete:
1. the config's model, as ``prepare_for_deploy(model, "lite")`` wrapped by ``DeployModel``
   (``--output_op none``: logits; ``argmax``: an int64 (1, H, W) label map, what
   Paddle-Lite-Demo's segmentation demo reads), traced into the legacy program format at the fixed input shape
   by the same writer as ``mobileseg export`` (``export.save_paddle_programs``), in this
   process: tests/deploy/lite/test_lite_models.py shows the program equals the one a fresh
   ``FLAGS_enable_pir_api=0`` process writes;
2. the compatibility pass of ``program_compat.py``;
3. one Lite worker run: the op report of every target (one error listing every op without a
   kernel, before any .nb is written), then opt -> ``model_<target>.nb`` (``--precision fp16``:
   opt's FP16 mode for the ARM model, for ARMv8.2 cores such as the Snapdragon 855's);
4. manifest.json (see ``manifest.py``).

``--precision int8`` (``quantize_int8``): between steps 2 and 3 the program is quantized after
training (``mobileseg_paddle.deploy.quant.quantize_program``: ``quantize_linear``/
``dequantize_linear`` with int8 weights per output channel, activation scales found on
``--num_calib`` images of the config's train_dataset through its val transforms, each resized
bilinearly to the model's fixed H, W *after* normalisation: normalisation is affine per channel,
so this equals the demo's resize-then-normalise up to rounding), and the compatibility pass runs
again on the quantized program (Paddle writes it as Paddle 3 does: ``relu6`` loses its
``threshold`` again). opt folds the quant ops into its int8 conv/depthwise/fc kernels (the op
report lists them as kernel-less: ``FOLDED_QUANT_OPS`` are not counted), the other ops stay FP32
with ``calib`` ops between. ARM only: Lite 2.13 has x86 int8 conv kernels too, and opt writes
an x86 ``.nb`` of the same program, but on the membrane model its labels agreed with the FP32
model's on 87-90% of the pixels, where the ARM kernels' and Paddle's own run of the quantized
program agree on 99% (deploy/lite/README.md): an x86 INT8 model would not show what the phone
computes.
The calibration images are read before anything is written (bad ``--num_calib``, no
train_dataset: one error, nothing written).

A failure leaves ``save_dir`` as it was.
"""

import os
import shutil
import tempfile

from mobileseg_paddle.errors import UserError, one_line

from . import manifest as mf
from .lite_env import LiteRuntime
from .program_compat import make_lite_compatible

PROGRAM_PREFIX = "model"  # model.pdmodel / model.pdiparams: the legacy program opt reads
DEFAULT_SHAPE = (1, 3, 256, 256)
# quantize_linear/dequantize_linear: no Lite kernels of their own, opt folds them into the
# int8 kernels of the ops they surround (Lite's op report lists them as unsupported)
FOLDED_QUANT_OPS = ("quantize_linear", "dequantize_linear")


def parse_input_shape(values):
    """The ``--input_shape`` values (``1 3 H W`` as paddleseg's export, or ``1,3,H,W``; ints or
    strings) -> [1, 3, H, W]. The sizes follow ``mobileseg export``'s rules; a Lite model has a
    fixed input of one image."""
    from mobileseg_paddle.deploy.export import parse_input_shape as parse_export_shape
    tokens = [values] if isinstance(values, (str, int)) else list(values)
    tokens = [t for v in tokens for t in str(v).replace(",", " ").split()]
    shape = parse_export_shape(tokens)
    if shape[0] != 1 or min(shape) <= 0:
        raise UserError(f"--input_shape {' '.join(tokens)}: a Paddle Lite model has a fixed "
                        f"input: expected 1,3,H,W with H, W > 0")
    return shape


def parse_targets(values):
    """``arm,x86`` / ``arm x86`` / ["arm", "x86"] -> ["arm", "x86"] (order kept, no repeats)."""
    text = values if isinstance(values, str) else " ".join(values)
    targets = text.replace(",", " ").split()
    bad = [t for t in targets if t not in mf.TARGETS]
    if not targets or bad:
        raise UserError(f"--valid_targets {text!r}: expected some of {', '.join(mf.TARGETS)}")
    return list(dict.fromkeys(targets))


def _raise_unsupported(version, reports):
    for target, report in reports.items():
        if report["unsupported"]:
            raise UserError(f"Paddle Lite {version} has no {target} kernel for "
                            f"{len(report['unsupported'])} op(s) of this model: "
                            f"{', '.join(report['unsupported'])}")


def check_ops(runtime, model_file, param_file, target):
    """Lite's op report for ``target`` ({"ops", "unsupported"}); UserError listing every op it
    has no kernel for."""
    prefix = os.path.splitext(model_file)[0] + f"_{target}"  # not written: check only
    result = runtime.opt(model_file, param_file, {target: prefix}, check_only=True)
    _raise_unsupported(result["version"], result["reports"])
    return result["reports"][target]


def parse_choice(flag, value, choices):
    if value not in choices:
        raise UserError(f"{flag} {value!r}: expected one of {', '.join(choices)}")
    return value


def export_program(model, out_dir, input_shape, output_op="none"):
    """Write ``out_dir/model.pdmodel`` + ``.pdiparams`` (legacy format) of ``model``'s logits
    (``output_op`` none) or label map (argmax)."""
    from mobileseg_paddle.deploy.export import save_paddle_programs
    from mobileseg_paddle.models.export_rewrites import DeployModel, prepare_for_deploy
    # arg_max over the channel axis: Lite has no oneDNN layout reason for the NHWC transpose
    net = DeployModel(prepare_for_deploy(model, target="lite"), output_op=output_op,
                      channels_last_argmax=False, label_dtype=mf.LABEL_DTYPE)
    try:
        save_paddle_programs(net, out_dir, input_shape, program="legacy")
    except Exception as e:  # e.g. a layer calling a function the legacy builders do not cover
        raise UserError(f"tracing {type(model).__name__} into Paddle's legacy program format "
                        f"failed: {one_line(e)}") from e
    return os.path.join(out_dir, PROGRAM_PREFIX + ".pdmodel"), os.path.join(
        out_dir, PROGRAM_PREFIX + ".pdiparams")


def calibration_batches(config, num_calib, input_shape, log=print):
    """The ``--num_calib`` calibration images of ``config`` (``quant.calibration_images``:
    train_dataset images through the val transforms), each resized bilinearly to the model's
    input H, W: (1, 3, H, W) float32 arrays. UserError (before anything is written) for a
    config without train_dataset or with fewer images than ``num_calib``."""
    import time

    import cv2
    import numpy as np

    from mobileseg_paddle.config import load_config
    from mobileseg_paddle.deploy import quant

    _, _, h, w = input_shape
    t0 = time.time()
    cfg = load_config(config, sections=("model", "val_dataset"))  # not the training sections
    images = quant.calibration_images(cfg, num_calib, f"--config {config}")
    batches = []
    for image in images:  # (1, 3, h0, w0), normalised
        hwc = np.ascontiguousarray(image[0].transpose(1, 2, 0))
        if hwc.shape[:2] != (h, w):
            hwc = cv2.resize(hwc, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
        batches.append(np.ascontiguousarray(hwc.transpose(2, 0, 1)[None], dtype=np.float32))
    sizes = sorted({f"{b.shape[2]}x{b.shape[3]}" for b in images})
    log(f"calibration: {len(batches)} images of the train_dataset through the val transforms "
        f"({', '.join(sizes[:4])}{' ...' if len(sizes) > 4 else ''} -> {h}x{w}, "
        f"{time.time() - t0:.1f} s)")
    return batches, [b.shape for b in images]


def quantize_int8(folder, batches, algo, log=print, input_scales=None):
    """Quantize ``folder``'s model.pdmodel + .pdiparams in place (``quant.quantize_program``,
    with the ``input_scales`` quantization-aware training learned), then the compatibility pass
    again; returns its fixes."""
    import time

    from mobileseg_paddle.deploy import quant

    t0 = time.time()
    fp32 = os.path.join(folder, ".fp32")
    os.mkdir(fp32)
    for ext in (".pdmodel", ".pdiparams"):
        os.rename(os.path.join(folder, PROGRAM_PREFIX + ext), os.path.join(fp32, PROGRAM_PREFIX + ext))
    log("quantizing to int8 (Paddle's post-training quantization)")
    try:  # Paddle prints a progress bar per stage on stderr
        quant.quantize_program(fp32, folder, batches, algo,
                               model_filename=PROGRAM_PREFIX + ".pdmodel",
                               params_filename=PROGRAM_PREFIX + ".pdiparams",
                               input_scales=input_scales)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"INT8 quantization failed: {one_line(e)}") from e
    finally:
        shutil.rmtree(fp32, ignore_errors=True)
    fixes = make_lite_compatible(os.path.join(folder, PROGRAM_PREFIX + ".pdmodel"))
    log(f"quantized (int8 weights per channel, activations: {algo}) on {len(batches)} images "
        f"in {time.time() - t0:.1f} s")
    return fixes


def _check_int8_nb(nb):
    """UserError unless opt turned the quantized program into int8 kernels (read from the
    .nb: each kernel's key names its precision)."""
    from .check import kernel_precision, read_nb
    info = read_nb(nb)
    left = sorted({k[0] for k in info["kernels"]} & set(FOLDED_QUANT_OPS))
    if left or kernel_precision(info) != "int8":
        raise UserError(f"Paddle Lite's opt did not fold the quantized program into int8 "
                        f"kernels ({os.path.basename(nb)}: "
                        f"{'left ' + ', '.join(left) if left else 'no int8 kernel'})")


def _install(tmp, save_dir):
    """Move the finished files of ``tmp`` into ``save_dir``, the manifest last."""
    if not os.path.exists(save_dir):
        os.rename(tmp, save_dir)
        return
    old_manifest = os.path.join(save_dir, mf.FILENAME)
    if os.path.exists(old_manifest):
        os.remove(old_manifest)  # never a manifest that names half-replaced files
    names = sorted(os.listdir(tmp), key=lambda n: n == mf.FILENAME)
    for name in names:
        os.replace(os.path.join(tmp, name), os.path.join(save_dir, name))
    os.rmdir(tmp)


def convert(config, model_path, save_dir, input_shape=DEFAULT_SHAPE, valid_targets="arm",
            runtime=None, log=print, output_op="none", precision="fp32", num_calib=None,
            algo=None, qat_scales="trained"):
    """Convert; return the manifest dict. Raises UserError with one clear message on bad input.
    ``num_calib``, ``algo``: the INT8 calibration (``--precision int8`` only; defaults
    ``quant.DEFAULT_NUM_CALIB``, ``quant.DEFAULT_ALGO``); ``qat_scales``: for a checkpoint of
    quantization-aware training, its convolutions' input scales as trained or calibrated
    (``mobileseg quant --qat_scales``)."""
    from mobileseg_paddle.builder import build_model
    from mobileseg_paddle.config import normalization
    from mobileseg_paddle.deploy import quant

    input_shape = parse_input_shape(input_shape)
    targets = parse_targets(valid_targets)
    parse_choice("--output_op", output_op, mf.OUTPUT_OPS)
    parse_choice("--precision", precision, mf.PRECISIONS)
    int8 = precision == "int8"
    if not int8 and (num_calib is not None or algo is not None):
        raise UserError(f"--num_calib and --algo are for --precision int8 (not {precision})")
    num_calib = quant.DEFAULT_NUM_CALIB if num_calib is None else num_calib
    algo = quant.DEFAULT_ALGO if algo is None else algo
    if int8:
        quant.check_calibration(num_calib, algo)
    quant.check_qat_scales(qat_scales)
    if int8 and targets != ["arm"]:
        raise UserError(f"--precision int8 is for the ARM model only (--valid_targets "
                        f"{','.join(targets)}): the labels of Lite 2.13's x86 int8 kernels "
                        f"agree with the FP32 model's on only about 88% of the pixels (ARM: "
                        f"99%); convert the x86 model for host checks without --precision int8")
    fp16 = ["arm"] if precision == "fp16" else []
    if fp16 and "arm" not in targets:
        raise UserError(f"--precision fp16 is for the ARM model (--valid_targets "
                        f"{','.join(targets)} has none): Lite's x86 kernels are FP32")
    if not os.path.isfile(config):
        raise UserError(f"--config {config}: no such file")
    if model_path is not None and not os.path.exists(model_path):
        raise UserError(f"--model_path {model_path}: no such file")
    calibration = None
    if int8:  # before anything is written: a config without train_dataset fails here
        batches, shapes = calibration_batches(config, num_calib, input_shape, log)
        calibration = dict(quant.calibration_info(len(batches), algo, shapes=shapes),
                           resized_to=f"{input_shape[2]}x{input_shape[3]}")
        _, scales = quant.trained_input_scales(model_path, qat_scales, calibration, algo, log)
    runtime = runtime or LiteRuntime.find()
    if model_path is None:
        log("warning: no --model_path: exporting randomly initialised weights")
    model, cfg = build_model(config, model_path, drop_pretrained=True)
    mean, std = normalization(cfg)

    save_dir = os.path.abspath(save_dir)
    parent = os.path.dirname(save_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(save_dir)}.partial-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the result is an ordinary folder
    try:
        log(f"exporting {config} at {input_shape} (legacy program format)")
        model_file, param_file = export_program(model, tmp, input_shape, output_op)
        fixes = make_lite_compatible(model_file)
        if int8:
            fixes = quantize_int8(tmp, batches, algo, log, input_scales=scales)
        log("compatibility fixes: " + (", ".join(f"{k} x{v}" for k, v in fixes.items() if v)
                                       or "none needed"))
        result = runtime.opt(model_file, param_file,
                             {t: os.path.join(tmp, f"{PROGRAM_PREFIX}_{t}") for t in targets},
                             fp16=fp16, folded=FOLDED_QUANT_OPS if int8 else ())
        lite_version = result["version"]
        _raise_unsupported(lite_version, result["reports"])
        models = {}
        for target in targets:
            nb = result["models"][target]
            models[target] = os.path.basename(nb)
            if int8:
                _check_int8_nb(nb)
            ops = result["reports"][target]["ops"]
            folded = [op for op in FOLDED_QUANT_OPS if op in ops] if int8 else []
            log(f"{target}: all {len(ops) - len(folded)} op types have Lite kernels"
                + (f" ({' and '.join(folded)} folded into int8 kernels)" if folded else "")
                + f"; wrote {models[target]} ({os.path.getsize(nb) / 1e6:.1f} MB)")
        manifest = mf.make_manifest(
            lite_version, models, input_shape, mean, std, int(model.num_classes), fixes,
            {"config": os.path.abspath(config),
             "model_path": os.path.abspath(model_path) if model_path else None,
             "model": type(model).__name__,
             "backbone": type(getattr(model, "backbone", None)).__name__},
            output_op=output_op,
            precision={t: "fp16" if t in fp16 else precision if int8 else "fp32"
                       for t in targets},
            calibration=calibration)
        mf.write_manifest(manifest, tmp)
        _install(tmp, save_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"Paddle Lite {lite_version} models and {mf.FILENAME} in {save_dir}")
    return manifest
