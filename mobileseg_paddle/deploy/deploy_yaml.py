"""``deploy.yaml``, the description an export writes beside its model files, and the one
module that writes and reads it. Imports no paddle (the onnxruntime side reads it too).

Two blocks: ``Deploy`` is what PaddleSeg's own deploy tools read (model, params, transforms,
input_shape, output_op); ``MobileSegDeploy`` is ours, versioned, complete enough for inference
without the training config."""

import contextlib
import json
import os

import numpy as np
import yaml

from mobileseg_paddle.errors import UserError
from mobileseg_paddle.fslock import folder_lock

FILENAME = "deploy.yaml"
# present while an export replaces the files of an earlier one in the same folder: the journal
# of that switch (see ``recover``)
INCOMPLETE_MARKER = ".mobileseg-export-incomplete"
BACKUP_PREFIX = ".mobileseg-old."  # an earlier export's file while the next one moves in
# the files an export writes (the ours of a folder whose marker predates the journal)
EXPORT_FILES = (FILENAME, "model.pdmodel", "model.openvino.pdmodel", "model.json",
                "model.pdiparams", "model.openvino.pdiparams", "model.onnx")
DEPLOY_KEY = "MobileSegDeploy"
# 2 added ``engine`` (the default CPU engine of Paddle Inference) and ``files.openvino``; a
# version 1 file (neither) still loads, its engine is oneDNN. 3 added ``precision`` (int8
# exports of ``mobileseg quant``; absent: fp32), which a version-2 reader must not run as fp32
DEPLOY_FORMAT_VERSION = 3
READABLE_FORMAT_VERSIONS = (1, 2, 3)
PRECISIONS = ("fp32", "int8")  # of the exported model (bf16 is a way of running an fp32 one)
# the CPU engines of Paddle Inference (runners.paddle_inference sets them up)
CPU_ENGINES = ("onednn", "openvino", "plain")
DEFAULT_CPU_ENGINE = "onednn"
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
         config_path=None, engine=None, precision=None):
    """The content of deploy.yaml for an export of ``cfg``'s model (a paddleseg ``Config``).
    ``engine`` (Paddle formats): {"default": one of ``CPU_ENGINES``, "chosen": "measured",
    "--engine" (or "int8" in older INT8 exports), and when measured "measured": {"shape",
    "threads", "ms": {engine: ms}}}. ``precision``: {"name": one of ``PRECISIONS``, ...} (None: fp32)."""
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
    if engine is not None:
        ours["engine"] = dict(engine)
    ours["precision"] = dict(precision or {"name": "fp32"})
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


# ----------------------------------------------------------------------------------------------
# Replacing an export in place: a journal, backups, one commit point, recovery
#
# ``mobileseg export`` writes a new export into a staging folder next to the export folder, then
# switches the folder over (``export._move_into_place``) in steps that a kill can interrupt at
# any point:
#   1. the journal (INCOMPLETE_MARKER, written atomically) names the staging folder, the files
#      of the earlier export (``old``) and the files coming in (``new``, deploy.yaml last);
#   2. each old file is renamed to BACKUP_PREFIX + name;
#   3. each new file is renamed from the staging folder into the folder; moving deploy.yaml in
#      is the commit point (one rename: it is either still in staging or in the folder);
#   4. the backups, the staging folder and the journal are removed.
# ``recover`` reads the journal and either undoes steps 3 and 2 (not committed: the earlier
# export comes back, file for file) or finishes step 4 (committed). Every step of either is
# one rename or removal that a rerun skips when it is done, so a kill during recovery is
# recovered in turn. Files not named in the journal (a user's results/) are never touched.


def backup_name(name):
    return BACKUP_PREFIX + name


def _plain_name(name):
    return (isinstance(name, str) and name not in ("", ".", "..") and os.sep not in name
            and (os.altsep is None or os.altsep not in name))


