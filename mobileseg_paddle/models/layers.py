"""Building blocks shared by the backbones and the MobileSeg head.

Sub-layer attribute names decide the keys of a state dict. The official paddleseg 2.8.0 models
name the convolution and the BatchNorm of a conv-BN pair differently from file to file
(``_conv``/``_batch_norm``, ``conv``/``bn``, ``conv``/``norm``), so ``ConvBNAct`` takes those names
as arguments: that one choice keeps every model-zoo checkpoint loadable with no key mapping.
No layer here gives its parameters a fixed ``ParamAttr(name=...)``, so any number of instances
can live in one process. (Tracing into a legacy program: ``export_rewrites.legacy_tracing``.)
"""

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

_ACTIVATIONS = {
    None: None,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "sigmoid": nn.Sigmoid,
    "swish": nn.Swish,
}


def make_activation(name):
    """Return a fresh activation layer for ``name`` (``None`` for identity)."""
    if name not in _ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name!r}; expected one of {sorted(k for k in _ACTIVATIONS if k)}")
    cls = _ACTIVATIONS[name]
    return cls() if cls is not None else None


class ConvBNAct(nn.Layer):
    """Conv2D -> BatchNorm2D -> optional activation.

    Args:
        in_channels, out_channels, kernel_size, stride, groups, dilation: as for ``nn.Conv2D``.
        padding: defaults to ``dilation * (kernel_size - 1) // 2`` ("same" for odd kernels).
        act: activation name (see ``make_activation``) or None.
        bias: whether the convolution has a bias.
        frozen_bn: BatchNorm always uses its running statistics and its affine parameters are not
            trained (Lite-HRNet's ``freeze_norm``).
        conv_name, bn_name: attribute names of the two sub-layers (state-dict compatibility).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, groups=1,
                 dilation=1, act=None, bias=False, frozen_bn=False, conv_name="_conv",
                 bn_name="_batch_norm"):
        super().__init__()
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        conv = nn.Conv2D(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias_attr=None if bias else False)
        if frozen_bn:
            frozen = paddle.ParamAttr(learning_rate=0.0)
            bn = nn.BatchNorm2D(out_channels, weight_attr=frozen, bias_attr=frozen,
                                use_global_stats=True)
            for p in bn.parameters():
                p.stop_gradient = True
        else:
            bn = nn.BatchNorm2D(out_channels)
        self._conv_name, self._bn_name = conv_name, bn_name
        self.add_sublayer(conv_name, conv)
        self.add_sublayer(bn_name, bn)
        self.act = make_activation(act)

    def forward(self, x):
        x = getattr(self, self._conv_name)(x)
        x = getattr(self, self._bn_name)(x)
        if self.act is not None:
            x = self.act(x)
        return x


def ConvBNReLU(in_channels, out_channels, kernel_size, bias=True, **kwargs):
    """paddleseg's ``layers.ConvBNReLU`` (conv with bias by default, "same" padding)."""
    return ConvBNAct(in_channels, out_channels, kernel_size, act="relu", bias=bias, **kwargs)


