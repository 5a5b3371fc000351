"""Input checks for the command line: each problem becomes one ``UserError`` whose message
names the file or config field and what was expected.

- ``check_config(cfg)``: unknown top-level keys, unknown component types or parameters, values
  of the wrong type (judged from the parameter's default), malformed or empty file lists,
  ``MSP_MapLabels`` not placed first.
- ``check_samples(dataset, role)``: every image/label listed exists, its header is readable and
  label and image have the same size (headers only, so it is fast even for large datasets).
- ``CheckedDataset(dataset, role)``: wraps a dataset for the trainer; a sample that cannot be
  decoded, or a label value outside [0, num_classes) other than the ignore index, raises
  ``UserError`` naming the file when the sample is loaded.
"""

import difflib
import inspect
import os

import numpy as np
import paddle
from PIL import Image

from .errors import UserError

TOP_LEVEL_KEYS = ("batch_size", "iters", "train_dataset", "val_dataset", "optimizer",
                  "lr_scheduler", "loss", "distill_loss", "model", "test_config", "export",
                  "to_static_training")
# filled in by paddleseg (Config's rules, SegBuilder) when absent, so never "missing"
INJECTED_PARAMS = ("num_classes", "in_channels", "ignore_index")
LR_EXTRA_KEYS = ("warmup_iters", "warmup_start_lr")
TEST_CONFIG_KEYS = ("aug_eval", "scales", "flip_horizontal", "flip_vertical", "is_slide",
                    "crop_size", "stride", "auc_roc")




# --- config -------------------------------------------------------------------------------------

def _suggest(name, choices):
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _expect_type(where, value, default):
    """Raise if ``value`` does not have the kind of type ``default`` has (None: anything)."""
    if default is None or default is inspect.Parameter.empty:
        return
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, want = isinstance(value, str), "a string"
    elif isinstance(default, (list, tuple)):
        ok, want = isinstance(value, (list, tuple)), "a list"
    elif isinstance(default, dict):
        ok, want = isinstance(value, dict), "a mapping"
    else:
        return
    if not ok:
        hint = " (YAML reads 1e-3 as a string: write 1.0e-3)" if (
            want == "a number" and isinstance(value, str)) else ""
        raise UserError(f"config {where}: expected {want}, got {type(value).__name__} "
                         f"{value!r}{hint}")


def _component_class(where, type_name, managers):
    for mgr in managers:
        if type_name in mgr.components_dict:
            return mgr.components_dict[type_name]
    known = [n for mgr in managers for n in mgr.components_dict]
    raise UserError(f"config {where}.type: unknown component {type_name!r}"
                     f"{_suggest(type_name, known)}")


def _check_params(where, cls_name, params, given, allowed_extra=()):
    """Unknown keys, missing required keys and value types of a component's arguments."""
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    names = [n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    for key, value in given.items():
        if key in allowed_extra:
            continue
        if key not in params:
            if takes_any:
                continue
            raise UserError(f"config {where}: {cls_name} has no parameter {key!r}"
                             f"{_suggest(key, names)}; accepted: {', '.join(names)}")
        _expect_type(f"{where}.{key}", value, _example_value(key, params[key]))
    for name in names:
        p = params[name]
        if (p.default is p.empty and name not in given and name not in INJECTED_PARAMS):
            raise UserError(f"config {where}: {cls_name} needs {name!r}, which is not set")


_ANNOTATED = {float: 1.0, "float": 1.0, int: 1, "int": 1, bool: False, "bool": False,
              str: "", "str": ""}
_NAMED = {"num_classes": 1, "in_channels": 1, "ignore_index": 1}


def _example_value(name, param):
    """A value of the type ``param`` takes: its default, else its simple annotation, else a
    convention for well-known names; None when unknown."""
    if param.default is not param.empty and param.default is not None:
        return param.default
    try:
        return _ANNOTATED[param.annotation]
    except (KeyError, TypeError):
        return _NAMED.get(name)


def _signature(component):
    target = component.__init__ if inspect.isclass(component) else component
    params = dict(inspect.signature(target).parameters)
    params.pop("self", None)
    return params


def _check_component(where, cfg, managers):
    """Check a ``{type: ..., ...}`` config and, recursively, the components inside it."""
    from paddleseg.cvlibs import manager
    type_name = cfg["type"]
    if not isinstance(type_name, str):
        raise UserError(f"config {where}.type: expected a component name, got {type_name!r}")
    if managers == (manager.OPTIMIZERS,) and type_name == "SGD" and "momentum" in cfg:
        type_name = "Momentum"  # SegBuilder does the same substitution
    cls = _component_class(where, type_name, managers)
    given = {k: v for k, v in cfg.items() if k != "type"}
    _check_params(where, type_name, _signature(cls), given)
    all_managers = (manager.MODELS, manager.BACKBONES, manager.DATASETS, manager.TRANSFORMS,
                    manager.LOSSES, manager.OPTIMIZERS)
    for key, value in given.items():
        if isinstance(value, dict) and "type" in value:
            _check_component(f"{where}.{key}", value, all_managers)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict) and "type" in item:
                    _check_component(f"{where}.{key}[{i}]", item, all_managers)


