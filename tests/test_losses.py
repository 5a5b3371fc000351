"""Our CE/OHEM losses: the maths of paddleseg's, working on Paddle 3, in the shape the trainer
expects. References are written in numpy from paddleseg 2.8.0's source."""

import numpy as np
import paddle
import pytest
from paddleseg.models import losses as official

import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components)
from mobileseg_paddle.losses import CrossEntropyLoss, OhemCrossEntropyLoss

IGNORE = 255


def _inputs(seed=0, n=2, c=4, h=12, w=10):
    rng = np.random.default_rng(seed)
    logit = rng.normal(0, 2, (n, c, h, w)).astype("float32")
    label = rng.integers(0, c, (n, h, w))
    label[0, :3] = IGNORE
    return logit, label


def _softmax(logit):
    e = np.exp(logit - logit.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _pixel_ce(logit, label):
    """-log softmax of the true class, 0 where ignored; (N, H, W) float64."""
    prob = _softmax(logit.astype(np.float64))
    safe = np.where(label == IGNORE, 0, label)
    p = np.take_along_axis(prob, safe[:, None], axis=1)[:, 0]
    return np.where(label == IGNORE, 0.0, -np.log(p))


def ref_ce(logit, label, weight=None):
    """paddleseg CrossEntropyLoss, top_k_percent_pixels=1, avg_non_ignore=True."""
    mask = (label != IGNORE).astype(np.float64)
    loss = _pixel_ce(logit, label)
    if weight is None:
        return loss.mean() / (mask.mean() + 1e-8)
    w = np.asarray(weight)[np.where(label == IGNORE, 0, label)]
    loss = loss * w  # F.cross_entropy(weight=...) weights each pixel by its class weight
    return loss.mean() / ((mask * w).mean() + 1e-8)


def ref_ohem(logit, label, thresh=0.7, min_kept=10000):
    """paddleseg OhemCrossEntropyLoss, step by step in numpy."""
    n, c, h, w = logit.shape
    flat = label.reshape(-1)
    valid = flat != IGNORE
    prob = _softmax(logit.astype(np.float64)).transpose(1, 0, 2, 3).reshape(c, -1)
    if min_kept < valid.sum() and valid.sum() > 0 and min_kept > 0:
        true_prob = prob[np.where(valid, flat, 0), np.arange(flat.size)] + (~valid)
        kth = np.sort(true_prob)[min(flat.size, min_kept) - 1]
        valid = valid & (true_prob < max(thresh, kth))
    loss = _pixel_ce(logit, np.where(valid, flat, IGNORE).reshape(n, h, w))
    return loss.mean() / (valid.mean() + 1e-5)


def _run(loss, logit, label):
    out = loss(paddle.to_tensor(logit), paddle.to_tensor(label))
    assert out.shape == [1] and out.dtype == paddle.float32  # what the trainer indexes
    assert out.numpy()[0] == float(out)
    return float(out)


def test_cross_entropy_matches_reference():
    logit, label = _inputs()
    assert _run(CrossEntropyLoss(), logit, label) == pytest.approx(ref_ce(logit, label), rel=1e-5)
    weight = [0.5, 1.0, 2.0, 3.0]
    assert _run(CrossEntropyLoss(weight=weight), logit, label) == pytest.approx(
        ref_ce(logit, label, weight), rel=1e-5)
    # (N, 1, H, W) labels and NHWC logits give the same value
    assert _run(CrossEntropyLoss(), logit, label[:, None]) == pytest.approx(
        ref_ce(logit, label), rel=1e-5)
    nhwc = CrossEntropyLoss(data_format="NHWC")
    assert _run(nhwc, logit.transpose(0, 2, 3, 1), label) == pytest.approx(
        ref_ce(logit, label), rel=1e-5)


def test_cross_entropy_top_k_equals_official():
    # the one CE setting where paddleseg's own loss still runs on Paddle 3
    logit, label = _inputs(1)
    ours = _run(CrossEntropyLoss(top_k_percent_pixels=0.3), logit, label)
    theirs = official.CrossEntropyLoss(top_k_percent_pixels=0.3)(
        paddle.to_tensor(logit), paddle.to_tensor(label))
    assert ours == pytest.approx(float(theirs), rel=1e-6)


@pytest.mark.parametrize("min_kept,thresh", [(50, 0.7), (150, 0.2), (0, 0.7), (10000, 0.7)])
def test_ohem_matches_reference(min_kept, thresh):
    logit, label = _inputs(2)
    got = _run(OhemCrossEntropyLoss(thresh=thresh, min_kept=min_kept), logit, label)
    assert got == pytest.approx(ref_ohem(logit, label, thresh, min_kept), rel=1e-5)


def test_ohem_mining_changes_the_value_and_keeps_gradients_on_kept_pixels():
    logit, label = _inputs(3)
    mined = _run(OhemCrossEntropyLoss(min_kept=20), logit, label)
    assert mined > _run(OhemCrossEntropyLoss(min_kept=100000), logit, label)  # hard pixels
    x = paddle.to_tensor(logit, stop_gradient=False)
    OhemCrossEntropyLoss(min_kept=20)(x, paddle.to_tensor(label)).backward()
    grad = np.abs(x.grad.numpy()).sum(axis=1)
    assert (grad[label == IGNORE] == 0).all()
    assert 20 <= (grad > 0).sum() < (label != IGNORE).sum()


def test_ohem_equals_official_where_official_runs():
    # with min_kept >= valid pixels paddleseg's OHEM skips mining and still runs on Paddle 3
    logit, label = _inputs(4)
    theirs = official.OhemCrossEntropyLoss(min_kept=100000)(
        paddle.to_tensor(logit), paddle.to_tensor(label))
    assert _run(OhemCrossEntropyLoss(min_kept=100000), logit, label) == pytest.approx(
        float(theirs), rel=1e-6)


def test_official_losses_fail_on_paddle3_which_is_why_ours_exist():
    # CrossEntropyLoss's failure is compat fix 7 (test_compat shows it unpatched); patched, the
    # official loss is ours.
    logit, label = (paddle.to_tensor(a) for a in _inputs(5))
    with pytest.raises(TypeError, match="Type promotion"):
        official.OhemCrossEntropyLoss(min_kept=10)(logit, label)
    from mobileseg_paddle import compat
    compat.apply("cross_entropy")  # idempotent; other tests of the run may have applied it
    theirs = float(official.CrossEntropyLoss()(logit, label))
    assert abs(theirs - float(CrossEntropyLoss()(logit, label))) <= 1e-6 * abs(theirs)
    with pytest.raises(IndexError):
        official.OhemCrossEntropyLoss(min_kept=100000)(logit, label).numpy()[0]


def test_registered_and_built_from_config_fields():
    from paddleseg.cvlibs import manager
    assert manager.LOSSES["MSP_OhemCrossEntropyLoss"] is OhemCrossEntropyLoss
    assert manager.LOSSES["MSP_CrossEntropyLoss"] is CrossEntropyLoss
    ohem = manager.LOSSES["MSP_OhemCrossEntropyLoss"](thresh=0.6, min_kept=130000, ignore_index=0)
    assert (ohem.thresh, ohem.min_kept, ohem.ignore_index) == (0.6, 130000, 0)
    ce = manager.LOSSES["MSP_CrossEntropyLoss"](weight=[1, 2], ignore_index=3,
                                                 top_k_percent_pixels=0.5, avg_non_ignore=False)
    assert ce.weight.numpy().tolist() == [1.0, 2.0] and ce.avg_non_ignore is False
