"""The one way from a config file to a checked paddleseg ``Config``, for every command, the
export, Lite and the benchmarks.

``load_config`` registers our ``MSP_`` components, reads the file with paddleseg's ``Config``
(``_base_`` inheritance, ``--opts`` overrides) and runs ``checks.check_config`` on it; every
problem is one ``UserError`` naming the file or field."""

import os

from .errors import UserError, one_line

DEFAULT_MEAN = DEFAULT_STD = (0.5, 0.5, 0.5)  # paddleseg's Normalize defaults


def load_config(path, opts=None, sections=None, **overrides):
    """A checked paddleseg ``Config`` of ``path``.

    ``opts``: ``key=value`` overrides as PaddleSeg's ``--opts``; ``overrides``: Config's own
    keyword overrides (``learning_rate``, ``iters``, ``batch_size``; None means keep).
    ``sections``: check only these top-level sections (the deploy side needs the model, not
    the training data); None checks the whole config."""
    from . import register_all
    from .checks import check_config

    register_all()
    from paddleseg.cvlibs import Config

    if not isinstance(path, str) or not os.path.isfile(path):
        raise UserError(f"--config {path}: file not found")
    if not path.endswith((".yml", ".yaml")):
        raise UserError(f"--config {path}: expected a .yml/.yaml file")
    for item in opts or []:
        if item.count("=") != 1:
            raise UserError(f"--opts {item!r}: expected key=value")
    _check_yaml(path)
    try:
        cfg = Config(path, opts=opts, **overrides)
    except UserError:
        raise
    except Exception as e:  # yaml errors, paddleseg's asserts and rule failures
        raise UserError(f"--config {path}: {one_line(e)}") from None
    check_config(cfg, sections)
    return cfg


def _check_yaml(path, chain=()):
    """Read ``path`` and its ``_base_`` files with YAML's safe loader before paddleseg does
    (which uses the full loader): a Python tag, a file that is not a mapping, a missing base
    or a ``_base_`` cycle is one error naming the file."""
    import yaml

    real = os.path.realpath(path)
    if real in chain:
        cycle = " -> ".join(os.path.basename(p) for p in chain + (real,))
        raise UserError(f"--config {path}: the _base_ files include each other ({cycle})")
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except yaml.constructor.ConstructorError as e:
        raise UserError(f"--config {path}: {_yaml_where(e)}a YAML tag that is not plain data "
                        f"({e.problem.split(' for the tag ')[-1] if e.problem else e}); "
                        f"configs hold only mappings, lists, strings and numbers") from None
    except yaml.YAMLError as e:
        raise UserError(f"--config {path}: not valid YAML: {_yaml_where(e)}"
                        f"{getattr(e, 'problem', None) or e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--config {path}: cannot read it: {getattr(e, 'strerror', None) or e}"
                        ) from None
    if doc is None:
        raise UserError(f"--config {path}: the file is empty; expected a mapping of config keys")
    if not isinstance(doc, dict):
        raise UserError(f"--config {path}: expected a mapping of config keys, got a YAML "
                        f"{type(doc).__name__}")
    bases = doc.get("_base_", [])
    for base in [bases] if isinstance(bases, str) else bases:
        if not isinstance(base, str):
            raise UserError(f"--config {path}: _base_ entries are file paths, got {base!r}")
        base_path = os.path.join(os.path.dirname(path), base)
        if not os.path.isfile(base_path):
            raise UserError(f"--config {path}: _base_ file not found: {base_path}")
        _check_yaml(base_path, chain + (real,))


def _yaml_where(e):
    mark = getattr(e, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def normalization(cfg):
    """(mean, std) of the validation ``Normalize`` transform, three floats each (paddleseg's
    defaults when there is none)."""
    for t in cfg.val_dataset_cfg.get("transforms", []) or []:
        if isinstance(t, dict) and t.get("type") == "Normalize":
            return _triple(t.get("mean", DEFAULT_MEAN)), _triple(t.get("std", DEFAULT_STD))
    return list(DEFAULT_MEAN), list(DEFAULT_STD)


def _triple(v):
    v = [float(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
    return v * 3 if len(v) == 1 else v
