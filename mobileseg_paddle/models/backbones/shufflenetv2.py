"""ShuffleNetV2 backbone, state-dict compatible with paddleseg 2.8.0's ``ShuffleNetV2_*``.

Input (N, in_channels, H, W) -> 4 features at strides 4, 8, 16, 32 with ``feat_channels``
channels ([24, 116, 232, 464] at x1.0): the stem output after max pooling, then the output of
each of the three stages.

Sub-layer names reproduce the official state-dict keys: ``_conv1``, then the blocks as
``"<stage>_<block>"`` with stage 2..4 and block 1..n (e.g. ``2_1._conv_dw_1._conv.weight``).
"""

import paddle
import paddle.nn as nn

from mobileseg_paddle.models.layers import ConvBNAct, concat_shuffle

__all__ = ["ShuffleNetV2", "ShuffleNetV2_x0_25", "ShuffleNetV2_x0_33", "ShuffleNetV2_x0_5",
           "ShuffleNetV2_x1_0", "ShuffleNetV2_x1_5", "ShuffleNetV2_x2_0", "ShuffleNetV2_swish"]

# Output channels of the stem and of stages 2, 3, 4 for each width multiplier. (The 1x1
# "conv5" of the classification network is not part of the backbone and is not built.)
STAGE_CHANNELS = {
    0.25: [24, 24, 48, 96],
    0.33: [24, 32, 64, 128],
    0.5: [24, 48, 96, 192],
    1.0: [24, 116, 232, 464],
    1.5: [24, 176, 352, 704],
    2.0: [24, 224, 488, 976],
}
# Blocks per stage; the first block of each stage halves the resolution.
STAGE_REPEATS = [4, 8, 4]


class ShuffleUnit(nn.Layer):
    """Stride-1 unit: split the channels in two halves, transform one half with
    1x1 -> 3x3 depthwise -> 1x1, concatenate and shuffle. (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels, act="relu"):
        super().__init__()
        half = channels // 2
        self._conv_pw = ConvBNAct(half, half, 1, act=act)
        self._conv_dw = ConvBNAct(half, half, 3, groups=half)
        self._conv_linear = ConvBNAct(half, half, 1, act=act)
        self.shuffle_fusable = False  # set by prepare_for_deploy(model, "openvino")

    def forward(self, x):
        kept, x = paddle.split(x, 2, axis=1)
        x = self._conv_linear(self._conv_dw(self._conv_pw(x)))
        return concat_shuffle([kept, x], self.shuffle_fusable)


class ShuffleDownUnit(nn.Layer):
    """Stride-2 unit: two branches over the whole input, each giving out_channels // 2.
    (N, in_channels, H, W) -> (N, out_channels, H / 2, W / 2)."""

    def __init__(self, in_channels, out_channels, act="relu"):
        super().__init__()
        half = out_channels // 2
        # branch 1: 3x3 depthwise (stride 2) -> 1x1
        self._conv_dw_1 = ConvBNAct(in_channels, in_channels, 3, stride=2, groups=in_channels)
        self._conv_linear_1 = ConvBNAct(in_channels, half, 1, act=act)
        # branch 2: 1x1 -> 3x3 depthwise (stride 2) -> 1x1
        self._conv_pw_2 = ConvBNAct(in_channels, half, 1, act=act)
        self._conv_dw_2 = ConvBNAct(half, half, 3, stride=2, groups=half)
        self._conv_linear_2 = ConvBNAct(half, half, 1, act=act)
        self.shuffle_fusable = False  # set by prepare_for_deploy(model, "openvino")

    def forward(self, x):
        x1 = self._conv_linear_1(self._conv_dw_1(x))
        x2 = self._conv_linear_2(self._conv_dw_2(self._conv_pw_2(x)))
        return concat_shuffle([x1, x2], self.shuffle_fusable)


class ShuffleNetV2(nn.Layer):
    """ShuffleNetV2 feature extractor.

    Args:
        scale: width multiplier, one of the keys of ``STAGE_CHANNELS``.
        act: activation name ('relu' or 'swish' for the official models).
        in_channels: input image channels.
        pretrained: checkpoint path or URL loaded at the end of construction.
    """

    def __init__(self, scale=1.0, act="relu", in_channels=3, pretrained=None):
        super().__init__()
        if scale not in STAGE_CHANNELS:
            raise ValueError(
                f"ShuffleNetV2: scale={scale!r} is not supported; expected one of "
                f"{sorted(STAGE_CHANNELS)}")
        channels = STAGE_CHANNELS[scale]
        self.scale = scale
        self.feat_channels = list(channels)

        self._conv1 = ConvBNAct(in_channels, channels[0], 3, stride=2, act=act)
        self._max_pool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)

        # Plain lists: the blocks are registered by name only, as in the official model.
        self._stages = []
        for stage_idx, repeats in enumerate(STAGE_REPEATS):
            in_ch, out_ch = channels[stage_idx], channels[stage_idx + 1]
            blocks = []
            for block_idx in range(repeats):
                block = (ShuffleDownUnit(in_ch, out_ch, act) if block_idx == 0
                         else ShuffleUnit(out_ch, act))
                blocks.append(self.add_sublayer(f"{stage_idx + 2}_{block_idx + 1}", block))
            self._stages.append(blocks)

        if pretrained is not None:
            from mobileseg_paddle.checkpoint import load_pretrained
            load_pretrained(self, pretrained)

    def forward(self, x):
        x = self._max_pool(self._conv1(x))
        feats = [x]
        for blocks in self._stages:
            for block in blocks:
                x = block(x)
            feats.append(x)
        return feats


def ShuffleNetV2_x0_25(**kwargs):
    return ShuffleNetV2(scale=0.25, **kwargs)


def ShuffleNetV2_x0_33(**kwargs):
    return ShuffleNetV2(scale=0.33, **kwargs)


def ShuffleNetV2_x0_5(**kwargs):
    return ShuffleNetV2(scale=0.5, **kwargs)


def ShuffleNetV2_x1_0(**kwargs):
    return ShuffleNetV2(scale=1.0, **kwargs)


def ShuffleNetV2_x1_5(**kwargs):
    return ShuffleNetV2(scale=1.5, **kwargs)


def ShuffleNetV2_x2_0(**kwargs):
    return ShuffleNetV2(scale=2.0, **kwargs)


def ShuffleNetV2_swish(**kwargs):
    return ShuffleNetV2(scale=1.0, act="swish", **kwargs)
