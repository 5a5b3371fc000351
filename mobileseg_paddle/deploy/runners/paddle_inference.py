"""Paddle Inference runner: ``PredictorOptions`` -> ``paddle.inference.Config`` -> predictor.

The engines (``PredictorOptions.engine``) are set up by the functions of ``ENGINES``; the
TensorRT precisions are in ``TRT_PRECISIONS``.

OpenVINO (``enable_openvino_engine``, bundled with the CPU wheel): Paddle's analysis turns the
whole legacy program into one ``openvino_engine`` op, which compiles the program file with
OpenVINO's CPU plugin (FP32, ``set_cpu_math_library_num_threads`` threads, its default latency
hint: Paddle passes nothing else) and caches the compiled model in ``set_optim_cache_dir`` (by
default ``./__cache__``, the working directory: here a folder of ``resources.cache_dir``). It reads the
program from a file, not from a buffer, and its Paddle frontend takes the parameters from the
file of the program's own name with ``.pdiparams``: the program is staged as ``model.pdmodel``
beside a ``model.pdiparams`` link in that cache folder (``_openvino_files``).

On a dynamic-size export OpenVINO recomputes the shapes of every op at each run (Lite-HRNet-18:
hundreds of shape, slice and resize-size ops). An input shape seen a second time therefore gets
a predictor of its own, compiled from the program with that input shape written in
(``fix_input_shape``), for up to ``PredictorOptions.openvino_fixed_shapes`` shapes (the least
recently used goes first) and at most twice that many compilations per runner (sizes that keep
changing do not recompile forever); the first run of a shape, every shape beyond those, and all
shapes after a compilation failed run on the dynamic predictor. A compilation costs about as
much as loading the model. An INT8 export compiles for every shape from its first run on (no
limit; its dynamic predictor is made only when a compilation fails): OpenVINO's run of the
dynamic INT8 program departs from FP32 several times further.

OpenVINO writes a compiled model into its cache in place: predictors of one program are
created one process at a time (``_compile_lock``). The cache folders of deleted exports are
removed when an OpenVINO runner starts (``prune_openvino_cache``)."""

import collections
import contextlib
import hashlib
import os
import shutil
import sys

import numpy as np
import paddle
import paddle.inference as pi
from paddle.base import core

from mobileseg_paddle import resources
from mobileseg_paddle.deploy.runners import ModelFiles, Runner, cpu_count, resolve_options
from mobileseg_paddle.errors import UserError, one_line
from mobileseg_paddle.fslock import folder_lock

TRT_PRECISIONS = {"fp32": "Float32", "fp16": "Half", "int8": "Int8"}  # -> pi.PrecisionType
# the ops --precision bf16 runs in bfloat16 on oneDNN. Paddle's default (every op with a bf16
# kernel) fails on Lite-HRNet-18 and with the interpolations marked for oneDNN (a dequantize op
# without a kernel for its input), and was slower on MobileNetV2
BF16_OPS = ("conv2d", "fused_conv2d", "depthwise_conv2d", "pool2d", "elementwise_add",
            "elementwise_mul", "concat", "sigmoid", "relu", "matmul_v2", "fc")

# the ops oneDNN runs in int8 for an INT8 export: the convolutions, under the names oneDNN's
# fusion passes give them. By default it also runs in int8 the pooling, concat, elementwise ops
# and GhostNet's squeeze-excitation fully-connected layers, with the scales the calibration
# recorded on them: that cost accuracy (GhostNet, Lite-HRNet-18) and was no faster (README)
ONEDNN_INT8_OPS = ("conv2d", "depthwise_conv2d", "fused_conv2d")


def check_device(opts):
    """Refuse GPU/TensorRT on a Paddle build that lacks them, with one line."""
    if opts.device == "gpu" and not paddle.is_compiled_with_cuda():
        raise UserError("--device gpu: this paddlepaddle is a CPU build; install "
                        "paddlepaddle-gpu (with TensorRT for --use_trt)")
    if opts.use_trt and not _compiled_with_tensorrt():
        raise UserError("--use_trt: this paddlepaddle was built without TensorRT")


def _compiled_with_tensorrt():
    fn = getattr(paddle, "is_compiled_with_tensorrt", None) or getattr(
        getattr(paddle, "device", None), "is_compiled_with_tensorrt", None)
    try:
        return bool(fn()) if fn else paddle.is_compiled_with_cuda()
    except Exception:
        return False


