"""Runtime fixes that let paddleseg 2.8.0's trainer and evaluator run on Paddle 3.3.

Nothing in site-packages is edited: ``apply()`` swaps a few names inside paddleseg's modules and
is idempotent. The training entry (``mobileseg_paddle.cli``) calls it at import. Each fix has a
test in tests/test_compat.py that fails on the unpatched behaviour.

1. ``loss_computation``: the trainer logs ``loss.numpy()[0]``, which fails on the 0-D tensors
   Paddle 3 losses return; every loss is reshaped to [1] (our own losses already return [1]).
2. ``metrics.calculate_area`` concatenates 0-D sums, which Paddle 3 rejects; the replacement
   stacks them (same counts).
3. The trainer evaluates before it saves, so a crash in evaluation lost the weights. Evaluation
   failures are now held back until the checkpoint of that iteration is written, then raised
   as ``EvaluationFailed`` naming where the weights are.
4. Checkpoints: ``iter_N/`` is written into a hidden staging folder and renamed into place once
   both ``model.pdparams`` and ``model.pdopt`` are complete; every other file the trainer saves
   (``best_model/model.pdparams``) goes to a temporary file and is renamed over the old one.
   A kill at any moment leaves either the previous state or a complete checkpoint.
5. ``resume`` refuses an incomplete checkpoint folder with one clear error, loads the weights
   strictly (no silently skipped keys) and restores optimizer state, LR schedule and iteration.
6. Paddle 3.3's ``DataLoader`` reads batches in a background thread; when the dataset raises
   (a corrupt image, a bad label) and ``num_workers=0`` the thread dies and the main thread
   waits forever; with workers the main thread gets "Blocking queue is killed" without the
   cause. The loader threads now keep the exception and ``__next__`` raises it.
"""

import math
import os
import re
import shutil
import sys

import paddle

from .checkpoint import CheckpointError, load_pretrained

CHECKPOINT_FILES = ("model.pdparams", "model.pdopt")
_ITER_DIR = re.compile(r"^iter_(\d+)$")


class EvaluationFailed(RuntimeError):
    """Evaluation during training failed; the weights of that iteration were saved first."""


def _train_module():
    return sys.modules["paddleseg.core.train"]


# --- 1. losses as the trainer expects them -------------------------------------------------

def _losses_as_1d(loss_computation):
    def loss_computation_1d(logits_list, labels, edges, losses):
        loss_list = loss_computation(logits_list, labels, edges, losses)
        return [loss.reshape([1]) if loss.ndim == 0 else loss for loss in loss_list]
    return loss_computation_1d


# --- 2. metrics ------------------------------------------------------------------------------

def calculate_area(pred, label, num_classes, ignore_index=255):
    """Per-class (intersection, prediction, label) pixel counts, each int64 (num_classes,)."""
    if pred.ndim == 4:
        pred = pred.squeeze(1)
    if label.ndim == 4:
        label = label.squeeze(1)
    if pred.shape != label.shape:
        raise ValueError(f"Shape of `pred` and `label` should be equal, "
                         f"but there are {pred.shape} and {label.shape}.")
    mask = label != ignore_index
    pred_area, label_area, intersect_area = [], [], []
    for i in range(num_classes):
        pred_i = paddle.logical_and(pred == i, mask)
        label_i = label == i
        pred_area.append(pred_i.astype("int64").sum())
        label_area.append(label_i.astype("int64").sum())
        intersect_area.append(paddle.logical_and(pred_i, label_i).astype("int64").sum())
    return paddle.stack(intersect_area), paddle.stack(pred_area), paddle.stack(label_area)


# --- 3. evaluation failures keep the weights -----------------------------------------------

_pending = {"eval_error": None}


def _guarded(evaluate):
    def guarded_evaluate(model, *args, **kwargs):
        try:
            return evaluate(model, *args, **kwargs)
        except Exception as e:  # any failure: keep it until the weights are on disk
            if paddle.distributed.ParallelEnv().local_rank != 0:
                raise  # only rank 0 saves
            from paddleseg.utils import logger
            logger.error(f"evaluation failed ({type(e).__name__}: {e}); saving the weights first")
            _pending["eval_error"] = e
            return math.nan, math.nan, None, None, math.nan
    return guarded_evaluate


# --- 4. checkpoints that are complete or absent --------------------------------------------

def _write_atomic(obj, path):
    """paddle.save to a temporary file in the same folder, then rename over ``path``."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    paddle.save(obj, tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)  # the bytes are on disk before the name points at them
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(folder)


def _fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def staging_dir(ckpt_dir):
    """Where ``iter_N`` is assembled before it is renamed into place."""
    ckpt_dir = os.path.normpath(ckpt_dir)
    return os.path.join(os.path.dirname(ckpt_dir), f".{os.path.basename(ckpt_dir)}.partial")


def save_for_trainer(obj, path, *args, **kwargs):
    """Stand-in for ``paddle.save`` inside paddleseg's trainer (see fix 4 in the docstring)."""
    if not isinstance(path, str):
        return paddle.save(obj, path, *args, **kwargs)
    ckpt_dir, name = os.path.split(os.path.normpath(path))
    if not _ITER_DIR.match(os.path.basename(ckpt_dir)) or name not in CHECKPOINT_FILES:
        return _write_atomic(obj, path)
    staging = staging_dir(ckpt_dir)
    if name == CHECKPOINT_FILES[0] and os.path.exists(staging):
        shutil.rmtree(staging)  # left over from a killed run
    _write_atomic(obj, os.path.join(staging, name))
    if all(os.path.isfile(os.path.join(staging, f)) for f in CHECKPOINT_FILES):
        if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
            shutil.rmtree(ckpt_dir)  # an older checkpoint of the same iteration
        os.replace(staging, ckpt_dir)  # replaces the empty folder the trainer made
        _fsync_dir(os.path.dirname(ckpt_dir) or ".")
        error, _pending["eval_error"] = _pending["eval_error"], None
        if error is not None:
            raise EvaluationFailed(f"evaluation failed: {type(error).__name__}: {error} "
                                   f"(the weights of this iteration are saved in {ckpt_dir})"
                                   ) from error


