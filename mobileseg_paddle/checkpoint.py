"""Loading weights: a local ``.pdparams`` file, a folder holding ``model.pdparams``, or a URL
(a ``.pdparams`` or an archive of one, as the model zoo publishes them).

Every file is read by ``load_state``: ``paddle.save`` files are pickles, and a pickle can name
any importable callable and have it called while loading (``os.system``...). ``load_state``
first unpickles the bytes with an unpickler that admits only the globals ``paddle.save`` writes
for a state dict or an optimizer state (``ADMITTED``, like torch's ``weights_only``) and
refuses the file otherwise; only then does ``paddle.load`` read those same bytes.

Loading is strict: any missing or unexpected key, or any shape difference, is one error that
names the keys, so a wrong file never half-loads silently.

A URL is downloaded by ``download_weights`` into paddleseg's cache (``SEG_HOME``'s
``pretrained_model/<name>/model.pdparams``, the layout of paddleseg's own downloader, so existing
caches are found): to a temporary file, then renamed into place; an archive is extracted only
when every member is a plain file or folder inside it (no absolute path, no ``..``, no link,
no device file), into a temporary folder that is then renamed into place. paddleseg's own
downloader (``download_pretrained_model``, and the extraction behind its dataset downloads)
is replaced by these checked ones (``guard_paddleseg_loading``)."""

import io
import os
import pickle
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import zipfile
from urllib.parse import unquote

import paddle

from .errors import UserError
from .fslock import folder_lock

# Every (module, name) that paddle 3.3.1's ``paddle.save`` writes into a model state dict or an
# optimizer state (accumulators, LR scheduler state, AMP O2 master weights), at protocols 2-4,
# read off real files with ``pickletools`` (tests/test_checkpoint.py checks the list against
# freshly saved files):
ADMITTED = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),  # every array, written under numpy 1.x
    ("numpy._core.multiarray", "_reconstruct"),  # the same, written under numpy 2.x
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol 2 writes bytes (array data) as _codecs.encode(str)
    # A tensor in a nested dict (the optimizer's "master_weights") is saved by paddle's own
    # reducer as tuple((name, array)); "__builtin__" is its protocol-2 spelling.
    ("builtins", "tuple"),
    ("__builtin__", "tuple"),
})


class _Refused(pickle.UnpicklingError):
    """A global outside ``ADMITTED``; ``args[0]`` is its dotted name."""


class _WeightsUnpickler(pickle.Unpickler):
    # Called for every global the pickle names, before anything is called: a refused one is
    # never imported, let alone run.
    def find_class(self, module, name):
        if (module, name) not in ADMITTED:
            raise _Refused(f"{module}.{name}")
        return super().find_class(module, name)


