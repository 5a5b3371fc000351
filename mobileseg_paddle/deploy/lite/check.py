"""``mobileseg lite check``: run a converted model's ARM ``.nb`` on ARM kernels and compare it
with the reference on one input: ``--image`` through the manifest's preprocessing; without it,
fixed noise of image magnitude (fp32, fp16) or, for int8, whose activation scales hold for images
only, the first calibration image (the source config's train_dataset through its val transforms).

The ARM kernels are Paddle Lite's light API built for armv8 Linux from source
(``arm_runtime.py``, cached), run by a small C++ program (``deploy/lite/cpp/tools/run_nb.cc``,
cross-compiled once per runtime) under ``qemu-aarch64 -cpu max`` (numerics, not speed; the
library is compiled for ARMv8.2 with FP16 arithmetic as a whole, as on a Snapdragon 855). The
reference is our dygraph model (``--reference dygraph``, the default: the manifest's config and
weights) or the x86 ``.nb`` (``--reference x86``, Lite's x86 kernels).

Bounds, per the model's precision (the manifest's ``precision.arm``):
- fp32: relative L2 error of the logits <= 1e-4 and an identical argmax;
- fp16: relative L2 <= 1e-2 and argmax agreement >= 99%;
- int8: argmax agreement >= 97% (the relative L2 is printed, not bounded: see ``BOUNDS``).
A model converted with ``--output_op argmax`` has only labels: the agreement bound applies.

Before anything runs, one clear error for: no qemu, no runtime, a ``.nb`` of another Lite
release, an x86 ``.nb`` given as the ARM model (read from the file itself: a ``.nb`` names the
target of each kernel it holds).
"""

import hashlib
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

from mobileseg_paddle import resources
from mobileseg_paddle.errors import UserError, one_line

from . import manifest as mf

BOUNDS = {"fp32": {"rel_l2": 1e-4, "agreement": 1.0},
          "fp16": {"rel_l2": 1e-2, "agreement": 0.99},
          # int8 logits' relative error is no measure of a working model (0.76 with labels
          # agreeing on 94.5 % on noise, where the calibrated scales clip): only labels bounded
          "int8": {"rel_l2": None, "agreement": 0.97}}
# Lite's TargetType numbers, as a .nb records them in each kernel's "op/alias/target/precision/
# layout" key (lite/api/paddle_place.h)
TARGET_NAMES = {1: "host", 2: "x86", 3: "cuda", 4: "arm", 5: "opencl"}
_KERNEL_KEY = re.compile(rb"([a-z][a-z0-9_]*)/([A-Za-z0-9_]+)/(\d+)/(\d+)/(\d+)\x00")
QEMU_NAMES = ("qemu-aarch64-static", "qemu-aarch64")
AARCH64_SYSROOT = "/usr/aarch64-linux-gnu"  # Debian's libc6-arm64-cross (with the cross g++)
CROSS_CXX = "aarch64-linux-gnu-g++"
RUN_NB_SOURCE = resources.path("deploy", "lite", "cpp", "tools", "run_nb.cc")


