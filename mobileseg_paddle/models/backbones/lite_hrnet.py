"""Lite-HRNet backbone (Yu et al., "Lite-HRNet: A Lightweight High-Resolution Network", CVPR 2021).

State-dict compatible with paddleseg 2.8.0's ``LiteHRNet``: same keys, shapes and, wherever the
official model runs (input sides multiple of 32), the same outputs. Two quirks of that
implementation are kept because the model-zoo checkpoints were trained with them (see
``HRModule.forward``).

Unlike the official model it accepts any input of at least 64x64. Every stride-2 convolution
(3x3, padding 1) turns a side L into ceil(L / 2), so branch k has side ceil(B / 2^k), B being the
side of branch 0. The official model breaks that rule in two places; here:
  * cross-resolution weighting pools with ``ceil_mode=True`` and exclusive averaging, so a partial
    window at the border averages only real pixels (identical to the official floor-mode pooling
    when the side divides evenly);
  * fuse layers upsample with nearest interpolation to the exact size of the target branch
    instead of ``scale_factor`` (identical when the sizes are exact multiples).
"""

from numbers import Integral

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.nn.initializer import Constant, Normal
from paddle.regularizer import L2Decay

from mobileseg_paddle.models.layers import (
    ConvBNAct,
    concat_shuffle,
    gathers_nearest,
    nearest_source_index,
    resize_nearest,
    spatial_size,
)

__all__ = ["LiteHRNet", "Lite_HRNet_18", "Lite_HRNet_30", "Lite_HRNet_naive",
           "Lite_HRNet_wider_naive"]

# network_type: (block type, modules in stages 0/1/2, channels of branches 0-3, CRW reduce ratio).
# Stage s has s + 2 branches (the first s + 2 channel entries) and 2 blocks per branch.
CONFIGS = {
    "lite_18": ("LITE", (2, 4, 2), (40, 80, 160, 320), 8),
    "lite_30": ("LITE", (3, 8, 3), (40, 80, 160, 320), 8),
    "naive": ("NAIVE", (2, 4, 2), (30, 60, 120, 240), 1),
    "wider_naive": ("NAIVE", (2, 4, 2), (40, 80, 160, 320), 1),
}
BLOCKS_PER_BRANCH = 2
NUM_STAGES = 3
STEM_CHANNELS = 32


def conv_norm(cin, cout, k, stride=1, groups=1, act=None, freeze_norm=False, norm_decay=0.):
    """The official ``ConvNormLayer`` with a BatchNorm (keys ``conv.*``, ``norm.*``).

    Its BN parameters carry ``L2Decay(norm_decay)`` and, with ``freeze_norm``, are frozen and
    the running statistics are used in training too."""
    layer = ConvBNAct(cin, cout, k, stride=stride, groups=groups, act=act,
                      frozen_bn=freeze_norm, conv_name="conv", bn_name="norm")
    for p in (layer.norm.weight, layer.norm.bias):
        p.regularizer = L2Decay(norm_decay)
    return layer


def conv_bias_act(cin, cout, act):
    """The official ``ConvNormLayer`` without norm: a 1x1 conv with bias (key ``conv.*``)."""
    return nn.Sequential(("conv", nn.Conv2D(cin, cout, 1)), ("act", act))