def make_config(model, opts, config_cls=None, input_shape=None):
    """A ``paddle.inference.Config`` for ``model`` (a ``DeployConfig`` or ``ModelFiles``) set
    up as ``opts`` asks; on OpenVINO with ``input_shape``, the program compiled for that input
    shape only.

    ``config_cls`` replaces ``paddle.inference.Config`` (the tests pass a recorder to check the
    GPU/TensorRT calls, which a CPU build of Paddle refuses)."""
    opts = resolve_options(model, opts)
    files = ModelFiles.of(model, "paddle", opts.program, opts.engine)
    config_cls = config_cls or pi.Config
    if opts.engine == "onednn" and opts.onednn_interp and files.program_kind == "legacy":
        config = config_cls()
        prog = mark_onednn_interpolations(_read(files.program))
        params = _read(files.params)
        config.set_model_buffer(prog, len(prog), params, len(params))
    elif opts.engine == "openvino":
        config = config_cls(*_openvino_files(files, opts, input_shape))
    else:
        config = config_cls(files.program, files.params)
    config.switch_ir_optim(opts.ir_optim)
    ENGINES[opts.engine](config, files, opts)
    if files.program_kind == "legacy" and opts.memory_optim and opts.engine != "openvino":
        # (on a PIR program Paddle 3.3.1 fails with "Not find ... memory_optimize_pass"; under
        # OpenVINO no Paddle buffer is left to reuse)
        config.enable_memory_optim()
    if opts.collect_shape_range_file:
        config.collect_shape_range_info(opts.collect_shape_range_file)
    config.disable_glog_info()
    return config


def _cpu(config, opts):
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(opts.cpu_threads or cpu_count())


def _onednn(config, files, opts):
    _cpu(config, opts)
    config.enable_mkldnn()
    config.set_mkldnn_cache_capacity(opts.onednn_cache_capacity)
    if opts.precision == "int8":  # the quantize/dequantize pairs become oneDNN int8 kernels
        config.enable_mkldnn_int8(set(ONEDNN_INT8_OPS))
    elif opts.precision == "bf16":
        if not core.supports_bfloat16():
            raise UserError("--precision bf16: this CPU has no bfloat16 support for oneDNN "
                            "(AVX512-BF16 or AMX); use fp32")
        if not core.supports_bfloat16_fast_performance():
            # AVX-512 without AVX512-BF16: oneDNN emulates bfloat16, several times slower than
            # fp32 (README), but with bfloat16's numerics: run it, and say so
            print("note: --precision bf16: this CPU has no native bfloat16 (AVX512-BF16 or "
                  "AMX); oneDNN emulates it, slower than fp32", file=sys.stderr)
        config.enable_mkldnn_bfloat16()
        config.set_bfloat16_op(set(BF16_OPS))
    if files.program_kind == "pir" and opts.onednn_pir_fallback:
        # Paddle 3.3.1 cannot run PIR interpolation ops on oneDNN (see export.py);
        # without the placement pass they run on the plain CPU kernels.
        config.delete_pass("onednn_placement_pass")


def _plain(config, files, opts):
    _cpu(config, opts)
    config.disable_mkldnn()


def _openvino(config, files, opts):
    if not opts.ir_optim:  # the analysis pass is what hands the program to OpenVINO
        raise UserError("--engine openvino needs --ir_optim True")
    if opts.collect_shape_range_file:
        raise UserError("shape ranges are collected on Paddle's own ops: use --engine onednn "
                        "or plain")
    _cpu(config, opts)
    config.disable_mkldnn()
    config.set_optim_cache_dir(_compiled_dir(files, opts))
    config.enable_openvino_engine(pi.PrecisionType.Float32)


def _openvino_root(opts):
    return opts.openvino_cache_dir or resources.cache_dir("openvino")


def _compiled_dir(files, opts):
    """Where OpenVINO caches the compiled models of a program (every input size's)."""
    return os.path.join(_openvino_dir(files, opts), "compiled")


