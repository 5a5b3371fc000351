"""What the model changes about itself to be exported: rewrites with the same maths, the exported
wrapper, and the builders that let it trace into Paddle's legacy program format.

Rewrites (``prepare_for_deploy``; each checked against dygraph in tests/deploy/test_export.py):

- conv bias folded into the following BatchNorm's running mean (BN(conv(x) + b) equals BN'(conv(x))
  with mean' = mean - b). Paddle 3 traces a conv bias as a reshape + add that the inference
  conv+BN fusion passes do not match.
- adaptive average poolings to more than one bin (the context module's bins 2 and 4), in a form
  that is exact for every input size on each target:
  - paddle: a ``pool3d`` over a depth of one (``AdaptiveAvgPoolAs3D``): oneDNN's adaptive
    ``pool2d`` gives wrong numbers once a predictor has run another input size;
  - openvino (the second legacy program of a Paddle export, run by Paddle Inference's OpenVINO
    engine): adaptive ``pool2d`` as it is. OpenVINO's Paddle frontend converts the ``pool3d``
    form wrongly, and the matrix-product form adds a dozen small ops per pooling to the
    oneDNN program (a larger fixed cost per run), so each engine gets its own form;
  - onnx: the matrix-product form (``MobileContextModule.pool_by_matmul``): paddle2onnx refuses
    adaptive pooling on dynamic shapes and on static ones writes an AveragePool that is right
    only when the feature size is a multiple of the bin count;
  - lite: adaptive ``pool2d`` (a fixed input size; Lite has no ``pool3d``), except where the
    feature map already has the bin count's size: there the pooling is the identity and is left
    out (``AdaptiveAvgPoolLite``). Lite 2.13's ARM kernel takes an adaptive pooling whose size
    equals its input for a global one and leaves all but one value per channel unset (wrong
    numbers, even NaN, on the phone at 128x128 input, where the context module's 4 bins meet a
    4x4 map; its x86 kernel is right).
- Lite-HRNet's nearest upsamplings: gathers in the legacy programs of Paddle Inference's
  oneDNN and plain engines (``layers.resize_nearest``); ``F.interpolate`` for OpenVINO and Lite
  (``LiteHRNet.gather_nearest``), whose own nearest is exact, and in PIR traces (ONNX).
- openvino: channel shuffles in the form OpenVINO fuses into its ShuffleChannels kernel
  (``concat_shuffle``'s ``fusable``), which runs without converting the shuffled tensor's
  layout.
- openvino: the final bilinear upsampling, where its factors are integers, as weighted sums of
  shifted views (``layers.upsample_logits``), chosen by the sizes in the program.
- lite: convs as Lite's ARM kernels need them (``ConvLite``): a bias without a BatchNorm after
  it as Paddle 2.x wrote it (Lite folds it into the conv); squeeze-excitation convs widened
  with zero weights around an FP16 kernel's over-read.
- lite: Lite-HRNet's cross-resolution weighting concatenates its lowest branch through an
  identity pooling (``CrossResolutionWeighting.copy_last``). In an FP16 ARM program that branch
  is FP32 (the output of Lite's FP32 ``split``) while the pooled ones are FP16; Lite 2.13's ARM
  ``concat`` then converts the FP32 input to FP16 in place, and the multiplication that reads
  the same tensor afterwards gets FP16 bytes as FP32 (wrong numbers, then a segfault). Through
  the pooling, concat gets a copy of its own.

``DeployModel`` is the exported network: an ordinary top-level layer (as PaddleSeg's
``WrappedModel``) that returns the main logit followed by ``output_op``.

Legacy programs (``legacy_op_shims``): Paddle 3.3.1 binds a few dozen public functions
(``F.sigmoid``, ``paddle.multiply``, ``paddle.sum``, ``paddle.argmax`` ...) straight to
``_C_ops``, which accept dygraph tensors and PIR values but not legacy ``Variable``s. The shims
rebind the ones a segmentation network uses (``LEGACY_BUILDERS``), for the duration of a trace,
to builders that append the legacy op of the same meaning (the op Paddle 2.x wrote and Lite
reads); others still fail loudly. ``fast_warning_stack`` is a speed fix only: the legacy ``x + y``
builder calls ``inspect.stack()`` (which reads the source of every frame) to word a warning.
"""