class SeparableConvBNReLU(nn.Layer):
    """Depthwise ConvBN (no bias) then pointwise 1x1 ConvBNReLU (with bias).

    Shapes: (N, in_channels, H, W) -> (N, out_channels, H, W).
    ``piontwise_conv`` keeps paddleseg's spelling: it is a state-dict key of the model zoo.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3):
        super().__init__()
        self.depthwise_conv = ConvBNAct(in_channels, in_channels, kernel_size,
                                        groups=in_channels)
        self.piontwise_conv = ConvBNReLU(in_channels, out_channels, 1)

    def forward(self, x):
        return self.piontwise_conv(self.depthwise_conv(x))


@paddle.jit.not_to_static  # converted, ``x.shape`` would trace shape and slice ops
def static_spatial_size(x):
    """H and W of ``x`` (N, C, H, W) as Python ints where they are fixed (dygraph, a fixed-size
    export), else None; adds no op to a traced program."""
    size = list(x.shape[2:])
    return size if all(isinstance(d, int) and d > 0 for d in size) else None


def spatial_size(x):
    """H and W of ``x`` (N, C, H, W): Python ints where they are fixed (dygraph, a fixed-size
    export, where they become attributes), else a tensor (a dynamic-size export). A fixed-size
    program (Lite's) then has no shape/slice/cast ops computing sizes at run time."""
    size = static_spatial_size(x)
    return size if size is not None else paddle.shape(x)[2:]


def concat_shuffle(parts, fusable=False):
    """ShuffleNet's channel shuffle of ``paddle.concat(parts, axis=1)`` with ``len(parts)``
    groups, for parts of equal shape: output channel ``g * len(parts) + i`` is channel ``g`` of
    ``parts[i]``. At a fixed size (dygraph, fixed-size exports such as Lite's) the usual reshape
    to (N, groups, C / groups, H, W), transpose, reshape, with constant sizes; in a dynamic-size
    program stack + flatten, which need no runtime H and W (that reshape would compute them
    from shape ops at every run). Lite's ARM kernels run the fixed form without precision
    conversions (its ``stack`` is an FP32 host kernel).

    ``fusable`` (OpenVINO's program): the reshape to (N, groups, C / groups, H * W), transpose,
    reshape back, with H and W taken from the tensor's shape. OpenVINO compiles for the input's
    size, folds those sizes and fuses the three ops into its ShuffleChannels kernel, which runs
    on its blocked layout; the stack form (no fusion) and a shuffle on the channels-last view
    (a reference transpose) made it convert layouts around every shuffle instead."""
    if fusable:
        x = paddle.concat(parts, axis=1)
        size = paddle.shape(x)
        h, w = size[2], size[3]
        x = paddle.transpose(paddle.reshape(x, [0, len(parts), -1, h * w]), [0, 2, 1, 3])
        return paddle.reshape(x, [0, -1, h, w])
    size = static_spatial_size(parts[0])
    if size is None:
        return paddle.flatten(paddle.stack(parts, axis=2), 1, 2)
    x = paddle.concat(parts, axis=1)
    groups, c = len(parts), x.shape[1]
    x = paddle.transpose(paddle.reshape(x, [-1, groups, c // groups] + size), [0, 2, 1, 3, 4])
    return paddle.reshape(x, [-1, c] + size)


def nearest_source_index(n_in, n_out):
    """Source index of each output index k along one axis of Paddle's nearest interpolation
    to a given size (align_corners=False): ``int(float32(n_in / n_out) * k)``, in float32 as
    Paddle's CPU kernel computes it (not ``k * n_in // n_out``, which differs for some sizes).

    Python ints give a numpy int32 array; int32 size tensors (a dynamic-size trace) give the
    ops computing it at run time."""
    if isinstance(n_in, int) and isinstance(n_out, int):
        ratio = np.float32(n_in) / np.float32(n_out)
        return (np.arange(n_out, dtype=np.float32) * ratio).astype(np.int32)
    n_in, n_out = _float32(n_in), _float32(n_out)
    k = paddle.arange(0, n_out, 1, dtype="float32")
    # float -> int casts truncate, which is floor for these non-negative values
    return paddle.cast(k * (n_in / n_out), "int32")


def _float32(size):
    """A size (a Python int or an int32 tensor) as a float32 tensor."""
    return paddle.full([], size, "float32") if isinstance(size, int) else paddle.cast(size, "float32")


def _int32(size):
    """An (H, W) pair, Python ints or an int32 tensor, as an int32 tensor."""
    return paddle.to_tensor(size, "int32") if isinstance(size, list) else size


def _integer_factor(n_in, n_out):
    """Whether Paddle's nearest from n_in to n_out repeats every source an integer number of
    times (the sizes where oneDNN's nearest, which rounds differently, gives the same)."""
    if n_out % n_in:
        return False
    return bool((nearest_source_index(n_in, n_out) == np.arange(n_out) // (n_out // n_in)).all())


def _gather(x, index, axis):
    # gather, not index_select: Paddle's CPU kernel of index_select is the slower one here
    return paddle.gather(x, index, axis=axis)


def gathers_nearest():
    """Whether ``resize_nearest`` writes its gather forms here: in a legacy-program trace."""
    return not paddle.in_dynamic_mode() and not paddle.framework.in_pir_mode()


def resize_nearest(x, size, index=None):
    """``F.interpolate(x, size, mode="nearest")`` (N, C, H, W), the same values in a form the
    inference engines run fast and exactly.

    In a dynamic-size program Paddle runs the interpolation (which then takes its size from a
    tensor) on its slow plain CPU kernel; in a fixed-size one on oneDNN, whose nearest rounds
    differently except for integer factors. So a traced program keeps the interpolation only
    for a fixed size with integer factors, and otherwise gathers rows and columns with the
    indices Paddle's kernel would use: constants for a fixed size, else computed from the
    sizes. ``index`` (optional) is the (H, W) pair of those index tensors, when the caller
    computes them once for several resizes between the same sizes (``nearest_source_index``).

    Only legacy programs (Paddle Inference's default, Paddle Lite's) are rewritten: dygraph
    (training) and PIR traces keep ``F.interpolate``. The ONNX export is traced to PIR, and
    onnxruntime's Resize computes it exactly and faster than the gathers."""
    if not gathers_nearest():
        return F.interpolate(x, size, mode="nearest")
    if index is not None:
        for axis, idx in zip((2, 3), index):
            x = _gather(x, idx, axis)
        return x
    in_size = spatial_size(x)
    fixed = isinstance(size, (list, tuple)) and isinstance(in_size, list)
    if not (fixed and all(isinstance(v, int) for v in size)):
        for axis in (2, 3):
            x = _gather(x, nearest_source_index(in_size[axis - 2], size[axis - 2]), axis)
        return x
    if all(_integer_factor(i, o) for i, o in zip(in_size, size)):
        return F.interpolate(x, size, mode="nearest")
    for axis, n_in, n_out in zip((2, 3), in_size, size):
        if n_in != n_out:
            x = _gather(x, paddle.assign(nearest_source_index(n_in, n_out)), axis)
    return x


def resize_to(x, ref, mode="bilinear"):
    """Resize ``x`` to the spatial size of ``ref`` (align_corners=False, as paddleseg)."""
    return F.interpolate(x, spatial_size(ref), mode=mode, align_corners=False)


def bilinear_phases(factor):
    """The (factor, 3) weights of Paddle's bilinear upsampling by an integer factor along one
    axis (align_corners=False, half-pixel centres): output ``factor * i + p`` blends sources
    i - 1, i and i + 1 (edge-replicated, which is Paddle's clamping) with row p, the same
    weights for every i. ``factor`` is a Python int or an int32 tensor."""
    factor = _float32(factor)
    d = (paddle.arange(0, factor, 1, dtype="float32") + 0.5) / factor - 0.5
    before, after = F.relu(-d), F.relu(d)  # 1 - |d|: OpenVINO 2025.0's Paddle reader has no abs
    return paddle.stack([before, 1.0 - after - before, after], axis=1)


def _upsample_phases(x, axis, factor):
    """``x`` upsampled ``factor`` times along ``axis`` (2 or 3) by ``bilinear_phases``: three
    shifted views times broadcast weight rows, one elementwise expression OpenVINO fuses, whose
    (..., n, factor, ...) result flattens to (..., n * factor, ...) without moving data."""
    pad = [0, 0, 1, 1] if axis == 2 else [1, 1, 0, 0]
    xp = F.pad(x, pad, mode="replicate")
    views = [paddle.slice(xp, [axis], [k], [k - 2 if k < 2 else 2 ** 31 - 1]) for k in range(3)]
    weights = bilinear_phases(factor)
    shape = [1, 1, 1, 1, 1]
    shape[axis + 1] = -1
    terms = [paddle.unsqueeze(v, axis + 1) * paddle.reshape(weights[:, k], shape)
             for k, v in enumerate(views)]
    out = terms[0] + terms[1] + terms[2]  # Paddle's order: the upper source's term first
    return paddle.flatten(out, axis, axis + 1)


@paddle.jit.not_to_static  # Python decides on Python sizes; no tensor-dependent branch
def upsample_logits(x, ref):
    """``resize_to(x, ref)`` (bilinear) for OpenVINO's program. Where the output is an integer
    multiple of the logits along both axes (any input size a multiple of the output stride),
    as ``_upsample_phases`` along the width, then the height: OpenVINO's Interpolate and the
    TopK after it were slower at every size measured (README). Other sizes keep the
    interpolation. In a dynamic-size program both forms are written (the phase form with the
    rounded-up factors, cropped to the size) and ``paddle.where`` picks one: OpenVINO,
    compiling for the input size, folds the choice and drops the other form; the runner
    strips the phase form from the program it runs at any size."""
    size, in_size = spatial_size(ref), spatial_size(x)
    if isinstance(in_size, list) and isinstance(size, list):
        if size[0] % in_size[0] or size[1] % in_size[1]:
            return resize_to(x, ref)
        x = _upsample_phases(x, 3, size[1] // in_size[1])
        return _upsample_phases(x, 2, size[0] // in_size[0])
    # one may be fixed and the other not: Lite-HRNet's fused shuffles (reshapes to runtime
    # sizes) leave its logits without static H and W in a fixed-size program
    size, in_size = _int32(size), _int32(in_size)
    factors = (size + in_size - 1) // in_size
    phases = _upsample_phases(_upsample_phases(x, 3, factors[1]), 2, factors[0])
    phases = paddle.slice(phases, [2, 3], [0, 0], [size[0], size[1]])
    exact = paddle.max(size % in_size) == 0
    return paddle.where(exact, phases, resize_to(x, ref))
