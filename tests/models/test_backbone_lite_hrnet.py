"""Our Lite-HRNet against paddleseg 2.8.0's: same state dict, same outputs where the official
model runs, and any input size >= 64 (the official model fails at sides not multiple of 32)."""

import math

import numpy as np
import paddle
import pytest
from paddleseg.models.backbones import lite_hrnet as official

from helpers.numerics import copy_state_, max_rel_err, randomize_
from mobileseg_paddle.models.backbones import lite_hrnet as ours

TOL = 1e-5


def build_pair(use_head, seed=0):
    """(official, ours) Lite_HRNet_18 with the same random weights and BN statistics."""
    ref = randomize_(official.Lite_HRNet_18(use_head=use_head), seed)
    mine = copy_state_(ours.Lite_HRNet_18(use_head=use_head), ref)
    return ref, mine


def image(shape, seed=0):
    return paddle.to_tensor(np.random.default_rng(seed).standard_normal(shape).astype("float32"))


def assert_all_close(outs, refs):
    assert len(outs) == len(refs) == 4
    for k, (o, r) in enumerate(zip(outs, refs)):
        assert o.shape == r.shape, f"output {k}: {o.shape} vs {r.shape}"
        err = max_rel_err(o.numpy(), r.numpy())
        assert err <= TOL, f"output {k}: max rel err {err}"


@pytest.fixture(scope="module", params=[False, True], ids=["no_head", "head"])
def eval_pair(request):
    ref, mine = build_pair(request.param)
    ref.eval()
    mine.eval()
    return ref, mine


def test_state_dict_and_channels_match(eval_pair):
    ref, mine = eval_pair
    s_ref, s_mine = ref.state_dict(), mine.state_dict()
    assert set(s_mine) == set(s_ref)
    assert all(list(s_mine[k].shape) == list(v.shape) for k, v in s_ref.items())
    count = lambda m: sum(int(np.prod(p.shape)) for p in m.parameters())
    assert count(mine) == count(ref)
    assert mine.feat_channels == ref.feat_channels
    assert mine.feat_channels == ([40, 40, 80, 160] if mine.use_head else [40, 80, 160, 320])
    assert "transition0.1.0.0.weight" in s_mine  # plain Sequential keys of transition layers


def test_training_flags_match():
    """freeze_norm freezes the conv-norm BNs (not the stem's, nor transition/fuse BNs) exactly
    as the official model does: same per-parameter flags and BN modes."""
    ref, mine = official.Lite_HRNet_18(), ours.Lite_HRNet_18()
    flags = lambda p: (p.stop_gradient, p.optimize_attr["learning_rate"], str(p.regularizer))
    p_mine = dict(mine.named_parameters())
    assert {k: flags(p) for k, p in ref.named_parameters()} == \
        {k: flags(p_mine[k]) for k, _ in ref.named_parameters()}
    global_stats = lambda m: {k: bn._use_global_stats for k, bn in m.named_sublayers()
                              if isinstance(bn, paddle.nn.BatchNorm2D)}
    assert global_stats(mine) == global_stats(ref)
    frozen = {k for k, v in global_stats(mine).items() if v}
    assert frozen == {k for k in global_stats(mine)
                      if k.endswith(".norm") and not k.startswith("stem.")}
    assert len(frozen) == 80


@pytest.mark.parametrize("shape", [(1, 3, 256, 256), (2, 3, 128, 160)])
def test_eval_outputs_match(eval_pair, shape):
    ref, mine = eval_pair
    x = image(shape)
    with paddle.no_grad():
        assert_all_close(mine(x), ref(x))


def test_train_outputs_stats_and_grads_match():
    ref, mine = build_pair(use_head=True, seed=1)
    ref.train()
    mine.train()
    x = image((2, 3, 64, 96), seed=1)
    outs, refs = mine(x), ref(x)
    assert_all_close(outs, refs)
    # Output freeze_at=0 is cut from the graph, as the official model does.
    assert outs[0].stop_gradient and not outs[1].stop_gradient
    # Batch statistics updated the same running means/variances (stem, transition, fuse BNs).
    s_mine = mine.state_dict()
    for k, v in ref.state_dict().items():
        assert max_rel_err(s_mine[k].numpy(), v.numpy()) <= TOL, k
    sum(o.sum() for o in outs[1:]).backward()
    sum(r.sum() for r in refs[1:]).backward()
    p_mine = dict(mine.named_parameters())
    checked = 0
    for k, p in ref.named_parameters():
        if p.grad is None:
            assert p_mine[k].grad is None, k
            continue
        assert max_rel_err(p_mine[k].grad.numpy(), p.grad.numpy()) <= 1e-4, k
        checked += 1
    assert checked > 300


@pytest.mark.parametrize("shape", [(1, 3, 193, 287), (1, 3, 64, 64)])
def test_any_size_from_64(eval_pair, shape):
    ref, mine = eval_pair
    x = image(shape)
    with paddle.no_grad():
        outs = mine(x)
    n, _, h, w = shape
    expected = [[n, c, math.ceil(h / 2 ** (k + 2)), math.ceil(w / 2 ** (k + 2))]
                for k, c in enumerate(mine.feat_channels)]
    assert [list(o.shape) for o in outs] == expected
    assert all(np.isfinite(o.numpy()).all() for o in outs)
    if shape[2] % 32:  # the failure this backbone fixes: a concat of mismatched sizes
        with pytest.raises(ValueError):
            ref(x)


def test_cross_resolution_weighting_border_cells_average_real_pixels():
    """Spatially constant inputs at ceil-chained odd sizes (7 -> 4 -> 2) must give spatially
    constant outputs: the partial border pooling windows average only real pixels."""
    crw = ours.CrossResolutionWeighting([4, 8, 16], ratio=4)
    randomize_(crw, 2)
    crw.eval()
    rng = np.random.default_rng(3)
    xs = [paddle.to_tensor(np.broadcast_to(rng.uniform(1, 2, (1, c, 1, 1)), (1, c, h, w))
                           .astype("float32")) for c, h, w in [(4, 7, 5), (8, 4, 3), (16, 2, 2)]]
    for x, y in zip(xs, crw(xs)):
        assert y.shape == x.shape
        y = y.numpy()
        assert np.abs(y - y[:, :, :1, :1]).max() <= 1e-6 * np.abs(y).max()
        assert np.abs(y - x.numpy()).max() > 1e-3  # the weights did change the input


def test_to_static_dynamic_input_size():
    _, mine = build_pair(use_head=True, seed=4)
    mine.eval()
    xs = [image((1, 3, 97, 131), 5), image((2, 3, 64, 64), 6)]
    with paddle.no_grad():
        dygraph = [[o.numpy() for o in mine(x)] for x in xs]
    static = paddle.jit.to_static(
        mine, input_spec=[paddle.static.InputSpec([None, 3, None, None], "float32")],
        full_graph=True)
    for x, refs in zip(xs, dygraph):
        outs = static(x)
        assert [list(o.shape) for o in outs] == [list(r.shape) for r in refs]
        for o, r in zip(outs, refs):
            assert max_rel_err(o.numpy(), r) <= TOL
