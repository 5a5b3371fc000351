"""Cross-entropy losses for PaddleSeg's trainer on Paddle 3 (registered as ``MSP_...``).

paddleseg 2.8.0's ``CrossEntropyLoss`` and ``OhemCrossEntropyLoss`` raise on Paddle 3.3 because
Paddle 3 no longer promotes int64 x float32 (``label * mask``, ``mask * coef``, ``prob +
(1 - valid_mask)``), and both return a 0-D tensor while the trainer reads ``loss.numpy()[0]``.
These keep the same config fields and the same maths, cast explicitly, and return a float32
tensor of shape [1].

Shapes: ``logit`` (N, C, H, W) (or (N, H, W, C) with ``data_format='NHWC'`` for the CE loss);
``label`` (N, H, W) or (N, 1, H, W), integer class ids, ``ignore_index`` for "no label".
"""

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

__all__ = ["CrossEntropyLoss", "OhemCrossEntropyLoss"]


def _labels_nhw(label, logit_ndim):
    """(N, 1, H, W) -> (N, H, W) int64; (N, H, W) unchanged apart from the dtype."""
    if label.ndim == logit_ndim:
        label = label.squeeze(1)
    return label.astype("int64")


class CrossEntropyLoss(nn.Layer):
    """Pixel-wise softmax cross entropy; same fields and maths as paddleseg's CrossEntropyLoss.

    Args:
        weight (list[float], optional): per-class weights, length num_classes.
        ignore_index (int): label value that contributes nothing. Default 255.
        top_k_percent_pixels (float): in (0, 1]; below 1 only the hardest fraction of pixels
            counts (hard pixel mining).
        avg_non_ignore (bool): average over non-ignored pixels only (else over all pixels).
        data_format (str): 'NCHW' or 'NHWC' for ``logit``.
    """

    EPS = 1e-8

    def __init__(self, weight=None, ignore_index=255, top_k_percent_pixels=1.0,
                 avg_non_ignore=True, data_format="NCHW"):
        super().__init__()
        if data_format not in ("NCHW", "NHWC"):
            raise ValueError(f"data_format must be 'NCHW' or 'NHWC', got {data_format!r}")
        if not 0.0 < top_k_percent_pixels <= 1.0:
            raise ValueError(f"top_k_percent_pixels must be in (0, 1], got {top_k_percent_pixels}")
        self.ignore_index = ignore_index
        self.top_k_percent_pixels = top_k_percent_pixels
        self.avg_non_ignore = avg_non_ignore
        self.data_format = data_format
        self.weight = None if weight is None else paddle.to_tensor(weight, dtype="float32")

    def forward(self, logit, label, semantic_weights=None):
        """Return the mean loss, shape [1]. ``semantic_weights``: optional (N, H, W) per pixel."""
        channel_axis = 1 if self.data_format == "NCHW" else -1
        num_classes = logit.shape[channel_axis]
        if self.weight is not None and num_classes != len(self.weight):
            raise ValueError(f"CrossEntropyLoss has {len(self.weight)} class weights but the "
                             f"logits have {num_classes} classes")
        label = _labels_nhw(label, logit.ndim) if channel_axis == 1 else label.astype("int64")
        if channel_axis == 1:
            logit = logit.transpose([0, 2, 3, 1])
        loss = F.cross_entropy(logit, label, ignore_index=self.ignore_index, reduction="none",
                               weight=self.weight)
        if loss.ndim > label.ndim:
            loss = loss.squeeze(-1)

        if self.avg_non_ignore:
            mask = (label != self.ignore_index).astype("float32")
        else:
            mask = paddle.ones(label.shape, dtype="float32")
        mask.stop_gradient = True
        loss = loss * mask
        if semantic_weights is not None:
            loss = loss * semantic_weights

        # coef: the class weight of each pixel (ignored pixels count as class 0, as upstream)
        if self.weight is not None:
            valid_label = label * mask.astype("int64")
            coef = (F.one_hot(valid_label, num_classes) * self.weight).sum(axis=-1)
        else:
            coef = paddle.ones(label.shape, dtype="float32")
        coef.stop_gradient = True

        if self.top_k_percent_pixels == 1.0:
            avg_loss = loss.mean() / ((mask * coef).mean() + self.EPS)
        else:
            loss = loss.reshape([-1])
            top_k = max(int(self.top_k_percent_pixels * loss.numel()), 1)
            loss, indices = paddle.topk(loss, top_k)
            coef = paddle.gather(coef.reshape([-1]), indices)
            avg_loss = loss.mean() / (coef.mean() + self.EPS)
        return avg_loss.reshape([1])


class OhemCrossEntropyLoss(nn.Layer):
    """Online hard example mining cross entropy; same fields and maths as paddleseg's.

    Of the valid pixels, those whose predicted probability of the true class is below
    ``max(thresh, p_k)`` are kept, ``p_k`` being the ``min_kept``-th smallest such probability,
    so at least ``min_kept`` pixels count. If there are no more than ``min_kept`` valid pixels,
    or ``min_kept`` is 0, every valid pixel counts.

    Args:
        thresh (float): probability threshold. Default 0.7.
        min_kept (int): minimum number of pixels kept per batch. Default 10000.
        ignore_index (int): label value that contributes nothing. Default 255.
    """

    EPS = 1e-5

    def __init__(self, thresh=0.7, min_kept=10000, ignore_index=255):
        super().__init__()
        if min_kept < 0:
            raise ValueError(f"min_kept must be >= 0, got {min_kept}")
        self.thresh = thresh
        self.min_kept = min_kept
        self.ignore_index = ignore_index

    def forward(self, logit, label):
        """Return the mean loss over kept pixels, shape [1]."""
        n, c, h, w = logit.shape
        label = _labels_nhw(label, logit.ndim).reshape([-1])
        valid = label != self.ignore_index
        num_valid = int(valid.astype("int64").sum())
        label = paddle.where(valid, label, paddle.zeros_like(label))

        if 0 < self.min_kept < num_valid:
            with paddle.no_grad():
                prob = F.softmax(logit, axis=1).transpose([1, 0, 2, 3]).reshape([c, -1])
                # probability of the true class; ignored pixels get > 1 so they are never kept
                true_prob = paddle.take_along_axis(prob, label.unsqueeze(0), axis=0).squeeze(0)
                true_prob = true_prob + (~valid).astype(true_prob.dtype)
                kth = paddle.kthvalue(true_prob, min(self.min_kept, true_prob.shape[0]))[0]
                threshold = max(self.thresh, float(kth))
                valid = valid & (true_prob < threshold)

        valid_mask = valid.astype("float32").reshape([n, 1, h, w])
        label = paddle.where(valid, label, paddle.full_like(label, self.ignore_index))
        loss = F.cross_entropy(logit, label.reshape([n, 1, h, w]), ignore_index=self.ignore_index,
                               reduction="none", axis=1)
        loss = loss * valid_mask
        avg_loss = loss.mean() / (valid_mask.mean() + self.EPS)
        return avg_loss.reshape([1])