def write_journal(folder, staging, old, new):
    """Step 1: the journal of a switch of ``folder`` to the export in ``staging`` (atomic)."""
    doc = {"staging": os.path.basename(staging), "old": list(old), "new": list(new)}
    path = os.path.join(folder, INCOMPLETE_MARKER)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def read_journal(folder):
    """The journal of an interrupted switch of ``folder``; None when there is none or it is not
    one this version wrote (an older version's empty marker, or a damaged file)."""
    try:
        with open(os.path.join(folder, INCOMPLETE_MARKER), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    staging, old, new = doc.get("staging"), doc.get("old"), doc.get("new")
    prefix = f".{os.path.basename(folder)}.partial-"
    if not (_plain_name(staging) and staging.startswith(prefix) and isinstance(old, list)
            and isinstance(new, list) and new and new[-1] == FILENAME
            and all(_plain_name(n) and not n.startswith(BACKUP_PREFIX) for n in old + new)):
        return None
    return {"staging": os.path.join(os.path.dirname(folder), staging), "old": old, "new": new}


def finish_switch(folder, journal):
    """Step 4 (the switch is committed): remove the backups, the staging folder, the journal."""
    for name in journal["old"]:
        backup = os.path.join(folder, backup_name(name))
        if os.path.lexists(backup):
            os.remove(backup)
    _remove_tree(journal["staging"])
    os.remove(os.path.join(folder, INCOMPLETE_MARKER))


def undo_switch(folder, journal):
    """Undo steps 3 and 2 (not committed): the new files back to the staging folder, the
    backups back to their names; then drop the staging folder and the journal."""
    staging = journal["staging"]
    for name in reversed(journal["new"]):
        here, there = os.path.join(folder, name), os.path.join(staging, name)
        if not os.path.lexists(there) and os.path.lexists(here):
            os.makedirs(staging, exist_ok=True)
            os.rename(here, there)
    for name in journal["old"]:
        backup = os.path.join(folder, backup_name(name))
        if os.path.lexists(backup):
            os.replace(backup, os.path.join(folder, name))
    os.remove(os.path.join(folder, INCOMPLETE_MARKER))
    _remove_tree(staging)


def _remove_tree(path):
    import shutil
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)


def recover(folder):
    """Bring ``folder`` back to one complete export after an export into it was killed while
    switching files (the caller holds ``export_lock(folder)``). Returns None (nothing to do),
    "undone" (the earlier export is back), "completed" (the new one is in place) or "unknown"
    (a marker without a journal of this version: nothing can be told; the marker stays)."""
    marker = os.path.join(folder, INCOMPLETE_MARKER)
    if os.path.lexists(marker + ".tmp"):  # killed while writing the journal: nothing moved
        os.remove(marker + ".tmp")
    if not os.path.lexists(marker):
        return None
    journal = read_journal(folder)
    if journal is None:
        return "unknown"
    committed = (not os.path.lexists(os.path.join(journal["staging"], FILENAME))
                 and os.path.isfile(os.path.join(folder, FILENAME)))
    if committed:
        finish_switch(folder, journal)
        return "completed"
    undo_switch(folder, journal)
    return "undone"


@contextlib.contextmanager
def export_lock(folder):
    """One export (or recovery) at a time in the folder that holds ``folder``."""
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    with folder_lock(parent):
        yield


def _interrupted(folder):
    return UserError(f"{folder}: holds an interrupted export (`mobileseg export` was stopped "
                     f"while replacing its files): re-export the model into it")


def recover_for_loading(folder):
    """Before reading ``folder``'s deploy.yaml: if an export into it was interrupted, recover
    it (waiting for an export that is still running); one error when that cannot be done."""
    if not os.path.lexists(os.path.join(folder, INCOMPLETE_MARKER)):
        return
    try:
        with export_lock(folder):
            state = recover(folder)
    except OSError:  # e.g. a read-only folder
        raise _interrupted(folder) from None
    if state == "unknown":
        raise _interrupted(folder)


class DeployConfig:
    """The parsed and checked ``deploy.yaml`` of an export folder. An export into the folder
    that was killed while replacing its files is recovered first (``recover``); with
    ``allow_recovery`` False (the export's own read, which has recovered already) such a folder
    is refused."""

    def __init__(self, path, allow_recovery=True):
        if os.path.isdir(path):
            path = os.path.join(path, FILENAME)
        folder = os.path.dirname(os.path.abspath(path))
        if allow_recovery:
            recover_for_loading(folder)
        elif os.path.lexists(os.path.join(folder, INCOMPLETE_MARKER)):
            raise _interrupted(folder)
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
        if version not in READABLE_FORMAT_VERSIONS:
            raise UserError(f"{path}: deploy format_version {version!r} is not supported by "
                            f"this version (reads {', '.join(map(str, READABLE_FORMAT_VERSIONS))}"
                            f"); re-export the model with this version's `mobileseg export`")
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
        # the CPU engine ``--engine auto`` runs: the recorded one, oneDNN before version 2
        engine = info.get("engine") or {}
        self.engine = engine.get("default", DEFAULT_CPU_ENGINE) if isinstance(
            engine, dict) else engine
        if self.format == "paddle" and self.engine not in CPU_ENGINES:
            raise UserError(f"{path}: engine {self.engine!r}: expected one of "
                            f"{', '.join(CPU_ENGINES)}")
        if self.format != "paddle":
            self.engine = None
        precision = info.get("precision") or {"name": "fp32"}
        self.precision = precision.get("name") if isinstance(precision, dict) else None
        if self.precision not in PRECISIONS:
            raise UserError(f"{path}: precision {self.precision!r}: expected one of "
                            f"{', '.join(PRECISIONS)}")
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
