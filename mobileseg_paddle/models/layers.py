"""Building blocks shared by the backbones and the MobileSeg head.

Sub-layer attribute names decide the keys of a state dict. The official paddleseg 2.8.0 models
name the convolution and the BatchNorm of a conv-BN pair differently from file to file
(``_conv``/``_batch_norm``, ``conv``/``bn``, ``conv``/``norm``), so ``ConvBNAct`` takes those names
as arguments: that one choice keeps every model-zoo checkpoint loadable with no key mapping.
No layer here gives its parameters a fixed ``ParamAttr(name=...)``, so any number of instances
can live in one process. (Tracing into a legacy program: ``export_rewrites.legacy_tracing``.)
"""

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


def spatial_size(x):
    """H and W of ``x`` (N, C, H, W): Python ints where they are fixed (dygraph, a fixed-size
    export, where they become attributes), else a tensor (a dynamic-size export). A fixed-size
    program (Lite's) then has no shape/slice/cast ops computing sizes at run time."""
    size = list(x.shape[2:])
    if all(isinstance(d, int) and d > 0 for d in size):
        return size
    return paddle.shape(x)[2:]


def channel_shuffle(x, groups):
    """ShuffleNet channel shuffle, written with static channel counts and -1 for the spatial
    size so that it traces for dynamic H and W in both program formats."""
    c = x.shape[1]
    size = spatial_size(x)
    h, w = size[0], size[1]
    x = paddle.reshape(x, [-1, groups, c // groups, h, w])
    x = paddle.transpose(x, [0, 2, 1, 3, 4])
    return paddle.reshape(x, [-1, c, h, w])


def resize_to(x, ref, mode="bilinear"):
    """Resize ``x`` to the spatial size of ``ref`` (align_corners=False, as paddleseg)."""
    return F.interpolate(x, spatial_size(ref), mode=mode, align_corners=False)
