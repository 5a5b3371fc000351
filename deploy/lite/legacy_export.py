"""Export a paddle ``nn.Layer`` in the legacy program format (``.pdmodel`` + ``.pdiparams``).

Paddle Lite 2.13 reads only the legacy ProgramDesc format, which Paddle 3 still writes when the
process runs with ``FLAGS_enable_pir_api=0``. Paddle 3.3.1 however binds a few dozen public
functions (``F.sigmoid``, ``paddle.multiply``, ``paddle.sum`` ...) straight to ``_C_ops``, which
accept dygraph tensors and PIR values but not legacy ``Variable``s, so tracing a model that calls
them fails. ``legacy_op_shims`` rebinds the ones a segmentation network uses (``LEGACY_BUILDERS``),
for the duration of the export, to builders that append the legacy op of the same meaning (the op
Paddle 2.x wrote and Lite knows); others still fail loudly at export.

``fast_warning_stack`` is a speed fix only: the legacy ``x + y`` builder calls ``inspect.stack()``
(which reads the source of every frame) to word a warning whenever ``y``'s first dimension is -1;
under dy2static that made Lite-HRNet's export take 52 s instead of 24 s (measured here).

The flag is read when paddle is imported, so ``export_legacy`` must run in a process started with
``FLAGS_enable_pir_api=0`` (``convert.py`` runs it in a child process).
"""

import contextlib
import inspect
import os
import sys

import paddle
from paddle.base.framework import Variable
from paddle.base.layer_helper import LayerHelper


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


def _axes(axis, ndim):
    if axis is None:
        return list(range(ndim)), True
    axis = [axis] if isinstance(axis, int) else list(axis)
    return axis, len(axis) == ndim


def _sum(x, axis=None, dtype=None, keepdim=False, name=None):
    if dtype is not None:
        raise NotImplementedError("legacy export: paddle.sum(dtype=...) is not supported")
    dim, reduce_all = _axes(axis, len(x.shape))
    return _append("reduce_sum", {"X": x}, {"dim": dim, "keep_dim": keepdim,
                                            "reduce_all": reduce_all})


def _argmax(x, axis=None, keepdim=False, dtype="int64", name=None):
    var_type = paddle.base.core.VarDesc.VarType
    out_dtype = {"int64": var_type.INT64, "int32": var_type.INT32}[str(dtype).replace("paddle.", "")]
    attrs = {"axis": 0 if axis is None else axis, "keepdims": keepdim, "flatten": axis is None,
             "dtype": int(out_dtype)}
    return _append("arg_max", {"X": x}, attrs, dtype=out_dtype)


# public name -> legacy builder. Each entry is one named fix, tested in tests/test_lite_export.py.
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
    import paddle.nn.functional as F
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
def fast_warning_stack():
    from paddle.base.layers import math_op_patch
    original = math_op_patch.inspect
    math_op_patch.inspect = _InspectWithCheapStack()
    try:
        yield
    finally:
        math_op_patch.inspect = original


def export_legacy(model, path_prefix, input_shape):
    """Trace ``model`` (eval mode) at the fixed ``input_shape`` [N, C, H, W] and write
    ``path_prefix.pdmodel`` / ``.pdiparams``. The program's single input is named ``x``."""
    if paddle.framework.use_pir_api():
        raise RuntimeError("export_legacy needs a process started with FLAGS_enable_pir_api=0")
    model.eval()
    spec = [paddle.static.InputSpec(list(input_shape), "float32", "x")]
    with legacy_op_shims(), fast_warning_stack():
        static = paddle.jit.to_static(model, input_spec=spec, full_graph=True)
        paddle.jit.save(static, path_prefix, input_spec=spec)
    for ext in (".pdmodel", ".pdiparams"):
        if not os.path.isfile(path_prefix + ext):
            raise RuntimeError(f"paddle.jit.save wrote no {path_prefix + ext}")