class _PaddleForTrainer:
    """The ``paddle`` module as paddleseg's trainer sees it: all of paddle, our ``save``."""

    save = staticmethod(save_for_trainer)

    def __getattr__(self, name):
        return getattr(paddle, name)


# --- 5. resume -------------------------------------------------------------------------------

def check_checkpoint(ckpt_dir):
    """Raise ``CheckpointError`` unless ``ckpt_dir`` is a complete ``iter_N`` checkpoint."""
    ckpt_dir = os.path.normpath(ckpt_dir)
    if not os.path.isdir(ckpt_dir):
        raise CheckpointError(f"--resume_model {ckpt_dir}: no such checkpoint folder")
    if not _ITER_DIR.match(os.path.basename(ckpt_dir)):
        raise CheckpointError(f"--resume_model {ckpt_dir}: expected a folder named iter_<N> "
                              f"written by training")
    missing = [f for f in CHECKPOINT_FILES if not os.path.isfile(os.path.join(ckpt_dir, f))]
    if missing:
        raise CheckpointError(f"--resume_model {ckpt_dir} is incomplete: missing "
                              f"{', '.join(missing)}")


def resume(model, optimizer, resume_model):
    """Restore weights, optimizer state (with the LR schedule) and return the iteration."""
    if resume_model is None:
        return 0
    from paddleseg.utils import logger
    check_checkpoint(resume_model)
    ckpt_dir = os.path.normpath(resume_model)
    logger.info(f"Resume model from {ckpt_dir}")
    load_pretrained(model, os.path.join(ckpt_dir, "model.pdparams"))
    opt_path = os.path.join(ckpt_dir, "model.pdopt")
    try:
        opt_state = paddle.load(opt_path)
    except Exception as e:
        raise CheckpointError(f"cannot read {opt_path}: {type(e).__name__}: {e}") from None
    optimizer.set_state_dict(opt_state)
    return int(_ITER_DIR.match(os.path.basename(ckpt_dir)).group(1))


# --- 6. data loading errors reach the training loop --------------------------------------------

def _keep_thread_error(thread_loop):
    def _thread_loop(self, *args):
        try:
            return thread_loop(self, *args)
        except Exception as e:  # remember the cause, then unblock the reader
            self._msp_error = e
            self._exit_thread_unexpectedly()
    return _thread_loop


def _raise_thread_error(next_batch):
    def __next__(self):
        try:
            return next_batch(self)
        except BaseException:  # the killed queue surfaces as StopIteration or SystemError
            error = getattr(self, "_msp_error", None)
            if error is None:
                raise
            # drop the references iterator <-> traceback, stop the workers now: left to the
            # garbage collector, the shutdown would run at interpreter exit and hang there
            self._msp_error, error.__traceback__ = None, None
            self._try_shutdown_all()
            raise error from None
    return __next__


def loader_error_message(error):
    """The message of the dataset's own exception inside a worker's re-raised one."""
    lines = [ln for ln in str(error).strip().splitlines() if ln.strip()]
    if len(lines) > 1 and "DataLoader worker" in lines[0]:
        return lines[-1].split(": ", 1)[-1]
    return str(error)


# --- applying ----------------------------------------------------------------------------------

FIXES = ("losses", "metrics", "evaluate", "checkpoints", "resume", "loader")
_ORIGINAL = {}  # (owner, attribute) -> the value before apply()


def _patch_table():
    """(fix, owner, attribute, make_replacement(original)) for every name we swap."""
    import paddleseg.core.train  # noqa: F401  (make sure the module is loaded)
    from paddle.io.dataloader import dataloader_iter as di
    from paddleseg.utils import metrics
    train_module = _train_module()
    table = [("losses", train_module, "loss_computation", _losses_as_1d),
             ("metrics", metrics, "calculate_area", lambda _: calculate_area),
             ("evaluate", train_module, "evaluate", _guarded),
             ("checkpoints", train_module, "paddle", lambda _: _PaddleForTrainer()),
             ("resume", train_module, "resume", lambda _: resume)]
    for cls in (di._DataLoaderIterSingleProcess, di._DataLoaderIterMultiProcess):
        table += [("loader", cls, "_thread_loop", _keep_thread_error),
                  ("loader", cls, "__next__", _raise_thread_error)]
    return table


def apply(*fixes):
    """Install the fixes (all, or the named ones of ``FIXES``); idempotent."""
    for fix, owner, attr, make in _patch_table():
        if (not fixes or fix in fixes) and (owner, attr) not in _ORIGINAL:
            _ORIGINAL[(owner, attr)] = original = getattr(owner, attr)
            setattr(owner, attr, make(original))


def revert(*fixes):
    """Undo ``apply()`` for all or the named fixes (tests show the unpatched behaviour)."""
    for fix, owner, attr, _ in _patch_table():
        if (not fixes or fix in fixes) and (owner, attr) in _ORIGINAL:
            setattr(owner, attr, _ORIGINAL.pop((owner, attr)))
