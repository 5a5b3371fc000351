"""Each runtime fix of mobileseg_paddle/compat.py, shown against the unpatched behaviour, and
installed only where the paddleseg under test needs it. The suite runs on paddleseg 2.8.0 (the
main environment) and, in a CI step of its own, on PaddleSeg develop."""

import os
import threading

import numpy as np
import paddle
import pytest

import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components)
from helpers import vendor
from helpers.train_helpers import config_dict, make_data, write_config
from mobileseg_paddle import cli, compat
from mobileseg_paddle.errors import EvaluationFailed, UserError


@pytest.fixture
def unpatch():
    """``unpatch(fix)``: that fix of compat.FIXES undone for the rest of the test."""
    yield compat.revert
    compat.apply()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("compat") / "data", num_train=4, num_val=2)


def _builder(tmp_path, data, **kw):
    from paddleseg.cvlibs import SegBuilder
    return SegBuilder(cli.load_config(write_config(tmp_path / "c.yml", config_dict(data, **kw))))


def _train(builder, save_dir, iters=2, val=True):
    from paddleseg.core import train
    train(builder.model, builder.train_dataset,
          val_dataset=builder.val_dataset if val else None, optimizer=builder.optimizer,
          save_dir=str(save_dir), iters=iters, batch_size=2, save_interval=iters, log_iters=1,
          losses=builder.loss)


def _areas(pred, label, n=3, **kw):
    from paddleseg.utils import metrics
    return [a.numpy().tolist() for a in metrics.calculate_area(
        paddle.to_tensor(pred), paddle.to_tensor(label), n, ignore_index=255, **kw)]


# which fixes each vendored paddleseg needs: develop carries its own for losses, metrics and
# CrossEntropyLoss
NEEDED = {"v2.8.0": set(compat.FIXES),
          "develop": set(compat.FIXES) - {"losses", "metrics", "cross_entropy"}}


@pytest.fixture(scope="module")
def source():
    """'v2.8.0' or 'develop': which vendored paddleseg is installed (the CI runs both)."""
    which = vendor.installed_paddleseg()
    if which is None:
        pytest.fail("the installed paddleseg is neither of the vendored sources")
    return which


def test_installed_fixes_are_those_the_paddleseg_needs(source):
    assert {fix for fix, need in compat.needed().items() if need} == NEEDED[source]
    assert compat.applied() == NEEDED[source]
    compat.apply()  # idempotent: a second call changes nothing
    assert compat.applied() == NEEDED[source]


def test_calculate_area_counts(source):
    pred = np.array([[[0, 1, 1], [2, 2, 0]]])
    label = np.array([[[0, 1, 2], [2, 255, 1]]])
    # per class: intersection, prediction (outside ignore), label
    assert _areas(pred, label) == [[1, 1, 1], [2, 2, 1], [1, 2, 2]]
    if source == "develop":  # its own function stays, with its own parameters (evaluate passes
        # use_multilabel, which broke evaluation when we replaced it)
        assert _areas(pred, label, use_multilabel=False) == [[1, 1, 1], [2, 2, 1], [1, 2, 2]]


def test_calculate_area_unpatched(unpatch, source):
    unpatch("metrics")
    pixels = np.zeros((1, 2, 2), "int64")
    if source == "v2.8.0":
        with pytest.raises(ValueError, match="axis"):
            _areas(pixels, pixels)
    else:
        assert _areas(pixels, pixels) == [[4, 0, 0], [4, 0, 0], [4, 0, 0]]


def _zero_d_loss(logit, label):
    return paddle.nn.functional.cross_entropy(logit.transpose([0, 2, 3, 1]), label)


def _train_with_zero_d_losses(tmp_path, data):
    """Two iterations of paddleseg's trainer, logging each, on losses that return 0-D tensors
    (as paddle's own do on Paddle 3)."""
    from paddleseg.core import train
    builder = _builder(tmp_path, data)
    train(builder.model, builder.train_dataset, optimizer=builder.optimizer,
          save_dir=str(tmp_path / "out"), iters=2, batch_size=2, save_interval=2, log_iters=1,
          losses={"types": [_zero_d_loss] * 3, "coef": [1, 1, 1]})


def test_zero_d_losses_train(tmp_path, data):
    _train_with_zero_d_losses(tmp_path, data)
    compat.check_checkpoint(str(tmp_path / "out" / "iter_2"))


def test_zero_d_losses_unpatched(tmp_path, data, unpatch, source):
    unpatch("losses")
    if source == "v2.8.0":  # it logs loss.numpy()[0]
        with pytest.raises(IndexError):
            _train_with_zero_d_losses(tmp_path, data)
    else:
        _train_with_zero_d_losses(tmp_path, data)


