"""Our MobileNetV2/V3 backbones against paddleseg 2.8.0's: same state-dict keys and shapes, same
parameter count and the same 4 features (eval and train mode) once the official weights (random,
with random BN statistics) are copied into ours."""

import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
from paddle.utils import unique_name
from paddleseg.models.backbones import mobilenetv2 as official_v2
from paddleseg.models.backbones import mobilenetv3 as official_v3

from helpers import ROOT as REPO
from helpers.numerics import copy_state_, max_rel_err, randomize_
from mobileseg_paddle.models.backbones import mobilenetv2 as ours_v2
from mobileseg_paddle.models.backbones import mobilenetv3 as ours_v3

TOL = 1e-5

# (factory name, expected feat_channels)
CASES = [
    ("MobileNetV2_x1_0", [24, 32, 96, 320]),
    ("MobileNetV2_x0_25", [6, 8, 24, 80]),  # int() truncation: 24 * 0.25 = 6 channels
    ("MobileNetV3_large_x1_0", [24, 40, 112, 160]),
    ("MobileNetV3_small_x0_75", [16, 24, 40, 72]),
    ("MobileNetV3_large_x1_0_os8", [24, 40, 112, 160]),
    ("MobileNetV3_small_x1_0_os8", [16, 24, 48, 96]),
]


def _module(name):
    return (official_v2, ours_v2) if name.startswith("MobileNetV2") else (official_v3, ours_v3)


def build_official(name):
    # The official MobileNetV2 gives its parameters fixed names, which paddle allows once per
    # name checker: build it in a fresh unique-name scope so every test can build it.
    with unique_name.guard():
        return getattr(_module(name)[0], name)()


def build_pair(name, seed=0):
    official = randomize_(build_official(name), seed)
    ours = getattr(_module(name)[1], name)()
    copy_state_(ours, official)
    return official, ours


def inputs(shape, seed=1):
    return paddle.to_tensor(np.random.default_rng(seed).normal(0, 1, shape).astype("float32"))


def assert_same_features(a, b, what):
    assert len(a) == len(b) == 4, what
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.shape == y.shape, f"{what} feature {i}: {x.shape} vs {y.shape}"
        err = max_rel_err(x.numpy(), y.numpy())
        assert err <= TOL, f"{what} feature {i}: max_rel_err {err:.2e}"


@pytest.fixture(scope="module", params=[c[0] for c in CASES])
def pair(request):
    return request.param, build_pair(request.param)


def test_state_dict_keys_shapes_and_param_count(pair):
    name, (official, ours) = pair
    s_off, s_our = official.state_dict(), ours.state_dict()
    assert sorted(s_off) == sorted(s_our)
    for k in s_off:
        assert list(s_off[k].shape) == list(s_our[k].shape), k
    n_off = sum(int(np.prod(p.shape)) for p in official.parameters())
    n_our = sum(int(np.prod(p.shape)) for p in ours.parameters())
    assert n_off == n_our
    expected = dict(CASES)[name]
    assert ours.feat_channels == official.feat_channels == expected


def test_official_key_names_reproduced():
    keys = set(ours_v2.MobileNetV2_x1_0().state_dict())
    assert "conv2._first_block._expand_conv._conv.weight" in keys
    assert "conv3.conv3_2._linear_conv._batch_norm._variance" in keys
    assert "conv8._first_block._bottleneck_conv._batch_norm.weight" in keys
    keys = set(ours_v3.MobileNetV3_large_x1_0().state_dict())
    assert "conv.bn._mean" in keys
    assert "blocks.3.mid_se.conv1.bias" in keys  # SE convs have a bias
    assert "blocks.0.mid_se.conv1.weight" not in keys  # unit 0 of "large" has no SE


