"""MobileSeg: a light backbone, a pyramid-pooling context module and attention-fusion decoder.

Shapes for an input of (N, 3, H, W) and ``backbone_indices=[1, 2, 3]`` (strides 8, 16, 32):

    backbone            -> features at strides 4, 8, 16, 32 with ``backbone.feat_channels``
    MobileContextModule -> (N, cm_out_ch, H/32, W/32) from the deepest selected feature
    fusion modules      -> one per selected stage, deep to shallow; output i has arm_out_chs[i]
                           channels at the stride of selected stage i
    SegHead i           -> (N, num_classes, ...) then bilinear resize to (H, W)

In training mode ``forward`` returns the logits of every head (main first, then the auxiliary
ones, shallow to deep); in eval mode only the main logit, as a one-element list.

State-dict keys equal those of paddleseg 2.8.0's ``MobileSeg`` so model-zoo weights load as is.
Unlike it, nothing in ``forward`` asserts or branches on tensor shapes, so the model traces with
``paddle.jit.to_static`` for dynamic H and W in both PIR and the legacy program format.
"""

import paddle
import paddle.nn as nn

from .layers import ConvBNAct, ConvBNReLU, SeparableConvBNReLU, resize_to, upsample_logits

__all__ = ["MobileSeg"]  # the one model; the rest are its parts

ARM_TYPES = ("UAFMMobile", "UAFMMobile_SpAtten")


class MobileSeg(nn.Layer):
    """The MobileSeg model.

    Args:
        num_classes (int): number of classes.
        backbone (nn.Layer): returns a list of features and has ``feat_channels``.
        backbone_indices (list[int]): which backbone features the decoder uses, shallow to deep.
        cm_bin_sizes (list[int]): output sizes of the context module's adaptive poolings.
        cm_out_ch (int): channels of the context module's output.
        arm_type (str): fusion module: ``UAFMMobile`` (sum of the two inputs, what the official
            configs use) or ``UAFMMobile_SpAtten`` (UAFM spatial attention weighting).
        arm_out_chs (list[int]): output channels of each fusion module, shallow to deep.
        seg_head_inter_chs (list[int]): middle channels of each segmentation head.
        resize_mode (str): interpolation used to upsample the deeper feature in fusion.
        use_last_fuse (bool): fuse all decoder outputs into the main head's input.
        pretrained (str): path or URL of a ``model.pdparams`` to load.
    """

    def __init__(self, num_classes, backbone, backbone_indices=[1, 2, 3], cm_bin_sizes=[1, 2],
                 cm_out_ch=64, arm_type="UAFMMobile", arm_out_chs=[32, 48, 64],
                 seg_head_inter_chs=[32, 32, 32], resize_mode="bilinear", use_last_fuse=False,
                 pretrained=None):
        super().__init__()
        if not hasattr(backbone, "feat_channels"):
            raise ValueError(f"backbone {type(backbone).__name__} has no feat_channels")
        n_feats = len(backbone.feat_channels)
        if not backbone_indices or any(not 0 <= i < n_feats for i in backbone_indices):
            raise ValueError(
                f"backbone_indices {list(backbone_indices)} out of range: "
                f"{type(backbone).__name__} has {n_feats} features (valid indices 0..{n_feats - 1})")
        arm_out_chs = _per_stage("arm_out_chs", arm_out_chs, len(backbone_indices))
        seg_head_inter_chs = _per_stage("seg_head_inter_chs", seg_head_inter_chs,
                                        len(backbone_indices))
        if arm_type not in ARM_TYPES:
            raise ValueError(f"arm_type {arm_type!r} not supported; expected one of {ARM_TYPES}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")

        self.num_classes = num_classes
        self.backbone = backbone
        self.backbone_indices = list(backbone_indices)
        backbone_out_chs = [backbone.feat_channels[i] for i in backbone_indices]
        self.ppseg_head = MobileSegHead(backbone_out_chs, arm_out_chs, cm_bin_sizes, cm_out_ch,
                                        arm_type, resize_mode, use_last_fuse)
        self.seg_heads = nn.LayerList([
            SegHead(in_ch, mid_ch, num_classes)
            for in_ch, mid_ch in zip(arm_out_chs, seg_head_inter_chs)
        ])
        self.phase_upsample = False  # OpenVINO's program: see layers.upsample_logits
        self.pretrained = pretrained
        if pretrained is not None:
            from ..checkpoint import load_pretrained
            load_pretrained(self, pretrained)

    def forward(self, x):
        feats = self.backbone(x)
        feats = [feats[i] for i in self.backbone_indices]
        feats = self.ppseg_head(feats)  # shallow to deep
        n_heads = len(self.seg_heads) if self.training else 1
        upsample = upsample_logits if self.phase_upsample else resize_to
        return [upsample(self.seg_heads[i](feats[i]), x) for i in range(n_heads)]


