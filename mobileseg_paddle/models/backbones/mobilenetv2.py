"""MobileNetV2 backbone (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks").

State-dict compatible with paddleseg 2.8.0's ``MobileNetV2``: the same keys (e.g.
``conv2._first_block._expand_conv._conv.weight``, ``conv3.conv3_2._linear_conv._batch_norm._mean``)
and shapes, so its model-zoo checkpoints load unchanged, and the same outputs. Unlike the official
model no parameter has a fixed name, so any number of instances can be built in one process.
"""

import paddle.nn as nn

from mobileseg_paddle.models.layers import ConvBNAct

__all__ = ["MobileNetV2", "MobileNetV2_x0_25", "MobileNetV2_x0_5", "MobileNetV2_x0_75",
           "MobileNetV2_x1_0", "MobileNetV2_x1_5", "MobileNetV2_x2_0"]

# One row per stage: expansion t, output channels c (at x1.0), repeats n, stride of the first unit.
STAGE_SETTINGS = [
    # t, c, n, s
    (1, 16, 1, 1),
    (6, 24, 2, 2),  # stride 4  -> feature 0
    (6, 32, 3, 2),  # stride 8  -> feature 1
    (6, 64, 4, 2),
    (6, 96, 3, 1),  # stride 16 -> feature 2
    (6, 160, 3, 2),
    (6, 320, 1, 1),  # stride 32 -> feature 3
]
OUT_STAGES = [1, 2, 4, 6]
STEM_CHANNELS = 32


class InvertedResidual(nn.Layer):
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection, plus the identity
    when ``shortcut`` (the caller decides, as the official model does, by position in the stage).

    Shapes: (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride).
    """

    def __init__(self, in_channels, out_channels, stride, expansion, shortcut):
        super().__init__()
        mid_channels = int(round(in_channels * expansion))
        self.shortcut = shortcut
        self._expand_conv = ConvBNAct(in_channels, mid_channels, 1, act="relu6")
        self._bottleneck_conv = ConvBNAct(mid_channels, mid_channels, 3, stride=stride,
                                          groups=mid_channels, act="relu6")
        self._linear_conv = ConvBNAct(mid_channels, out_channels, 1)

    def forward(self, x):
        y = self._linear_conv(self._bottleneck_conv(self._expand_conv(x)))
        return x + y if self.shortcut else y


class Stage(nn.Layer):
    """``n`` inverted residual units; the first changes width/stride and has no shortcut.

    Sub-layers are named ``_first_block``, ``{name}_2``, ``{name}_3``... as in the official model.
    """

    def __init__(self, name, in_channels, out_channels, expansion, repeats, stride):
        super().__init__()
        self._first_block = InvertedResidual(in_channels, out_channels, stride, expansion,
                                             shortcut=False)
        self.units = [self._first_block]
        for i in range(2, repeats + 1):
            unit = InvertedResidual(out_channels, out_channels, 1, expansion, shortcut=True)
            self.units.append(self.add_sublayer(f"{name}_{i}", unit))

    def forward(self, x):
        for unit in self.units:
            x = unit(x)
        return x


class MobileNetV2(nn.Layer):
    """MobileNetV2 feature extractor.

    Args:
        scale: width multiplier (channels are ``int(c * scale)``, as in the official model).
        in_channels: channels of the input image.
        pretrained: path or URL of weights loaded at the end of construction, or None.

    Input (N, in_channels, H, W); returns a list of 4 features at strides 4, 8, 16, 32 with
    ``feat_channels`` channels ([24, 32, 96, 320] at x1.0).
    """

    def __init__(self, scale=1.0, in_channels=3, pretrained=None):
        super().__init__()
        self.scale = scale
        self.out_index = list(OUT_STAGES)
        channels = int(STEM_CHANNELS * scale)
        self.conv1 = ConvBNAct(in_channels, channels, 3, stride=2, act="relu6")

        self.stages = []
        for i, (t, c, n, s) in enumerate(STAGE_SETTINGS):
            name = f"conv{i + 2}"  # official names: conv2 ... conv8
            out_channels = int(c * scale)
            stage = Stage(name, channels, out_channels, t, n, s)
            self.stages.append(self.add_sublayer(name, stage))
            channels = out_channels
        self.feat_channels = [int(STAGE_SETTINGS[i][1] * scale) for i in self.out_index]

        if pretrained is not None:
            from mobileseg_paddle.checkpoint import load_pretrained
            load_pretrained(self, pretrained)

    def forward(self, x):
        x = self.conv1(x)
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_index:
                feats.append(x)
        return feats


def MobileNetV2_x0_25(**kwargs):
    return MobileNetV2(scale=0.25, **kwargs)


def MobileNetV2_x0_5(**kwargs):
    return MobileNetV2(scale=0.5, **kwargs)


def MobileNetV2_x0_75(**kwargs):
    return MobileNetV2(scale=0.75, **kwargs)


def MobileNetV2_x1_0(**kwargs):
    return MobileNetV2(scale=1.0, **kwargs)


def MobileNetV2_x1_5(**kwargs):
    return MobileNetV2(scale=1.5, **kwargs)


def MobileNetV2_x2_0(**kwargs):
    return MobileNetV2(scale=2.0, **kwargs)