def _check_file_list(where, path, mode, separator=" "):
    """The list file exists, is not empty, and each line is '<image><sep><label>'."""
    if not isinstance(path, str):
        raise UserError(f"config {where}: expected a file path, got {path!r}")
    if not os.path.isfile(path):
        raise UserError(f"config {where}: file list not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read file list {path}: {e}") from None
    while lines and not lines[-1].strip():
        lines.pop()  # trailing blank lines are harmless
    if not lines:
        raise UserError(f"file list {path} is empty: expected lines '<image>{separator}<label>'")
    if mode in ("train", "val"):
        for n, line in enumerate(lines, 1):
            if len(line.strip().split(separator)) != 2:
                raise UserError(f"file list {path} line {n}: expected "
                                 f"'<image>{separator}<label>', got {line!r}")


def _check_dataset_cfg(where, cfg):
    if cfg.get("type") != "Dataset":
        return
    mode = str(cfg.get("mode", "train")).lower()
    key = {"train": "train_path", "val": "val_path"}.get(mode, "test_path")
    if cfg.get(key) is not None:
        _check_file_list(f"{where}.{key}", cfg[key], mode, cfg.get("separator", " "))
    transforms = cfg.get("transforms") or []
    for i, t in enumerate(transforms):
        if i > 0 and isinstance(t, dict) and t.get("type") == "MSP_MapLabels":
            raise UserError(f"config {where}.transforms[{i}]: MSP_MapLabels must be the first "
                             f"transform (before crops and padding fill labels with the ignore "
                             f"index)")


def check_config(cfg, sections=None):
    """Raise ``UserError`` for the first problem found in a paddleseg ``Config``; with
    ``sections``, only in those top-level sections."""
    import paddle.optimizer.lr as lr
    from paddleseg.cvlibs import manager
    dic = cfg.dic
    if sections is not None:
        dic = {k: v for k, v in dic.items() if k in sections}
    for key in dic:
        if key not in TOP_LEVEL_KEYS:
            raise UserError(f"config: unknown key {key!r}{_suggest(key, TOP_LEVEL_KEYS)}; "
                             f"expected keys: {', '.join(TOP_LEVEL_KEYS)}")
    for key in ("batch_size", "iters") if sections is None else ():
        value = dic.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"config {key}: expected a positive integer, got {value!r}")
    for key, managers in (("model", (manager.MODELS,)), ("train_dataset", (manager.DATASETS,)),
                          ("val_dataset", (manager.DATASETS,)),
                          ("optimizer", (manager.OPTIMIZERS,))):
        section = dic.get(key)
        if section is None:
            continue
        if not isinstance(section, dict) or "type" not in section:
            raise UserError(f"config {key}: expected a mapping with a 'type', got {section!r}")
        _check_component(key, section, managers)
        if key.endswith("_dataset"):
            _check_dataset_cfg(key, section)
    for key in ("loss", "distill_loss"):
        section = dic.get(key)
        if section is None:
            continue
        if not isinstance(section, dict) or not isinstance(section.get("types"), list):
            raise UserError(f"config {key}: expected 'types' (a list of losses) and 'coef'")
        for k in section:
            if k not in ("types", "coef"):
                raise UserError(f"config {key}: unknown key {k!r}; expected 'types' and 'coef'")
        for i, item in enumerate(section["types"]):
            if not isinstance(item, dict) or "type" not in item:
                raise UserError(f"config {key}.types[{i}]: expected a mapping with a 'type'")
            _check_component(f"{key}.types[{i}]", item, (manager.LOSSES,))
        for i, c in enumerate(section.get("coef", [])):
            _expect_type(f"{key}.coef[{i}]", c, 1.0)
    sched = dic.get("lr_scheduler")
    if sched is not None:
        if not isinstance(sched, dict) or not isinstance(sched.get("type"), str):
            raise UserError("config lr_scheduler: expected a mapping with a 'type'")
        cls = getattr(lr, sched["type"], None)
        if not (inspect.isclass(cls) and issubclass(cls, lr.LRScheduler)):
            names = [n for n in dir(lr) if inspect.isclass(getattr(lr, n))
                     and issubclass(getattr(lr, n), lr.LRScheduler)]
            raise UserError(f"config lr_scheduler.type: unknown scheduler {sched['type']!r}"
                             f"{_suggest(sched['type'], names)}")
        given = {k: v for k, v in sched.items() if k != "type"}
        params = _signature(cls)
        params.pop("decay_steps", None)  # SegBuilder derives it from iters
        _check_params("lr_scheduler", sched["type"], params, given, LR_EXTRA_KEYS)
        for k in LR_EXTRA_KEYS:
            if k in given:
                _expect_type(f"lr_scheduler.{k}", given[k], 1 if k == "warmup_iters" else 1.0)
    test_cfg = dic.get("test_config")
    if test_cfg is not None:
        if not isinstance(test_cfg, dict):
            raise UserError(f"config test_config: expected a mapping, got {test_cfg!r}")
        for k in test_cfg:
            if k not in TEST_CONFIG_KEYS:
                raise UserError(f"config test_config: unknown key {k!r}"
                                 f"{_suggest(k, TEST_CONFIG_KEYS)}")


