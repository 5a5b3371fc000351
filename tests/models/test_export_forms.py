"""The traced forms of nearest upsampling and channel shuffle (``layers.resize_nearest``,
``layers.concat_shuffle``) against the dygraph ops they replace: exact at every size, in both
program formats, for fixed and dynamic H/W; what Lite-HRNet's dynamic legacy program holds; and
the trace's speed fixes give Paddle's answers and programs."""

import contextlib

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

from mobileseg_paddle.models.backbones import lite_hrnet
from mobileseg_paddle.models.export_rewrites import legacy_tracing, prepare_for_deploy
from mobileseg_paddle.models.layers import (
    concat_shuffle,
    nearest_source_index,
    resize_nearest,
    spatial_size,
)


def channel_shuffle(x, groups):
    """The textbook channel shuffle (reshape, transpose, reshape), on dygraph tensors."""
    n, c, h, w = x.shape
    x = paddle.reshape(x, [n, groups, c // groups, h, w])
    return paddle.reshape(paddle.transpose(x, [0, 2, 1, 3, 4]), [n, c, h, w])


def rand(shape, seed=0):
    return paddle.to_tensor(np.random.default_rng(seed).standard_normal(shape).astype("float32"))


def guard(program):
    return (paddle.pir_utils.DygraphOldIrGuard() if program == "legacy"
            else paddle.pir_utils.DygraphPirGuard())


def legacy_ops(static_layer):
    return [op.type for op in static_layer.forward.concrete_program.main_program.global_block().ops]


def test_nearest_source_index_is_paddles():
    # every pair of small sizes, and Lite-HRNet's pairs (ceil(T / 2^d) -> T) up to 300
    pairs = [(i, o) for i in range(1, 25) for o in range(1, 60)]
    pairs += [(-(-t // 2 ** d), t) for d in (1, 2, 3) for t in range(1, 301)] + [(2, 82)]
    for n_in, n_out in pairs:
        x = paddle.arange(n_in, dtype="float32").reshape([1, 1, 1, n_in])
        got = F.interpolate(x, [1, n_out], mode="nearest").numpy().ravel()
        np.testing.assert_array_equal(got, nearest_source_index(n_in, n_out),
                                      err_msg=f"{n_in} -> {n_out}")
    # the float32 ratio matters: the exact fraction k * n_in // n_out differs here
    assert (nearest_source_index(2, 82) != np.arange(82) * 2 // 82).any()


class Resize(nn.Layer):
    def forward(self, x, ref):
        return resize_nearest(x, spatial_size(ref))


# (in H, in W, out H, out W): integer factors, odd sizes, one axis of each, identity
SIZES = [(32, 64, 64, 128), (8, 16, 64, 32), (7, 9, 13, 17), (2, 3, 5, 9), (7, 8, 13, 16),
         (25, 41, 50, 82), (13, 13, 13, 13)]


@pytest.mark.parametrize("program", ["legacy", "pir"])
@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic", "fixed"])
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "{}x{}-{}x{}".format(*s))
def test_resize_nearest_traced_equals_interpolate(program, dynamic, sizes):
    ih, iw, oh, ow = sizes
    x, ref = rand([2, 3, ih, iw]), paddle.zeros([2, 1, oh, ow])
    want = F.interpolate(x, [oh, ow], mode="nearest").numpy()
    np.testing.assert_array_equal(resize_nearest(x, [oh, ow]).numpy(), want)  # dygraph
    spec = [paddle.static.InputSpec([None, 3] + ([None, None] if dynamic else [ih, iw])),
            paddle.static.InputSpec([None, 1] + ([None, None] if dynamic else [oh, ow]))]
    with guard(program), legacy_tracing():
        static = paddle.jit.to_static(Resize(), input_spec=spec, full_graph=True)
        got = static(x, ref).numpy()
        ops = legacy_ops(static) if program == "legacy" else None
    np.testing.assert_array_equal(got, want)
    if ops is not None:
        integer = oh % ih == 0 and ow % iw == 0
        # the interpolation stays only where oneDNN computes it as Paddle does
        assert ("nearest_interp_v2" in ops) == (integer and not dynamic), ops
        assert ("gather" in ops) == (dynamic or not integer), ops


class Shuffle(nn.Layer):
    def __init__(self, fusable=False):
        super().__init__()
        self.fusable = fusable

    def forward(self, a, b):
        return concat_shuffle([a, b], self.fusable)


@pytest.mark.parametrize("program", ["legacy", "pir"])
@pytest.mark.parametrize("fusable", [False, True], ids=["default", "fusable"])
def test_concat_shuffle_equals_channel_shuffle(program, fusable):
    spec = [paddle.static.InputSpec([None, 5, None, None])] * 2
    with guard(program), legacy_tracing():
        static = paddle.jit.to_static(Shuffle(fusable), input_spec=spec, full_graph=True)
        for shape in ([1, 5, 7, 9], [2, 5, 16, 33]):
            a, b = rand(shape, 1), rand(shape, 2)
            want = channel_shuffle(paddle.concat([a, b], axis=1), 2).numpy()
            np.testing.assert_array_equal(concat_shuffle([a, b], fusable).numpy(), want)
            np.testing.assert_array_equal(static(a, b).numpy(), want)
        if program == "legacy":
            ops = legacy_ops(static)
            if fusable:  # the reshape-transpose-reshape OpenVINO fuses, sizes from the shape
                assert [o for o in ops if o in ("concat", "reshape2", "transpose2")] == [
                    "concat", "reshape2", "transpose2", "reshape2"], ops
            else:  # no shape arithmetic
                assert ops == ["stack", "flatten_contiguous_range"], ops


def test_lite_hrnet_dynamic_legacy_program():
    """No nearest interpolation, no runtime reshape of the shuffles, index vectors traced once
    per branch pair and axis; the outputs equal dygraph at sizes off multiples of 32."""
    paddle.seed(0)
    net = lite_hrnet.Lite_HRNet_18()
    net.eval()
    spec = [paddle.static.InputSpec([None, 3, None, None], "float32")]
    with guard("legacy"), legacy_tracing():
        static = paddle.jit.to_static(net, input_spec=spec, full_graph=True)
        for shape in ([1, 3, 97, 130], [1, 3, 64, 64], [1, 3, 200, 328]):
            x = rand(shape)
            for o, r in zip(static(x), net(x)):
                np.testing.assert_allclose(o.numpy(), r.numpy(), rtol=1e-5, atol=1e-6)
        ops = legacy_ops(static)
    assert "nearest_interp_v2" not in ops and "transpose2" not in ops
    # 32 weighting and 26 fuse upsamplings (those between equal sizes are left out), 2 axes each
    assert ops.count("gather") == 2 * 58
    assert ops.count("range") == 2 * 6  # branch pairs (3, 0) ... (1, 0)

    # OpenVINO's program: the interpolations as they are, the shuffles OpenVINO fuses
    openvino = prepare_for_deploy(net, target="openvino")
    with guard("legacy"), legacy_tracing():
        static = paddle.jit.to_static(openvino, input_spec=spec, full_graph=True)
        x = rand([1, 3, 97, 130])
        for o, r in zip(static(x), net(x)):
            np.testing.assert_allclose(o.numpy(), r.numpy(), rtol=1e-5, atol=1e-6)
        ops = legacy_ops(static)
    assert ops.count("nearest_interp_v2") == 74 and "gather" not in ops
    assert "stack" not in ops and ops.count("transpose2") == 49  # stem + 48 block shuffles


def test_fast_dy2static_whitelist_gives_paddles_answers():
    """Which callees dy2static leaves unconverted: the same answer from the set built once as
    from Paddle's scan, for builtins, C functions of whitelisted modules (numpy's ufuncs: no
    ``__code__``), Paddle's functions and layers, and our own code; restored on exit."""
    import functools
    import math
    import os

    from paddle.jit.dy2static import convert_call_func as C

    from mobileseg_paddle.models.export_rewrites import DeployModel, fast_dy2static_whitelist

    def ours(x):
        return x

    candidates = [len, print, math.sqrt, os.path.join, np.add, np.sum, np.linalg.norm,
                  paddle.add, paddle.concat, F.relu, F.interpolate, nn.Conv2D,
                  nn.Conv2D(3, 4, 1), nn.Conv2D.forward, DeployModel.forward, ours,
                  lambda x: x, functools.partial(ours), list.append, lite_hrnet.Lite_HRNet_18,
                  prepare_for_deploy]
    original = C.is_unsupported
    want = [original(f) for f in candidates]
    assert True in want and False in want
    with fast_dy2static_whitelist():
        assert C.is_unsupported is not original
        assert [C.is_unsupported(f) for f in candidates] == want
    assert C.is_unsupported is original


def test_cached_method_conversion_writes_the_same_program(tmp_path, monkeypatch):
    """Paddle's dy2static cache drops a bound method's entry with the method, so a trace
    converts a layer's ``forward`` at every layer call; ``cached_method_conversion`` (in every
    trace of ours) converts each function once per trace. MobileNetV3's legacy program (random
    weights) with it and without it: far fewer conversions, and the same program op for op
    (types, attributes, wiring, shapes) and the same parameters; Paddle's cache restored, after
    a nested trace too."""
    from paddle.jit.dy2static import program_translator as T

    from helpers import ROOT
    from helpers.numerics import randomize_
    from helpers.paddle_files import program_signature, read_params
    from mobileseg_paddle.builder import build_model
    from mobileseg_paddle.deploy.lite.convert import export_program
    from mobileseg_paddle.models import export_rewrites

    config = f"{ROOT}/configs/mobileseg/mobileseg_mobilenetv3_cityscapes_1024x512_80k.yml"
    model = build_model(config, None, drop_pretrained=True)[0]
    randomize_(model, seed=0)
    cache = T._FUNCTION_CACHE
    original = cache._convert
    written = {}
    for cached in (True, False):
        calls = []
        monkeypatch.setattr(cache, "_convert",
                            lambda f, calls=calls: calls.append(f) or original(f))
        if not cached:
            monkeypatch.setattr(export_rewrites, "cached_method_conversion",
                                contextlib.nullcontext)
        model_file, params_file = export_program(model, str(tmp_path / str(cached)), [1, 3, 64, 64])
        program, ops, names = program_signature(model_file)
        params = {names[n]: a for n, a in read_params(program, params_file).items()}
        written[cached] = (len(calls), ops, params)
        assert "convert_with_cache" not in vars(cache)  # the class's method again
    (fast, ops, params), (slow, plain_ops, plain_params) = written[True], written[False]
    assert 0 < 3 * fast < slow
    assert len(ops) > 200 and ops == plain_ops
    assert sorted(params) == sorted(plain_params)
    assert all(np.array_equal(params[k], plain_params[k]) for k in params)
    monkeypatch.undo()
    with export_rewrites.fast_dy2static():
        outer = vars(cache)["convert_with_cache"]
        with export_rewrites.fast_dy2static():
            assert vars(cache)["convert_with_cache"] is not outer
        assert vars(cache)["convert_with_cache"] is outer  # a nested trace restores the outer's
    assert "convert_with_cache" not in vars(cache)