def _openvino_dir(files, opts, input_shape=None):
    """The cache folder of one program: under ``opts.openvino_cache_dir`` (or this user's
    ``resources.cache_dir("openvino")``), named after the program's path (and the input
    shape it is compiled for)."""
    root = _openvino_root(opts)
    key = hashlib.sha1(os.path.realpath(files.program).encode("utf-8", "surrogateescape"))
    name = key.hexdigest()[:16]
    if input_shape is not None:
        name += "-" + "x".join(str(int(v)) for v in input_shape)
    return os.path.join(root, name)


def _openvino_files(files, opts, input_shape=None):
    """(program, params) paths for OpenVINO: the export's files under the names its Paddle
    frontend pairs (``model.pdmodel``, ``model.pdiparams``), as links in the cache folder; with
    ``input_shape``, the program is a copy with that input shape written in, without it a copy
    without the phase form of the upsampling where the program has one (``interpolated_tail``)."""
    folder = _openvino_dir(files, opts, input_shape)
    try:
        os.makedirs(folder, exist_ok=True)
        staged = []
        for source, name in ((files.program, "model.pdmodel"), (files.params, "model.pdiparams")):
            path = os.path.join(folder, name)
            tmp = f"{path}.tmp{os.getpid()}"
            program = _staged_program(source, input_shape) if name == "model.pdmodel" else None
            if program is not None:
                with open(tmp, "wb") as f:
                    f.write(program)
            else:
                try:
                    os.symlink(os.path.realpath(source), tmp)
                except OSError:  # no symbolic links here (Windows without the privilege)
                    shutil.copyfile(source, tmp)
            os.replace(tmp, path)  # atomic: another process may be staging the same program
            staged.append(path)
    except OSError as e:
        raise _unwritable(folder, e) from None
    return staged


def _staged_program(source, input_shape):
    """The program bytes OpenVINO gets where they differ from the export's file (None: the
    file itself, linked)."""
    program = _read(source)
    if input_shape is not None:
        return fix_input_shape(program, input_shape)
    stripped = interpolated_tail(program)
    return None if stripped is program else stripped


def _unwritable(folder, e):
    return UserError(f"--engine openvino: cannot write its cache folder {folder}: "
                     f"{e.strerror or e} (set MOBILESEG_CACHE to a writable folder)")


@contextlib.contextmanager
def _compile_lock(files, opts):
    """On OpenVINO, one process at a time creates a predictor of a program (``folder_lock`` on
    its cache folder): OpenVINO writes a compiled model into the cache under its final name,
    so a process reading the cache meanwhile could take a half-written one. The compilation
    (or the read of the cached one) happens when the predictor is created."""
    if opts.engine != "openvino":
        yield
        return
    folder = _compiled_dir(files, opts)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise _unwritable(folder, e) from None
    with folder_lock(folder):
        yield


def prune_openvino_cache(root):
    """Remove the cache folders under ``root`` of programs that no longer exist (an export
    deleted or moved since: the staged parameters link dangles), which would otherwise stay
    forever. A program being compiled (its folder's lock held) is left alone."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        entry = os.path.join(root, name)
        params = os.path.join(entry, "model.pdiparams")
        if not os.path.islink(params) or os.path.exists(params):
            continue
        base = os.path.join(root, name.split("-")[0])  # a size's folder: its program's lock
        compiled = os.path.join(base, "compiled")
        try:
            with folder_lock(compiled if os.path.isdir(compiled) else base, wait=False) as mine:
                if mine and not os.path.exists(params):
                    shutil.rmtree(entry, ignore_errors=True)
        except OSError:  # removed meanwhile by another process
            continue


def _gpu(config, files, opts):
    config.enable_use_gpu(opts.gpu_mem_mb, opts.gpu_id)


def _tensorrt(config, files, opts):
    _gpu(config, files, opts)
    precision = getattr(pi.PrecisionType, TRT_PRECISIONS[opts.precision])
    if opts.trt_cache_dir:
        os.makedirs(opts.trt_cache_dir, exist_ok=True)
        config.set_optim_cache_dir(opts.trt_cache_dir)
    try:
        config.enable_tensorrt_engine(
            workspace_size=opts.trt_workspace_mb << 20, max_batch_size=opts.max_batch_size,
            min_subgraph_size=opts.min_subgraph_size, precision_mode=precision,
            use_static=opts.trt_use_static,
            # an INT8 export brings its scales; an FP32 one in int8 needs the calibration table
            use_calib_mode=(opts.precision == "int8" and files.precision != "int8"
                            and opts.trt_calib_mode))
    except RuntimeError as e:  # a build without TensorRT refuses here
        raise UserError(f"TensorRT: {one_line(e)}") from None
    if opts.shape_range_file:
        if not os.path.isfile(opts.shape_range_file):
            raise UserError(f"--auto_tuned_shape_file not found: {opts.shape_range_file} "
                            f"(collect it with --enable_auto_tune True)")
        config.enable_tuned_tensorrt_dynamic_shape(opts.shape_range_file, True)
    elif files.dynamic_shape:
        raise UserError("TensorRT on a dynamic-shape export needs the shape ranges of the "
                        "graph: run with --enable_auto_tune True (collects them from the input "
                        "images) or pass --auto_tuned_shape_file")


ENGINES = {"onednn": _onednn, "openvino": _openvino, "plain": _plain, "gpu": _gpu,
           "tensorrt": _tensorrt}


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def fix_input_shape(program_bytes, shape):
    """Legacy program bytes whose fed input has the dimensions ``shape`` instead of the
    export's (-1 for a dynamic one)."""
    desc = core.ProgramDesc(program_bytes)
    block = desc.block(0)
    for i in range(block.op_size()):
        op = block.op(i)
        if op.type() == "feed":
            block.var(op.output("Out")[0].encode()).set_shape([int(v) for v in shape])
    return desc.serialize_to_string()


