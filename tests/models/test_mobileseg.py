"""Fidelity of our MobileSeg to paddleseg 2.8.0's, for the five published configurations.

Each pair shares weights: paddleseg's model is randomized (weights and BatchNorm running
statistics), its state dict copied into ours, and outputs compared."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest
from paddleseg.cvlibs import Config, SegBuilder, manager
from paddleseg.models import MobileSeg as OfficialMobileSeg

import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components)
from helpers import ROOT
from helpers.numerics import copy_state_, max_rel_err, randomize_
from mobileseg_paddle.checkpoint import load_pretrained
from mobileseg_paddle.errors import UserError
from mobileseg_paddle.models.mobileseg import MobileSeg

HEAD = dict(cm_bin_sizes=[1, 2, 4], cm_out_ch=128, arm_out_chs=[32, 64, 128],
            seg_head_inter_chs=[32, 32, 32])
# config name -> (backbone, backbone kwargs, model kwargs, feat_channels, params, GMACs@1024x2048)
CASES = {
    "mobilenetv2": ("MobileNetV2_x1_0", {}, {}, [24, 32, 96, 320], 2094912, 13.41),
    "mobilenetv3": ("MobileNetV3_large_x1_0", {}, {}, [24, 40, 112, 160], 3006766, 9.71),
    "litehrnet18": ("Lite_HRNet_18", {"use_head": True}, {"backbone_indices": [0, 1, 2]},
                    [40, 40, 80, 160], 1279688, 10.97),
    "shufflenetv2": ("ShuffleNetV2_x1_0", {}, {}, [24, 116, 232, 464], 1142292, 6.21),
    "ghostnet": ("GhostNet_x1_0", {}, {}, [24, 40, 112, 160], 2704552, 6.33),
}


def config_path(name):
    return os.path.join(ROOT, "configs", "mobileseg", f"mobileseg_{name}_cityscapes_1024x512_80k.yml")


def build_from_config(name, num_classes=None):
    opts = ["model.backbone.pretrained=None"]
    cfg = Config(config_path(name), opts=opts)
    return SegBuilder(cfg).model


_PAIRS = {}


def pair(name):
    """(official, ours) with identical random weights. paddleseg's MobileNetV2, ShuffleNetV2 and
    GhostNet give parameters fixed names, so each is built once, in its own name scope."""
    if name not in _PAIRS:
        backbone, bb_kw, m_kw, *_ = CASES[name]
        with paddle.utils.unique_name.guard():
            official = OfficialMobileSeg(19, manager.BACKBONES[backbone](**bb_kw), **HEAD, **m_kw)
        randomize_(official, seed=len(name))
        ours = build_from_config(name)
        copy_state_(ours, official)
        _PAIRS[name] = (official, ours)
    return _PAIRS[name]


def run(model, x, training=False):
    model.train() if training else model.eval()
    with paddle.no_grad():
        return [t.numpy() for t in model(paddle.to_tensor(x))]


def rand_input(shape, seed=0):
    return np.random.default_rng(seed).normal(0, 1, shape).astype("float32")


@pytest.mark.parametrize("name", CASES)
def test_config_builds_our_model(name):
    backbone, bb_kw, m_kw, feat_channels, *_ = CASES[name]
    model = pair(name)[1]
    assert type(model) is MobileSeg
    assert type(model.backbone).__module__.startswith("mobileseg_paddle.models.backbones")
    assert list(model.backbone.feat_channels) == feat_channels
    assert model.backbone_indices == m_kw.get("backbone_indices", [1, 2, 3])
    assert len(model.seg_heads) == 3 and model.num_classes == 19
    assert [arm.conv_out.piontwise_conv._conv.weight.shape[0]
            for arm in model.ppseg_head.arm_list] == [32, 64, 128]
    assert model.ppseg_head.cm.bin_sizes == [1, 2, 4]


@pytest.mark.parametrize("name", CASES)
def test_eval_outputs_equal_official(name):
    official, ours = pair(name)
    shapes = [(1, 3, 256, 256), (2, 3, 128, 160)]
    if name != "litehrnet18":  # paddleseg's Lite-HRNet only runs at multiples of 32
        shapes.append((1, 3, 193, 287))
    for i, shape in enumerate(shapes):
        x = rand_input(shape, seed=i)
        (a,), (b,) = run(official, x), run(ours, x)
        assert b.shape == (shape[0], 19) + shape[2:]
        assert np.abs(a).max() > 0.05, "logits too small to compare"
        assert max_rel_err(b, a) <= 1e-5, (shape, max_rel_err(b, a))


@pytest.mark.parametrize("name", CASES)
def test_train_outputs_equal_official(name):
    official, ours = pair(name)
    x = rand_input((2, 3, 128, 128), seed=7)
    a, b = run(official, x, training=True), run(ours, x, training=True)
    assert len(a) == len(b) == 3
    for la, lb in zip(a, b):
        assert lb.shape == (2, 19, 128, 128)
        assert max_rel_err(lb, la) <= 1e-5


@pytest.mark.parametrize("name", CASES)
def test_params_and_flops_equal_official(name):
    # fresh models: paddle.flops leaves total_ops/total_params buffers in the layers it measures
    backbone, bb_kw, m_kw, _, params, gmacs = CASES[name]
    with paddle.utils.unique_name.guard():
        official = OfficialMobileSeg(19, manager.BACKBONES[backbone](**bb_kw), **HEAD, **m_kw)
    ours = build_from_config(name)
    count = lambda m: sum(int(np.prod(p.shape)) for p in m.parameters())
    assert count(ours) == count(official) == params
    ours.eval(), official.eval()
    f_ours = paddle.flops(ours, [1, 3, 1024, 2048])
    assert f_ours == paddle.flops(official, [1, 3, 1024, 2048])
    assert abs(f_ours / 1e9 - gmacs) < 0.01


@pytest.mark.parametrize("arm_type,use_last_fuse", [("UAFMMobile_SpAtten", False),
                                                    ("UAFMMobile", True)])
def test_head_options_equal_official(arm_type, use_last_fuse):
    """The head settings the published configs leave at their defaults."""
    backbone = pair("mobilenetv3")[1].backbone  # one backbone object serves both heads
    kw = dict(HEAD, arm_type=arm_type, use_last_fuse=use_last_fuse)
    official = OfficialMobileSeg(5, backbone, **kw)
    randomize_(official, seed=11)
    ours = copy_state_(MobileSeg(5, backbone, **kw), official)
    x = rand_input((1, 3, 160, 224))
    assert max_rel_err(run(ours, x)[0], run(official, x)[0]) <= 1e-5
    for a, b in zip(run(official, x, True), run(ours, x, True)):
        assert max_rel_err(b, a) <= 1e-5


def test_lite_hrnet_any_size():
    """paddleseg's Lite-HRNet-18 MobileSeg fails off multiples of 32; ours runs at any size."""
    official, ours = pair("litehrnet18")
    x = rand_input((1, 3, 193, 287))
    with pytest.raises(Exception):  # noqa: B017  (paddleseg's own failure, any type)
        run(official, x)
    for shape in [(1, 3, 193, 287), (1, 3, 64, 64), (1, 3, 97, 65)]:
        (y,) = run(ours, rand_input(shape))
        assert y.shape == (1, 19) + shape[2:] and np.isfinite(y).all()