import contextlib
import copy
import inspect
import sys

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.base.framework import Variable
from paddle.base.layer_helper import LayerHelper

TARGETS = ("paddle", "openvino", "onnx", "lite")
OUTPUT_OPS = ("argmax", "softmax", "none")


# --- rewrites -------------------------------------------------------------------------------------

def prepare_for_deploy(model, target="paddle"):
    """A deep copy of ``model`` in eval mode with the rewrites for ``target`` applied;
    ``model`` is not modified."""
    if target not in TARGETS:
        raise ValueError(f"target {target!r}: expected one of {TARGETS}")
    model = copy.deepcopy(model)
    model.eval()
    for layer in model.sublayers(include_self=True):
        fold_conv_bias_into_bn(layer)
        if target == "onnx" and hasattr(layer, "pool_by_matmul"):
            layer.pool_by_matmul = True
        if target in ("openvino", "lite") and hasattr(layer, "gather_nearest"):
            # OpenVINO computes the gather form's float index arithmetic in its own way (a
            # reciprocal: 41/82 -> 0.49999997, one row off), and its nearest Interpolate is
            # exact; Lite's gather is an FP32 host kernel (precision conversions around it in
            # FP16 programs) where its nearest_interp_v2 runs on ARM kernels
            layer.gather_nearest = False
        if target == "openvino" and hasattr(layer, "shuffle_fusable"):
            layer.shuffle_fusable = True  # channel shuffles: see concat_shuffle
        if target == "openvino" and hasattr(layer, "phase_upsample"):
            layer.phase_upsample = True  # the final upsampling: see upsample_logits
        if target == "paddle":
            for name, sub in list(layer._sub_layers.items()):
                if isinstance(sub, nn.AdaptiveAvgPool2D) and _binned(sub):
                    layer._sub_layers[name] = AdaptiveAvgPoolAs3D(sub._output_size)
        if target == "lite":
            if hasattr(layer, "copy_last"):  # CrossResolutionWeighting
                layer.copy_last = True
            for name, sub in list(layer._sub_layers.items()):
                if isinstance(sub, nn.AdaptiveAvgPool2D) and sub._data_format == "NCHW":
                    layer._sub_layers[name] = AdaptiveAvgPoolLite(sub._output_size)
                elif isinstance(sub, nn.Conv2D) and sub._data_format == "NCHW":
                    layer._sub_layers[name] = ConvLite(sub)
    return model


def _binned(pool):
    size = pool._output_size
    sizes = list(size) if isinstance(size, (list, tuple)) else [size, size]
    return pool._data_format == "NCHW" and sizes != [1, 1]


class AdaptiveAvgPoolAs3D(nn.Layer):
    """``nn.AdaptiveAvgPool2D(output_size)`` computed as a 3-D adaptive pooling of the input with
    a depth of one: the same numbers, as a ``pool3d`` op that Paddle Inference runs on its own
    kernel."""

    def __init__(self, output_size):
        super().__init__()
        sizes = output_size if isinstance(output_size, (list, tuple)) else [output_size] * 2
        self.sizes = [1] + list(sizes)

    def forward(self, x):
        return F.adaptive_avg_pool3d(x.unsqueeze(2), self.sizes).squeeze(2)


class AdaptiveAvgPoolLite(nn.Layer):
    """``nn.AdaptiveAvgPool2D(output_size)``, left out where the input already has that size
    (known while tracing a fixed-size Lite program): the same numbers, without the op Lite's ARM
    kernel gets wrong in that case."""

    def __init__(self, output_size):
        super().__init__()
        sizes = output_size if isinstance(output_size, (list, tuple)) else [output_size] * 2
        self.sizes = list(sizes)

    def forward(self, x):
        if list(x.shape[2:]) == self.sizes:
            return x
        return F.adaptive_avg_pool2d(x, self.sizes)


