"""The host runner: run, segment with or time a converted model's x86 ``.nb`` on this machine.

The same checks as the phone demo, the manifest's first: manifest present and readable, model
file present, input of the manifest's shape, written by the Lite version we run (the worker
reports its version and loads nothing from another release). One worker process per call.
"""

import os

import numpy as np

from mobileseg_paddle.errors import UserError

from . import manifest as mf
from .lite_env import LiteRuntime

TARGET = "x86"  # the host's Lite target


def _checked_model(model_dir):
    manifest = mf.read_manifest(model_dir)
    return manifest, mf.model_file(manifest, model_dir, TARGET)


def run_nb(model_dir, x, runtime=None):
    """Outputs (list of arrays) of ``model_dir``'s x86 model for input ``x`` (1, 3, H, W)."""
    manifest, nb = _checked_model(model_dir)
    x = np.ascontiguousarray(x, dtype=np.float32)
    mf.check_input_shape(manifest, model_dir, x.shape)
    runtime = runtime or LiteRuntime.find()
    version, outputs = runtime.run(nb, x, threads=1, expect_version=manifest["lite_version"])
    mf.check_lite_version(manifest, model_dir, version)
    return outputs


def benchmark_nb(model_dir, threads=1, warmup=10, repeats=50, runtime=None):
    """Lite x86 latency of ``model_dir``'s model: dict with median_ms, mean_ms, min_ms ..."""
    manifest, nb = _checked_model(model_dir)
    runtime = runtime or LiteRuntime.find()
    result = runtime.bench(nb, manifest["input"]["shape"], threads=threads, warmup=warmup,
                           repeats=repeats, expect_version=manifest["lite_version"])
    mf.check_lite_version(manifest, model_dir, result["version"])
    return result


def segment(model_dir, image_path, out_dir, runtime=None):
    """Segment one image with the x86 model; write ``<stem>_mask.png`` and ``<stem>_overlay.png``
    at the image's size as the demo does; return their paths."""
    from .pipeline import preprocess, save_results
    manifest, _ = _checked_model(model_dir)
    if not os.path.isfile(image_path):
        raise UserError(f"{image_path}: no such image file")
    _, _, h, w = manifest["input"]["shape"]
    x = preprocess(image_path, h, w, manifest["input"]["mean"], manifest["input"]["std"])
    labels = mf.labels_of(manifest, run_nb(model_dir, x, runtime)[0])
    stem = os.path.splitext(os.path.basename(image_path))[0]
    return save_results(image_path, labels, out_dir, stem)
