"""Build the Paddle Lite armv8 Linux light-API runtime (``libpaddle_light_api_shared.so`` + its
headers) from source, tailored to our models' kernels, cached.

Why from source: the phone/board side needs the same Lite release as the ``.nb`` files (opt
2.13rc0 writes ``v2.13-rc`` into them), and a library tailored to the kernels the models use is
well under half of the full one (0.94 MB with FP16 and INT8 kernels instead of 2.5 MB) and
builds in about 6 to 8 minutes on 2 cores with ninja instead of about 35.

How (facts in ../shared/vendor/README.md):
- source: a Paddle Lite source tarball or folder (default ``MOBILESEG_LITE_SOURCE``, else
  ``../shared/vendor/paddle-lite-v2.13-rc.tar.gz`` beside the checkout), staged into a temporary
  folder so that a user's source tree is never written to;
- cmake is configured directly with the options ``lite/tools/build_linux.sh --arch=armv8
  --toolchain=gcc --with_extra=ON [--with_arm82_fp16=ON] --with_strip=ON`` passes (see
  ``cmake_options``), plus ``-DLITE_WITH_CODE_META_INFO=OFF -DPADDLE_LITE_TAG=v2.13-rc``: the
  tarball has no git metadata, and built as it is the library would report an empty version;
- tailoring (``-DLITE_BUILD_TAILOR=ON -DLITE_OPTMODEL_DIR=D``): D holds the four lists opt
  writes with ``record_model_info(True)`` (``.tailored_ops_list``, ``.tailored_ops_source_list``,
  ``.tailored_kernels_list``, ``.tailored_kernels_source_list``, the last two line by line
  paired). ``models=None`` uses ``arm_kernels.txt`` beside this module: the union of the ARM
  FP32, FP16 and INT8 (``--precision int8``) kernels of the five configs of
  ``configs/mobileseg`` (logits and argmax outputs), written by ``record_tailoring`` +
  ``write_kernel_file`` (see ``main``'s ``--record``). With FP16 the kernel
  ``conv_depthwise_common`` is added: ``conv_compute.cc`` calls it for FP16 but opt never
  records it, and without it the library does not link.
  Without FP16 the kFP16 kernels are dropped: the tailored kernel sources would register them
  outside the ``#ifdef`` that compiles them, and the build fails;
- FP16 (``-DLITE_WITH_ARM82_FP16=ON``): one library runs FP32 and FP16 ``.nb``; it is compiled
  with ``-march=armv8.2-a+fp16`` as a whole, so under qemu it needs ``-cpu max``;
- only the target ``tiny_publish_cxx_lib`` is built: the shared library, stripped, and the
  headers, in ``inference_lite_lib.armlinux.armv8/cxx/{include,lib}`` of the build folder.

Cache: ``$MOBILESEG_CACHE/lite-arm/<key>/`` (default ``~/.cache/mobileseg``), key = sha256 of the
source's identity, the options and the sorted tailoring lists. The build runs in a temporary
folder beside it, and the entry appears by one rename once complete, its ``runtime.json`` stamp
inside; a lock file serialises builds of one key. A failed build keeps its log as
``lite-arm/failed-<key>.log``.

Android: with ``--android_ndk DIR`` (or ``$ANDROID_NDK``) the same build runs with
build_android.sh's options (clang, c++_static, no Java), output ``inference_lite_lib.android.
armv8/cxx``; there is no NDK on this machine, so that path has not been run.

  mobileseg lite build-runtime [--source PATH] [--no-fp16] [--tailor_dir DIR ...] [--jobs N]
      [--android_ndk DIR]
  mobileseg lite build-runtime --record OUT MODEL_DIR ...
      # opt's tailoring lists of converted model folders (model.pdmodel + .pdiparams, as
      # `mobileseg lite convert` leaves them), FP32 and FP16 (a --precision int8 folder: its
      # int8 program as it is), one subfolder each, into OUT
"""

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

from mobileseg_paddle import resources
from mobileseg_paddle.errors import ArgumentParser, UserError, run_main