def interpolated_tail(program_bytes):
    """Legacy program bytes without the phase form of ``layers.upsample_logits``: the
    ``where`` choosing between it and the interpolation reads the interpolation directly, and
    the ops only the phase form needed are removed. The program OpenVINO runs at any input size
    would compute both forms (the choice is folded only in one compiled for a size). Other
    programs come back unchanged."""
    desc = core.ProgramDesc(program_bytes)
    block = desc.block(0)
    ops = [block.op(i) for i in range(block.op_size())]
    producer = {v: op for op in ops for v in op.output_arg_names()}

    def source(v):  # through paddle.where's broadcasting (v + zeros)
        while v in producer and producer[v].type() == "elementwise_add":
            v = producer[v].input("X")[0]
        return v, producer[v].type() if v in producer else None

    chosen = {}
    for op in ops:
        if op.type() == "where":
            (_, phases), (interpolated, kind) = source(op.input("X")[0]), source(op.input("Y")[0])
            if phases == "slice" and kind == "bilinear_interp_v2":
                chosen[op.output("Out")[0]] = interpolated
    if not chosen:
        return program_bytes
    for op in ops:
        for old, new in chosen.items():
            if old in op.input_arg_names():
                op._rename_input(old, new)
    while True:  # drop what nothing reads any more
        read = {v for i in range(block.op_size()) for v in block.op(i).input_arg_names()}
        dead = [i for i in range(block.op_size()) if block.op(i).type() not in ("feed", "fetch")
                and not set(block.op(i).output_arg_names()) & read]
        if not dead:
            return desc.serialize_to_string()
        for i in reversed(dead):
            block._remove_op(i, i + 1)


def mark_onednn_interpolations(program_bytes):
    """Legacy program bytes with ``use_mkldnn`` set on the interpolations oneDNN computes
    exactly as Paddle does: bilinear with align_corners=False and align_mode=0 (half-pixel
    centres). The analysis predictor leaves every interpolation on the plain CPU kernel, which
    for the final full-size upsampling is slow and needs layout conversions around it;
    Paddle's ``interpolate_onednn_pass`` moves all of them, but oneDNN's align_corners=True
    bilinear and its nearest rounding differ from Paddle's (visibly, on Lite-HRNet)."""
    desc = core.ProgramDesc(program_bytes)
    for b in range(desc.num_blocks()):
        block = desc.block(b)
        for i in range(block.op_size()):
            op = block.op(i)
            if (op.type() == "bilinear_interp_v2" and not op.attr("align_corners")
                    and op.attr("align_mode") == 0 and op.attr("data_layout") == "NCHW"):
                op._set_attr("use_mkldnn", True)
    return desc.serialize_to_string()


def _create_predictor(config, opts):
    # oneDNN's int8 and bf16 passes print some sixty lines of statistics to the C++ standard
    # output and error, which disable_glog_info does not reach (a failure still raises, with
    # its message)
    with _quiet_output(opts.precision in ("int8", "bf16")):
        return pi.create_predictor(config)


