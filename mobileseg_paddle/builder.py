"""The one way from a config (and optional weights) to a model: ``build_model``, behind every
command, the export, Lite and the benchmarks. A config's ``pretrained`` entries name weights
(often URLs) loaded while the model is built; when a checkpoint replaces them anyway, or
nothing may be downloaded, they are dropped first (``drop_pretrained``). Every failure is one
``UserError`` naming the file or flag.
"""

import copy

from .errors import UserError, one_line


def without_pretrained(node):
    """A copy of a config node without its ``pretrained`` keys, at any depth (lists included)."""
    if isinstance(node, dict):
        return {k: without_pretrained(v) for k, v in node.items() if k != "pretrained"}
    if isinstance(node, list):
        return [without_pretrained(v) for v in node]
    return node


def build_model(cfg_or_path, model_path=None, drop_pretrained=None, seg_builder=None):
    """Return (model in eval mode, the paddleseg Config it was built from).

    ``cfg_or_path``: a config file or a loaded ``paddleseg.cvlibs.Config`` (never modified:
    dropping keys builds from a copy, which is the Config returned). ``model_path``: weights to
    load strictly (a ``.pdparams``, a folder holding ``model.pdparams``, or a URL).
    ``drop_pretrained``: None drops the ``pretrained`` keys only when ``model_path`` is given
    (otherwise the config's own pretrained weights are what the user gets), True always (random
    init without ``model_path``, nothing downloaded), False never. ``seg_builder``: the
    ``SegBuilder`` of ``cfg_or_path`` whose ``.model`` to use (training: its optimizer is bound
    to that very model); the config is then used as it is."""
    from paddleseg.cvlibs import Config, SegBuilder

    from .checkpoint import load_pretrained, resolve_weights
    from .config import load_config

    if isinstance(cfg_or_path, Config):
        cfg, name = cfg_or_path, "config"
    else:
        cfg, name = load_config(cfg_or_path, sections=("model",)), f"--config {cfg_or_path}"
    if not cfg.dic.get("model"):
        raise UserError(f"{name}: no 'model' section")
    weights = None
    if model_path is not None:
        try:  # before building: a missing file fails fast, a URL is downloaded once
            weights = resolve_weights(model_path)
        except UserError as e:
            raise UserError(f"--model_path: {e}") from None
    if drop_pretrained is None:
        drop_pretrained = model_path is not None
    if drop_pretrained and seg_builder is None:
        cfg = copy.copy(cfg)  # a shallow copy with its own dic: the caller's stays as it was
        cfg.dic = dict(cfg.dic, model=without_pretrained(cfg.dic["model"]))
    try:
        model = (seg_builder or SegBuilder(cfg)).model
    except Exception as e:
        raise UserError(f"{name}: cannot build the model: {one_line(e)}") from None
    if weights is not None:
        try:
            load_pretrained(model, weights)
        except UserError as e:
            raise UserError(f"--model_path: {e}") from None
    model.eval()
    return model, cfg