def dw_pw(cin, cout, stride, relu=True):
    """Plain depthwise 3x3 -> BN -> pointwise 1x1 -> BN [-> ReLU] as an ``nn.Sequential``
    (transition and fuse layers; keys ``0.weight``, ``1.*``, ``2.weight``, ``3.*``)."""
    layers = [nn.Conv2D(cin, cin, 3, stride, 1, groups=cin, bias_attr=False),
              nn.BatchNorm2D(cin),
              nn.Conv2D(cin, cout, 1, bias_attr=False),
              nn.BatchNorm2D(cout)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class Stem(nn.Layer):
    """(N, in, H, W) -> (N, 32, ceil(H/4), ceil(W/4)): 3x3/2 conv, then a stride-2 shuffle block."""

    def __init__(self, in_channels, channels=STEM_CHANNELS, **norm):
        super().__init__()
        half = channels // 2
        self.conv1 = conv_norm(in_channels, channels, 3, 2, act="relu", **norm)
        self.branch1 = nn.Sequential(conv_norm(half, half, 3, 2, groups=half, **norm),
                                     conv_norm(half, half, 1, act="relu", **norm))
        self.expand_conv = conv_norm(half, channels, 1, act="relu", **norm)
        self.depthwise_conv = conv_norm(channels, channels, 3, 2, groups=channels, **norm)
        self.linear_conv = conv_norm(channels, half, 1, act="relu", **norm)
        self.shuffle_fusable = False  # set by prepare_for_deploy(model, "openvino")

    def forward(self, x):
        x1, x2 = paddle.chunk(self.conv1(x), 2, axis=1)
        x2 = self.linear_conv(self.depthwise_conv(self.expand_conv(x2)))
        return concat_shuffle([self.branch1(x1), x2], self.shuffle_fusable)


class CrossResolutionWeighting(nn.Layer):
    """Channel weights computed from all branches pooled to the lowest resolution.

    Input/output: list of (N, channels[k], H_k, W_k), H_k = ceil(H_0 / 2^k)."""

    def __init__(self, channels, ratio, **norm):
        super().__init__()
        self.channels = list(channels)
        total = sum(channels)
        self.conv1 = conv_norm(total, total // ratio, 1, act="relu", **norm)
        self.conv2 = conv_norm(total // ratio, total, 1, **norm)
        self.sigmoid = nn.Sigmoid()
        self.copy_last = False  # set by prepare_for_deploy(model, "lite"): see there

    def forward(self, xs, up=None):
        n = len(xs)
        up = up or BranchUpsampler()
        last = F.avg_pool2d(xs[-1], 1, 1) if self.copy_last else xs[-1]  # an identity
        # ceil_mode keeps every pooled size equal to the lowest branch's ceil-size. A partial
        # border window averages only its real pixels (paddle clips windows to the input;
        # exclusive=True exports as ONNX count_include_pad=0, which does the same).
        pooled = [F.avg_pool2d(x, 2 ** (n - 1 - k), 2 ** (n - 1 - k), ceil_mode=True,
                               exclusive=True) for k, x in enumerate(xs[:-1])]
        w = self.sigmoid(self.conv2(self.conv1(paddle.concat(pooled + [last], axis=1))))
        ws = paddle.split(w, self.channels, axis=1)
        # every weight map has the lowest branch's size
        return [x * up(a, x, n - 1, k) for k, (x, a) in enumerate(zip(xs, ws))]


class BranchUpsampler:
    """Nearest upsampling from branch ``src`` to the size of a tensor of branch ``dst``
    (``resize_nearest``). All tensors of a branch have one size, so in a dynamic-size trace the
    size of each branch and the index vectors of each branch pair are traced once per forward,
    not at every resize. ``gather=False`` keeps ``F.interpolate`` in every trace."""

    def __init__(self, gather=True):
        self.gather = gather
        self.index, self.sizes = {}, {}

    def __call__(self, x, ref, src, dst):
        if dst not in self.sizes:
            self.sizes[dst] = spatial_size(ref)
        size = self.sizes[dst]
        if not (self.gather and gathers_nearest()):
            return F.interpolate(x, size, mode="nearest")
        if src == dst:  # same size: nearest is the identity
            return x
        if isinstance(size, list):  # fixed size: constant forms, nothing to share
            return resize_nearest(x, size)
        if (src, dst) not in self.index:
            src_size = spatial_size(x)
            self.index[src, dst] = [nearest_source_index(src_size[k], size[k])
                                    for k in range(2)]
        return resize_nearest(x, size, self.index[src, dst])


class SpatialWeighting(nn.Layer):
    """Squeeze-excitation on one branch: (N, C, H, W) -> same shape."""

    def __init__(self, channels, ratio=4):
        super().__init__()
        self.global_avgpooling = nn.AdaptiveAvgPool2D(1)
        self.conv1 = conv_bias_act(channels, channels // ratio, nn.ReLU())
        self.conv2 = conv_bias_act(channels // ratio, channels, nn.Sigmoid())

    def forward(self, x):
        return x * self.conv2(self.conv1(self.global_avgpooling(x)))


class ConditionalChannelWeightingBlock(nn.Layer):
    """Lite-HRNet block on all branches at once: half the channels pass through, the other half
    is cross-resolution weighted, depthwise-convolved and spatially weighted; then the halves are
    concatenated and shuffled. Shapes unchanged."""

    def __init__(self, channels, reduce_ratio, **norm):
        super().__init__()
        halves = [c // 2 for c in channels]
        self.cross_resolution_weighting = CrossResolutionWeighting(halves, reduce_ratio, **norm)
        self.depthwise_convs = nn.LayerList(
            [conv_norm(c, c, 3, groups=c, **norm) for c in halves])
        self.spatial_weighting = nn.LayerList([SpatialWeighting(c) for c in halves])
        self.shuffle_fusable = False  # set by prepare_for_deploy(model, "openvino")

    def forward(self, xs, up=None):
        halves = [paddle.chunk(x, 2, axis=1) for x in xs]
        x2 = self.cross_resolution_weighting([h[1] for h in halves], up)
        x2 = [sw(dw(x)) for x, dw, sw in zip(x2, self.depthwise_convs, self.spatial_weighting)]
        return [concat_shuffle([h[0], b], self.shuffle_fusable)
                for h, b in zip(halves, x2)]


class ShuffleBlock(nn.Layer):
    """ShuffleNetV2 stride-1 unit (the "naive" networks): (N, C, H, W) -> same shape."""

    def __init__(self, channels, **norm):
        super().__init__()
        half = channels // 2
        self.branch2 = nn.Sequential(conv_norm(half, half, 1, act="relu", **norm),
                                     conv_norm(half, half, 3, groups=half, **norm),
                                     conv_norm(half, half, 1, act="relu", **norm))
        self.shuffle_fusable = False  # set by prepare_for_deploy(model, "openvino")

    def forward(self, x):
        x1, x2 = paddle.chunk(x, 2, axis=1)
        return concat_shuffle([x1, self.branch2(x2)], self.shuffle_fusable)


class HRModule(nn.Layer):
    """Two blocks on every branch, then every branch receives every other (multi-scale fuse).

    Input/output: list of (N, channels[k], H_k, W_k)."""

    def __init__(self, channels, block_type, reduce_ratio, **norm):
        super().__init__()
        n = len(channels)
        if block_type == "LITE":
            self.layers = nn.Sequential(*[ConditionalChannelWeightingBlock(
                channels, reduce_ratio, **norm) for _ in range(BLOCKS_PER_BRANCH)])
        else:
            self.layers = nn.LayerList([nn.Sequential(
                *[ShuffleBlock(c, **norm) for _ in range(BLOCKS_PER_BRANCH)]) for c in channels])
        # fuse_layers[i][j] brings branch j to branch i: a 1x1 conv + BN (then upsampling in
        # forward) from a lower resolution, i - j stride-2 dw/pw steps from a higher one.
        self.fuse_layers = nn.LayerList()
        for i in range(n):
            row = []
            for j in range(n):
                if j > i:
                    row.append(nn.Sequential(nn.Conv2D(channels[j], channels[i], 1,
                                                       bias_attr=False),
                                             nn.BatchNorm2D(channels[i])))
                elif j == i:
                    row.append(nn.Identity())
                else:
                    steps = [dw_pw(channels[j], channels[j], 2) for _ in range(i - j - 1)]
                    steps.append(dw_pw(channels[j], channels[i], 2, relu=False))
                    row.append(nn.Sequential(*steps))
            self.fuse_layers.append(nn.LayerList(row))
        self.relu = nn.ReLU()

    def forward(self, xs, up=None):
        up = up or BranchUpsampler()
        if isinstance(self.layers, nn.Sequential):
            for block in self.layers:
                xs = block(xs, up)
        else:
            xs = [branch(x) for branch, x in zip(self.layers, xs)]
        out, fused0 = [], None
        for i, row in enumerate(self.fuse_layers):
            # Quirks of the official code, kept for the trained checkpoints: branch 0's term is
            # counted twice (``y += y``), and branches i > 0 take branch 0 from fused output 0
            # before its ReLU, not from the block output.
            first = xs[0] if i == 0 else row[0](fused0)
            y = first + first
            for j in range(1, len(xs)):
                term = row[j](xs[j])
                if j > i:
                    term = up(term, xs[i], j, i)
                y = y + term
            if i == 0:
                fused0 = y
            out.append(self.relu(y))
        return out


class IterativeHead(nn.Layer):
    """From the lowest resolution up: add the upsampled previous result, then a dw/pw conv.

    Channels [c0, c1, c2, c3] -> [c0, c0, c1, c2], shapes unchanged otherwise."""

    def __init__(self, channels, **norm):
        super().__init__()
        rev = list(channels[::-1])
        outs = rev[1:] + rev[-1:]
        self.projects = nn.LayerList([DepthwiseSeparable(i, o, **norm) for i, o in zip(rev, outs)])

    def forward(self, xs):
        ys, last = [], None
        for x, project in zip(xs[::-1], self.projects):
            if last is not None:
                x = x + F.interpolate(last, spatial_size(x), mode="bilinear",
                                      align_corners=True)
            last = project(x)
            ys.append(last)
        return ys[::-1]


class DepthwiseSeparable(nn.Layer):
    """3x3 depthwise conv + BN, then 1x1 conv + BN + ReLU."""

    def __init__(self, cin, cout, **norm):
        super().__init__()
        self.depthwise_conv = conv_norm(cin, cin, 3, groups=cin, **norm)
        self.pointwise_conv = conv_norm(cin, cout, 1, act="relu", **norm)

    def forward(self, x):
        return self.pointwise_conv(self.depthwise_conv(x))


class LiteHRNet(nn.Layer):
    """Lite-HRNet backbone.

    Args:
        network_type: one of ``CONFIGS`` ("lite_18", "lite_30", "naive", "wider_naive").
        in_channels: image channels.
        freeze_at: index of the output whose gradient is stopped (as the official model).
        freeze_norm: BNs inside conv-norm layers use running statistics and are not trained
            (as in the official model, the stem's BNs and the plain BNs of transition and fuse
            layers are not affected).
        norm_decay: L2 decay of those BN parameters.
        return_idx: which of the 4 branch outputs to return.
        use_head: apply the iterative head (channels [c0, c0, c1, c2] instead of [c0..c3]).
        pretrained: checkpoint path or URL.

    Input (N, in_channels, H, W) with H, W >= 64; output k has shape
    (N, feat_channels[k], ceil(H / 2^(k+2)), ceil(W / 2^(k+2))).
    """

    def __init__(self, network_type, in_channels=3, freeze_at=0, freeze_norm=True,
                 norm_decay=0., return_idx=[0, 1, 2, 3], use_head=False, pretrained=None):
        super().__init__()
        if network_type not in CONFIGS:
            raise ValueError(f"LiteHRNet network_type: expected one of {sorted(CONFIGS)}, "
                             f"got {network_type!r}")
        if isinstance(return_idx, Integral):
            return_idx = [return_idx]
        if len(return_idx) == 0:
            raise ValueError("LiteHRNet return_idx: expected one or more indices, got []")
        self.freeze_at = freeze_at
        self.return_idx = list(return_idx)
        self.use_head = use_head
        # Nearest upsamplings as gathers in legacy-program traces (``resize_nearest``). Off for
        # programs run by OpenVINO, whose conversion of the gather form is not exact.
        self.gather_nearest = True
        block_type, num_modules, channels, reduce_ratio = CONFIGS[network_type]
        norm = dict(freeze_norm=freeze_norm, norm_decay=norm_decay)

        self.stem = Stem(in_channels)  # the official stem ignores freeze_norm and norm_decay
        prev = [STEM_CHANNELS]
        for s, modules in enumerate(num_modules):
            cur = list(channels[:s + 2])
            setattr(self, f"transition{s}", self._make_transition(prev, cur))
            setattr(self, f"stage{s}", nn.Sequential(
                *[HRModule(cur, block_type, reduce_ratio, **norm) for _ in range(modules)]))
            prev = cur

        self.feat_channels = list(channels)
        if use_head:
            self.head_layer = IterativeHead(channels, **norm)
            self.feat_channels = [channels[0]] + [c // 2 for c in channels[1:]]

        for layer in self.sublayers():  # the official initialisation of every conv
            if isinstance(layer, nn.Conv2D):
                Normal(0.0, 0.001)(layer.weight)
                if layer.bias is not None:
                    Constant(0.0)(layer.bias)
        if pretrained is not None:
            from mobileseg_paddle.checkpoint import load_pretrained
            load_pretrained(self, pretrained)

    @staticmethod
    def _make_transition(prev, cur):
        """One layer per new branch k: identity or a dw/pw channel change for existing
        branches; for a new branch, stride-2 dw/pw steps from the lowest existing branch."""
        layers = []
        for k, c in enumerate(cur):
            if k < len(prev):
                layers.append(nn.Identity() if c == prev[k] else dw_pw(prev[k], c, 1))
            else:
                n_steps = k + 1 - len(prev)
                layers.append(nn.Sequential(*[
                    dw_pw(prev[-1], c if step == n_steps - 1 else prev[-1], 2)
                    for step in range(n_steps)]))
        return nn.LayerList(layers)

    def forward(self, x):
        up = BranchUpsampler(self.gather_nearest)
        xs = [self.stem(x)]
        for s in range(NUM_STAGES):
            transition = getattr(self, f"transition{s}")
            xs = [t(xs[min(k, len(xs) - 1)]) for k, t in enumerate(transition)]
            for module in getattr(self, f"stage{s}"):
                xs = module(xs, up)
        if self.use_head:
            xs = self.head_layer(xs)
        # detach only stops gradients: not in eval mode, where Lite's FP16 ARM programs would read
        # its share_data op's FP16 output as FP32 (garbage, then a segfault)
        return [x.detach() if k == self.freeze_at and self.training else x
                for k, x in enumerate(xs) if k in self.return_idx]


def Lite_HRNet_18(**kwargs):
    return LiteHRNet(network_type="lite_18", **kwargs)


def Lite_HRNet_30(**kwargs):
    return LiteHRNet(network_type="lite_30", **kwargs)


def Lite_HRNet_naive(**kwargs):
    return LiteHRNet(network_type="naive", **kwargs)


def Lite_HRNet_wider_naive(**kwargs):
    return LiteHRNet(network_type="wider_naive", **kwargs)
