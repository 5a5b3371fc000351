"""The one place where our components enter PaddleSeg's component manager.

paddleseg 2.8.0 already registers ``MobileSeg`` and the backbones under their plain names, so
ours carry the prefix ``MSP_`` (MobileSeg-Paddle): ``MSP_MobileSeg``, ``MSP_MobileNetV2_x1_0``,
... A config selects ours by writing ``type: MSP_...``; paddleseg's own stay available.

Nothing here lists components: each source module's ``__all__`` is what gets registered (the
modules of ``models/backbones`` are found on disk), so a new variant is registered by exporting
it. ``register_all()`` is idempotent and also routes paddleseg's own weight loading through
``checkpoint.load_state`` (see ``checkpoint.guard_paddleseg_loading``).
"""

import importlib
import inspect
import pkgutil

from paddleseg.cvlibs import manager

from . import checkpoint, losses, transforms
from .models import backbones, mobileseg

PREFIX = "MSP_"


def sources():
    """{manager: [modules]} whose exported components go into that manager."""
    backbone_modules = [importlib.import_module(f"{backbones.__name__}.{info.name}")
                        for info in pkgutil.iter_modules(backbones.__path__)]
    return {manager.MODELS: [mobileseg], manager.BACKBONES: backbone_modules,
            manager.LOSSES: [losses], manager.TRANSFORMS: [transforms]}


def exported(module):
    """{name: class or function} for the names in ``module.__all__``."""
    names = getattr(module, "__all__", None)
    if names is None:
        raise RuntimeError(f"{module.__name__} has no __all__: the registry enters what a module "
                           f"exports, so it must say what that is")
    objs = {n: getattr(module, n) for n in names}
    return {n: obj for n, obj in objs.items() if inspect.isclass(obj) or inspect.isfunction(obj)}


def components():
    """{manager: {"MSP_<name>": component}} as ``register_all`` enters them."""
    table = {}
    for mgr, modules in sources().items():
        entries = table.setdefault(mgr, {})
        for module in modules:
            for name, component in exported(module).items():
                name = PREFIX + name
                _check_clash(mgr, name, entries.get(name), component)
                entries[name] = component
    return table


def _check_clash(mgr, name, existing, component):
    if existing is not None and existing is not component:
        raise RuntimeError(f"{mgr.name}: {name} would be {component.__module__}."
                           f"{component.__qualname__} but is already "
                           f"{existing.__module__}.{existing.__qualname__}")


def register_all():
    """Enter every exported component under ``MSP_<name>``; a name taken by another raises."""
    table = components()
    for mgr, entries in table.items():  # check everything before changing anything
        for name, component in entries.items():
            _check_clash(mgr, name, mgr.components_dict.get(name), component)
    for mgr, entries in table.items():
        mgr.components_dict.update(entries)
    checkpoint.guard_paddleseg_loading()


register_all()
