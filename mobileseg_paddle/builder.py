"""Build the model a PaddleSeg config describes and load trained weights into it.

The one implementation behind ``deploy/export.py`` and ``deploy/lite/model_source.py``. A
config's ``pretrained`` entries name weights (often URLs) loaded while the model is built; when
a checkpoint replaces them anyway, or nothing may be downloaded, they are dropped first
(``drop_pretrained``). Every failure is one ``BuildError`` whose message names the file or
flag, ready to be shown as is.
"""

import copy
import os


class BuildError(ValueError):
    """A config or weights file the model cannot be built from."""


def without_pretrained(node):
    """A copy of a config node without its ``pretrained`` keys, at any depth (lists included)."""
    if isinstance(node, dict):
        return {k: without_pretrained(v) for k, v in node.items() if k != "pretrained"}
    if isinstance(node, list):
        return [without_pretrained(v) for v in node]
    return node


def build_model(cfg_or_path, model_path=None, drop_pretrained=None):
    """Return (model in eval mode, the paddleseg Config it was built from).

    ``cfg_or_path``: a config file or a loaded ``paddleseg.cvlibs.Config`` (never modified:
    dropping keys builds from a copy, which is the Config returned). ``model_path``: weights to
    load strictly (a ``.pdparams``, a folder holding ``model.pdparams``, or a URL).
    ``drop_pretrained``: None drops the ``pretrained`` keys only when ``model_path`` is given
    (otherwise the config's own pretrained weights are what the user gets), True always (random
    init without ``model_path``, nothing downloaded), False never."""
    from paddleseg.cvlibs import Config, SegBuilder

    from .checkpoint import CheckpointError, load_pretrained, resolve_weights

    if isinstance(cfg_or_path, Config):
        cfg, name = cfg_or_path, "config"
    else:
        cfg, name = _load(cfg_or_path), f"--config {cfg_or_path}"
    if not cfg.dic.get("model"):
        raise BuildError(f"{name}: no 'model' section")
    weights = None
    if model_path is not None:
        try:  # before building: a missing file fails fast, a URL is downloaded once
            weights = resolve_weights(model_path)
        except CheckpointError as e:
            raise BuildError(f"--model_path: {e}") from None
    if drop_pretrained is None:
        drop_pretrained = model_path is not None
    if drop_pretrained:
        cfg = copy.copy(cfg)  # a shallow copy with its own dic: the caller's stays as it was
        cfg.dic = dict(cfg.dic, model=without_pretrained(cfg.dic["model"]))
    try:
        model = SegBuilder(cfg).model
    except Exception as e:
        raise BuildError(f"{name}: cannot build the model: {one_line(e)}") from None
    if weights is not None:
        try:
            load_pretrained(model, weights)
        except CheckpointError as e:
            raise BuildError(f"--model_path: {e}") from None
    model.eval()
    return model, cfg


def _load(config_path):
    from paddleseg.cvlibs import Config

    if not os.path.isfile(config_path):
        raise BuildError(f"--config: file not found: {config_path}")
    try:
        return Config(config_path)
    except Exception as e:
        raise BuildError(f"--config {config_path}: {one_line(e)}") from None


def one_line(e, limit=300):
    """An exception's message as one line for a command-line error: its last non-empty line
    (paddle and paddleseg wrap the cause in several), without paddleseg's "The error message
    is: " preamble, cut to ``limit`` characters."""
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    text = lines[-1] if lines else ""
    for marker in ("The error message is: ", "the error message is: "):
        if marker in text:
            text = text.split(marker, 1)[1]
    text = text or type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