VERSION = "v2.13-rc"
SOURCE_ENV = "MOBILESEG_LITE_SOURCE"
DEFAULT_SOURCE = os.path.normpath(os.path.join(
    resources.IMPORT_ROOT, "..", "shared", "vendor", "paddle-lite-v2.13-rc.tar.gz"))
KERNELS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "arm_kernels.txt")
LISTS = (".tailored_ops_list", ".tailored_ops_source_list", ".tailored_kernels_list",
         ".tailored_kernels_source_list")
FP16_EXTRA_KERNEL = ("conv_depthwise_common,kARM,kFP16,kNCHW,def", "conv_depthwise_common.cc")
TARGET = "tiny_publish_cxx_lib"  # libpaddle_light_api_shared.so, stripped, + headers
NDK_ENV = "ANDROID_NDK"  # the command line's default NDK (build_runtime itself never reads it)
LIB_NAME = "libpaddle_light_api_shared.so"
STAMP = "runtime.json"
CROSS = ("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++")
PROGRESS_EVERY = 30.0  # seconds between progress lines


# --- tailoring lists -------------------------------------------------------------------------

class Tailoring:
    """The ops and kernels a library keeps: op types, op source files, and kernel
    ``op,target,precision,layout,alias`` -> its kernel source file."""

    def __init__(self, ops=(), op_sources=(), kernels=None):
        self.ops, self.op_sources = set(ops), set(op_sources)
        self.kernels = dict(kernels or {})

    def update(self, other):
        self.ops |= other.ops
        self.op_sources |= other.op_sources
        self.kernels.update(other.kernels)

    def lines(self):
        """The canonical text lines (sorted): what the cache key and arm_kernels.txt hold."""
        return ([f"op {o}" for o in sorted(self.ops)]
                + [f"op_source {s}" for s in sorted(self.op_sources)]
                + [f"kernel {k} {self.kernels[k]}" for k in sorted(self.kernels)])

    def write_dir(self, folder):
        """The four files cmake reads (``LITE_OPTMODEL_DIR``)."""
        os.makedirs(folder, exist_ok=True)
        kernels = sorted(self.kernels)
        for name, items in zip(LISTS, (sorted(self.ops), sorted(self.op_sources), kernels,
                                       [self.kernels[k] for k in kernels])):
            with open(os.path.join(folder, name), "w") as f:
                f.write("".join(f"{item}\n" for item in items))