@contextlib.contextmanager
def _quiet_output(quiet=True):
    """File descriptors 1 and 2 to /dev/null for the duration (the C++ code writes to them
    directly)."""
    if not quiet:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
        yield
    finally:
        for fd, old in zip((1, 2), saved):
            os.dup2(old, fd)
            os.close(old)


class _Predictor:
    """A predictor with its input and output handles."""

    def __init__(self, files, opts, input_shape=None):
        try:
            try:
                with _compile_lock(files, opts):
                    self.predictor = _create_predictor(
                        make_config(files, opts, None, input_shape), opts)
            except Exception as e:
                if opts.precision != "int8" or "requant" not in str(e):
                    raise
                # oneDNN's requantize squash pass asserts on some int8 graphs (Lite-HRNet-18:
                # two scales of one tensor that differ); without it the graph runs, slower
                config = make_config(files, opts)
                config.delete_pass("cpu_quantize_squash_pass")
                self.predictor = _create_predictor(config, opts)
        except UserError:
            raise
        except Exception as e:  # an unreadable or damaged program or parameter file
            how = f" on --engine {opts.engine}" if opts.engine == "openvino" else ""
            raise UserError(f"cannot load the program {files.program} with the parameters "
                            f"{files.params}{how}: {one_line(e)}") from None
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])


class PaddleInferenceRunner(Runner):
    """A Paddle Inference predictor (on OpenVINO with a dynamic-size export, one per input
    shape: see the module's docstring). Besides ``runner(batch)``: ``feed``, ``run`` and
    ``fetch`` (timing ``run`` alone leaves out the copies)."""

    backend = "paddle"

    def __init__(self, files, opts):
        self.files, self.opts = files, opts
        if opts.engine == "openvino":
            prune_openvino_cache(_openvino_root(opts))
        self.fixed = collections.OrderedDict()  # input shape -> its _Predictor, oldest first
        self._seen = set()  # input shapes run once on the dynamic predictor
        openvino = opts.engine == "openvino" and files.dynamic_shape
        self._compilations_left = 2 * opts.openvino_fixed_shapes if openvino else 0
        # an INT8 program of dynamic size runs on OpenVINO far from FP32 (its graph keeps
        # FakeQuantize and int8 Eltwise nodes the one compiled for the size fuses; README):
        # every size is compiled for from its first run, and the dynamic predictor is only
        # made if a compilation fails
        self._always_fixed = openvino and opts.precision == "int8"
        self.dynamic = None if self._always_fixed else _Predictor(files, opts)
        self.current = self.dynamic

    def _dynamic(self):
        if self.dynamic is None:
            self.dynamic = _Predictor(self.files, self.opts)
        return self.dynamic

    def _predictor_for(self, shape):
        if shape in self.fixed:
            self.fixed.move_to_end(shape)
            return self.fixed[shape]
        if self._compilations_left <= 0 and not self._always_fixed:
            return self._dynamic()
        if shape not in self._seen and not self._always_fixed:
            self._seen.add(shape)
            return self._dynamic()
        self._compilations_left -= 1
        try:
            self.fixed[shape] = _Predictor(self.files, self.opts, shape)
        except UserError as e:  # the dynamic program still serves every size
            print(f"note: --engine openvino: no program compiled for input "
                  f"{'x'.join(map(str, shape))}, the dynamic one runs it: {e}", file=sys.stderr)
            self._compilations_left, self._always_fixed = 0, False
            return self._dynamic()
        while len(self.fixed) > max(self.opts.openvino_fixed_shapes, int(self._always_fixed)):
            self.fixed.popitem(last=False)
        return self.fixed[shape]

    def feed(self, batch):
        self.current = self._predictor_for(tuple(batch.shape))
        self.current.input.reshape(list(batch.shape))
        self.current.input.copy_from_cpu(np.ascontiguousarray(batch))

    def run(self):
        self.current.predictor.run()

    def fetch(self):
        return self.current.output.copy_to_cpu()

    def __call__(self, batch):
        self.feed(batch)
        self.run()
        return self.fetch()

    def close(self):
        # the predictor writes a collected shape-range file when it is destroyed
        self.dynamic = self.current = None
        self.fixed.clear()


def create(files, opts):
    return PaddleInferenceRunner(files, opts)