def read_nb(path):
    """{"version": Lite release that wrote it, "kernels": {(op, alias, target, precision,
    layout)}, "targets": {names}} read from the bytes of a naive-buffer ``.nb``."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"{path}: cannot read the model ({e.strerror})") from None
    version = data[2:18].split(b"\0")[0].decode("ascii", "replace") if len(data) > 18 else ""
    kernels = {(op.decode(), alias.decode(), int(t), int(p), int(layout))
               for op, alias, t, p, layout in _KERNEL_KEY.findall(data)}
    if not version.startswith("v") or not kernels:
        raise UserError(f"{path}: not a Paddle Lite naive-buffer model (.nb)")
    return {"version": version, "kernels": kernels,
            "targets": {TARGET_NAMES.get(k[2], str(k[2])) for k in kernels}}


def check_arm_nb(path, lite_version):
    """UserError unless ``path`` is an ARM ``.nb`` written by ``lite_version``."""
    info = read_nb(path)
    if info["version"] != lite_version:
        raise UserError(f"{path}: written by Paddle Lite {info['version']}, but the ARM runtime "
                        f"is Paddle Lite {lite_version}; a .nb runs only with the Lite release "
                        f"that wrote it: convert it again")
    foreign = sorted(info["targets"] - {"arm", "host"})
    if foreign:
        raise UserError(f"{path}: a model for {', '.join(foreign)} kernels, not ARM "
                        f"(convert with --valid_targets arm)")
    return info


def kernel_precision(info):
    """fp16, int8 or fp32: what the kernels of a ``read_nb`` result compute in (Lite's
    PrecisionType 5 kFP16, 2 kInt8; an INT8 model keeps FP32 kernels between its int8 ones)."""
    precisions = {k[3] for k in info["kernels"]}
    return "fp16" if 5 in precisions else "int8" if 2 in precisions else "fp32"


def find_qemu():
    """Path of qemu-aarch64 (user mode); UserError naming the package if there is none."""
    for name in QEMU_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise UserError("no qemu-aarch64 to run ARM code on this machine: install qemu-user-static "
                    "(Debian/Ubuntu: apt-get install qemu-user-static)")


def rel_l2(got, reference):
    got, reference = np.asarray(got, np.float64), np.asarray(reference, np.float64)
    return float(np.linalg.norm(got - reference) / max(np.linalg.norm(reference), 1e-30))


def compare(output, reference_logits, precision, kind="logits"):
    """{"rel_l2" (None for labels), "agreement", "bounds", "passed"} of an ARM output against
    reference logits (1, C, H, W)."""
    bounds = BOUNDS[precision]
    ref_labels = np.argmax(reference_logits[0], axis=0)
    if kind == "logits":
        err = rel_l2(output, reference_logits)
        labels = np.argmax(np.asarray(output)[0], axis=0)
    else:
        err, labels = None, np.asarray(output)[0]
    agreement = float(np.mean(labels == ref_labels))
    passed = agreement >= bounds["agreement"] and (err is None or bounds["rel_l2"] is None
                                                   or err <= bounds["rel_l2"])
    return {"rel_l2": err, "agreement": agreement, "bounds": bounds, "passed": passed}


def fixed_input(shape, seed=0):
    """The check's input: standard normal values (the magnitude of normalised images)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def check_input(manifest, model_dir, precision, image=None):
    """The check's (1, 3, H, W) input: ``image`` preprocessed as the demo does; else noise, or
    for int8 the first calibration image (see the module docstring)."""
    shape, spec = manifest["input"]["shape"], manifest["input"]
    if image is not None:
        from .pipeline import preprocess
        return preprocess(image, shape[2], shape[3], spec["mean"], spec["std"])
    if precision != "int8":
        return fixed_input(shape)
    from .convert import calibration_batches
    config = manifest.get("source", {}).get("config")
    try:
        if not config or not os.path.isfile(config):
            raise UserError(f"{os.path.join(model_dir, mf.FILENAME)}: field 'source.config' "
                            f"names no existing config ({config})")
        return calibration_batches(config, 1, shape, log=lambda message: None)[0][0]
    except UserError as e:
        raise UserError(f"{e}: an int8 model is checked on an image (its activation scales "
                        f"are calibrated on images, not noise); pass --image") from None


def dygraph_logits(manifest, model_dir, x):
    """Our dygraph model's logits for ``x``, from the config and weights the manifest names."""
    import paddle

    from mobileseg_paddle.builder import build_model
    source = manifest.get("source", {})
    config, weights = source.get("config"), source.get("model_path")
    where = os.path.join(model_dir, mf.FILENAME)
    if not config or not os.path.isfile(config):
        raise UserError(f"{where}: field 'source.config' names no existing config ({config}); "
                        f"use --reference x86")
    if weights is None:
        raise UserError(f"{where}: converted without --model_path (random weights): no "
                        f"dygraph reference; use --reference x86")
    if not os.path.isfile(weights):
        raise UserError(f"{where}: field 'source.model_path' {weights}: no such file; "
                        f"use --reference x86")
    model = build_model(config, weights, drop_pretrained=True)[0]
    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(x))[0].numpy()


def x86_logits(manifest, model_dir, x, lite_runtime=None):
    """Lite x86 kernels' output for ``x`` (the x86 .nb of the same conversion)."""
    if manifest["output"]["kind"] != "logits":
        raise UserError(f"{os.path.join(model_dir, mf.FILENAME)}: an --output_op argmax model "
                        f"has no logits to compare with; use --reference dygraph")
    from .predict import run_nb
    return run_nb(model_dir, x, lite_runtime)[0]


