"""MobileNetV3 backbone (Howard et al., "Searching for MobileNetV3").

State-dict compatible with paddleseg 2.8.0's ``MobileNetV3``: the same keys (``conv.conv.weight``,
``blocks.3.mid_se.conv1.bias``, ``blocks.14.linear_conv.bn._variance``...) and shapes, and the same
outputs, including the official quirks: the SE convolutions have a bias, the SE gate is
``hardsigmoid(x, slope=0.2, offset=0.5)`` (not the paper's x/6 + 0.5), and BatchNorm parameters are
excluded from weight decay.
"""

import paddle.nn as nn
import paddle.nn.functional as F
from paddle.regularizer import L2Decay

from mobileseg_paddle.models.layers import ConvBNAct

__all__ = ["MobileNetV3",
           "MobileNetV3_large_x0_35", "MobileNetV3_large_x0_5", "MobileNetV3_large_x0_75",
           "MobileNetV3_large_x1_0", "MobileNetV3_large_x1_25",
           "MobileNetV3_small_x0_35", "MobileNetV3_small_x0_5", "MobileNetV3_small_x0_75",
           "MobileNetV3_small_x1_0", "MobileNetV3_small_x1_25",
           "MobileNetV3_large_x1_0_os8", "MobileNetV3_small_x1_0_os8"]

# One row per inverted residual unit: kernel k, expanded channels exp, output channels c (at x1.0),
# squeeze-excitation se, activation act, stride s. Smaller output strides are not separate
# tables: ``MobileNetV3(output_stride=8)`` turns the later strides into dilations.
NET_CONFIG = {
    "large": [
        # k, exp, c, se, act, s
        (3, 16, 16, False, "relu", 1),
        (3, 64, 24, False, "relu", 2),
        (3, 72, 24, False, "relu", 1),  # stride 4
        (5, 72, 40, True, "relu", 2),
        (5, 120, 40, True, "relu", 1),
        (5, 120, 40, True, "relu", 1),  # stride 8
        (3, 240, 80, False, "hardswish", 2),
        (3, 200, 80, False, "hardswish", 1),
        (3, 184, 80, False, "hardswish", 1),
        (3, 184, 80, False, "hardswish", 1),
        (3, 480, 112, True, "hardswish", 1),
        (3, 672, 112, True, "hardswish", 1),  # stride 16
        (5, 672, 160, True, "hardswish", 2),
        (5, 960, 160, True, "hardswish", 1),
        (5, 960, 160, True, "hardswish", 1),  # stride 32
    ],
    "small": [
        (3, 16, 16, True, "relu", 2),  # stride 4
        (3, 72, 24, False, "relu", 2),
        (3, 88, 24, False, "relu", 1),  # stride 8
        (5, 96, 40, True, "hardswish", 2),
        (5, 240, 40, True, "hardswish", 1),
        (5, 240, 40, True, "hardswish", 1),
        (5, 120, 48, True, "hardswish", 1),
        (5, 144, 48, True, "hardswish", 1),  # stride 16
        (5, 288, 96, True, "hardswish", 2),
        (5, 576, 96, True, "hardswish", 1),
        (5, 576, 96, True, "hardswish", 1),  # stride 32
    ],
}
# Units whose outputs are the 4 returned features.
OUT_INDEX = {"large": [2, 5, 11, 14], "small": [0, 2, 7, 10]}
OUTPUT_STRIDES = (8, 16, 32)
STEM_CHANNELS = 16


