"""Loading weights: a local ``.pdparams`` file, a folder holding ``model.pdparams``, or a URL
(a ``.pdparams`` or an archive of one, as the model zoo publishes them).

Loading is strict: any missing or unexpected key, or any shape difference, is one error that
names the keys, so a wrong file never half-loads silently."""

import os
import re

import paddle


class CheckpointError(ValueError):
    """A weights file that cannot be loaded into the model."""


def resolve_weights(path_or_url):
    """Return a local ``.pdparams`` path for a file, a folder or a URL (downloaded and cached)."""
    src = str(path_or_url)
    if re.match(r"^https?://", src):
        # paddleseg's own downloader: same cache folder and archive handling as its configs
        from paddleseg.utils.utils import download_pretrained_model
        try:
            src = download_pretrained_model(src)
        except Exception as e:  # network errors come in many types
            raise CheckpointError(f"cannot download weights from {src}: "
                                  f"{type(e).__name__}: {e}") from None
    if os.path.isdir(src):
        src = os.path.join(src, "model.pdparams")
    if not os.path.isfile(src):
        raise CheckpointError(f"weights file not found: {src}")
    return src


def load_pretrained(model, path_or_url):
    """Load weights into ``model``; raise ``CheckpointError`` on any key/shape mismatch."""
    path = resolve_weights(path_or_url)
    try:
        state = paddle.load(path)
    except Exception as e:
        raise CheckpointError(f"cannot read weights file {path}: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a state dict (got {type(state).__name__})")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit {type(model).__name__}: {len(missing)} missing keys "
            f"{_few(missing)}, {len(unexpected)} unexpected keys {_few(unexpected)}")
    _check_shapes(model, path, own, state)
    model.set_state_dict(state)
    return model


def _check_shapes(model, path, own, state):
    classes = getattr(model, "num_classes", None)
    bad = []
    for k, v in own.items():
        got = list(state[k].shape)
        if got != list(v.shape):
            if classes is not None and re.fullmatch(r"seg_heads\.\d+\.conv_out\.weight", k):
                raise CheckpointError(
                    f"num_classes mismatch: {path} was trained for {got[0]} classes, "
                    f"the model has num_classes={classes}")
            bad.append(f"{k}: file {got} vs model {list(v.shape)}")
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} shape mismatches: {'; '.join(bad[:5])}")


def _few(keys, n=5):
    return "[" + ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") + "]"
