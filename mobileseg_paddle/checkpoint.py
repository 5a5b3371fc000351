"""Loading weights: a local ``.pdparams`` file, a folder holding ``model.pdparams``, or a URL
(a ``.pdparams`` or an archive of one, as the model zoo publishes them).

Every file is read by ``load_state``: ``paddle.save`` files are pickles, and a pickle can name
any importable callable and have it called while loading (``os.system``...). ``load_state``
first unpickles the bytes with an unpickler that admits only the globals ``paddle.save`` writes
for a state dict or an optimizer state (``ADMITTED``, like torch's ``weights_only``) and
refuses the file otherwise; only then does ``paddle.load`` read those same bytes.

Loading is strict: any missing or unexpected key, or any shape difference, is one error that
names the keys, so a wrong file never half-loads silently."""

import io
import os
import pickle
import re
import sys

import paddle

from .errors import UserError

# Every (module, name) that paddle 3.3.1's ``paddle.save`` writes into a model state dict or an
# optimizer state (accumulators, LR scheduler state, AMP O2 master weights), at protocols 2-4,
# read off real files with ``pickletools`` (tests/test_checkpoint.py checks the list against
# freshly saved files):
ADMITTED = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),  # every array, written under numpy 1.x
    ("numpy._core.multiarray", "_reconstruct"),  # the same, written under numpy 2.x
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol 2 writes bytes (array data) as _codecs.encode(str)
    # A tensor in a nested dict (the optimizer's "master_weights") is saved by paddle's own
    # reducer as tuple((name, array)); "__builtin__" is its protocol-2 spelling.
    ("builtins", "tuple"),
    ("__builtin__", "tuple"),
})


class _Refused(pickle.UnpicklingError):
    """A global outside ``ADMITTED``; ``args[0]`` is its dotted name."""


class _WeightsUnpickler(pickle.Unpickler):
    # Called for every global the pickle names, before anything is called: a refused one is
    # never imported, let alone run.
    def find_class(self, module, name):
        if (module, name) not in ADMITTED:
            raise _Refused(f"{module}.{name}")
        return super().find_class(module, name)


def load_state(path, **configs):
    """``paddle.load(path, **configs)`` for a ``paddle.save`` file that contains only arrays,
    numbers, strings and containers; any other file is one ``UserError`` naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"weights file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()  # checked and loaded from the same bytes: no swap in between
    try:
        _WeightsUnpickler(io.BytesIO(data), encoding="latin1").load()  # paddle's encoding
    except _Refused as e:
        raise UserError(f"{path} refuses to load: it needs `{e.args[0]}`, which a weights file "
                        f"never contains") from None
    except Exception as e:  # truncated or not a pickle: many types
        raise UserError(f"cannot read weights file {path}: not a file paddle.save writes "
                        f"({type(e).__name__}: {e})") from None
    try:
        return paddle.load(io.BytesIO(data), **configs)
    except Exception as e:
        raise UserError(f"cannot read weights file {path}: {type(e).__name__}: {e}") from None


class _PaddleWithSafeLoad:
    """The ``paddle`` module as a guarded paddleseg module sees it: all of paddle, with
    ``load_state`` as ``load``."""

    load = staticmethod(load_state)

    def __getattr__(self, name):
        return getattr(paddle, name)


# The paddleseg 2.8.0 modules that call ``paddle.load``: utils.utils (load_entire_model,
# load_pretrained_model and resume, behind every ``pretrained`` of a paddleseg component and
# paddleseg's ``predict(model_path=...)``) and two ViT backbones with their own loader.
PADDLESEG_LOADERS = ("paddleseg.utils.utils", "paddleseg.models.backbones.vision_transformer",
                     "paddleseg.models.backbones.cae")


def guard_paddleseg_loading():
    """Make paddleseg's own weight loading go through ``load_state`` (idempotent)."""
    import importlib
    for name in PADDLESEG_LOADERS:
        module = sys.modules.get(name) or importlib.import_module(name)
        if module.paddle is paddle:
            module.paddle = _PaddleWithSafeLoad()


def resolve_weights(path_or_url):
    """Return a local ``.pdparams`` path for a file, a folder or a URL (downloaded and cached)."""
    src = str(path_or_url)
    if re.match(r"^https?://", src):
        # paddleseg's own downloader: same cache folder and archive handling as its configs
        from paddleseg.utils.utils import download_pretrained_model
        try:
            src = download_pretrained_model(src)
        except Exception as e:  # network errors come in many types
            raise UserError(f"cannot download weights from {src}: "
                            f"{type(e).__name__}: {e}") from None
    if os.path.isdir(src):
        src = os.path.join(src, "model.pdparams")
    if not os.path.isfile(src):
        raise UserError(f"weights file not found: {src}")
    return src


def load_pretrained(model, path_or_url):
    """Load weights into ``model``; raise ``UserError`` on any key/shape mismatch."""
    path = resolve_weights(path_or_url)
    state = load_state(path)
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a state dict (got {type(state).__name__})")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise UserError(
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
                raise UserError(
                    f"num_classes mismatch: {path} was trained for {got[0]} classes, "
                    f"the model has num_classes={classes}")
            bad.append(f"{k}: file {got} vs model {list(v.shape)}")
    if bad:
        raise UserError(f"{path}: {len(bad)} shape mismatches: {'; '.join(bad[:5])}")


def _few(keys, n=5):
    return "[" + ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") + "]"