def _per_stage(name, values, n):
    """A per-stage list: one value is repeated for every stage, otherwise n values."""
    values = list(values)
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} values, expected 1 or {n} "
                         f"(one per backbone index)")
    return values


class MobileSegHead(nn.Layer):
    """Context module on the deepest feature, then one fusion module per stage, deep to shallow.

    Input: features [f_0, ..., f_k] shallow to deep with ``backbone_out_chs`` channels.
    Output: list of the same length; element i has ``arm_out_chs[i]`` channels at f_i's size.
    """

    def __init__(self, backbone_out_chs, arm_out_chs, cm_bin_sizes, cm_out_ch, arm_type,
                 resize_mode, use_last_fuse):
        super().__init__()
        self.cm = MobileContextModule(backbone_out_chs[-1], cm_out_ch, cm_out_ch, cm_bin_sizes)
        fusion = UAFMMobile_SpAtten if arm_type == "UAFMMobile_SpAtten" else UAFMMobile
        high_chs = list(arm_out_chs[1:]) + [cm_out_ch]  # what each stage receives from deeper
        self.arm_list = nn.LayerList([
            fusion(low_ch, high_ch, out_ch, ksize=3, resize_mode=resize_mode)
            for low_ch, high_ch, out_ch in zip(backbone_out_chs, high_chs, arm_out_chs)
        ])
        self.use_last_fuse = use_last_fuse
        if use_last_fuse:
            self.fuse_convs = nn.LayerList(
                [SeparableConvBNReLU(ch, arm_out_chs[0], 3) for ch in arm_out_chs[1:]])
            self.last_conv = SeparableConvBNReLU(len(arm_out_chs) * arm_out_chs[0],
                                                 arm_out_chs[0], 3)

    def forward(self, feats):
        high = self.cm(feats[-1])
        outs = []
        for low, arm in reversed(list(zip(feats, self.arm_list))):
            high = arm(low, high)
            outs.insert(0, high)
        if self.use_last_fuse:
            fused = [outs[0]] + [resize_to(conv(f), outs[0])
                                 for f, conv in zip(outs[1:], self.fuse_convs)]
            outs[0] = self.last_conv(paddle.concat(fused, axis=1))
        return outs


def adaptive_avg_pool2d_matmul(x, bins):
    """``F.adaptive_avg_pool2d(x, bins)`` written as two matrix products with averaging
    matrices built from the runtime H and W. Same maths (bin i covers
    [floor(i*H/b), ceil((i+1)*H/b))), but no pooling attribute depends on the input size, so it
    exports to ONNX with dynamic H and W (paddle2onnx refuses adaptive pooling there)."""
    h, w = paddle.shape(x)[2], paddle.shape(x)[3]
    ph = _bin_matrix(h, bins, x.dtype)  # (bins, H)
    pw = _bin_matrix(w, bins, x.dtype)  # (bins, W)
    return paddle.matmul(paddle.matmul(ph, x), pw, transpose_y=True)


def _bin_matrix(n, bins, dtype):
    idx = paddle.arange(0, bins, dtype="int64").unsqueeze(1)  # (bins, 1)
    n64 = paddle.cast(n, "int64")
    start = (idx * n64) // bins
    end = ((idx + 1) * n64 + bins - 1) // bins  # ceil((i + 1) * n / bins)
    pos = paddle.arange(0, n64, dtype="int64").unsqueeze(0)  # (1, n)
    inside = paddle.logical_and(pos >= start, pos < end)
    m = paddle.cast(inside, dtype)
    return m / paddle.sum(m, axis=1, keepdim=True)