def build_runner(runtime):
    """The aarch64 run_nb program linked against ``runtime`` (``arm_runtime.build_runtime``),
    compiled once beside the runtime's library (keyed by the source's digest)."""
    with open(RUN_NB_SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    lib_dir = os.path.dirname(runtime["lib"])
    exe = os.path.join(lib_dir, f"run_nb-{digest}")
    if os.path.isfile(exe):
        return exe
    cxx = shutil.which(CROSS_CXX)
    if cxx is None:
        raise UserError(f"no {CROSS_CXX} to build the ARM runner: install g++-aarch64-linux-gnu")
    tmp = f"{exe}.{os.getpid()}.tmp"
    proc = subprocess.run([cxx, "-std=c++14", "-O2", RUN_NB_SOURCE, "-o", tmp,
                           f"-I{runtime['include']}", f"-L{lib_dir}", f"-Wl,-rpath,{lib_dir}",
                           "-lpaddle_light_api_shared"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"building the ARM runner {RUN_NB_SOURCE} failed: "
                        f"{one_line(RuntimeError(proc.stderr))}")
    os.replace(tmp, exe)
    return exe


def run_on_arm(runner, nb, x, qemu=None, timeout=1800):
    """Output 0 of ``nb`` for ``x`` on ARM kernels: ``runner`` (``build_runner``) under qemu."""
    qemu = qemu or find_qemu()
    x = np.ascontiguousarray(x, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="mobileseg-arm-") as tmp:
        x.tofile(os.path.join(tmp, "x.f32"))
        out = os.path.join(tmp, "y")
        cmd = [qemu, "-cpu", "max", "-L", AARCH64_SYSROOT, runner, nb,
               os.path.join(tmp, "x.f32"), ",".join(map(str, x.shape)), out]
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"{nb}: the ARM run under qemu took over {timeout} s") from None
        log = proc.stdout.decode("utf-8", "replace")
        if proc.returncode != 0:
            how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
            tail = " | ".join(line.strip() for line in log.strip().splitlines()[-3:])
            raise UserError(f"{nb}: the ARM run under qemu failed ({how}): {tail}")
        with open(out + ".txt") as f:
            dtype, *dims = f.read().split()
        return np.fromfile(out + ".bin", dtype=dtype).reshape([int(d) for d in dims])


def check(model_dir, reference="dygraph", runtime=None, log=print, source=None, image=None):
    """Run ``model_dir``'s ARM model under qemu and compare; returns the comparison dict (with
    "precision", "reference", "nb"). ``runtime``: ``arm_runtime.build_runtime``'s result, else
    built (cached) from ``source``, after the cheap checks; ``image``: the input (see
    ``check_input``). UserError on bad input; the caller decides what a failed bound means (the
    command exits 1)."""
    from . import arm_runtime
    if reference not in ("dygraph", "x86"):
        raise UserError(f"--reference {reference!r}: expected dygraph or x86")
    manifest = mf.read_manifest(model_dir)
    nb = mf.model_file(manifest, model_dir, "arm")
    precision = manifest.get("precision", {}).get("arm", "fp32")
    if precision not in BOUNDS:
        raise UserError(f"{os.path.join(model_dir, mf.FILENAME)}: field 'precision.arm' is "
                        f"{precision!r}, expected one of {', '.join(BOUNDS)}")
    qemu = find_qemu()
    runtime = runtime or arm_runtime.build_runtime(source, log=log)  # cached: seconds after
    info = check_arm_nb(nb, runtime["version"])
    if kernel_precision(info) != precision:
        raise UserError(f"{nb}: its kernels are not the {precision} the manifest's "
                        f"'precision.arm' says")
    mf.check_lite_version(manifest, model_dir, runtime["version"])
    x = check_input(manifest, model_dir, precision, image)
    ref = dygraph_logits(manifest, model_dir, x) if reference == "dygraph" else x86_logits(
        manifest, model_dir, x)
    log(f"running {nb} ({precision}) on Paddle Lite {runtime['version']} armv8 kernels under "
        f"{os.path.basename(qemu)} -cpu max (emulated: numerics, not speed)")
    out = run_on_arm(build_runner(runtime), nb, x, qemu)
    result = compare(out, ref, precision, manifest["output"]["kind"])
    result.update(precision=precision, reference=reference, nb=nb)
    return result


def describe(result):
    """The result line the command prints."""
    bound = result["bounds"]["rel_l2"]
    err = "" if result["rel_l2"] is None else f"relative L2 {result['rel_l2']:.2e} " \
        f"({'not bounded' if bound is None else f'bound {bound:g}'}), "
    return (f"{'PASS' if result['passed'] else 'FAIL'}: {result['nb']} ({result['precision']}) "
            f"against {result['reference']}: {err}argmax agreement "
            f"{100 * result['agreement']:.3f}% (bound {100 * result['bounds']['agreement']:g}%)")
