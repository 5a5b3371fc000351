"""mobileseg_paddle/register.py: what enters PaddleSeg's manager is what the modules export,
nothing paddleseg offers for our families is missing, and registering is idempotent and
refuses to take a name that is someone else's."""

import inspect
import types

import pytest
from paddleseg.cvlibs import manager

import mobileseg_paddle.register as register

MANAGERS = (manager.MODELS, manager.BACKBONES, manager.LOSSES, manager.TRANSFORMS)


def _ours(mgr):
    return {k: v for k, v in mgr.components_dict.items() if k.startswith(register.PREFIX)}


def _snapshot():
    return {mgr.name: dict(mgr.components_dict) for mgr in MANAGERS}


@pytest.mark.parametrize("mgr", [manager.MODELS, manager.BACKBONES], ids=lambda m: m.name)
def test_every_paddleseg_name_of_our_families_has_an_msp_twin(mgr):
    """A family is a module name: every component paddleseg registers from its module of the
    same name as one of ours (models/mobileseg.py, backbones/mobilenetv3.py, ...) has an
    ``MSP_`` twin defined in ours."""
    ours = {m.__name__.rsplit(".", 1)[-1]: m for m in register.sources()[mgr]}
    theirs = {name: c.__module__.rsplit(".", 1)[-1] for name, c in mgr.components_dict.items()
              if c.__module__.startswith("paddleseg.models.")
              and c.__module__.rsplit(".", 1)[-1] in ours}
    assert theirs, "no paddleseg component of our families found"
    missing = [name for name in theirs if register.PREFIX + name not in mgr.components_dict]
    assert missing == []
    for name, family in theirs.items():
        assert mgr.components_dict[register.PREFIX + name].__module__ == ours[family].__name__


def test_the_os8_variants_paddleseg_has_are_registered():
    for name in ("MobileNetV3_large_x1_0_os8", "MobileNetV3_small_x1_0_os8"):
        assert name in manager.BACKBONES.components_dict  # paddleseg's
        ours = manager.BACKBONES.components_dict.get("MSP_" + name)
        assert ours is not None and ours.__module__.startswith("mobileseg_paddle."), name


def test_everything_exported_is_registered_and_nothing_else():
    expected = {mgr.name: {} for mgr in MANAGERS}
    for mgr, modules in register.sources().items():
        for module in modules:
            for name in module.__all__:
                obj = getattr(module, name)
                if inspect.isclass(obj) or inspect.isfunction(obj):
                    expected[mgr.name][register.PREFIX + name] = obj
    for mgr in MANAGERS:
        assert _ours(mgr) == expected[mgr.name], mgr.name


def test_every_backbone_variant_a_module_defines_is_exported():
    """A factory (module-level and capitalized, like ``MobileNetV3_large_x1_0``) added to a
    backbone module but forgotten in its ``__all__`` fails here."""
    for module in register.sources()[manager.BACKBONES]:
        defined = {name for name, obj in vars(module).items()
                   if inspect.isfunction(obj) and obj.__module__ == module.__name__
                   and name[0].isupper()}
        assert len(defined) >= 3 and defined <= set(module.__all__), module.__name__


def test_every_source_module_declares_all():
    missing = [m.__name__ for ms in register.sources().values() for m in ms
               if not hasattr(m, "__all__")]
    assert missing == []
    with pytest.raises(RuntimeError, match="^fake_module has no __all__"):
        register.exported(types.ModuleType("fake_module"))


def test_registering_twice_changes_nothing():
    before = _snapshot()
    register.register_all()
    register.register_all()
    assert _snapshot() == before


def _impostor(name, module_name="someone_else"):
    def impostor(**kwargs):
        return None
    impostor.__name__ = impostor.__qualname__ = name
    impostor.__module__ = module_name
    return impostor


def test_a_name_taken_by_another_component_raises_and_nothing_is_registered():
    mgr = manager.BACKBONES
    original = mgr.components_dict["MSP_GhostNet_x1_0"]
    mgr.components_dict["MSP_GhostNet_x1_0"] = _impostor("GhostNet_x1_0")
    try:
        del manager.LOSSES.components_dict["MSP_OhemCrossEntropyLoss"]
        with pytest.raises(RuntimeError, match=r"^backbones: MSP_GhostNet_x1_0 would be "
                                               r"mobileseg_paddle\.models\.backbones\.ghostnet"
                                               r"\.GhostNet_x1_0 but is already "
                                               r"someone_else\.GhostNet_x1_0$"):
            register.register_all()
        # checked before anything is entered: the deleted one is not back
        assert "MSP_OhemCrossEntropyLoss" not in manager.LOSSES.components_dict
    finally:
        mgr.components_dict["MSP_GhostNet_x1_0"] = original
        register.register_all()
    assert manager.LOSSES["MSP_OhemCrossEntropyLoss"] is register.losses.OhemCrossEntropyLoss


def test_two_of_our_modules_exporting_one_name_raise(monkeypatch):
    clone = types.ModuleType("mobileseg_paddle.models.backbones.clone")
    clone.GhostNet_x1_0 = _impostor("GhostNet_x1_0", clone.__name__)
    clone.__all__ = ["GhostNet_x1_0"]
    sources = register.sources()
    sources[manager.BACKBONES].append(clone)
    monkeypatch.setattr(register, "sources", lambda: sources)
    with pytest.raises(RuntimeError, match=r"MSP_GhostNet_x1_0 would be "
                                           r"mobileseg_paddle\.models\.backbones\.clone"):
        register.register_all()