def load_state(path, **configs):
    """``paddle.load(path, **configs)`` for a ``paddle.save`` file that contains only arrays,
    numbers, strings and containers; any other file is one ``UserError`` naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"weights file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()  # checked and loaded from the same bytes: no swap in between
    try:
        _WeightsUnpickler(io.BytesIO(data), encoding="latin1").load()  # paddle's encoding
    except _Refused as e:
        raise UserError(f"{path} refuses to load: it needs `{e.args[0]}`, which a weights file "
                        f"never contains") from None
    except Exception as e:  # truncated or not a pickle: many types
        raise UserError(f"cannot read weights file {path}: not a file paddle.save writes "
                        f"({type(e).__name__}: {e})") from None
    try:
        return paddle.load(io.BytesIO(data), **configs)
    except Exception as e:
        raise UserError(f"cannot read weights file {path}: {type(e).__name__}: {e}") from None


class _PaddleWithSafeLoad:
    """The ``paddle`` module as a guarded paddleseg module sees it: all of paddle, with
    ``load_state`` as ``load``."""

    load = staticmethod(load_state)

    def __getattr__(self, name):
        return getattr(paddle, name)


# The paddleseg 2.8.0 modules that call ``paddle.load``: utils.utils (load_entire_model,
# load_pretrained_model and resume, behind every ``pretrained`` of a paddleseg component and
# paddleseg's ``predict(model_path=...)``) and two ViT backbones with their own loader.
PADDLESEG_LOADERS = ("paddleseg.utils.utils", "paddleseg.models.backbones.vision_transformer",
                     "paddleseg.models.backbones.cae")


def guard_paddleseg_loading():
    """Make paddleseg's own weight loading go through ``load_state``, its weight downloads
    through ``download_weights`` and its archive extraction (dataset downloads) through the
    member check (idempotent)."""
    import importlib
    for name in PADDLESEG_LOADERS:
        module = sys.modules.get(name) or importlib.import_module(name)
        if module.paddle is paddle:
            module.paddle = _PaddleWithSafeLoad()
    import paddleseg.utils
    import paddleseg.utils.download
    import paddleseg.utils.utils
    for module in (paddleseg.utils.utils, paddleseg.utils):  # the package re-exports it
        module.download_pretrained_model = download_weights
    paddleseg.utils.download._uncompress_file_tar = _checked_uncompress_tar
    paddleseg.utils.download._uncompress_file_zip = _checked_uncompress_zip


# ----------------------------------------------------------------------------------------------
# Downloads

ARCHIVE_SUFFIXES = ("tgz", "tar.gz", "tar", "zip")  # what paddleseg's downloader unpacks
DOWNLOAD_TIMEOUT = 15  # seconds without data (paddleseg's)


def _plain_name(name):
    return name not in ("", ".", "..") and not re.search(r"[/\\\0]", name)


def download_weights(url):
    """Download ``url`` (a ``.pdparams``, or an archive holding ``model.pdparams``) into
    paddleseg's cache unless it is there; return the local ``.pdparams`` path. paddleseg's
    ``download_pretrained_model`` with its cache layout: ``<PRETRAINED_MODEL_HOME>/<the
    archive's name before the first dot>/model.pdparams`` for an archive,
    ``<PRETRAINED_MODEL_HOME>/<the URL's folder>/<file>`` otherwise. A hostile archive is one
    ``UserError`` naming the URL and the member, and nothing of it is extracted."""
    from paddleseg.utils.env import seg_env
    if not re.match(r"^[a-z][a-z0-9+.-]*://[^/]", str(url), re.I):
        raise UserError(f"cannot download weights from {url}: not a URL")
    parts = unquote(str(url)).split("/")
    if parts[-1].endswith(ARCHIVE_SUFFIXES):
        folder, filename = parts[-1].split(".")[0], "model.pdparams"
    else:
        folder, filename = parts[-2], parts[-1]
    if not (_plain_name(folder) and _plain_name(filename)):
        raise UserError(f"cannot download weights from {url}: the URL names no file and folder "
                        f"to cache it as (expected .../<folder>/<file>.pdparams or "
                        f".../<name>.tar.gz)")
    home = seg_env.PRETRAINED_MODEL_HOME
    target_dir = os.path.join(home, folder)
    target = os.path.join(target_dir, filename)
    if os.path.isfile(target):
        return target
    os.makedirs(home, exist_ok=True)
    with folder_lock(home):  # several processes: one downloads, the others find the cache
        if os.path.isfile(target):
            return target
        fd, tmp = tempfile.mkstemp(prefix=f".{folder}.download-", dir=home)
        staging = None
        try:
            with os.fdopen(fd, "wb") as f:
                _fetch(url, f)
            if tarfile.is_tarfile(tmp) or zipfile.is_zipfile(tmp):
                staging = tempfile.mkdtemp(prefix=f".{folder}.extract-", dir=home)
                _safe_extract(tmp, staging, url)
                entries = os.listdir(staging)
                root = staging
                if len(entries) == 1 and os.path.isdir(os.path.join(staging, entries[0])):
                    root = os.path.join(staging, entries[0])  # the archive's one top folder
                if not os.path.isfile(os.path.join(root, filename)):
                    raise UserError(f"cannot use weights from {url}: the archive holds no "
                                    f"{filename} (in its top folder)")
                if os.path.exists(target_dir):  # a folder without the file: add only the file
                    os.replace(os.path.join(root, filename), target)
                else:
                    os.rename(root, target_dir)
            elif parts[-1].endswith(ARCHIVE_SUFFIXES):
                raise UserError(f"cannot use weights from {url}: not a tar or zip archive")
            else:
                os.makedirs(target_dir, exist_ok=True)
                os.replace(tmp, target)
        finally:
            if os.path.lexists(tmp):
                os.remove(tmp)
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
    return target


def _fetch(url, out):
    """Copy ``url``'s content to the file ``out``, with paddleseg's progress lines."""
    import urllib.request
    print(f"Connecting to {url}")
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as r:
        total = r.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() and int(total) > 0 else None
        done, shown = 0, 0.0
        while True:
            chunk = r.read(1 << 16)
            if not chunk:
                break
            out.write(chunk)
            done += len(chunk)
            if total and time.time() - shown >= 0.1:
                _progress(done, total)
                shown = time.time()
        if total:
            _progress(done, total, end=True)
            if done != total:
                raise OSError(f"the download ended after {done} of {total} bytes")


def _progress(done, total, end=False):
    bar = int(50 * done / total)
    sys.stdout.write(f"\r[{'=' * bar:<50}] {100 * done / total:.2f}%" + ("\n" if end else ""))
    sys.stdout.flush()


def _refused(archive, name, why):
    return UserError(f"refusing the archive {archive}: its member {name!r} is {why} (a member "
                     f"must be a plain file or folder inside the archive); nothing was "
                     f"extracted")


def _bad_path(name):
    """Why the member path ``name`` would land outside the extraction folder, or None."""
    if not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "a path with '..'"
    if "\0" in name:
        return "a path with a NUL byte"
    return None


def _check_tar(archive, members):
    for m in members:
        why = _bad_path(m.name)
        if why is None and not (m.isfile() or m.isdir()):
            why = ("a symbolic link" if m.issym() else "a hard link" if m.islnk()
                   else "a device file" if m.ischr() or m.isblk() else "a FIFO" if m.isfifo()
                   else "not a plain file or folder")
        if why:
            raise _refused(archive, m.name, why)


def _check_zip(archive, infos):
    for info in infos:
        why = _bad_path(info.filename)
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no type recorded (a plain file)
        if why is None and kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            why = "a symbolic link" if kind == stat.S_IFLNK else "not a plain file or folder"
        if why:
            raise _refused(archive, info.filename, why)


_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def _safe_extract(path, dest, source):
    """Extract the tar or zip archive ``path`` (downloaded from ``source``) into ``dest`` after
    checking every member; a hostile one is one ``UserError`` and nothing is extracted."""
    if tarfile.is_tarfile(path):
        with tarfile.open(path, "r:*") as t:
            members = t.getmembers()
            _check_tar(source, members)
            try:
                t.extractall(dest, members=members, **_TAR_FILTER)
            except tarfile.TarError as e:  # the data filter's own refusal: the same rule
                raise UserError(f"refusing the archive {source}: {e}") from None
    else:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            _check_zip(source, infos)
            z.extractall(dest)


def _checked_uncompress_tar(filepath, extrapath, mode="r:gz"):
    """paddleseg.utils.download._uncompress_file_tar (the same progress protocol) with every
    member checked before anything is extracted."""
    with tarfile.open(filepath, mode) as t:
        members = t.getmembers()
        _check_tar(filepath, members)
        total, index, root = len(members), 0, members[0].name if members else ""
        for index, member in enumerate(members):
            t.extract(member, extrapath, **_TAR_FILTER)
            yield total, index, root
    yield total, index, root


def _checked_uncompress_zip(filepath, extrapath):
    """paddleseg.utils.download._uncompress_file_zip with every member checked first."""
    with zipfile.ZipFile(filepath) as z:
        infos = z.infolist()
        _check_zip(filepath, infos)
        total, index, root = len(infos), 0, infos[0].filename if infos else ""
        for index, info in enumerate(infos):
            z.extract(info, extrapath)
            yield total, index, root
    yield total, index, root


def resolve_weights(path_or_url):
    """Return a local ``.pdparams`` path for a file, a folder or a URL (downloaded and cached
    by ``download_weights``)."""
    src = str(path_or_url)
    if re.match(r"^https?://", src):
        try:
            src = download_weights(src)
        except UserError:
            raise
        except Exception as e:  # network errors come in many types
            raise UserError(f"cannot download weights from {src}: "
                            f"{type(e).__name__}: {e}") from None
    if os.path.isdir(src):
        src = os.path.join(src, "model.pdparams")
    if not os.path.isfile(src):
        raise UserError(f"weights file not found: {src}")
    return src


def load_pretrained(model, path_or_url, resuming=False):
    """Load weights into ``model``; raise ``UserError`` on any key/shape mismatch. A checkpoint
    of quantization-aware training (``qat``) loads into a float model as its float weights,
    unless ``resuming`` (then the model must be quantization-aware too)."""
    from . import qat

    path = resolve_weights(path_or_url)
    state = load_state(path)
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a state dict (got {type(state).__name__})")
    own = model.state_dict()
    if not resuming and not qat.has_quanters(own):
        state = qat.float_state(state)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        hint = qat.mismatch_hint(missing, unexpected)
        raise UserError(f"{path} does not fit {type(model).__name__}: " + (hint or (
            f"{len(missing)} missing keys {_few(missing)}, {len(unexpected)} unexpected keys "
            f"{_few(unexpected)}")))
    _check_shapes(model, path, own, state)
    model.set_state_dict(state)
    return model


def _check_shapes(model, path, own, state):
    classes = getattr(model, "num_classes", None)
    bad = []
    for k, v in own.items():
        got = list(state[k].shape)
        if got != list(v.shape):
            if classes is not None and re.fullmatch(r"seg_heads\.\d+\.conv_out\.weight", k):
                raise UserError(
                    f"num_classes mismatch: {path} was trained for {got[0]} classes, "
                    f"the model has num_classes={classes}")
            bad.append(f"{k}: file {got} vs model {list(v.shape)}")
    if bad:
        raise UserError(f"{path}: {len(bad)} shape mismatches: {'; '.join(bad[:5])}")


def _few(keys, n=5):
    return "[" + ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") + "]"
