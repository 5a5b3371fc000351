"""Runtime fixes that let paddleseg's trainer and evaluator run on Paddle 3.3.

Nothing in site-packages is edited: ``apply()`` swaps a few names inside paddleseg's modules and
is idempotent. The training entry (``mobileseg_paddle.cli``) calls it at import. Each fix has a
test in tests/test_compat.py that fails on the unpatched behaviour.

A fix is installed only where the installed paddleseg needs it: each has a probe (``PROBES``)
that looks at the unpatched code or runs it, never at the version string (a develop install
says ``0.0.0.dev0``). ``needed()`` answers for every fix, ``applied()`` says which are in.

1. ``loss_computation``: the trainer logs ``loss.numpy()[0]``, which fails on the 0-D tensors
   Paddle 3 losses return; every loss is reshaped to [1] (our own losses already return [1]).
   Probe: the trainer's code calls ``.numpy()`` (2.8.0). A trainer that logs ``float(loss)``
   (develop) takes 0-D losses as they are.
2. ``metrics.calculate_area`` concatenates 0-D sums, which Paddle 3 rejects; the replacement
   stacks them (same counts). Probe: the installed function, called on a two-pixel input,
   fails, and has 2.8.0's parameters (develop's works, and takes ``use_multilabel``, which the
   replacement would refuse).
3. The trainer evaluates before it saves, so a crash in evaluation lost the weights. Evaluation
   failures are now held back until the checkpoint of that iteration is written, then raised
   as ``EvaluationFailed`` naming where the weights are. Probe: the trainer's code calls
   ``evaluate`` before ``paddle.save``.
4. Checkpoints: ``iter_N/`` is written into a hidden staging folder and renamed into place once
   both ``model.pdparams`` and ``model.pdopt`` are complete; every other file the trainer saves
   (``best_model/model.pdparams``, develop's ``model.pdstates``) goes to a temporary file and is
   renamed over the old one. A kill at any moment leaves either the previous state or a
   complete checkpoint. Probe: the trainer writes through its module's ``paddle.save``.
5. ``resume`` refuses an incomplete checkpoint folder with one clear error, loads the weights
   strictly (no silently skipped keys) and restores optimizer state, LR schedule and iteration.
   Probe: the trainer restores through its module's ``resume`` (paddleseg's loads leniently).
6. Paddle 3.3's ``DataLoader`` reads batches in a background thread; when the dataset raises
   (a corrupt image, a bad label) and ``num_workers=0`` the thread dies and the main thread
   waits forever; with workers the main thread gets "Blocking queue is killed" without the
   cause. The loader threads now keep the exception and ``__next__`` raises it. This one is
   Paddle's, not paddleseg's: its probe only checks that the loader has the methods wrapped.
7. ``CrossEntropyLoss`` (paddleseg's plain loss, the one most configs name) divides by
   ``mean(mask * coef)`` with a float32 mask and int64 class coefficients, which Paddle 3 does
   not promote: every training step fails with a TypeError. The replacement computes the same
   value with the coefficients in the mask's type. Probe: the installed loss, called on a
   two-pixel input, raises that TypeError (develop casts, and works).
"""

import dis
import inspect
import math
import os
import re
import shutil
import sys
import types

import paddle

from .checkpoint import load_pretrained, load_state
from .errors import EvaluationFailed, UserError

