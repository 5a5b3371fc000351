"""Checkpoint -> Paddle Lite ``.nb`` models (ARM for the phone, x86 for host checks) + manifest.

Steps, all in a temporary folder beside ``save_dir`` that is moved in place only when complete:
1. export the config's model in the legacy program format at the fixed input shape (child
   process with ``FLAGS_enable_pir_api=0``, see ``export_child.py``);
2. the compatibility pass of ``program_compat.py``;
3. per target: Lite's op report, one error listing every op without a kernel, then opt -> .nb;
4. manifest.json (see ``manifest.py``).

A failure leaves ``save_dir`` as it was.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from . import manifest as mf
from .errors import LiteError
from .lite_env import LiteRuntime
from .program_compat import make_lite_compatible

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROGRAM_PREFIX = "model"  # model.pdmodel / model.pdiparams: the legacy program opt reads


def parse_input_shape(text):
    """'1,3,256,256' or [1, 3, 256, 256] -> [1, 3, 256, 256] (N=1, C=3, H and W > 0)."""
    try:
        shape = [int(s) for s in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        shape = None
    if not shape or len(shape) != 4 or shape[0] != 1 or shape[1] != 3 or min(shape) <= 0:
        raise LiteError(f"--input_shape {text!r}: expected 1,3,H,W with H, W > 0")
    return shape


def parse_targets(text):
    targets = [t for t in (text.replace(",", " ").split() if isinstance(text, str) else text)]
    bad = [t for t in targets if t not in mf.TARGETS]
    if not targets or bad:
        raise LiteError(f"--valid_targets {text!r}: expected some of {', '.join(mf.TARGETS)}")
    return list(dict.fromkeys(targets))


def export_program(config, model_path, out_prefix, input_shape):
    """Run ``export_child`` in a fresh process; return its info dict."""
    env = dict(os.environ, FLAGS_enable_pir_api="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "deploy.lite.export_child", "--config", config,
           "--out_prefix", out_prefix, "--input_shape", ",".join(map(str, input_shape))]
    if model_path is not None:
        cmd += ["--model_path", model_path]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        user_errors = [line[len("error: "):] for line in err if line.startswith("error: ")]
        if user_errors:
            raise LiteError(user_errors[-1])
        raise LiteError("exporting the legacy program failed:\n" + "\n".join(err[-15:]))
    with open(out_prefix + ".info.json") as f:
        return json.load(f)


def check_ops(runtime, model_file, param_file, target):
    """Return Lite's op report for ``target``; LiteError listing every op it has no kernel for."""
    report, _ = runtime.run_worker(["ops", "--model_file", runtime.path(model_file),
                                    "--param_file", runtime.path(param_file),
                                    "--targets", target])
    if report["unsupported"]:
        raise LiteError(f"Paddle Lite {runtime.version()} has no {target} kernel for "
                        f"{len(report['unsupported'])} op(s) of this model: "
                        f"{', '.join(report['unsupported'])}")
    return report


def run_opt(runtime, model_file, param_file, target, out_prefix):
    runtime.run_worker(["opt", "--model_file", runtime.path(model_file),
                        "--param_file", runtime.path(param_file), "--targets", target,
                        "--out", runtime.path(out_prefix)])
    return out_prefix + ".nb"


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


def convert(config, model_path, save_dir, input_shape="1,3,256,256", valid_targets="arm",
            runtime=None, log=print):
    """Convert; return the manifest dict. Raises LiteError with one clear message on bad input."""
    input_shape = parse_input_shape(input_shape)
    targets = parse_targets(valid_targets)
    if not os.path.isfile(config):
        raise LiteError(f"--config {config}: no such file")
    if model_path is not None and not os.path.exists(model_path):
        raise LiteError(f"--model_path {model_path}: no such file")
    if model_path is None:
        log("warning: no --model_path: exporting randomly initialised weights")
    runtime = runtime or LiteRuntime.find()
    lite_version = runtime.version()

    save_dir = os.path.abspath(save_dir)
    parent = os.path.dirname(save_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(save_dir)}.partial-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the result is an ordinary folder
    try:
        prefix = os.path.join(tmp, PROGRAM_PREFIX)
        log(f"exporting {config} at {input_shape} (legacy program format)")
        info = export_program(config, model_path, prefix, input_shape)
        model_file, param_file = prefix + ".pdmodel", prefix + ".pdiparams"
        fixes = make_lite_compatible(model_file)
        log("compatibility fixes: " + (", ".join(f"{k} x{v}" for k, v in fixes.items() if v)
                                       or "none needed"))
        for target in targets:  # every target is checked before any .nb is written
            report = check_ops(runtime, model_file, param_file, target)
            log(f"{target}: all {len(report['ops'])} op types have Lite kernels")
        models = {}
        for target in targets:
            nb = run_opt(runtime, model_file, param_file, target,
                         os.path.join(tmp, f"{PROGRAM_PREFIX}_{target}"))
            models[target] = os.path.basename(nb)
            log(f"{target}: wrote {models[target]} ({os.path.getsize(nb) / 1e6:.1f} MB)")
        os.remove(prefix + ".info.json")
        for leftover in (prefix + ".pdiparams.info",):
            if os.path.exists(leftover):
                os.remove(leftover)
        manifest = mf.make_manifest(
            lite_version, models, input_shape, info["mean"], info["std"], info["num_classes"],
            fixes, {"config": os.path.abspath(config),
                    "model_path": os.path.abspath(model_path) if model_path else None,
                    "model": info["model"], "backbone": info["backbone"]})
        mf.write_manifest(manifest, tmp)
        _install(tmp, save_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"Paddle Lite {lite_version} models and {mf.FILENAME} in {save_dir}")
    return manifest