class ConvLite(nn.Layer):
    """An NCHW ``nn.Conv2D`` written for Lite's ARM kernels, same numbers:

    - its bias, in a legacy program, is one ``elementwise_add`` of the 1-D bias with axis=1 (what
      Paddle 2.x wrote; Lite folds it into the conv) instead of Paddle 3's reshape2 +
      elementwise_add, which Lite runs as separate ops;
    - a 1x1 conv on a 1x1 map (squeeze-excitation) whose input channels are not a multiple of
      16 gets its input repeated and its weights zero-padded to a multiple of 16 input channels.
      Lite 2.13's FP16 ``gemv`` reads each weight row 16 values at a time, so its last rows read
      past the end of the weights, and 0 times what lies there is NaN when that is NaN (whole
      output channels of NaN, then a segfault, in Lite-HRNet-18)."""

    def __init__(self, conv):
        super().__init__()
        self.bias = conv.bias
        conv.bias = None
        self.conv = conv
        out_c, in_c, kh, kw = conv.weight.shape
        self.repeats, self.padded_weight = 1, None
        if (kh, kw) == (1, 1) and conv._groups == 1 and in_c % 16:
            while in_c * self.repeats % 16:
                self.repeats *= 2
            w = paddle.concat([conv.weight, paddle.zeros(
                [out_c, in_c * (self.repeats - 1), 1, 1], conv.weight.dtype)], axis=1)
            self.padded_weight = self.create_parameter(w.shape, dtype=w.dtype)
            self.padded_weight.set_value(w)

    def forward(self, x):
        c = self.conv
        if self.padded_weight is not None and isinstance(x, Variable) and list(x.shape[2:]) == [1, 1]:
            y = F.conv2d(paddle.concat([x] * self.repeats, axis=1), self.padded_weight, None,
                         c._stride, c._updated_padding, c._dilation, 1, c._data_format)
        else:
            y = c(x)
        if self.bias is None:
            return y
        if isinstance(y, Variable):
            return _append("elementwise_add", {"X": y, "Y": self.bias}, {"axis": 1})
        return y + self.bias.reshape([1, -1, 1, 1])


def fold_conv_bias_into_bn(layer):
    """For a ``ConvBNAct`` (a layer naming its conv/bn pair ``_conv_name``/``_bn_name``, applied in
    sequence), move the conv bias into the BatchNorm running mean."""
    conv_name, bn_name = getattr(layer, "_conv_name", None), getattr(layer, "_bn_name", None)
    if conv_name is None or bn_name is None:
        return
    conv, bn = getattr(layer, conv_name, None), getattr(layer, bn_name, None)
    if not isinstance(conv, nn.Conv2D) or not isinstance(bn, nn.BatchNorm2D) or conv.bias is None:
        return
    bn._mean.set_value(bn._mean.numpy() - conv.bias.numpy())
    conv.bias = None


# --- the exported network ---------------------------------------------------------------------------