def test_many_instances_in_one_process():
    models = [build_from_config("mobilenetv2") for _ in range(2)]
    models += [build_from_config("shufflenetv2"), build_from_config("ghostnet")]
    names = [p.name for m in models for p in m.parameters()]
    assert len(names) == len(set(names))


def test_official_checkpoint_loads(tmp_path):
    official, _ = pair("ghostnet")
    path = str(tmp_path / "model.pdparams")
    paddle.save(official.state_dict(), path)
    model = build_from_config("ghostnet")
    load_pretrained(model, path)
    x = rand_input((1, 3, 96, 128))
    assert max_rel_err(run(model, x)[0], run(official, x)[0]) <= 1e-5
    # a folder holding model.pdparams works too (PaddleSeg's checkpoint layout)
    load_pretrained(model, str(tmp_path))


def test_checkpoint_errors(tmp_path):
    _, ours = pair("mobilenetv3")
    other = build_from_config("ghostnet")
    path = str(tmp_path / "ghost.pdparams")
    paddle.save(other.state_dict(), path)
    with pytest.raises(UserError, match=r"missing keys \[.*unexpected keys \["):
        load_pretrained(ours, path)
    with pytest.raises(UserError, match="not found"):
        load_pretrained(ours, str(tmp_path / "absent.pdparams"))
    with pytest.raises(UserError, match="cannot download"):
        load_pretrained(ours, "http://127.0.0.1:9/model.pdparams")
    # same architecture, other num_classes
    two = MobileSeg(2, ours.backbone, **HEAD)
    path = str(tmp_path / "two.pdparams")
    paddle.save(two.state_dict(), path)
    with pytest.raises(UserError, match=r"num_classes mismatch: .* 2 classes, .*num_classes=19"):
        load_pretrained(ours, path)


