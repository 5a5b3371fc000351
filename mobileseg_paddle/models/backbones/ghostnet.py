"""GhostNet backbone, state-dict compatible with paddleseg 2.8.0's ``GhostNet_*``.

Input (N, in_channels, H, W) -> 4 features at strides 4, 8, 16, 32 with ``feat_channels``
channels ([24, 40, 112, 160] at x1.0): the outputs of bottlenecks 2, 4, 10 and 15.

Sub-layer names reproduce the official state-dict keys: ``conv1``, then ``_ghostbottleneck_<i>``
holding ``ghost_module_1``/``ghost_module_2`` (each ``primary_conv`` + ``cheap_operation``),
``depthwise_conv`` (stride 2 only), ``se_block`` (``squeeze``/``excitation`` Linear layers) and
``shortcut_depthwise``/``shortcut_conv`` when the shortcut changes shape.
"""

import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from mobileseg_paddle.models.layers import ConvBNAct

__all__ = ["GhostNet", "GhostNet_x0_5", "GhostNet_x1_0", "GhostNet_x1_3"]

# Bottleneck settings at x1.0: kernel, hidden (expanded) channels, output channels,
# squeeze-excite, stride.
BLOCK_SETTINGS = [
    [3, 16, 16, False, 1],
    [3, 48, 24, False, 2],
    [3, 72, 24, False, 1],  # -> stride 4
    [5, 72, 40, True, 2],
    [5, 120, 40, True, 1],  # -> stride 8
    [3, 240, 80, False, 2],
    [3, 200, 80, False, 1],
    [3, 184, 80, False, 1],
    [3, 184, 80, False, 1],
    [3, 480, 112, True, 1],
    [3, 672, 112, True, 1],  # -> stride 16
    [5, 672, 160, True, 2],
    [5, 960, 160, False, 1],
    [5, 960, 160, True, 1],
    [5, 960, 160, False, 1],
    [5, 960, 160, True, 1],  # -> stride 32
]
FEATURE_BLOCKS = (2, 4, 10, 15)  # bottlenecks whose outputs are returned
STEM_CHANNELS = 16


def make_divisible(value, divisor=4):
    """Round ``value`` to a multiple of ``divisor`` (at least ``divisor``), never more than 10%
    below ``value`` (the rule of the TF MobileNet reference)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class GhostModule(nn.Layer):
    """A 1x1 conv making half the output channels, and a cheap 3x3 depthwise conv making the
    other half from them. (N, in_channels, H, W) -> (N, 2 * ceil(out_channels / 2), H, W)."""

    def __init__(self, in_channels, out_channels, relu=True):
        super().__init__()
        act = "relu" if relu else None
        primary = int(math.ceil(out_channels / 2))
        self.primary_conv = ConvBNAct(in_channels, primary, 1, act=act)
        self.cheap_operation = ConvBNAct(primary, primary, 3, groups=primary, act=act)

    def forward(self, x):
        x = self.primary_conv(x)
        return paddle.concat([x, self.cheap_operation(x)], axis=1)


class SqueezeExcite(nn.Layer):
    """Channel attention with Linear layers and a hard gate ``clip(x, 0, 1)`` (GhostNet's own
    variant, not a sigmoid). (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels, reduction=4):
        super().__init__()
        self.pool2d_gap = nn.AdaptiveAvgPool2D(1)  # a layer, so paddle.flops counts it
        self.squeeze = nn.Linear(channels, channels // reduction)
        self.excitation = nn.Linear(channels // reduction, channels)

    def forward(self, x):
        w = paddle.flatten(self.pool2d_gap(x), start_axis=1)
        w = self.excitation(F.relu(self.squeeze(w)))
        w = paddle.clip(w, min=0.0, max=1.0)
        return x * paddle.unsqueeze(w, axis=[2, 3])


class GhostBottleneck(nn.Layer):
    """Ghost module (expand) -> [depthwise stride 2] -> [SE] -> ghost module (project), plus a
    shortcut that is the identity or depthwise + 1x1 when the shape changes.
    (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride)."""

    def __init__(self, in_channels, hidden_channels, out_channels, kernel_size, stride, use_se):
        super().__init__()
        self.ghost_module_1 = GhostModule(in_channels, hidden_channels, relu=True)
        self.depthwise_conv = (
            ConvBNAct(hidden_channels, hidden_channels, kernel_size, stride=stride,
                      groups=hidden_channels) if stride == 2 else None)
        self.se_block = SqueezeExcite(hidden_channels) if use_se else None
        self.ghost_module_2 = GhostModule(hidden_channels, out_channels, relu=False)
        if stride != 1 or in_channels != out_channels:
            self.shortcut_depthwise = ConvBNAct(in_channels, in_channels, kernel_size,
                                                stride=stride, groups=in_channels)
            self.shortcut_conv = ConvBNAct(in_channels, out_channels, 1)
        else:
            self.shortcut_depthwise = self.shortcut_conv = None

    def forward(self, x):
        y = self.ghost_module_1(x)
        if self.depthwise_conv is not None:
            y = self.depthwise_conv(y)
        if self.se_block is not None:
            y = self.se_block(y)
        y = self.ghost_module_2(y)
        if self.shortcut_conv is not None:
            x = self.shortcut_conv(self.shortcut_depthwise(x))
        return y + x


class GhostNet(nn.Layer):
    """GhostNet feature extractor.

    Args:
        scale: width multiplier applied to every channel count (rounded to multiples of 4).
        in_channels: input image channels.
        pretrained: checkpoint path or URL loaded at the end of construction.
    """

    def __init__(self, scale, in_channels=3, pretrained=None):
        super().__init__()
        self.scale = scale
        out_ch = make_divisible(STEM_CHANNELS * scale)
        self.conv1 = ConvBNAct(in_channels, out_ch, 3, stride=2, act="relu")

        # Plain list: the blocks are registered by name only, as in the official model.
        self._blocks = []
        self.feat_channels = []
        for idx, (k, hidden, c, use_se, s) in enumerate(BLOCK_SETTINGS):
            in_ch, out_ch = out_ch, make_divisible(c * scale)
            block = GhostBottleneck(in_ch, make_divisible(hidden * scale), out_ch, k, s, use_se)
            self._blocks.append(self.add_sublayer(f"_ghostbottleneck_{idx}", block))
            if idx in FEATURE_BLOCKS:
                self.feat_channels.append(out_ch)

        if pretrained is not None:
            from mobileseg_paddle.checkpoint import load_pretrained
            load_pretrained(self, pretrained)

    def forward(self, x):
        x = self.conv1(x)
        feats = []
        for idx, block in enumerate(self._blocks):
            x = block(x)
            if idx in FEATURE_BLOCKS:
                feats.append(x)
        return feats


def GhostNet_x0_5(**kwargs):
    return GhostNet(scale=0.5, **kwargs)


def GhostNet_x1_0(**kwargs):
    return GhostNet(scale=1.0, **kwargs)


def GhostNet_x1_3(**kwargs):
    return GhostNet(scale=1.3, **kwargs)
