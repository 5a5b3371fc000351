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
     "precision": {"arm": "fp16", "x86": "fp32"},    # --precision (FP16 and INT8 are ARM only)
     "num_classes": 19,
     "compat_fixes": {"relu6_threshold": 35, ...},
     "source": {"config": "...", "model_path": "..."},
     # --precision int8 only: how the activation scales were found
     "calibration": {"images": 32, "source": "train_dataset", "transforms": "val_dataset",
                     "activations": "avg", "weights": "channel_wise_abs_max",
                     "sizes": ["512x512"], "resized_to": "256x256"}}

The C++ demo reads the same fields (deploy/lite/cpp/src/manifest.cc).
"""

import json
import math
import os

from mobileseg_paddle.errors import UserError

FORMAT = "mobileseg-lite-manifest/1"
FILENAME = "manifest.json"
TARGETS = ("arm", "x86")
OUTPUT_OPS = ("none", "argmax")      # logits, or the label map computed in the graph
PRECISIONS = ("fp32", "fp16", "int8")
LABEL_DTYPE = "int64"  # what Paddle-Lite-Demo's segmentation demo reads (Lite's arg_max default)
MAX_SIDE = 8192  # input.shape H, W: larger would make preprocess allocate gigabytes for one image
MAX_MANIFEST_BYTES = 1 << 20  # ours are ~1 kB; never load a huge file into memory


def make_manifest(lite_version, models, input_shape, mean, std, num_classes, compat_fixes,
                  source, output_op="none", precision=None, calibration=None):
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
        **({"calibration": dict(calibration)} if calibration else {}),
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


def _bad(where, path, value, expected):
    """The one error of a field with a wrong value (the value cut short: it may be huge)."""
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return UserError(f"{where}: field '{path}' is {shown}, expected {expected}")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)  # JSON true is no size or count


def _is_number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)  # json.load accepts NaN and Infinity
    except OverflowError:  # an int too large for a float
        return False


def _plain_name(name):
    """A file name inside the model folder: no directory part, so never a file outside it."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "\0" not in name
            and not any(sep in name for sep in ("/", "\\", os.sep, os.altsep) if sep)
            and not os.path.isabs(name))


def _check_model_name(name, target, where):
    if not _plain_name(name):
        raise _bad(where, f"models.{target}", name,
                   "a plain file name in the model folder (no path, no '..')")


def _check_manifest(manifest, where):
    """Every field a runner (this package's, the C++ demo) reads, of the type and range it
    needs: a hostile manifest fails here with one line, not later in numpy or Lite."""
    if _field(manifest, "format", where) != FORMAT:
        raise _bad(where, "format", manifest["format"], repr(FORMAT))
    if not isinstance(_field(manifest, "lite_version", where), str):
        raise _bad(where, "lite_version", manifest["lite_version"], "a string")
    models = _field(manifest, "models", where)
    if not isinstance(models, dict) or not models:
        raise _bad(where, "models", models, f"an object naming the .nb of some of {', '.join(TARGETS)}")
    for target, name in models.items():
        _check_model_name(name, target, where)
    shape = _field(manifest, "input.shape", where)
    if not (isinstance(shape, list) and len(shape) == 4 and all(_is_int(s) for s in shape)
            and shape[:2] == [1, 3] and all(1 <= s <= MAX_SIDE for s in shape[2:])):
        raise _bad(where, "input.shape", shape, f"[1, 3, H, W] with H, W in 1..{MAX_SIDE}")
    for key in ("input.mean", "input.std"):
        values = _field(manifest, key, where)
        if not (isinstance(values, list) and len(values) == 3
                and all(_is_number(v) for v in values)):
            raise _bad(where, key, values, "a list of 3 finite numbers (R, G, B)")
    if 0 in manifest["input"]["std"]:  # x = (pixel / 255 - mean) / std
        raise _bad(where, "input.std", manifest["input"]["std"], "3 non-zero numbers")
    num_classes = _field(manifest, "num_classes", where)
    if not (_is_int(num_classes) and 1 <= num_classes <= 256):  # labels are saved as uint8
        raise _bad(where, "num_classes", num_classes, "an integer in 1..256")
    kind = _field(manifest, "output.kind", where)
    _, _, h, w = shape
    if kind == "logits":
        expected_shape, dtypes = [1, num_classes, h, w], ("float32",)
    elif kind == "labels":
        expected_shape, dtypes = [1, h, w], ("int64", "int32")
    else:
        raise _bad(where, "output.kind", kind, "'logits' or 'labels'")
    out_shape = _field(manifest, "output.shape", where)
    if not (isinstance(out_shape, list) and all(_is_int(s) for s in out_shape)
            and out_shape == expected_shape):  # what labels_of checks a run's output against
        raise _bad(where, "output.shape", manifest["output"]["shape"],
                   f"{expected_shape} ({kind} of input.shape {shape}, num_classes {num_classes})")
    if _field(manifest, "output.dtype", where) not in dtypes:
        raise _bad(where, "output.dtype", manifest["output"]["dtype"],
                   " or ".join(repr(d) for d in dtypes))
    precision = manifest.get("precision", {})  # optional; check.py reads precision.arm
    if not (isinstance(precision, dict) and all(p in PRECISIONS for p in precision.values())):
        raise _bad(where, "precision", precision, f"an object of target: {' or '.join(PRECISIONS)}")
    source = manifest.get("source", {})  # optional; check.py reads source.config / model_path
    if not (isinstance(source, dict) and all(source.get(k) is None or isinstance(source[k], str)
                                             for k in ("config", "model_path"))):
        raise _bad(where, "source", source, "an object with string 'config' and 'model_path'")


def read_manifest(directory):
    """Load and check ``directory/manifest.json``; UserError naming the file and field if bad."""
    path = os.path.join(directory, FILENAME)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file (convert the model with `mobileseg lite`)")
    if os.path.getsize(path) > MAX_MANIFEST_BYTES:
        raise UserError(f"{path}: {os.path.getsize(path)} bytes, not a manifest (expected at "
                        f"most {MAX_MANIFEST_BYTES})")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: nesting too deep
        raise UserError(f"{path}: not a readable JSON manifest ({type(e).__name__}: "
                        f"{str(e)[:120]})") from None
    _check_manifest(manifest, path)
    return manifest


def labels_of(manifest, output):
    """The (H, W) uint8 label map of a model's first output, logits or labels as the manifest
    says; UserError if the run's output is not of the manifest's output.shape and kind."""
    import numpy as np

    from .pipeline import labels_from_logits
    output = np.asarray(output)
    kind, expected = manifest["output"]["kind"], manifest["output"]["shape"]
    dtype_kinds = "f" if kind == "logits" else "iu"
    if list(output.shape) != list(expected) or output.dtype.kind not in dtype_kinds:
        what = "float logits" if kind == "logits" else "integer labels"
        raise UserError(f"model output {output.dtype}{list(output.shape)}: the manifest says "
                        f"{what} of output.shape {expected}")
    if kind == "logits":
        return labels_from_logits(output)
    return output[0].astype(np.uint8)


def model_file(manifest, directory, target):
    """Path of ``target``'s ``.nb``; UserError if the manifest has none, names a file outside
    ``directory`` or the file is missing."""
    where = os.path.join(directory, FILENAME)
    models = manifest["models"]
    if target not in models:
        raise UserError(f"{where}: no '{target}' model (converted for {sorted(models)}); "
                        f"convert with --valid_targets {target}")
    _check_model_name(models[target], target, where)  # also for a manifest not read here
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
