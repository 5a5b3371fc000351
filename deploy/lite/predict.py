"""Run a converted model's x86 ``.nb`` with Paddle Lite on the host (host checks, benchmark).

The same checks as the phone demo come first: manifest present and readable, written by the
Lite version we run, model file present, input of the manifest's shape.
"""

import os
import tempfile

import numpy as np

from . import manifest as mf
from .errors import LiteError
from .lite_env import LiteRuntime


def _checked_model(model_dir, runtime, target="x86"):
    manifest = mf.read_manifest(model_dir)
    mf.check_lite_version(manifest, model_dir, runtime.version())
    return manifest, mf.model_file(manifest, model_dir, target)


def run_nb(model_dir, x, runtime=None):
    """Outputs (list of arrays) of ``model_dir``'s x86 model for input ``x`` (1, 3, H, W)."""
    runtime = runtime or LiteRuntime.find()
    manifest, nb = _checked_model(model_dir, runtime)
    x = np.ascontiguousarray(x, dtype=np.float32)
    mf.check_input_shape(manifest, model_dir, x.shape)
    with tempfile.TemporaryDirectory(prefix="mobileseg-lite-run-") as tmp:
        x_path, out_path = os.path.join(tmp, "x.npy"), os.path.join(tmp, "out.npz")
        np.save(x_path, x)
        runtime.run_worker(["run", "--nb", runtime.path(nb), "--input", runtime.path(x_path),
                            "--output", runtime.path(out_path), "--threads", "1"])
        with np.load(out_path) as out:
            return [out[f"out_{i}"] for i in range(len(out.files))]


def benchmark_nb(model_dir, threads=1, warmup=10, repeats=50, runtime=None):
    """Lite x86 latency of ``model_dir``'s model: dict with median_ms, mean_ms, min_ms ..."""
    runtime = runtime or LiteRuntime.find()
    manifest, nb = _checked_model(model_dir, runtime)
    shape = ",".join(str(s) for s in manifest["input"]["shape"])
    result, _ = runtime.run_worker(["bench", "--nb", runtime.path(nb), "--shape", shape,
                                    "--threads", str(threads), "--warmup", str(warmup),
                                    "--repeats", str(repeats)])
    return result


def segment(model_dir, image_path, out_dir, runtime=None):
    """Segment one image with the x86 model; write the mask and overlay PNGs as the demo does."""
    from .pipeline import labels_from_logits, preprocess, save_results
    runtime = runtime or LiteRuntime.find()
    manifest, _ = _checked_model(model_dir, runtime)
    if not os.path.isfile(image_path):
        raise LiteError(f"{image_path}: no such image file")
    _, _, h, w = manifest["input"]["shape"]
    x = preprocess(image_path, h, w, manifest["input"]["mean"], manifest["input"]["std"])
    logits = run_nb(model_dir, x, runtime)[0]
    stem = os.path.splitext(os.path.basename(image_path))[0]
    return save_results(image_path, labels_from_logits(logits), out_dir, stem)