def _cross_entropy(label, weight=None, top_k=1.0, avg_non_ignore=True):
    from paddleseg.models.losses import CrossEntropyLoss
    logit = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 3, 4, 5)), "float32")
    loss = CrossEntropyLoss(weight=weight, top_k_percent_pixels=top_k,
                            avg_non_ignore=avg_non_ignore)
    return float(loss(logit, paddle.to_tensor(label))), logit.numpy()


@pytest.mark.parametrize("weight, top_k, avg_non_ignore", [
    (None, 1.0, True), (None, 1.0, False), ([1.0, 2.0, 0.5], 1.0, True), (None, 0.3, True)])
def test_cross_entropy_loss_values(weight, top_k, avg_non_ignore):
    """paddleseg's CrossEntropyLoss (patched on 2.8.0, its own on develop) against numpy."""
    label = np.random.default_rng(1).integers(0, 3, (2, 4, 5)).astype("int64")
    label[0, 0, :3] = 255  # ignored pixels
    got, logit = _cross_entropy(label, weight, top_k, avg_non_ignore)
    shifted = logit - logit.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    valid = label != 255
    safe = np.where(valid, label, 0)
    w = np.ones(3) if weight is None else np.asarray(weight)
    nll = -np.take_along_axis(logp, safe[:, None], axis=1)[:, 0] * w[safe] * valid
    mask = valid if avg_non_ignore else np.ones_like(valid)
    if top_k == 1.0:
        expected = nll.mean() / ((mask * (w[safe] if weight is not None else 1)).mean() + 1e-8)
    else:
        k = int(top_k * nll.size)
        expected = np.sort(nll.ravel())[::-1][:k].mean() / (1 + 1e-8)
    assert abs(got - expected) <= 1e-5 * abs(expected)


def test_cross_entropy_loss_unpatched(unpatch, source):
    unpatch("cross_entropy")
    label = np.zeros((2, 4, 5), "int64")
    if source == "v2.8.0":
        with pytest.raises(TypeError, match="promotion"):
            _cross_entropy(label)
    else:
        assert _cross_entropy(label)[0] > 0


def test_train_evaluates_then_val(tmp_path, data, capsys):
    """The report: on develop, ``mobileseg train --do_eval`` trained and then evaluation failed
    (``calculate_area() got an unexpected keyword argument 'use_multilabel'``), as did
    ``mobileseg val``."""
    cfg = write_config(tmp_path / "c.yml", config_dict(data, iters=2))
    assert cli.main(["train", "--config", cfg, "--device", "cpu", "--save_dir", tmp_path / "out",
                     "--save_interval", "2", "--do_eval"]) == 0, capsys.readouterr().err
    # written only after an evaluation that gave a number (a failed one gives NaN)
    assert (tmp_path / "out" / "best_model" / "model.pdparams").is_file()
    args = cli.build_parser().parse_args(
        ["val", "--config", cfg, "--device", "cpu",
         "--model_path", str(tmp_path / "out" / "iter_2" / "model.pdparams")])
    result = cli.run_val(args)
    assert 0.0 <= result["miou"] <= 1.0 and len(result["class_iou"]) == 4


class _BrokenVal:
    """A val dataset whose evaluation fails."""

    def __init__(self, dataset):
        self.__dict__.update(num_classes=dataset.num_classes, ignore_index=255)

    def __len__(self):
        return 1

    def __getitem__(self, idx):
        raise OSError("val disk went away")


def test_failed_evaluation_keeps_the_weights(tmp_path, data):
    builder = _builder(tmp_path, data)
    builder.val_dataset  # noqa: B018  (build it, then break it)
    builder.__dict__["val_dataset"] = _BrokenVal(builder.val_dataset)
    with pytest.raises(EvaluationFailed, match="val disk went away.*saved in"):
        _train(builder, tmp_path / "out")
    compat.check_checkpoint(str(tmp_path / "out" / "iter_2"))
    state = paddle.load(str(tmp_path / "out" / "iter_2" / "model.pdparams"))
    assert set(state) == set(builder.model.state_dict())


def test_failed_evaluation_loses_the_weights_unpatched(tmp_path, data, unpatch):
    unpatch("evaluate")
    builder = _builder(tmp_path, data)
    builder.__dict__["val_dataset"] = _BrokenVal(builder.val_dataset)
    with pytest.raises(OSError):
        _train(builder, tmp_path / "out")
    assert not (tmp_path / "out" / "iter_2").exists()


