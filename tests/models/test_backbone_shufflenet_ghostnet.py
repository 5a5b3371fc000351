"""Our ShuffleNetV2 and GhostNet against paddleseg 2.8.0's: same state-dict keys and shapes,
same parameter count, same 4 features (eval at three input shapes, train at one)."""

import numpy as np
import paddle
import pytest
from paddleseg.models.backbones import ghostnet as official_ghostnet
from paddleseg.models.backbones import shufflenetv2 as official_shufflenet

from helpers.numerics import copy_state_, max_rel_err, randomize_
from mobileseg_paddle.models.backbones import ghostnet, shufflenetv2

TOL = 1e-5
EVAL_SHAPES = [(1, 3, 256, 256), (1, 3, 193, 287), (2, 3, 128, 160)]
TRAIN_SHAPE = (2, 3, 96, 128)

# (factory name, feature channels) -- the name is the same in both packages.
CASES = [
    ("ShuffleNetV2_x1_0", [24, 116, 232, 464]),
    ("ShuffleNetV2_x0_5", [24, 48, 96, 192]),
    ("GhostNet_x1_0", [24, 40, 112, 160]),
    ("GhostNet_x0_5", [12, 20, 56, 80]),
]


def _modules(name):
    if name.startswith("ShuffleNet"):
        return official_shufflenet, shufflenetv2
    return official_ghostnet, ghostnet


def _official(name):
    # The official layers give their parameters fixed names, which paddle allows only once
    # per name namespace: build each official model in a fresh one.
    with paddle.utils.unique_name.guard():
        return getattr(_modules(name)[0], name)()


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def pair(request):
    """(name, channels, official model with random weights, ours with the same weights)."""
    name, channels = request.param
    paddle.seed(0)
    ref = randomize_(_official(name), seed=1)
    ours = copy_state_(getattr(_modules(name)[1], name)(), ref)
    return name, channels, ref, ours


def _features(model, x, train):
    model.train() if train else model.eval()
    with paddle.no_grad():
        return [f.numpy() for f in model(paddle.to_tensor(x))]


def test_state_dict_and_channels(pair):
    name, channels, ref, ours = pair
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(our_sd) == list(ref_sd)
    assert {k: list(v.shape) for k, v in our_sd.items()} == \
        {k: list(v.shape) for k, v in ref_sd.items()}
    count = lambda m: sum(int(np.prod(p.shape)) for p in m.parameters())
    assert count(ours) == count(ref)
    assert ours.feat_channels == ref.feat_channels == channels


@pytest.mark.parametrize("shape", EVAL_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_eval_features_match(pair, shape):
    name, channels, ref, ours = pair
    x = np.random.default_rng(2).standard_normal(shape).astype("float32")
    expected, got = _features(ref, x, train=False), _features(ours, x, train=False)
    assert len(got) == len(expected) == 4
    for stride, c, e, g in zip([4, 8, 16, 32], channels, expected, got):
        n, _, h, w = shape
        assert g.shape == e.shape == (n, c, -(-h // stride), -(-w // stride))
        assert np.abs(e).max() > 1e-3  # random weights must give non-trivial features
        assert max_rel_err(g, e) <= TOL, (name, stride, max_rel_err(g, e))


def test_train_features_match(pair):
    name, _, ref, ours = pair
    x = np.random.default_rng(3).standard_normal(TRAIN_SHAPE).astype("float32")
    expected, got = _features(ref, x, train=True), _features(ours, x, train=True)
    for stride, e, g in zip([4, 8, 16, 32], expected, got):
        assert max_rel_err(g, e) <= TOL, (name, stride, max_rel_err(g, e))
    # the running statistics moved the same way
    ref_sd = ref.state_dict()
    for k, v in ours.state_dict().items():
        if k.endswith("_mean") or k.endswith("_variance"):
            assert max_rel_err(v.numpy(), ref_sd[k].numpy()) <= TOL, k


def test_many_instances_and_bad_scale():
    # no fixed parameter names: several instances of every width coexist in one process
    nets = [shufflenetv2.ShuffleNetV2_x1_0(), shufflenetv2.ShuffleNetV2_x1_0(),
            shufflenetv2.ShuffleNetV2_swish(), ghostnet.GhostNet_x1_0(), ghostnet.GhostNet_x1_0()]
    names = [p.name for net in nets for p in net.parameters()]
    assert len(names) == len(set(names))
    with pytest.raises(ValueError, match="scale=0.75"):
        shufflenetv2.ShuffleNetV2(scale=0.75)


def test_traces_with_dynamic_size():
    """to_static with unknown batch, H and W reproduces the dygraph features at two sizes."""
    shapes = [(1, 3, 97, 131), (2, 3, 64, 64)]
    for model in (shufflenetv2.ShuffleNetV2_x0_5(), ghostnet.GhostNet_x0_5()):
        randomize_(model, seed=4).eval()
        inputs = [np.random.default_rng(5).standard_normal(s).astype("float32") for s in shapes]
        expected = [_features(model, x, train=False) for x in inputs]
        static = paddle.jit.to_static(
            model, input_spec=[paddle.static.InputSpec([None, 3, None, None], "float32")],
            full_graph=True)
        for x, feats in zip(inputs, expected):
            got = _features(static, x, train=False)
            for e, g in zip(feats, got):
                assert g.shape == e.shape
                assert max_rel_err(g, e) <= TOL