# --- data ---------------------------------------------------------------------------------------

def _image_size(path, what):
    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path}")
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:  # PIL raises several types for unreadable files
        raise UserError(f"cannot read {what} {path}: {type(e).__name__}: {e}") from None


def check_samples(dataset, role):
    """Check every (image, label) entry of ``dataset.file_list`` by its file header."""
    file_list = getattr(dataset, "file_list", None)
    if file_list is None:
        return
    if len(file_list) == 0:
        raise UserError(f"{role}: the dataset has no samples")
    for image_path, label_path in file_list:
        image_size = _image_size(image_path, "image")
        if label_path is None:
            continue
        label_size = _image_size(label_path, "label")
        if label_size != image_size:
            raise UserError(f"label {label_path} is {label_size[0]}x{label_size[1]} but image "
                             f"{image_path} is {image_size[0]}x{image_size[1]} (width x height)")
    _check_not_all_ignored(dataset, role)


def _check_not_all_ignored(dataset, role, samples=4):
    """A 0/255 mask read without ``MSP_MapLabels``: with ``ignore_index`` 255 every foreground
    pixel is ignored and training learns nothing, silently. Judged on the first labels."""
    ignore = getattr(dataset, "ignore_index", 255)
    transforms = getattr(getattr(dataset, "transforms", None), "transforms", []) or []
    if any(type(t).__name__ == "MapLabels" for t in transforms):
        return
    labels = [lp for _, lp in dataset.file_list if lp is not None][:samples]
    if not labels:
        return
    for label_path in labels:
        with Image.open(label_path) as im:
            values = set(np.unique(np.asarray(im)).tolist())
        if not values <= {0, ignore} or ignore not in values:
            return
    raise UserError(f"{role}: labels such as {labels[0]} hold only 0 and {ignore}, and {ignore} "
                    f"is the ignore index, so the {ignore} pixels would not be trained on: put "
                    f"'type: MSP_MapLabels, mapping: {{{ignore}: 1}}' first in the transforms")


class CheckedDataset(paddle.io.Dataset):
    """``dataset`` with per-sample errors that name the files; attributes pass through."""

    def __init__(self, dataset, role):
        super().__init__()
        self.dataset = dataset
        self.role = role

    def __len__(self):
        return len(self.dataset)

    def __getattr__(self, name):
        if name in ("dataset", "role"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, idx):
        image_path, label_path = self.dataset.file_list[idx]
        try:
            data = self.dataset[idx]
        except Exception as e:
            raise UserError(f"{self.role}: cannot load image {image_path} / label {label_path}: "
                             f"{type(e).__name__}: {e}") from None
        label = data.get("label")
        if label is not None and not isinstance(label, str):
            label = np.asarray(label)
            ignore = self.dataset.ignore_index
            bad = (label < 0) | ((label >= self.dataset.num_classes) & (label != ignore))
            if bad.any():
                values = np.unique(label[bad])[:8].tolist()
                raise UserError(
                    f"label {label_path} has values {values} outside [0, "
                    f"{self.dataset.num_classes}) other than ignore_index {ignore} (a 0/255 "
                    f"mask needs 'type: MSP_MapLabels, mapping: {{255: 1}}' as first transform)"
                    if values == [255] or 255 in values else
                    f"label {label_path} has values {values} outside [0, "
                    f"{self.dataset.num_classes}) other than ignore_index {ignore}")
        return data