def _crash_while_writing_pdopt(monkeypatch):
    """paddle.save that dies half-way through writing model.pdopt (like a kill)."""
    real_save = paddle.save

    def save(obj, path, *a, **kw):
        if isinstance(path, str) and ".pdopt" in os.path.basename(path):
            real_save(obj, path, *a, **kw)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            raise KeyboardInterrupt("killed while saving")
        return real_save(obj, path, *a, **kw)
    monkeypatch.setattr(paddle, "save", save)


def _looks_complete_but_is_not(ckpt):
    try:
        compat.check_checkpoint(str(ckpt))
    except UserError:
        return False  # recognisably incomplete: fine
    try:
        paddle.load(str(ckpt / "model.pdopt"))
        paddle.load(str(ckpt / "model.pdparams"))
    except Exception:
        return True
    return False


def test_kill_during_save_leaves_no_complete_looking_checkpoint(tmp_path, data, monkeypatch):
    builder = _builder(tmp_path, data)
    _crash_while_writing_pdopt(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _train(builder, tmp_path / "out", val=False)
    assert not _looks_complete_but_is_not(tmp_path / "out" / "iter_2")
    assert os.listdir(tmp_path / "out" / "iter_2") == []
    monkeypatch.undo()
    # the next save of that iteration clears the leftovers and completes
    _train(_builder(tmp_path, data), tmp_path / "out", val=False)
    compat.check_checkpoint(str(tmp_path / "out" / "iter_2"))
    assert sorted(os.listdir(tmp_path / "out")) == ["iter_2"]


def test_kill_during_save_unpatched_leaves_a_broken_checkpoint(tmp_path, data, monkeypatch,
                                                                unpatch):
    unpatch("checkpoints")
    builder = _builder(tmp_path, data)
    _crash_while_writing_pdopt(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _train(builder, tmp_path / "out", val=False)
    assert _looks_complete_but_is_not(tmp_path / "out" / "iter_2")


class _FailingData(paddle.io.Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, idx):
        if idx == 3:
            raise ValueError("sample 3 is corrupt")
        return np.zeros(2, "float32")


def _iterate(num_workers):
    """Iterate a DataLoader over a failing dataset; return the error, or 'hung'.

    Without workers the loop runs in a thread so that a hang cannot block the tests (worker
    processes can only be started from the main thread, and there nothing hangs)."""
    result = {}

    def target():
        try:
            result["iter"] = iter(paddle.io.DataLoader(_FailingData(), batch_size=1,
                                                       num_workers=num_workers))
            for _ in result["iter"]:
                pass
            result["error"] = None
        except BaseException as e:
            result["error"] = e
    if num_workers:
        target()
        result["iter"]._try_shutdown_all()  # unpatched, the workers would outlive the error
    else:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(timeout=8)
        if thread.is_alive():  # release the blocked reader so later loaders work
            result["iter"]._blocking_queue.kill()
            thread.join()
            return "hung"
    return result["error"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_data_errors_reach_the_loop(num_workers):
    error = _iterate(num_workers)
    assert isinstance(error, ValueError) and "sample 3 is corrupt" in str(error)


def test_data_errors_hang_or_lose_their_cause_unpatched(unpatch):
    unpatch("loader")
    assert _iterate(0) == "hung"  # the daemon thread stays blocked; harmless
    error = _iterate(2)
    assert isinstance(error, SystemError) and "Blocking queue is killed" in str(error)


def test_resume_rejects_incomplete_and_restores_state(tmp_path, data):
    builder = _builder(tmp_path, data, iters=6)
    _train(builder, tmp_path / "out", iters=6, val=False)
    ckpt = tmp_path / "out" / "iter_6"
    lr_after = builder.optimizer.get_lr()
    fresh = _builder(tmp_path, data, iters=6)
    assert fresh.optimizer.get_lr() != lr_after
    assert compat.resume(fresh.model, fresh.optimizer, str(ckpt)) == 6
    assert fresh.optimizer.get_lr() == lr_after
    saved = paddle.load(str(ckpt / "model.pdopt"))
    restored = fresh.optimizer.state_dict()
    velocity = [k for k in saved if "velocity" in k][0]
    np.testing.assert_array_equal(restored[velocity].numpy(), saved[velocity].numpy())
    for name, value in fresh.model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), builder.model.state_dict()[name].numpy())

    (ckpt / "model.pdopt").unlink()
    with pytest.raises(UserError, match="incomplete: missing model.pdopt"):
        compat.resume(fresh.model, fresh.optimizer, str(ckpt))