class MobileContextModule(nn.Layer):
    """Pyramid pooling: adaptive average pools at ``bin_sizes``, 1x1 ConvBNReLU each, upsample
    to the input size and sum, then a separable ConvBNReLU.

    (N, in_channels, h, w) -> (N, out_channels, h, w).

    ``pool_by_matmul`` (off by default, set by the ONNX exporter) replaces the adaptive pooling by
    ``adaptive_avg_pool2d_matmul`` for exports with dynamic input size.
    """

    def __init__(self, in_channels, inter_channels, out_channels, bin_sizes):
        super().__init__()
        self.bin_sizes = list(bin_sizes)
        self.stages = nn.LayerList([
            nn.Sequential(nn.AdaptiveAvgPool2D(size), ConvBNReLU(in_channels, inter_channels, 1))
            for size in bin_sizes
        ])
        self.conv_out = SeparableConvBNReLU(inter_channels, out_channels, 3)
        self.pool_by_matmul = False

    def forward(self, x):
        out = None
        for size, stage in zip(self.bin_sizes, self.stages):
            pool, conv = stage[0], stage[1]
            y = adaptive_avg_pool2d_matmul(x, size) if self.pool_by_matmul else pool(x)
            y = resize_to(conv(y), x)
            out = y if out is None else out + y
        return self.conv_out(out)


class UAFMMobile(nn.Layer):
    """Fusion of a shallow feature x and the deeper decoder output y (paddleseg's UAFMMobile).

    x: (N, x_ch, h, w) -> separable conv to y_ch; y: (N, y_ch, h', w') resized to (h, w);
    out = conv_out(fuse(x, y)): (N, out_ch, h, w). Here fuse is the sum.
    """

    def __init__(self, x_ch, y_ch, out_ch, ksize=3, resize_mode="bilinear"):
        super().__init__()
        self.conv_x = SeparableConvBNReLU(x_ch, y_ch, ksize)
        self.conv_out = SeparableConvBNReLU(y_ch, out_ch, 3)
        self.resize_mode = resize_mode

    def fuse(self, x, y):
        return x + y

    def forward(self, x, y):
        x = self.conv_x(x)
        y = resize_to(y, x, mode=self.resize_mode)
        return self.conv_out(self.fuse(x, y))


class UAFMMobile_SpAtten(UAFMMobile):
    """UAFMMobile with spatial attention: from the channel mean and max of x and y,
    a = sigmoid(conv(conv(.))) of shape (N, 1, h, w), and fuse = x * a + y * (1 - a)."""

    def __init__(self, x_ch, y_ch, out_ch, ksize=3, resize_mode="bilinear"):
        super().__init__(x_ch, y_ch, out_ch, ksize, resize_mode)
        self.conv_xy_atten = nn.Sequential(
            ConvBNAct(4, 2, 3, act="relu"),
            ConvBNAct(2, 1, 3),
        )
        self.sigmoid = nn.Sigmoid()

    def fuse(self, x, y):
        stats = paddle.concat([
            paddle.mean(x, axis=1, keepdim=True), paddle.max(x, axis=1, keepdim=True),
            paddle.mean(y, axis=1, keepdim=True), paddle.max(y, axis=1, keepdim=True),
        ], axis=1)
        atten = self.sigmoid(self.conv_xy_atten(stats))
        return x * atten + y * (1 - atten)


class SegHead(nn.Layer):
    """Separable ConvBNReLU to mid_chan, then a 1x1 conv (no bias) to n_classes."""

    def __init__(self, in_chan, mid_chan, n_classes):
        super().__init__()
        self.conv = SeparableConvBNReLU(in_chan, mid_chan, 3)
        self.conv_out = nn.Conv2D(mid_chan, n_classes, kernel_size=1, bias_attr=False)

    def forward(self, x):
        return self.conv_out(self.conv(x))
