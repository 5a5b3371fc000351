"""Build the model a PaddleSeg config describes and read what deployment needs from the config.

``import mobileseg_paddle`` registers the ``MSP_`` components the configs name. Pretrained
URLs in the config are dropped before building (``mobileseg_paddle.builder``): the weights come
from ``--model_path``, and an export must not try to download anything.
"""

import os

from .errors import LiteError

DEFAULT_MEAN = DEFAULT_STD = (0.5, 0.5, 0.5)  # paddleseg's Normalize defaults


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
    from mobileseg_paddle.builder import BuildError, build_model as build
    try:
        return build(cfg, model_path, drop_pretrained=True)[0]
    except BuildError as e:
        raise LiteError(str(e)) from None
