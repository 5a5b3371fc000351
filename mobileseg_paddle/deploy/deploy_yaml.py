"""``deploy.yaml``, the description an export writes beside its model files, and the one
module that writes and reads it. Imports no paddle (the onnxruntime side reads it too).

Two blocks: ``Deploy`` is what PaddleSeg's own deploy tools read (model, params, transforms,
input_shape, output_op); ``MobileSegDeploy`` is ours, versioned, complete enough for inference
without the training config."""

import os

import numpy as np
import yaml

from mobileseg_paddle.errors import UserError

FILENAME = "deploy.yaml"
# present while an export replaces the files of an earlier one in the same folder
INCOMPLETE_MARKER = ".mobileseg-export-incomplete"
DEPLOY_KEY = "MobileSegDeploy"
DEPLOY_FORMAT_VERSION = 1
OUTPUT_OPS = ("argmax", "softmax", "none")
OUTPUT_KINDS = {"argmax": "label_map", "softmax": "probabilities", "none": "logits"}
MIN_INPUT_SIZE = 64  # the models are checked from 64x64 up
# a dynamic export runs an image at its own size up to this longer side; a larger image is
# scaled down to it (and the label map back up), so one huge image cannot exhaust the memory
MAX_INPUT_SIDE = 2048
# transforms that change only the label: they never enter the deployed image pipeline
LABEL_ONLY_TRANSFORMS = ("MSP_MapLabels",)

CITYSCAPES_CLASSES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle"]
KNOWN_DATASETS = {"Cityscapes": CITYSCAPES_CLASSES}


def make(cfg, num_classes, shape, output_op, fmt, files, mean, std, exporter, paddle_version,
         config_path=None):
    """The content of deploy.yaml for an export of ``cfg``'s model (a paddleseg ``Config``)."""
    transforms = [dict(t) for t in cfg.val_dataset_cfg.get("transforms", []) or []
                  if not (isinstance(t, dict) and t.get("type") in LABEL_ONLY_TRANSFORMS)]
    transforms = transforms or [{"type": "Normalize"}]
    for t in transforms:
        if t.get("type") == "Normalize":
            t.update(mean=list(mean), std=list(std))
    dataset_type = (cfg.val_dataset_cfg or cfg.train_dataset_cfg or {}).get("type")
    names = KNOWN_DATASETS.get(dataset_type)
    if names is None or len(names) != num_classes:
        names = [f"class_{i}" for i in range(num_classes)]
    if shape[2] == -1 or shape[3] == -1:
        size_policy = {"mode": "keep", "min_size": MIN_INPUT_SIZE, "max_side": MAX_INPUT_SIDE,
                       "note": "images run at their own size; a longer side above max_side is "
                               "scaled down to it, and the output back up"}
    else:
        size_policy = {"mode": "resize", "size": [shape[2], shape[3]],
                       "note": "images are resized to size (H, W); outputs are resized back"}
    model_cfg = cfg.dic.get("model", {})
    backbone = model_cfg.get("backbone", {})
    dtype = "int32" if output_op == "argmax" else "float32"
    ours = {
        "format_version": DEPLOY_FORMAT_VERSION,
        "exporter": exporter,
        "paddle_version": paddle_version,
        "format": fmt,
        "files": dict(files),
        "model": {"type": model_cfg.get("type"),
                  "backbone": backbone.get("type") if isinstance(backbone, dict) else None,
                  "config": os.path.basename(config_path) if config_path else None},
        "input": {"name": "x", "shape": list(shape), "dtype": "float32", "layout": "NCHW",
                  "color": "RGB", "size_policy": size_policy},
        "normalize": {"scale": "1/255", "mean": list(mean), "std": list(std)},
        "num_classes": int(num_classes),
        "class_names": names,
        "output": {"op": output_op, "kind": OUTPUT_KINDS[output_op], "dtype": dtype,
                   "shape": ["N", "H", "W"] if output_op == "argmax"
                   else ["N", int(num_classes), "H", "W"]},
    }
    paddleseg_block = {"transforms": transforms, "input_shape": list(shape),
                       "output_op": output_op, "output_dtype": dtype}
    if fmt == "paddle":
        paddleseg_block["model"] = files.get("legacy") or files.get("pir")
        paddleseg_block["params"] = files["params"]
    else:
        paddleseg_block["model"] = files["onnx"]
    return {"Deploy": paddleseg_block, DEPLOY_KEY: ours}