CHECKPOINT_FILES = ("model.pdparams", "model.pdopt")
_ITER_DIR = re.compile(r"^iter_(\d+)$")


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
    try:
        paddle.save(obj, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the bytes are on disk before the name points at them
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
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
    """Stand-in for ``paddle.save`` inside paddleseg's trainer (see fix 4 in the docstring). A
    write that fails (a full disk) leaves no partial file, staging folder or empty ``iter_N``
    and is one ``UserError``; the checkpoints written before stay."""
    if not isinstance(path, str):
        return paddle.save(obj, path, *args, **kwargs)
    try:
        return _save_checkpoint_file(obj, path)
    except OSError as e:
        ckpt_dir = os.path.dirname(os.path.normpath(path))
        if _ITER_DIR.match(os.path.basename(ckpt_dir)):
            shutil.rmtree(staging_dir(ckpt_dir), ignore_errors=True)
            if os.path.isdir(ckpt_dir) and not os.listdir(ckpt_dir):
                os.rmdir(ckpt_dir)  # the empty folder the trainer made for it
        raise UserError(f"cannot write {path}: {e.strerror or e} (the checkpoints written "
                        f"before are intact)") from None


def _save_checkpoint_file(obj, path):
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

def is_iter_dir(name):
    return bool(_ITER_DIR.match(name))


def iteration_of(name):
    """N of ``iter_N`` (-1 for any other name)."""
    m = _ITER_DIR.match(name)
    return int(m.group(1)) if m else -1


def check_checkpoint(ckpt_dir):
    """Raise ``UserError`` unless ``ckpt_dir`` is a complete ``iter_N`` checkpoint."""
    ckpt_dir = os.path.normpath(ckpt_dir)
    if not os.path.isdir(ckpt_dir):
        raise UserError(f"--resume_model {ckpt_dir}: no such checkpoint folder")
    if not _ITER_DIR.match(os.path.basename(ckpt_dir)):
        raise UserError(f"--resume_model {ckpt_dir}: expected a folder named iter_<N> "
                              f"written by training")
    missing = [f for f in CHECKPOINT_FILES if not os.path.isfile(os.path.join(ckpt_dir, f))]
    if missing:
        raise UserError(f"--resume_model {ckpt_dir} is incomplete: missing "
                              f"{', '.join(missing)}")


def resume(model, optimizer, resume_model):
    """Restore weights, optimizer state (with the LR schedule) and return the iteration."""
    if resume_model is None:
        return 0
    from paddleseg.utils import logger
    check_checkpoint(resume_model)
    ckpt_dir = os.path.normpath(resume_model)
    logger.info(f"Resume model from {ckpt_dir}")
    load_pretrained(model, os.path.join(ckpt_dir, "model.pdparams"), resuming=True)
    # a pickle too: the same guarded loader as the weights
    optimizer.set_state_dict(load_state(os.path.join(ckpt_dir, "model.pdopt")))
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


# --- 7. paddleseg's CrossEntropyLoss -------------------------------------------------------------

def _cross_entropy_post_process(self, logit, label, semantic_weights, loss):
    """2.8.0's ``CrossEntropyLoss._post_process_loss`` with the class coefficients in the
    mask's float type (Paddle 3 rejects float32 * int64)."""
    import paddle.nn.functional as F
    if self.avg_non_ignore:
        mask = paddle.cast(label != self.ignore_index, dtype="float32")
    else:
        mask = paddle.ones(label.shape, dtype="float32")
    mask.stop_gradient = True
    label.stop_gradient = True
    if loss.ndim > mask.ndim:
        loss = paddle.squeeze(loss, axis=-1)
    loss = loss * mask
    if semantic_weights is not None:
        loss = loss * semantic_weights
    if self.weight is not None:
        one_hot = F.one_hot(label * mask.astype(label.dtype), logit.shape[-1])
        coef = paddle.sum(one_hot * self.weight, axis=-1).astype(mask.dtype)
    else:
        coef = paddle.ones_like(mask)
    if self.top_k_percent_pixels == 1.0:
        return paddle.mean(loss) / (paddle.mean(mask * coef) + self.EPS)
    loss = loss.reshape((-1,))
    loss, indices = paddle.topk(loss, int(self.top_k_percent_pixels * loss.numel()))
    coef = paddle.gather(coef.reshape((-1,)), indices)
    coef.stop_gradient = True
    return loss.mean() / (paddle.mean(coef) + self.EPS)


# --- which fixes the installed paddleseg needs ---------------------------------------------------

def _code_names(func):
    """Every global and attribute name that ``func``'s code uses, its comprehensions included."""
    names, todo = set(), [func.__code__]
    while todo:
        code = todo.pop()
        names.update(code.co_names)
        todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return names


def _first_use(func, name):
    """Offset of the first instruction of ``func`` that names ``name`` (None: never)."""
    return next((i.offset for i in dis.get_instructions(func) if i.argval == name), None)


def _trainer():
    import paddleseg.core.train  # noqa: F401  (make sure the module is loaded)
    return _train_module().train


# 1. 2.8.0 logs loss.numpy()[0]; develop logs float(loss), and warns on a 1-D loss
def _needs_losses():
    return "numpy" in _code_names(_trainer())


# 2. run it: 2.8.0 fails on any input, develop's works (and takes use_multilabel)
CALCULATE_AREA_PARAMS = ["pred", "label", "num_classes", "ignore_index"]  # 2.8.0's, and ours


def _needs_metrics():
    from paddleseg.utils import metrics
    original = _ORIGINAL.get((metrics, "calculate_area"), metrics.calculate_area)
    if list(inspect.signature(original).parameters) != CALCULATE_AREA_PARAMS:
        return False  # another function: ours could not stand in for it
    pixels = paddle.to_tensor([[[0, 1]]], dtype="int64", place=paddle.CPUPlace())
    try:
        original(pixels, pixels, 2)
    except ValueError:  # "The axis is expected to be in range of [0, 0)": concat of 0-D sums
        return True
    return False


# 3.-5. both 2.8.0 and develop: evaluate, then a plain paddle.save, and paddleseg's resume
def _needs_evaluate():
    evaluated, saved = _first_use(_trainer(), "evaluate"), _first_use(_trainer(), "save")
    return evaluated is not None and saved is not None and evaluated < saved


def _needs_checkpoints():
    train = _trainer()
    return "paddle" in train.__code__.co_names and "save" in _code_names(train)


def _needs_resume():
    return "resume" in _trainer().__code__.co_names


# 6. Paddle's own: only that the methods wrapped are there
def _needs_loader():
    from paddle.io.dataloader import dataloader_iter as di
    return all(hasattr(cls, name) for cls in (di._DataLoaderIterSingleProcess,
                                              di._DataLoaderIterMultiProcess)
               for name in ("_thread_loop", "__next__", "_exit_thread_unexpectedly"))


# 7. run it: 2.8.0's fails on float32 * int64, develop's casts
def _needs_cross_entropy():
    from paddleseg.models.losses import CrossEntropyLoss
    original = _ORIGINAL.get((CrossEntropyLoss, "_post_process_loss"),
                             CrossEntropyLoss._post_process_loss)
    loss = CrossEntropyLoss()
    logit = paddle.zeros([1, 2, 1, 2])
    label = paddle.zeros([1, 1, 2], dtype="int64")
    try:
        original(loss, logit, label, None, paddle.ones([1, 1, 2]))
    except TypeError:  # "Type promotion only support calculations between floating-point ..."
        return True
    return False


PROBES = {"losses": _needs_losses, "metrics": _needs_metrics, "evaluate": _needs_evaluate,
          "checkpoints": _needs_checkpoints, "resume": _needs_resume, "loader": _needs_loader,
          "cross_entropy": _needs_cross_entropy}


def needed():
    """{fix: whether the installed paddleseg (and Paddle) need it}, probed on the unpatched code."""
    return {fix: bool(PROBES[fix]()) for fix in FIXES}


# --- applying ----------------------------------------------------------------------------------

FIXES = ("losses", "metrics", "evaluate", "checkpoints", "resume", "loader", "cross_entropy")
_ORIGINAL = {}  # (owner, attribute) -> the value before apply()


def _patch_table():
    """(fix, owner, attribute, make_replacement(original)) for every name we swap."""
    import paddleseg.core.train  # noqa: F401  (make sure the module is loaded)
    from paddle.io.dataloader import dataloader_iter as di
    from paddleseg.models.losses import CrossEntropyLoss
    from paddleseg.utils import metrics
    train_module = _train_module()
    table = [("cross_entropy", CrossEntropyLoss, "_post_process_loss",
              lambda _: _cross_entropy_post_process),
             ("losses", train_module, "loss_computation", _losses_as_1d),
             ("metrics", metrics, "calculate_area", lambda _: calculate_area),
             ("evaluate", train_module, "evaluate", _guarded),
             ("checkpoints", train_module, "paddle", lambda _: _PaddleForTrainer()),
             ("resume", train_module, "resume", lambda _: resume)]
    for cls in (di._DataLoaderIterSingleProcess, di._DataLoaderIterMultiProcess):
        table += [("loader", cls, "_thread_loop", _keep_thread_error),
                  ("loader", cls, "__next__", _raise_thread_error)]
    return table


def apply(*fixes):
    """Install the fixes (all, or the named ones of ``FIXES``) that the installed paddleseg
    needs (see ``PROBES``); idempotent."""
    need = {}
    for fix, owner, attr, make in _patch_table():
        if (not fixes or fix in fixes) and (owner, attr) not in _ORIGINAL:
            if fix not in need:
                need[fix] = PROBES[fix]()  # before the first swap of this fix
            if need[fix]:
                _ORIGINAL[(owner, attr)] = original = getattr(owner, attr)
                setattr(owner, attr, make(original))


def applied():
    """The fixes that are installed now."""
    return {fix for fix, owner, attr, _ in _patch_table() if (owner, attr) in _ORIGINAL}


def revert(*fixes):
    """Undo ``apply()`` for all or the named fixes (tests show the unpatched behaviour)."""
    for fix, owner, attr, _ in _patch_table():
        if (not fixes or fix in fixes) and (owner, attr) in _ORIGINAL:
            setattr(owner, attr, _ORIGINAL.pop((owner, attr)))
