"""mobileseg_paddle/checkpoint.py: weights files are pickles, and a pickle can run code while it
loads. Crafted files whose loading would create a marker file (``os.system``, ``builtins.exec``,
``subprocess.run``) are refused with one clear line at every entry point (``load_pretrained``,
``--model_path``, a backbone's ``pretrained``, both files of ``--resume_model``, paddleseg's own
loaders), and the marker never appears; the files ``paddle.save`` really writes still load to
the same values, and ``ADMITTED`` is exactly the set of globals they need."""

import importlib
import os
import pickle
import shlex

import numpy as np
import paddle
import paddleseg
import pytest
import yaml
from paddle.utils import unique_name
from paddleseg.cvlibs import manager
from paddleseg.utils import utils as paddleseg_utils

import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components, guards paddleseg)
from helpers import ROOT
from helpers.numerics import randomize_
from mobileseg_paddle import checkpoint, compat
from mobileseg_paddle.builder import build_model
from mobileseg_paddle.checkpoint import ADMITTED, load_pretrained, load_state
from mobileseg_paddle.errors import UserError
from mobileseg_paddle.models.backbones.mobilenetv3 import MobileNetV3_small_x0_35

CONFIG = os.path.join(ROOT, "configs", "mobileseg",
                      "mobileseg_mobilenetv2_cityscapes_1024x512_80k.yml")
BACKBONE = "MobileNetV3_small_x0_35"  # ours and paddleseg's have the same keys


# --- real files ------------------------------------------------------------------------------

def _model(seed=0):
    return randomize_(MobileNetV3_small_x0_35(), seed)


def _poly():
    return paddle.optimizer.lr.PolynomialDecay(0.01, 100, end_lr=0, power=0.9)


# The optimizer/LR-schedule pairs of paddleseg configs (SGD/Momentum + PolynomialDecay, with
# warmup), a step schedule and Adam(W).
OPTIMIZERS = {
    "momentum_warmup_poly": lambda ps: paddle.optimizer.Momentum(
        paddle.optimizer.lr.LinearWarmup(_poly(), 10, 0.0, 0.01), momentum=0.9, parameters=ps,
        weight_decay=4e-5),
    "sgd_step": lambda ps: paddle.optimizer.SGD(
        paddle.optimizer.lr.StepDecay(0.1, 10), parameters=ps),
    "adam_poly": lambda ps: paddle.optimizer.Adam(_poly(), parameters=ps),
    "adamw": lambda ps: paddle.optimizer.AdamW(0.001, parameters=ps, weight_decay=0.01),
}


def _steps(model, opt, n):
    x = paddle.to_tensor(np.random.default_rng(n).normal(size=(2, 3, 32, 32)).astype("float32"))
    for _ in range(n):
        sum(f.mean() for f in model(x)).backward()
        opt.step()
        opt.clear_grad()
        if isinstance(opt._learning_rate, paddle.optimizer.lr.LRScheduler):
            opt._learning_rate.step()


def _fresh(name, seed=None):
    """Model and optimizer named as in a fresh training process (the optimizer finds its
    saved accumulators by those names)."""
    with unique_name.guard():
        model = MobileNetV3_small_x0_35() if seed is None else _model(seed)
        return model, OPTIMIZERS[name](model.parameters())


def _trained(name):
    model, opt = _fresh(name, seed=0)
    with unique_name.guard():
        _steps(model, opt, 2)
    return model, opt


@pytest.fixture(scope="module")
def real_files(tmp_path_factory):
    """{name: (path, the object saved)} for state dicts and optimizer states at protocols 2-4."""
    folder = tmp_path_factory.mktemp("real")
    files = {}
    for name in OPTIMIZERS:
        model, opt = _trained(name)
        for protocol in (2, 3, 4):
            for what, obj in (("pdparams", model.state_dict()), ("pdopt", opt.state_dict())):
                path = str(folder / f"{name}_p{protocol}.{what}")
                paddle.save(obj, path, protocol=protocol)
                files[os.path.basename(path)] = (path, obj)
        # An AMP O2 optimizer also holds its fp32 master weights, a dict of tensors (fp16
        # kernels do not run on CPU: the state is assembled as Optimizer.state_dict does).
        state = dict(opt.state_dict(), master_weights={
            p.name: paddle.cast(p, "float32") for p in model.parameters()[:3]})
        for protocol in (2, 4):
            path = str(folder / f"{name}_master_p{protocol}.pdopt")
            paddle.save(state, path, protocol=protocol)
            files[os.path.basename(path)] = (path, state)
    return files


