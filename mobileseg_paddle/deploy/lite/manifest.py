"""The manifest written beside the ``.nb`` files: what a runner needs to feed the model, and the
Paddle Lite version that wrote it (a ``.nb`` loads only in the same Lite release).

manifest.json::

    {"format": "mobileseg-lite-manifest/1",
     "lite_version": "v2.13-rc",
     "models": {"arm": "model_arm.nb", "x86": "model_x86.nb"},
     "input": {"name": "x", "shape": [1, 3, 256, 256], "dtype": "float32", "layout": "NCHW",
               "color": "RGB", "resize": "bilinear",
               "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},   # x = (pixel / 255 - mean) / std
     "output": {"kind": "logits", "shape": [1, 19, 256, 256], "dtype": "float32",
                "layout": "NCHW"},        # --output_op none (the default)
     # or    {"kind": "labels", "shape": [1, 256, 256], "dtype": "int64"}   # --output_op argmax
     "precision": {"arm": "fp16", "x86": "fp32"},    # --precision (FP16 is ARM only)
     "num_classes": 19,
     "compat_fixes": {"relu6_threshold": 35, ...},
     "source": {"config": "...", "model_path": "..."}}

The C++ demo reads the same fields (deploy/lite/cpp/src/manifest.cc).
"""

import json
import os

from mobileseg_paddle.errors import UserError

FORMAT = "mobileseg-lite-manifest/1"
FILENAME = "manifest.json"
TARGETS = ("arm", "x86")
OUTPUT_OPS = ("none", "argmax")      # logits, or the label map computed in the graph
PRECISIONS = ("fp32", "fp16")
LABEL_DTYPE = "int64"  # what Paddle-Lite-Demo's segmentation demo reads (Lite's arg_max default)


def make_manifest(lite_version, models, input_shape, mean, std, num_classes, compat_fixes,
                  source, output_op="none", precision=None):
    n, c, h, w = input_shape
    if output_op == "argmax":
        output = {"kind": "labels", "shape": [n, h, w], "dtype": LABEL_DTYPE}
    else:
        output = {"kind": "logits", "shape": [n, num_classes, h, w], "dtype": "float32",
                  "layout": "NCHW"}
    return {
        "format": FORMAT,
        "lite_version": lite_version,
        "models": dict(models),
        "input": {"name": "x", "shape": [n, c, h, w], "dtype": "float32", "layout": "NCHW",
                  "color": "RGB", "resize": "bilinear", "mean": list(mean), "std": list(std)},
        "output": output,
        "precision": dict(precision or {t: "fp32" for t in models}),
        "num_classes": num_classes,
        "compat_fixes": dict(compat_fixes),
        "source": dict(source),
    }


def write_manifest(manifest, directory):
    path = os.path.join(directory, FILENAME)
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return path


def _field(manifest, path, where):
    value = manifest
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise UserError(f"{where}: field '{path}' is missing")
        value = value[key]
    return value


def read_manifest(directory):
    """Load and check ``directory/manifest.json``; UserError naming the file and field if bad."""
    path = os.path.join(directory, FILENAME)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file (convert the model with `mobileseg lite`)")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable JSON manifest ({e})") from None
    if _field(manifest, "format", path) != FORMAT:
        raise UserError(f"{path}: field 'format' is {manifest['format']!r}, expected {FORMAT!r}")
    shape = _field(manifest, "input.shape", path)
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(s, int) and s > 0
                                                               for s in shape)):
        raise UserError(f"{path}: field 'input.shape' is {shape!r}, expected 4 positive integers")
    for key in ("lite_version", "models", "input.mean", "input.std", "num_classes"):
        _field(manifest, key, path)
    kind = _field(manifest, "output.kind", path)
    if kind not in ("logits", "labels"):
        raise UserError(f"{path}: field 'output.kind' is {kind!r}, expected 'logits' or 'labels'")
    return manifest


def labels_of(manifest, output):
    """The (H, W) uint8 label map of a model's first output, logits or labels as the manifest
    says."""
    import numpy as np

    from .pipeline import labels_from_logits
    if manifest["output"]["kind"] == "logits":
        return labels_from_logits(output)
    labels = np.asarray(output)
    expected = manifest["output"]["shape"]
    if list(labels.shape) != list(expected) or labels.dtype.kind not in "iu":
        raise UserError(f"model output {labels.dtype}{list(labels.shape)}: the manifest says "
                        f"integer labels of shape {expected}")
    return labels[0].astype(np.uint8)


def model_file(manifest, directory, target):
    """Path of ``target``'s ``.nb``; UserError if the manifest has none or the file is missing."""
    where = os.path.join(directory, FILENAME)
    models = manifest["models"]
    if target not in models:
        raise UserError(f"{where}: no '{target}' model (converted for {sorted(models)}); "
                        f"convert with --valid_targets {target}")
    path = os.path.join(directory, models[target])
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file (listed in {where})")
    return path


def check_lite_version(manifest, directory, lite_version):
    if manifest["lite_version"] != lite_version:
        raise UserError(
            f"{os.path.join(directory, FILENAME)}: the model was converted by Paddle Lite "
            f"{manifest['lite_version']} but this runtime is Paddle Lite {lite_version}; "
            f"a .nb runs only with the Lite release that wrote it: convert it again")


def check_input_shape(manifest, directory, shape):
    expected = manifest["input"]["shape"]
    if list(shape) != list(expected):
        raise UserError(f"input of shape {list(shape)} does not fit the model: "
                        f"{os.path.join(directory, FILENAME)} says input.shape {expected}")