def test_constructor_errors():
    backbone = pair("mobilenetv3")[1].backbone
    with pytest.raises(ValueError, match=r"backbone_indices \[1, 2, 4\] out of range"):
        MobileSeg(19, backbone, backbone_indices=[1, 2, 4])
    with pytest.raises(ValueError, match="arm_out_chs has 2 values, expected 1 or 3"):
        MobileSeg(19, backbone, arm_out_chs=[32, 64])
    with pytest.raises(ValueError, match="seg_head_inter_chs has 4 values"):
        MobileSeg(19, backbone, seg_head_inter_chs=[32] * 4)
    cfg = Config(config_path("mobilenetv2"), opts=["model.backbone.type=MSP_NoSuchNet"])
    with pytest.raises(RuntimeError, match=r"MSP_NoSuchNet\) was not found"):
        SegBuilder(cfg).model  # noqa: B018  (building is the point)


TRACE_SCRIPT = textwrap.dedent("""
    import os, sys, paddle
    sys.path[:0] = [{root!r}, os.path.join({root!r}, "models")]
    from test_mobileseg import build_from_config, rand_input, CASES
    from helpers.numerics import randomize_, max_rel_err
    from mobileseg_paddle.models.export_rewrites import legacy_tracing
    for name in CASES:
        model = build_from_config(name)
        randomize_(model, 3)
        model.eval()
        inputs = [paddle.to_tensor(rand_input(s)) for s in [(1, 3, 128, 192), (2, 3, 96, 64)]]
        expected = [model(x)[0].numpy() for x in inputs]
        with legacy_tracing():  # (no-op in PIR)
            static = paddle.jit.to_static(
                model, input_spec=[paddle.static.InputSpec([None, 3, None, None], "float32")],
                full_graph=True)
            got = [static(x)[0].numpy() for x in inputs]
        print(name, max(max_rel_err(g, e) for g, e in zip(got, expected)))
""")


@pytest.mark.parametrize("pir", ["1", "0"])
def test_traces_with_dynamic_shape(pir, tmp_path):
    """to_static with dynamic N, H, W in PIR and in the legacy program format."""
    script = tmp_path / "trace.py"
    script.write_text(TRACE_SCRIPT.format(root=os.path.join(ROOT, "tests")))
    env = dict(os.environ, FLAGS_enable_pir_api=pir,
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                         cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    errs = dict(line.split() for line in out.stdout.splitlines() if line.split()[:1] in
                ([name] for name in CASES))
    assert set(errs) == set(CASES)
    assert all(float(e) <= 1e-5 for e in errs.values()), errs
