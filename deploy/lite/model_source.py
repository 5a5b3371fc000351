"""Build the model a PaddleSeg config describes and read what deployment needs from the config.

``import mobileseg_paddle`` registers the ``MSP_`` components the configs name. Pretrained
URLs in the config are dropped before building: the weights come from ``--model_path``, and
an export must not try to download anything.
"""

import copy
import os

from .errors import LiteError

DEFAULT_MEAN = DEFAULT_STD = (0.5, 0.5, 0.5)  # paddleseg's Normalize defaults


def _strip_pretrained(model_cfg):
    model_cfg.pop("pretrained", None)
    for value in model_cfg.values():
        if isinstance(value, dict):
            _strip_pretrained(value)
    return model_cfg


def load_config(config_path):
    import mobileseg_paddle  # noqa: F401  (registers the MSP_ components)
    from paddleseg.cvlibs import Config
    if not os.path.isfile(config_path):
        raise LiteError(f"--config {config_path}: no such file")
    try:
        return Config(config_path)
    except Exception as e:
        raise LiteError(f"--config {config_path}: cannot read it ({type(e).__name__}: {e})") from None


def normalization(cfg):
    """(mean, std) of the Normalize transform of ``val_dataset`` (paddleseg's defaults without)."""
    for t in cfg.val_dataset_cfg.get("transforms", []):
        if t.get("type") == "Normalize":
            return (list(map(float, t.get("mean", DEFAULT_MEAN))),
                    list(map(float, t.get("std", DEFAULT_STD))))
    return list(DEFAULT_MEAN), list(DEFAULT_STD)


def build_model(cfg, model_path=None):
    """The config's model in eval mode with ``model_path``'s weights (random init when None)."""
    from paddleseg.cvlibs import SegBuilder
    from mobileseg_paddle.checkpoint import CheckpointError, load_pretrained
    cfg.dic["model"] = _strip_pretrained(copy.deepcopy(cfg.dic.get("model", {})))
    model = SegBuilder(cfg).model
    if model_path is not None:
        try:
            load_pretrained(model, model_path)
        except CheckpointError as e:
            raise LiteError(f"--model_path: {e}") from None
    model.eval()
    return model