class _Recorder(pickle.Unpickler):
    def __init__(self, f, seen):
        super().__init__(f, encoding="latin1")
        self.seen = seen

    def find_class(self, module, name):
        self.seen.add((module, name))
        return super().find_class(module, name)


def test_admitted_is_exactly_what_paddle_save_writes(real_files):
    seen = set()
    for path, _ in real_files.values():
        with open(path, "rb") as f:
            _Recorder(f, seen).load()
    other_numpy = "numpy.core.multiarray" if np.__version__ >= "2" else "numpy._core.multiarray"
    assert seen == ADMITTED - {(other_numpy, "_reconstruct")}


def _same(a, b, where):
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for k in a:
            _same(a[k], b[k], f"{where}/{k}")
    elif hasattr(b, "numpy"):
        assert a.dtype == b.dtype, where
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=where)
    else:
        assert type(a) is type(b) and a == b, where


def test_real_files_load_to_the_values_saved(real_files):
    for name, (path, saved) in real_files.items():
        loaded = load_state(path)
        _same(loaded, paddle.load(path), name)  # what paddle itself reads
        _same(loaded, saved, name)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_load_pretrained_and_resume_restore_real_checkpoints(name, tmp_path):
    model, opt = _trained(name)
    ckpt = tmp_path / "iter_2"
    ckpt.mkdir()
    paddle.save(model.state_dict(), str(ckpt / "model.pdparams"))
    paddle.save(opt.state_dict(), str(ckpt / "model.pdopt"))
    loaded = load_pretrained(MobileNetV3_small_x0_35(), str(ckpt / "model.pdparams"))
    _same(loaded.state_dict(), model.state_dict(), name)

    resumed, resumed_opt = _fresh(name)
    assert compat.resume(resumed, resumed_opt, str(ckpt)) == 2
    _same(resumed.state_dict(), model.state_dict(), name)
    _same(resumed_opt.state_dict(), opt.state_dict(), name)
    # one more step on each: equal only if momenta, moments and LR were all restored
    with unique_name.guard():
        _steps(resumed, resumed_opt, 1)
    _steps(model, opt, 1)
    _same(resumed.state_dict(), model.state_dict(), name)


# --- crafted files -------------------------------------------------------------------------

class _Payload:
    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _craft(path, marker, attack):
    """A genuine state dict of the backbone plus one entry whose unpickling creates
    ``marker``; returns the global the file names."""
    state = {k: v.numpy() for k, v in _model().state_dict().items()}
    if attack == "os.system":
        state["evil"] = _Payload(os.system, f"touch {shlex.quote(str(marker))}")
        data = pickle.dumps(state, protocol=2)
        # os.system pickles as posix.system; name it the way hand-written exploits do
        assert data.count(b"cposix\nsystem\n") == 1
        data = data.replace(b"cposix\nsystem\n", b"cos\nsystem\n")
    elif attack == "builtins.exec":
        state["evil"] = _Payload(exec, f"open({str(marker)!r}, 'w').close()")
        data = pickle.dumps(state, protocol=4)
    else:
        import subprocess
        state["evil"] = _Payload(subprocess.run, ["touch", str(marker)])
        data = pickle.dumps(state, protocol=4)
    with open(path, "wb") as f:
        f.write(data)
    return attack


ATTACKS = ["os.system", "builtins.exec", "subprocess.run"]


def _refusal(path, attack):
    return f"{path} refuses to load: it needs `{attack}`, which a weights file never contains"