def write(folder, info):
    """Write ``info`` as ``folder/deploy.yaml``; return its path."""
    path = os.path.join(folder, FILENAME)
    with open(path, "w", encoding="utf-8") as f:
        yaml.dump(info, f, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    return path


class _Dumper(yaml.SafeDumper):
    """YAML without anchors/aliases, short lists of numbers or strings on one line."""

    def ignore_aliases(self, data):
        return True


def _represent_list(dumper, data):
    flow = all(isinstance(v, (int, float, str)) for v in data) and len(data) <= 4 or all(
        isinstance(v, (int, float)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def is_our_export(folder):
    """True when ``folder`` holds a deploy.yaml with our block, or an export of ours that was
    interrupted while replacing an earlier one (an export we may replace)."""
    if os.path.isfile(os.path.join(folder, INCOMPLETE_MARKER)):
        return True
    try:
        with open(os.path.join(folder, FILENAME), encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get(DEPLOY_KEY), dict)


class DeployConfig:
    """The parsed and checked ``deploy.yaml`` of an export folder."""

    def __init__(self, path):
        if os.path.isdir(path):
            path = os.path.join(path, FILENAME)
        if not os.path.isfile(path):
            raise UserError(f"deploy.yaml not found: {path}")
        self.path = os.path.abspath(path)
        self.dir = os.path.dirname(self.path)
        try:
            with open(path, encoding="utf-8") as f:
                doc = yaml.safe_load(f)
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: not a valid YAML file ({type(e).__name__})") from None
        if not isinstance(doc, dict) or DEPLOY_KEY not in doc:
            raise UserError(f"{path}: no '{DEPLOY_KEY}' section: not written by mobileseg "
                            f"export (re-export the model with `mobileseg export`)")
        info = doc[DEPLOY_KEY]
        version = info.get("format_version") if isinstance(info, dict) else None
        if version != DEPLOY_FORMAT_VERSION:
            raise UserError(f"{path}: deploy format_version {version!r} is not supported by "
                            f"this version (expects {DEPLOY_FORMAT_VERSION}); re-export the "
                            f"model with this version's `mobileseg export`")
        try:
            self.format = info["format"]
            self.files = dict(info["files"])
            inp = info["input"]
            self.input_name = inp["name"]
            self.input_shape = [int(v) for v in inp["shape"]]
            self.size_policy = dict(inp["size_policy"])
            self.mean = np.asarray(info["normalize"]["mean"], np.float32)
            self.std = np.asarray(info["normalize"]["std"], np.float32)
            self.num_classes = int(info["num_classes"])
            self.class_names = list(info["class_names"])
            self.output_kind = info["output"]["kind"]
            self.output_op = info["output"]["op"]
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: missing or malformed field {e}") from None
        if self.format not in ("paddle", "onnx"):
            raise UserError(f"{path}: format {self.format!r}: expected paddle or onnx")
        if len(self.input_shape) != 4 or self.input_shape[1] != 3:
            raise UserError(f"{path}: input shape {self.input_shape}: expected [N, 3, H, W]")
        for key, name in self.files.items():
            if (not isinstance(name, str) or os.path.isabs(name)
                    or os.path.normpath(name).split(os.sep)[0] == os.pardir):
                raise UserError(f"{path}: files.{key} is {name!r}: expected a file name inside "
                                f"the export folder")
        self.dynamic_hw = -1 in self.input_shape[2:]
        self.info = info

    def file(self, key):
        """Absolute path of a model file named in ``files``; raises if it is missing."""
        name = self.files.get(key)
        if not name:
            raise UserError(f"{self.path}: no '{key}' file in this export "
                            f"(has: {', '.join(sorted(self.files))})")
        path = os.path.join(self.dir, name)
        if not os.path.isfile(path):
            raise UserError(f"{key} file not found: {path}")
        return path