class DeployModel(nn.Layer):
    """(N, 3, H, W) float32 -> argmax: (N, H, W) label map (``label_dtype``: int32 as
    paddleseg's export; int64 is what Paddle-Lite-Demo's segmentation demo reads); softmax:
    (N, C, H, W) probabilities; none: (N, C, H, W) logits. ``channels_last_argmax``: reduce over
    the last axis of an NHWC transpose (Paddle's CPU arg_max over axis 1 is several times slower,
    and under oneDNN the tensor is already stored channels-last; OpenVINO's program does without:
    the transpose costs it more than its argmax)."""

    def __init__(self, model, output_op="argmax", channels_last_argmax=True,
                 label_dtype="int32"):
        super().__init__()
        if output_op not in OUTPUT_OPS:
            raise ValueError(f"output_op {output_op!r}: expected one of {OUTPUT_OPS}")
        if label_dtype not in ("int32", "int64"):
            raise ValueError(f"label_dtype {label_dtype!r}: expected int32 or int64")
        self.model = model
        self.output_op = output_op
        self.channels_last_argmax = channels_last_argmax
        self.label_dtype = label_dtype
        self.eval()

    def forward(self, x):
        logit = self.model(x)[0]
        if self.output_op == "argmax":
            axis = 1
            if self.channels_last_argmax:
                logit, axis = paddle.transpose(logit, [0, 2, 3, 1]), 3
            return paddle.argmax(logit, axis=axis, dtype=self.label_dtype)
        if self.output_op == "softmax":
            return F.softmax(logit, axis=1)
        return logit


# --- legacy programs --------------------------------------------------------------------------------

def _append(op_type, inputs, attrs=None, dtype=None):
    helper = LayerHelper(op_type)
    first = next(iter(inputs.values()))
    out = helper.create_variable_for_type_inference(dtype or first.dtype)
    helper.append_op(type=op_type, inputs={k: [v] for k, v in inputs.items()},
                     outputs={"Out": [out]}, attrs=attrs or {})
    return out


def _unary(op_type):
    def build(x, name=None):
        return _append(op_type, {"X": x})
    return build


def _elementwise(op_type):
    def build(x, y, name=None):
        return _append(op_type, {"X": x, "Y": y}, {"axis": -1})
    return build


def _matmul(x, y, transpose_x=False, transpose_y=False, name=None):
    return _append("matmul_v2", {"X": x, "Y": y}, {"trans_x": transpose_x, "trans_y": transpose_y})


def _sum(x, axis=None, dtype=None, keepdim=False, name=None):
    if dtype is not None:
        raise NotImplementedError("legacy export: paddle.sum(dtype=...) is not supported")
    if axis is None:
        dim, reduce_all = list(range(len(x.shape))), True
    else:
        dim = [axis] if isinstance(axis, int) else list(axis)
        reduce_all = len(dim) == len(x.shape)
    return _append("reduce_sum", {"X": x}, {"dim": dim, "keep_dim": keepdim,
                                            "reduce_all": reduce_all})


def _argmax(x, axis=None, keepdim=False, dtype="int64", name=None):
    var_type = paddle.base.core.VarDesc.VarType
    out_dtype = {"int64": var_type.INT64, "int32": var_type.INT32}[str(dtype).replace("paddle.", "")]
    attrs = {"axis": 0 if axis is None else axis, "keepdims": keepdim, "flatten": axis is None,
             "dtype": int(out_dtype)}
    out = _append("arg_max", {"X": x}, attrs, dtype=out_dtype)
    out.stop_gradient = True
    return out


# public name -> legacy builder; each entry is tested in tests/deploy/lite/test_lite_export.py
LEGACY_BUILDERS = {
    "sigmoid": _unary("sigmoid"),
    "tanh": _unary("tanh"),
    "exp": _unary("exp"),
    "sqrt": _unary("sqrt"),
    "rsqrt": _unary("rsqrt"),
    "abs": _unary("abs"),
    "floor": _unary("floor"),
    "ceil": _unary("ceil"),
    "log": _unary("log"),
    "multiply": _elementwise("elementwise_mul"),
    "maximum": _elementwise("elementwise_max"),
    "minimum": _elementwise("elementwise_min"),
    "matmul": _matmul,
    "sum": _sum,
    "argmax": _argmax,
}


def _dispatch(name, original, legacy):
    def fn(x, *args, **kwargs):
        if isinstance(x, Variable):
            return legacy(x, *args, **kwargs)
        return original(x, *args, **kwargs)
    fn.__name__ = name
    return fn