def _make_divisible(v, divisor=8, min_value=None):
    """Round ``v`` to the nearest multiple of ``divisor`` without losing more than 10%."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn(in_channels, out_channels, kernel_size, **kwargs):
    """ConvBNAct named ``conv``/``bn`` (the official keys)."""
    return ConvBNAct(in_channels, out_channels, kernel_size, conv_name="conv", bn_name="bn",
                     **kwargs)


class SEModule(nn.Layer):
    """Squeeze-excitation: x * hardsigmoid(conv2(relu(conv1(avgpool(x))))), convs with bias.

    Shapes: (N, C, H, W) -> (N, C, H, W); the squeeze has C // reduction channels.
    """

    def __init__(self, channels, reduction=4):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.conv1 = nn.Conv2D(channels, channels // reduction, 1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2D(channels // reduction, channels, 1)

    def forward(self, x):
        gate = self.conv2(self.relu(self.conv1(self.avg_pool(x))))
        return x * F.hardsigmoid(gate, slope=0.2, offset=0.5)


class ResidualUnit(nn.Layer):
    """1x1 expand -> kxk depthwise (stride, dilation) -> optional SE -> 1x1 linear projection,
    plus the identity when the shape is kept.

    Shapes: (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride).
    """

    def __init__(self, in_channels, mid_channels, out_channels, kernel_size, stride, use_se, act,
                 dilation=1):
        super().__init__()
        self.shortcut = stride == 1 and in_channels == out_channels
        self.expand_conv = _conv_bn(in_channels, mid_channels, 1, act=act)
        self.bottleneck_conv = _conv_bn(mid_channels, mid_channels, kernel_size, stride=stride,
                                        groups=mid_channels, dilation=dilation, act=act)
        self.mid_se = SEModule(mid_channels) if use_se else None
        self.linear_conv = _conv_bn(mid_channels, out_channels, 1)

    def forward(self, x):
        y = self.bottleneck_conv(self.expand_conv(x))
        if self.mid_se is not None:
            y = self.mid_se(y)
        y = self.linear_conv(y)
        return x + y if self.shortcut else y


class MobileNetV3(nn.Layer):
    """MobileNetV3 feature extractor.

    Args:
        config: a key of ``NET_CONFIG`` ("large", "small") or a list of rows
            ``(k, exp, c, se, act, s)``.
        out_index: indices of the units whose outputs are returned (default ``OUT_INDEX[config]``
            when ``config`` is a key).
        in_channels: channels of the input image.
        scale: width multiplier (channels are ``_make_divisible(c * scale)``).
        output_stride: 32, 16 or 8; below 32 the strides that would go past it become
            dilations (the same weights, denser features).
        pretrained: path or URL of weights loaded at the end of construction, or None.

    Input (N, in_channels, H, W); returns a list of features (4 for the standard configs, strides
    4, 8, 16, 32, each capped at ``output_stride``) with ``feat_channels`` channels
    ([24, 40, 112, 160] for large x1.0, [16, 24, 48, 96] for small x1.0).
    """

    def __init__(self, config="large", out_index=None, in_channels=3, scale=1.0,
                 output_stride=32, pretrained=None):
        super().__init__()
        if isinstance(config, str):
            if config not in NET_CONFIG:
                raise ValueError(f"MobileNetV3 config {config!r}: expected one of "
                                 f"{sorted(NET_CONFIG)} or a list of unit rows")
            out_index = OUT_INDEX[config] if out_index is None else out_index
            config = NET_CONFIG[config]
        if out_index is None:
            raise ValueError("MobileNetV3: out_index is required when config is a list of rows")
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"MobileNetV3 output_stride={output_stride!r}: expected one of "
                             f"{list(OUTPUT_STRIDES)}")
        self.cfg = config
        self.out_index = list(out_index)
        self.scale = scale
        self.output_stride = output_stride

        channels = _make_divisible(STEM_CHANNELS * scale)
        self.conv = _conv_bn(in_channels, channels, 3, stride=2, act="hardswish")
        units = []
        stride, dilation = 2, 1  # of the features so far (the stem halves the input)
        for k, exp, c, se, act, s in config:
            # A stride that would pass output_stride becomes a dilation of the units after this
            # one; this unit keeps the current dilation (paddleseg's os8 tables, DeepLab's rule).
            unit_dilation = dilation
            if stride * s > output_stride:
                dilation, s = dilation * s, 1
            else:
                stride *= s
            out_channels = _make_divisible(c * scale)
            units.append(ResidualUnit(channels, _make_divisible(exp * scale), out_channels, k, s,
                                      se, act, dilation=unit_dilation))
            channels = out_channels
        self.blocks = nn.LayerList(units)
        self.feat_channels = [_make_divisible(config[i][2] * scale) for i in self.out_index]

        # The official BatchNorms carry L2Decay(0.0): keep BN scale/shift out of weight decay.
        for layer in self.sublayers():
            if isinstance(layer, nn.BatchNorm2D):
                layer.weight.regularizer = L2Decay(0.0)
                layer.bias.regularizer = L2Decay(0.0)

        if pretrained is not None:
            from mobileseg_paddle.checkpoint import load_pretrained
            load_pretrained(self, pretrained)

    def forward(self, x):
        x = self.conv(x)
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.out_index:
                feats.append(x)
        return feats


def MobileNetV3_large_x0_35(**kwargs):
    return MobileNetV3(config="large", scale=0.35, **kwargs)


def MobileNetV3_large_x0_5(**kwargs):
    return MobileNetV3(config="large", scale=0.5, **kwargs)


def MobileNetV3_large_x0_75(**kwargs):
    return MobileNetV3(config="large", scale=0.75, **kwargs)


def MobileNetV3_large_x1_0(**kwargs):
    return MobileNetV3(config="large", scale=1.0, **kwargs)


def MobileNetV3_large_x1_25(**kwargs):
    return MobileNetV3(config="large", scale=1.25, **kwargs)


def MobileNetV3_small_x0_35(**kwargs):
    return MobileNetV3(config="small", scale=0.35, **kwargs)


def MobileNetV3_small_x0_5(**kwargs):
    return MobileNetV3(config="small", scale=0.5, **kwargs)


def MobileNetV3_small_x0_75(**kwargs):
    return MobileNetV3(config="small", scale=0.75, **kwargs)


def MobileNetV3_small_x1_0(**kwargs):
    return MobileNetV3(config="small", scale=1.0, **kwargs)


def MobileNetV3_small_x1_25(**kwargs):
    return MobileNetV3(config="small", scale=1.25, **kwargs)


def MobileNetV3_large_x1_0_os8(**kwargs):
    """Output stride 8 (dilated): features at strides 4, 8, 8, 8."""
    return MobileNetV3(config="large", scale=1.0, output_stride=8, **kwargs)


def MobileNetV3_small_x1_0_os8(**kwargs):
    """Output stride 8 (dilated): features at strides 4, 8, 8, 8."""
    return MobileNetV3(config="small", scale=1.0, output_stride=8, **kwargs)