@pytest.mark.parametrize("shape", [(1, 3, 256, 256), (1, 3, 193, 287), (2, 3, 128, 160)])
def test_eval_features_match(pair, shape):
    name, (official, ours) = pair
    official.eval()
    ours.eval()
    x = inputs(shape)
    with paddle.no_grad():
        feats_off, feats_our = official(x), ours(x)
    assert_same_features(feats_our, feats_off, f"{name} {shape}")
    strides = [4, 8, 8, 8] if name.endswith("os8") else [4, 8, 16, 32]
    expected = [[-(-shape[2] // s), -(-shape[3] // s)] for s in strides]  # ceil: padded convs
    assert [list(f.shape[2:]) for f in feats_our] == expected


def test_train_mode_features_and_running_stats_match(pair):
    name, (official, ours) = pair
    official.train()
    ours.train()
    x = inputs((2, 3, 96, 128), seed=2)
    with paddle.no_grad():
        feats_off, feats_our = official(x), ours(x)
    official.eval()
    ours.eval()
    assert_same_features(feats_our, feats_off, f"{name} train")
    # BN momentum must match too: compare the updated running statistics.
    s_off = official.state_dict()
    for k, v in ours.state_dict().items():
        if k.endswith(("_mean", "_variance")):
            assert max_rel_err(v.numpy(), s_off[k].numpy()) <= TOL, k


def test_many_instances_in_one_process_official_v2_cannot():
    a, b = ours_v2.MobileNetV2_x1_0(), ours_v2.MobileNetV2_x1_0()
    c, d = ours_v3.MobileNetV3_large_x1_0(), ours_v3.MobileNetV3_large_x1_0()
    names = [p.name for m in (a, b, c, d) for p in m.parameters()]
    assert len(set(names)) == len(names)
    with unique_name.guard():  # keep the official names out of the process-wide checker
        official_v2.MobileNetV2_x1_0()
        with pytest.raises(ValueError, match="have be been used"):
            official_v2.MobileNetV2_x1_0()


def test_v3_batchnorm_excluded_from_weight_decay():
    model = ours_v3.MobileNetV3_small_x1_0()
    bn = model.blocks[0].expand_conv.bn
    assert bn.weight.regularizer is not None and bn.weight.regularizer._coeff == 0.0
    assert model.blocks[0].expand_conv.conv.weight.regularizer is None


def test_bad_v3_config_names_the_choices():
    with pytest.raises(ValueError, match=r"\['large', 'small'\]"):
        ours_v3.MobileNetV3(config="medium")
    with pytest.raises(ValueError, match=r"output_stride=4: expected one of \[8, 16, 32\]"):
        ours_v3.MobileNetV3(output_stride=4)


@pytest.mark.parametrize("arch", ["large", "small"])
def test_os8_units_are_paddlesegs_os8_tables(arch):
    """The strides and dilations computed from the base table for output stride 8 are, unit by
    unit, those written out in paddleseg's ``NET_CONFIG[arch + "_os8"]``; the rest of each row
    is the base row."""
    official = official_v3.NET_CONFIG[arch + "_os8"]
    units = ours_v3.MobileNetV3(config=arch, output_stride=8).blocks
    assert len(units) == len(official)
    for i, (unit, row, base) in enumerate(zip(units, official, ours_v3.NET_CONFIG[arch])):
        conv = unit.bottleneck_conv.conv
        expected_d = row[6] if len(row) > 6 else 1
        assert (conv._stride, conv._dilation) == ([row[5]] * 2, [expected_d] * 2), f"unit {i}"
        assert conv._padding == expected_d * (row[0] - 1) // 2, f"unit {i}"
        assert tuple(row[:5]) == base[:5], f"unit {i}"


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_output_stride_caps_the_feature_strides(output_stride):
    model = ours_v3.MobileNetV3(config="large", scale=0.35, output_stride=output_stride).eval()
    with paddle.no_grad():
        feats = model(inputs((1, 3, 64, 64)))
    assert [64 // f.shape[2] for f in feats] == [min(s, output_stride) for s in (4, 8, 16, 32)]


def test_to_static_dynamic_hw():
    """Both backbones trace once with unknown N/H/W and match dygraph at an odd size."""
    spec = [paddle.static.InputSpec([None, 3, None, None], "float32")]
    x = inputs((1, 3, 97, 131), seed=3)
    for model in (ours_v2.MobileNetV2_x0_5(), ours_v3.MobileNetV3_small_x1_0()):
        randomize_(model, 4).eval()
        with paddle.no_grad():
            expected = model(x)
            got = paddle.jit.to_static(model, input_spec=spec, full_graph=True)(x)
        assert_same_features(got, expected, type(model).__name__ + " to_static")


LEGACY_SCRIPT = """
import paddle
from mobileseg_paddle.models.backbones import mobilenetv2, mobilenetv3
spec = [paddle.static.InputSpec([None, 3, None, None], "float32")]
for m in (mobilenetv2.MobileNetV2_x0_5(), mobilenetv3.MobileNetV3_small_x1_0()):
    m.eval()
    net = paddle.jit.to_static(m, input_spec=spec, full_graph=True)
    for hw in [(97, 131), (64, 64)]:
        out = net(paddle.rand([2, 3, *hw]))
        print(type(m).__name__, [list(o.shape) for o in out])
"""


def test_to_static_legacy_program():
    env = dict(os.environ, FLAGS_enable_pir_api="0", PYTHONPATH=REPO)
    run = subprocess.run([sys.executable, "-c", LEGACY_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "MobileNetV2 [[2, 12, 25, 33], [2, 16, 13, 17], [2, 48, 7, 9], [2, 160, 4, 5]]" \
        in run.stdout, run.stdout
    assert "MobileNetV3 [[2, 16, 16, 16], [2, 24, 8, 8], [2, 48, 4, 4], [2, 96, 2, 2]]" \
        in run.stdout, run.stdout


@pytest.mark.parametrize("name", ["MobileNetV2_x0_25", "MobileNetV3_small_x0_75"])
def test_pretrained_loads_an_official_checkpoint(name, tmp_path):
    official = randomize_(build_official(name), seed=5)
    path = str(tmp_path / "model.pdparams")
    paddle.save(official.state_dict(), path)
    ours = getattr(_module(name)[1], name)(pretrained=path)
    for k, v in official.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k].numpy(), v.numpy(), err_msg=k)