@contextlib.contextmanager
def legacy_op_shims():
    """Rebind the functions of ``LEGACY_BUILDERS`` on every module/class that exposes them."""
    import paddle.nn.functional.activation as F_act
    import paddle.tensor.ops as tensor_ops
    owners = [paddle, paddle.tensor, F, F_act, tensor_ops, Variable]
    saved = []
    try:
        for name, legacy in LEGACY_BUILDERS.items():
            for owner in owners:
                original = owner.__dict__.get(name)
                if original is None:
                    continue
                saved.append((owner, name, original))
                setattr(owner, name, _dispatch(name, original, legacy))
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


class _InspectWithCheapStack:
    """The ``inspect`` module, except that ``stack()`` skips reading source files."""

    def __getattr__(self, name):
        return getattr(inspect, name)

    @staticmethod
    def stack(context=1):
        frames, f = [], sys._getframe(1)
        while f is not None:
            frames.append(inspect.FrameInfo(f, f.f_code.co_filename, f.f_lineno,
                                            f.f_code.co_name, None, None))
            f = f.f_back
        return frames


@contextlib.contextmanager
def cached_method_conversion():
    """dy2static keeps each function it converts in a cache keyed by what it was given; a
    layer's ``forward`` comes as a bound method made for that call, and the cache's entry
    (weakly keyed) goes with it, so every layer call of a trace converts its ``forward`` again
    (source read, parsed, written as a module and imported): about 800 times for Lite-HRNet-18.
    The conversion depends on the function alone (its source, globals and closure; what it
    returns takes ``self`` first), so here, for one trace, it is kept per function."""
    from paddle.jit.dy2static import program_translator as T
    cache = T._FUNCTION_CACHE
    previous = vars(cache).get("convert_with_cache")  # an enclosing trace's, or None
    original = cache.convert_with_cache
    converted = {}

    def convert_with_cache(func):
        key = getattr(func, "__func__", func)
        if key not in converted:
            converted[key] = original(func)
        return converted[key]

    cache.convert_with_cache = convert_with_cache
    try:
        yield
    finally:
        if previous is None:
            del cache.convert_with_cache  # the class's method again
        else:
            cache.convert_with_cache = previous


@contextlib.contextmanager
def fast_dy2static_whitelist():
    """Paddle's ``is_unsupported`` (is this callee one dy2static leaves unconverted?) flattens
    the functions of every whitelisted module into a list and scans it at each call of a trace,
    hundreds per model. The same answers from a set built once per whitelist."""
    from paddle.jit.dy2static import convert_call_func as C
    original = C.is_unsupported
    built = {}

    def is_unsupported(func):
        modules = tuple(C.BUILTIN_LIKELY_MODULES)  # add_ignore_module may extend it
        if built.get("modules") != modules:
            built["modules"] = modules
            built["paths"] = tuple(p for m in modules
                                   if (p := C.get_module_defining_path(m)) is not None)
            built["functions"] = {id(f): f for m in modules for f in C.get_module_functions(m)}
        code = getattr(func, "__code__", None)
        if code is not None and code.co_filename and code.co_filename.startswith(built["paths"]):
            return True
        if built["functions"].get(id(func)) is func:
            return True
        return C.is_paddle_func(func)

    C.is_unsupported = is_unsupported
    try:
        yield
    finally:
        C.is_unsupported = original


@contextlib.contextmanager
def fast_warning_stack():
    from paddle.base.layers import math_op_patch
    original = math_op_patch.inspect
    math_op_patch.inspect = _InspectWithCheapStack()
    try:
        yield
    finally:
        math_op_patch.inspect = original


@contextlib.contextmanager
def fast_dy2static():
    """dy2static's speed fixes for one trace (the same program, less Python work)."""
    with fast_dy2static_whitelist(), cached_method_conversion():
        yield


@contextlib.contextmanager
def legacy_tracing():
    """Everything a trace into a legacy program needs (the shims and the speed fixes)."""
    with legacy_op_shims(), fast_warning_stack(), fast_dy2static():
        yield