def _read_lines(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def read_tailor_dir(folder):
    """The union of the tailoring lists in ``folder`` and in its subfolders (opt's
    ``record_model_info`` writes them into a folder named as the output, one per model)."""
    if not os.path.isdir(folder):
        raise UserError(f"--tailor_dir {folder}: no such folder")
    found = Tailoring()
    dirs = [folder] + sorted(os.path.join(folder, d) for d in os.listdir(folder)
                             if os.path.isdir(os.path.join(folder, d)))
    used = [d for d in dirs if all(os.path.isfile(os.path.join(d, n)) for n in LISTS)]
    if not used:
        raise UserError(f"--tailor_dir {folder}: neither it nor a subfolder holds opt's "
                        f"tailoring lists ({', '.join(LISTS)}; opt's record_model_info writes "
                        f"them, or use --record)")
    for d in used:
        ops, op_sources, kernels, kernel_sources = (_read_lines(os.path.join(d, n)) for n in LISTS)
        if len(kernels) != len(kernel_sources):
            raise UserError(f"{d}: {LISTS[2]} and {LISTS[3]} differ in length "
                            f"({len(kernels)} vs {len(kernel_sources)} lines)")
        found.update(Tailoring(ops, op_sources, zip(kernels, kernel_sources)))
    return found


def read_kernel_file(path=KERNELS_FILE):
    """``arm_kernels.txt`` (lines ``op NAME``, ``op_source FILE``, ``kernel ATTRS FILE``)."""
    t = Tailoring()
    for n, line in enumerate(_read_lines(path), 1):
        fields = line.split()
        if fields[0].startswith("#"):
            continue
        if fields[0] == "op" and len(fields) == 2:
            t.ops.add(fields[1])
        elif fields[0] == "op_source" and len(fields) == 2:
            t.op_sources.add(fields[1])
        elif fields[0] == "kernel" and len(fields) == 3:
            t.kernels[fields[1]] = fields[2]
        else:
            raise UserError(f"{path}:{n}: expected 'op NAME', 'op_source FILE' or "
                            f"'kernel ATTRS FILE', got {line!r}")
    return t


def write_kernel_file(tailoring, path, header=()):
    with open(path, "w") as f:
        f.write("".join(f"# {h}\n" for h in header) + "\n".join(tailoring.lines()) + "\n")


# opt, in the Lite interpreter: .nb + the tailoring lists of one program (FP16 kernels if asked)
RECORD = ("import sys, paddlelite.lite as l\n"
          "o = l.Opt(); o.set_model_file(sys.argv[1]); o.set_param_file(sys.argv[2])\n"
          "if sys.argv[4] == '1': o.enable_fp16()\n"
          "o.set_valid_places('arm'); o.set_model_type('naive_buffer')\n"
          "o.set_optimize_out(sys.argv[3]); o.record_model_info(True); o.run()\n")


def record_tailoring(model_dirs, out_dir, fp16=True, runtime=None, log=print):
    """Run opt on each converted model folder (``model.pdmodel`` + ``model.pdiparams``) for
    ARM FP32 (and FP16), recording the tailoring lists into ``out_dir/<model>_<precision>/``;
    return their union. A folder converted with ``--precision int8`` (its manifest says so)
    holds the quantized program: it is recorded once, as it is (``<model>_int8``: opt's int8
    kernels and the FP32 kernels around them)."""
    from . import manifest as mf
    from .convert import PROGRAM_PREFIX
    from .lite_env import LiteRuntime
    runtime = runtime or LiteRuntime.find()
    os.makedirs(out_dir, exist_ok=True)
    for d in model_dirs:
        model, params = (os.path.join(d, PROGRAM_PREFIX + ext) for ext in (".pdmodel", ".pdiparams"))
        if not (os.path.isfile(model) and os.path.isfile(params)):
            raise UserError(f"{d}: no {PROGRAM_PREFIX}.pdmodel + .pdiparams (a folder written "
                            f"by `mobileseg lite convert`)")
        int8 = (os.path.isfile(os.path.join(d, mf.FILENAME))
                and mf.read_manifest(d).get("precision", {}).get("arm") == "int8")
        for precision in ("int8",) if int8 else ("fp32", "fp16") if fp16 else ("fp32",):
            out = os.path.join(out_dir, f"{os.path.basename(os.path.normpath(d))}_{precision}")
            # the worker's argv with this snippet in place of lite_worker.py
            cmd = [*runtime.command()[:-1], "-c", RECORD, runtime.path(model),
                   runtime.path(params), runtime.path(out), "1" if precision == "fp16" else "0"]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if proc.returncode != 0 or not os.path.isfile(os.path.join(out, LISTS[2])):
                tail = proc.stdout.decode("utf-8", "replace").strip().splitlines()[-5:]
                raise UserError(f"opt --record_tailoring_info failed for {d} ({precision}): "
                                + " | ".join(tail))
            if os.path.isfile(out + ".nb"):
                os.remove(out + ".nb")  # only the lists are wanted
            log(f"recorded {out}")
    return read_tailor_dir(out_dir)


# --- source, options, key --------------------------------------------------------------------

def default_source():
    """``MOBILESEG_LITE_SOURCE``, else the vendored tarball beside the checkout."""
    source = os.environ.get(SOURCE_ENV) or DEFAULT_SOURCE
    if not os.path.exists(source):
        raise UserError(f"no Paddle Lite source at {source}: pass --source (a Paddle Lite "
                        f"{VERSION} source .tar.gz or folder) or set {SOURCE_ENV}")
    return source


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _build_output(name):
    """A top-level folder of a source tree that is not source: git's, or a build folder
    (build_linux.sh makes build.lite.linux.armv8.gcc ...)."""
    return name == ".git" or name.startswith("build")


def source_identity(source):
    """sha256 of a tarball, or of a folder's file list (path, size, mtime): cheap, and any
    edit changes it."""
    if os.path.isfile(source):
        return "tar:" + _sha256(source)
    h = hashlib.sha256()
    for d, dirs, files in os.walk(source):
        dirs[:] = sorted(x for x in dirs if not (d == source and _build_output(x)))
        for name in sorted(files):
            st = os.stat(os.path.join(d, name))
            h.update(f"{os.path.relpath(os.path.join(d, name), source)}\0{st.st_size}\0"
                     f"{st.st_mtime_ns}\n".encode())
    return "dir:" + h.hexdigest()


def _os(ndk):
    return "android" if ndk else "armlinux"


def cmake_options(tailor_dir, fp16=True, tag=VERSION, ndk=None):
    """What build_linux.sh passes for --arch=armv8 --toolchain=gcc --with_extra=ON
    --with_strip=ON [--with_arm82_fp16=ON] (light API, tiny publish), plus the version. With
    ``ndk`` (an Android NDK folder) what build_android.sh passes for --arch=armv8
    --toolchain=clang --with_extra=ON --with_strip=ON --with_java=OFF instead."""
    on = {True: "ON", False: "OFF"}
    android = ["-DANDROID_NDK=" + ndk, "-DANDROID_STL_TYPE=c++_static",
               "-DLITE_WITH_JAVA=OFF"] if ndk else []
    return [*android,
        "-DCMAKE_BUILD_TYPE=Release", "-DWITH_MKLDNN=OFF", "-DWITH_TESTING=OFF",
        "-DLITE_WITH_ARM=ON", "-DLITE_WITH_X86=OFF", "-DARM_TARGET_ARCH_ABI=armv8",
        f"-DARM_TARGET_OS={_os(ndk)}", f"-DARM_TARGET_LANG={'clang' if ndk else 'gcc'}",
        "-DLITE_BUILD_EXTRA=ON",
        "-DLITE_WITH_PYTHON=OFF", "-DLITE_WITH_STATIC_LIB=OFF", "-DLITE_WITH_CV=OFF",
        "-DLITE_WITH_LOG=ON", "-DLITE_WITH_EXCEPTION=OFF", "-DWITH_STATIC_MKL=OFF",
        "-DWITH_AVX=OFF", "-DLITE_WITH_OPENCL=OFF", "-DLITE_WITH_METAL=OFF",
        "-DLITE_WITH_RKNPU=OFF", "-DLITE_WITH_XPU=OFF", "-DLITE_WITH_TRAIN=OFF",
        "-DLITE_WITH_NNADAPTER=OFF", "-DLITE_WITH_PROFILE=OFF",
        "-DLITE_WITH_PRECISION_PROFILE=OFF", "-DWITH_ARM_DOTPROD=ON",
        f"-DLITE_WITH_ARM82_FP16={on[fp16]}", "-DLITE_ON_TINY_PUBLISH=ON",
        "-DLITE_BUILD_TAILOR=ON", f"-DLITE_OPTMODEL_DIR={tailor_dir}",
        # no git metadata in a source tarball: the version comes from here, not git describe
        "-DLITE_WITH_CODE_META_INFO=OFF", f"-DPADDLE_LITE_TAG={tag}",
    ]


def cache_root(cache_dir=None):
    if cache_dir:
        return os.path.abspath(cache_dir)
    return resources.cache_dir("lite-arm")


def _tailoring(models, fp16):
    if models is None:
        t = read_kernel_file()
    else:
        t = Tailoring()
        for d in [models] if isinstance(models, (str, os.PathLike)) else models:
            t.update(read_tailor_dir(os.fspath(d)))
    if fp16:
        t.kernels.setdefault(*FP16_EXTRA_KERNEL)
    else:  # the tailored sources would register FP16 kernels the build does not compile
        t.kernels = {k: v for k, v in t.kernels.items() if k.split(",")[2] != "kFP16"}
    return t


def _key(identity, tailoring, fp16, tag, ndk=None):
    # the options minus the build-folder path they name
    options = cmake_options("LITE_OPTMODEL_DIR", fp16, tag, ndk)
    text = json.dumps({"source": identity, "options": options, "lists": tailoring.lines()})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- build -----------------------------------------------------------------------------------

def _check_tools(ndk=None):
    if ndk and not os.path.isfile(os.path.join(ndk, "build", "cmake", "android.toolchain.cmake")):
        raise UserError(f"--android_ndk {ndk}: not an Android NDK (no build/cmake/"
                        f"android.toolchain.cmake)")
    missing = [t for t in ((() if ndk else CROSS) + ("cmake",)) if not shutil.which(t)]
    if missing:
        raise UserError(f"building the ARM runtime needs {', '.join(missing)} on PATH "
                        f"(Debian: apt-get install g++-aarch64-linux-gnu cmake)")


def _stage(source, dest):
    """Copy of the source tree in ``dest``; return its top folder."""
    if os.path.isfile(source):
        try:
            with tarfile.open(source) as tar:
                try:
                    tar.extractall(dest, filter="data")
                except TypeError:  # Python without extraction filters
                    tar.extractall(dest)
        except (tarfile.TarError, OSError) as e:
            raise UserError(f"{source}: not a readable source tarball ({e})") from None
        tops = os.listdir(dest)
        top = os.path.join(dest, tops[0]) if len(tops) == 1 else dest
    else:
        top = os.path.join(dest, "src")
        shutil.copytree(source, top, symlinks=True, ignore=lambda d, names: [
            n for n in names if os.path.samefile(d, source) and _build_output(n)
            and os.path.isdir(os.path.join(d, n))])
    if not os.path.isfile(os.path.join(top, "lite", "tools", "build_linux.sh")):
        raise UserError(f"{source}: not a Paddle Lite source tree (no lite/tools/build_linux.sh)")
    # build_linux.sh removes these stale generated headers before configuring
    for name in ("paddle_use_ops.h", "paddle_use_kernels.h"):
        path = os.path.join(top, "lite", "api", name)
        if os.path.exists(path):
            os.remove(path)
    return top


_STEP = re.compile(r"^\[\s*(\d+/\d+|\d+%)\]")


def _run_logged(cmd, cwd, env, logf, log, label, t0):
    """Run ``cmd`` with its output appended to ``logf``; every PROGRESS_EVERY seconds a line
    with the build tool's last [N/M] and the elapsed time (a single object can compile for
    minutes, so the lines come from a timer, not from the output). Returns the exit status."""
    logf.write(f"$ {' '.join(cmd)}\n")
    logf.flush()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    step = []

    def read():
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            logf.write(line)
            m = _STEP.match(line)
            if m:
                step[:] = [m.group(1)]
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while True:
            try:
                proc.wait(PROGRESS_EVERY)
                break
            except subprocess.TimeoutExpired:
                log(f"  {label} {' '.join([*step, _elapsed(time.monotonic() - t0)])}")
    except BaseException:  # Ctrl-C: stop the build tool too
        proc.kill()
        proc.wait()
        raise
    reader.join()
    logf.flush()
    return proc.returncode


def _die_with_parent():
    """In the child: SIGKILL it when this process dies (Linux), so that a killed build does
    not leave the build tool running on into the folder the next build removes."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _elapsed(seconds):
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _build(source, tailoring, fp16, tag, jobs, work, logf, log, t0, ndk=None):
    """Configure and build in ``work``; return the publish folder (cxx/{include,lib})."""
    log(f"staging {source}")
    top = _stage(source, os.path.join(work, "src"))
    tailor_dir = os.path.join(work, "tailor")
    tailoring.write_dir(tailor_dir)
    # inside the source tree, as build_linux.sh has it: cmake/generic.cmake prefixes every
    # source path that does not match PADDLE_SOURCE_DIR (the tailored kernel copies live in
    # the build folder) with the current source folder
    build = os.path.join(top, f"build.lite.{_os(ndk)}.armv8")
    # build_linux.sh's prepare_workspace: targets depend on this generated file
    os.makedirs(os.path.join(build, "lite", "gen_code"))
    open(os.path.join(build, "lite", "gen_code", "__generated_code__.cc"), "w").close()
    env = dict(os.environ) if ndk else dict(os.environ, CC=shutil.which(CROSS[0]),
                                            CXX=shutil.which(CROSS[1]))
    ninja = shutil.which("ninja")
    configure = ["cmake", "-S", top, "-B", build, *(["-G", "Ninja"] if ninja else []),
                 f"-DPYTHON_EXECUTABLE={sys.executable}", *cmake_options(tailor_dir, fp16, tag, ndk)]
    log(f"configuring ({len(tailoring.kernels)} kernels, fp16={'on' if fp16 else 'off'})")
    if _run_logged(configure, build, env, logf, log, "configuring", t0) != 0:
        return None
    log(f"building {TARGET} with {jobs} jobs ({'ninja' if ninja else 'make'})")
    make = ["cmake", "--build", build, "--target", TARGET, "--", f"-j{jobs}"]
    if _run_logged(make, build, env, logf, log, "building", t0) != 0:
        return None
    return os.path.join(build, f"inference_lite_lib.{_os(ndk)}.armv8", "cxx")


def _cached(entry):
    try:
        with open(os.path.join(entry, STAMP)) as f:
            result = json.load(f)
    except (OSError, ValueError):
        return None
    lib = os.path.join(entry, "lib", LIB_NAME)
    if not os.path.isfile(lib) or os.path.getsize(lib) != result.get("size_bytes"):
        return None
    return dict(result, lib=lib, include=os.path.join(entry, "include"))


def build_runtime(source=None, models=None, fp16=True, cache_dir=None, jobs=None, log=print,
                  tag=VERSION, ndk=None):
    """The armv8 light-API runtime, built once per source/options/kernels and cached.

    ``models``: None for our five configs' kernels (arm_kernels.txt), or a folder (or list of
    folders) of opt's tailoring lists (see ``read_tailor_dir``). ``fp16``: include the ARMv8.2
    FP16 kernels (the library then needs an FP16-capable core). Returns {"lib", "include",
    "version", "key", "cached", "seconds" (this call), "build_seconds", "size_bytes",
    "cmake_options", "kernels", "os"}. ``ndk``: an Android NDK folder builds for
    Android arm64-v8a instead of armv8 Linux (not tried here: no NDK on this machine); only the
    command line falls back to ``$ANDROID_NDK``, so that ``check`` never builds for Android."""
    t0 = time.monotonic()
    ndk = ndk and os.path.abspath(ndk)
    source = os.path.abspath(source or default_source())
    if not os.path.exists(source):
        raise UserError(f"--source {source}: no such file or folder")
    tailoring = _tailoring(models, fp16)
    key = _key(source_identity(source), tailoring, fp16, tag, ndk)
    root = cache_root(cache_dir)
    entry = os.path.join(root, key)
    result = _cached(entry)
    if result is None:
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, f".{key}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building this key
            result = _cached(entry) or _build_entry(source, tailoring, fp16, tag, jobs, root,
                                                    key, log, t0, ndk)
    else:
        result["cached"] = True
    result["seconds"] = round(time.monotonic() - t0, 3)
    return result


def _build_entry(source, tailoring, fp16, tag, jobs, root, key, log, t0, ndk=None):
    _check_tools(ndk)
    entry = os.path.join(root, key)
    for name in os.listdir(root):  # leftovers of a killed build of this key (we hold its lock)
        if name.startswith(f".{key}.partial-"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    if os.path.exists(entry):  # an entry without a valid stamp
        shutil.rmtree(entry)
    work = tempfile.mkdtemp(prefix=f".{key}.partial-", dir=root)
    log_path = os.path.join(work, "build.log")
    try:
        with open(log_path, "w") as logf:
            publish = _build(source, tailoring, fp16, tag, jobs or os.cpu_count() or 1, work,
                             logf, log, t0, ndk)
        lib = publish and os.path.join(publish, "lib", LIB_NAME)
        if not lib or not os.path.isfile(lib):
            failed = os.path.join(root, f"failed-{key}.log")
            shutil.copyfile(log_path, failed)
            raise UserError(f"the Paddle Lite ARM build failed after "
                            f"{_elapsed(time.monotonic() - t0)}; full log: {failed}")
        out = os.path.join(work, "entry")
        os.makedirs(os.path.join(out, "lib"))
        shutil.copy2(lib, os.path.join(out, "lib", LIB_NAME))
        shutil.copytree(os.path.join(publish, "include"), os.path.join(out, "include"))
        shutil.copy2(log_path, os.path.join(out, "build.log"))
        tailoring.write_dir(os.path.join(out, "tailor"))
        result = {"version": tag, "key": key, "source": source, "fp16": fp16, "os": _os(ndk),
                  "build_seconds": round(time.monotonic() - t0, 1),
                  "size_bytes": os.path.getsize(os.path.join(out, "lib", LIB_NAME)),
                  "kernels": len(tailoring.kernels),
                  "cmake_options": cmake_options("<tailor>", fp16, tag, ndk)}
        with open(os.path.join(out, STAMP), "w") as f:
            json.dump(result, f, indent=1)
        os.rename(out, entry)  # the entry appears complete or not at all
        if os.path.exists(os.path.join(root, f"failed-{key}.log")):
            os.remove(os.path.join(root, f"failed-{key}.log"))  # of an earlier attempt
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"built {entry} in {_elapsed(time.monotonic() - t0)}")
    return dict(result, lib=os.path.join(entry, "lib", LIB_NAME),
                include=os.path.join(entry, "include"), cached=False)


# --- command line ----------------------------------------------------------------------------

def _parser():
    p = ArgumentParser(prog="mobileseg lite build-runtime", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", help=f"Paddle Lite source .tar.gz or folder (default: "
                                    f"${SOURCE_ENV}, else {DEFAULT_SOURCE})")
    p.add_argument("--no-fp16", dest="fp16", action="store_false",
                   help="leave out the ARMv8.2 FP16 kernels (runs on any armv8 core)")
    p.add_argument("--tailor_dir", nargs="+", help="folder(s) of opt's tailoring lists "
                                                   "(default: the five configs' kernels)")
    p.add_argument("--jobs", type=int, help="parallel compile jobs (default: all cores)")
    p.add_argument("--cache_dir", help="cache folder (default: ~/.cache/mobileseg/lite-arm)")
    p.add_argument("--android_ndk", default=os.environ.get(NDK_ENV) or None,
                   help=f"an Android NDK folder: build for Android arm64-v8a (default: "
                        f"${NDK_ENV}; untested here)")
    p.add_argument("--record", nargs="+", metavar=("OUT", "MODEL_DIR"),
                   help="record opt's tailoring lists of converted model folders into OUT "
                        "and print them in arm_kernels.txt's format; builds nothing")
    return p


def _run(args):
    if args.record:
        if len(args.record) < 2:
            raise UserError("--record OUT MODEL_DIR ...: give an output folder and model folders")
        t = record_tailoring(args.record[1:], args.record[0], fp16=args.fp16,
                             log=lambda m: print(m, file=sys.stderr))
        print("\n".join(t.lines()))
        return 0
    r = build_runtime(args.source, args.tailor_dir, fp16=args.fp16, cache_dir=args.cache_dir,
                      jobs=args.jobs, ndk=args.android_ndk)
    how = "cached" if r["cached"] else "built"
    print(f"Paddle Lite {r['version']} {r.get('os', 'armlinux')} armv8 light API ({how}, "
          f"{r['seconds']:.1f} s): {r['lib']} ({r['size_bytes'] / 2**20:.2f} MB), "
          f"headers in {r['include']}")
    return 0


def main(argv=None):
    """The command line; returns the exit status (2 with one error line for bad input or a
    failed build)."""
    return run_main("lite build-runtime", lambda: _run(_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