@pytest.fixture(params=ATTACKS)
def crafted(request, tmp_path):
    marker = tmp_path / "marker"
    path = str(tmp_path / "model.pdparams")
    _craft(path, marker, request.param)
    yield path, marker, request.param
    assert not marker.exists(), "the crafted file ran its code"


@pytest.mark.parametrize("attack", ATTACKS)
def test_the_crafted_files_do_run_code_when_loaded_unguarded(attack, tmp_path):
    """The control: paddle.load itself runs the payloads (so the refusals below are real)."""
    marker = tmp_path / "marker"
    path = str(tmp_path / "model.pdparams")
    _craft(path, marker, attack)
    paddle.load(path)
    assert marker.exists()


def test_load_pretrained_refuses(crafted):
    path, marker, attack = crafted
    with pytest.raises(UserError) as e:
        load_pretrained(MobileNetV3_small_x0_35(), path)
    assert str(e.value) == _refusal(path, attack)


def test_model_path_refuses(crafted):
    path, marker, attack = crafted
    with pytest.raises(UserError) as e:
        build_model(CONFIG, model_path=path)
    assert str(e.value) == "--model_path: " + _refusal(path, attack)


@pytest.mark.parametrize("backbone", ["MSP_" + BACKBONE, BACKBONE])  # ours, paddleseg's
def test_backbone_pretrained_refuses(crafted, backbone):
    path, marker, attack = crafted
    with pytest.raises(UserError) as e:
        manager.BACKBONES[backbone](pretrained=path)
    assert str(e.value) == _refusal(path, attack)


def test_config_pretrained_refuses(crafted, tmp_path):
    path, marker, attack = crafted
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump({"_base_": CONFIG, "model": {"backbone": {
        "type": "MSP_MobileNetV2_x0_25", "pretrained": path}}}))
    with pytest.raises(UserError) as e:
        build_model(str(cfg))
    assert str(e.value) == f"--config {cfg}: cannot build the model: " + _refusal(path, attack)


@pytest.mark.parametrize("which", ["model.pdparams", "model.pdopt"])
def test_resume_refuses_either_file(crafted, which, tmp_path):
    path, marker, attack = crafted
    model, opt = _model(), paddle.optimizer.SGD(0.1, parameters=_model().parameters())
    ckpt = tmp_path / "out" / "iter_4"
    ckpt.mkdir(parents=True)
    paddle.save(model.state_dict(), str(ckpt / "model.pdparams"))
    paddle.save(opt.state_dict(), str(ckpt / "model.pdopt"))
    os.replace(path, ckpt / which)
    target = str(ckpt / which)
    for resume in (compat.resume, paddleseg_utils.resume):  # ours, paddleseg's own
        with pytest.raises(UserError) as e:
            resume(model, opt, str(ckpt))
        assert str(e.value) == _refusal(target, attack)


def test_every_paddleseg_module_calling_paddle_load_is_guarded():
    root = os.path.dirname(paddleseg.__file__)
    callers = set()
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    if "paddle.load(" in f.read():
                        rel = os.path.relpath(os.path.join(folder, name[:-3]), root)
                        callers.add("paddleseg." + rel.replace(os.sep, "."))
    assert callers == set(checkpoint.PADDLESEG_LOADERS)
    for name in callers:
        assert importlib.import_module(name).paddle.load is load_state, name


# --- other unreadable files ----------------------------------------------------------------

def test_not_a_pickle_and_truncated_files_are_one_line(real_files, tmp_path):
    garbage = tmp_path / "garbage.pdparams"
    garbage.write_bytes(b"\x00not a pickle at all")
    with pytest.raises(UserError, match=rf"^cannot read weights file {garbage}: not a file "
                                        rf"paddle\.save writes \(UnpicklingError: "):
        load_state(str(garbage))
    path, _ = real_files["adam_poly_p4.pdparams"]
    cut = tmp_path / "cut.pdparams"
    cut.write_bytes(open(path, "rb").read()[:-100])
    with pytest.raises(UserError, match=rf"^cannot read weights file {cut}: not a file "):
        load_state(str(cut))
    with pytest.raises(UserError, match=rf"^weights file not found: {tmp_path}$"):
        load_state(str(tmp_path))
