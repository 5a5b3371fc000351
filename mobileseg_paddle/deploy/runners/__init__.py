"""The one runner layer: options -> a Paddle Inference predictor or an onnxruntime session.

A runner is callable, ``runner(batch)``: an (N, 3, H, W) float32 numpy array in, the model's
first output as numpy out. It is built from

- a ``DeployConfig`` (our export, ``deploy.yaml``), or
- ``ModelFiles``: bare files, ``ModelFiles.from_paddle(program, params)`` (paddleseg's own
  export, which has no deploy.yaml, or the program Lite converted) or
  ``ModelFiles.from_onnx(path)``,

and ``PredictorOptions`` (threads, CPU engine, GPU, TensorRT, shape-range collection, ...)::

    runner = create_runner(DeployConfig("output/inference"), "auto", PredictorOptions())
    out = runner(x)

One module per backend behind the same interface, ``paddle_inference`` and ``onnxruntime``
(imported only when used: this package and the onnxruntime one import no paddle, so the
onnxruntime benchmark workers run without Paddle's OpenMP and oneDNN libraries loaded).

Paddle Inference's CPU engines (``--engine``): oneDNN, its bundled OpenVINO (the whole program
as one op), or its plain CPU kernels; ``auto`` runs the one the export recorded as fastest
(``mobileseg export --engine``; oneDNN for bare files and older exports).

Precision (``--precision``): ``auto`` runs an export at its own precision (fp32, or int8 for an
export of ``mobileseg quant``). On the CPU an INT8 export runs on oneDNN's int8 kernels or
OpenVINO's (``INT8_ENGINES``) and an FP32 one may run in bfloat16 on oneDNN (``bf16``, on
CPUs with AVX512-BF16); TensorRT runs fp32, fp16 or int8 (an FP32 export then needs its
calibration table, an INT8 export brings its scales).

Adding an engine or a precision: its option here (``ENGINES``, ``PRECISIONS``, checked in
``check`` and ``resolve``), its set-up in the backend modules' ``ENGINES`` tables."""

import importlib
import os
from dataclasses import dataclass, replace

from mobileseg_paddle.deploy.deploy_yaml import CPU_ENGINES, DEFAULT_CPU_ENGINE, DeployConfig
from mobileseg_paddle.errors import UserError

BACKENDS = {  # --backend value -> its module: check_device(opts), create(files, opts)
    "paddle": "mobileseg_paddle.deploy.runners.paddle_inference",
    "onnxruntime": "mobileseg_paddle.deploy.runners.onnxruntime",
}
DEVICES = ("cpu", "gpu")
PROGRAMS = ("auto", "legacy", "pir")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")  # the --precision values
# what runs the graph: on the CPU (``CPU_ENGINES``) oneDNN, OpenVINO or Paddle's plain
# kernels; CUDA, or TensorRT (on CUDA)
ENGINES = CPU_ENGINES + ("gpu", "tensorrt")
ENGINE_CHOICES = ("auto",) + CPU_ENGINES  # the --engine values
# the CPU engines that run an INT8 export (its quantize/dequantize pairs): oneDNN's int8
# kernels, OpenVINO's low-precision transformations (on the export's own OpenVINO program)
INT8_ENGINES = ("onednn", "openvino")


def cpu_count():
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@dataclass
class PredictorOptions:
    """How to run a model (names follow PaddleSeg's infer.py flags). The defaults are ours
    (oneDNN, interpolations on oneDNN, memory reuse); ``paddle_defaults()`` gives Paddle
    Inference's own set-up, as a user of a bare program gets it."""

    device: str = "cpu"               # cpu | gpu
    engine: str = "auto"              # CPU: auto (the export's recorded engine) | onednn |
    #                                   openvino | plain; ``resolve`` makes it one of ENGINES
    enable_mkldnn: bool = True        # PaddleSeg's flag: False is engine plain
    cpu_threads: int = 0              # 0: all usable CPUs
    ir_optim: bool = True
    program: str = "auto"             # auto (legacy if exported) | legacy | pir
    onednn_cache_capacity: int = 10   # input shapes whose oneDNN primitives stay cached
    onednn_interp: bool = True        # exact interpolations on oneDNN too (legacy program)
    onednn_pir_fallback: bool = True  # PIR + oneDNN: skip the oneDNN placement pass (see
    #                                   paddle_inference.make_config); off: as Paddle sets it up
    memory_optim: bool = True         # reuse intermediate buffers (legacy program)
    gpu_mem_mb: int = 512
    gpu_id: int = 0
    use_trt: bool = False
    precision: str = "auto"           # auto (the export's: fp32 or int8) | fp32 | bf16 (CPU,
    #                                   oneDNN) | fp16 (TensorRT) | int8 (an INT8 export, or
    #                                   TensorRT with a calibration table)
    min_subgraph_size: int = 3
    trt_workspace_mb: int = 1024
    max_batch_size: int = 1
    shape_range_file: str = None      # collected shape ranges -> TensorRT dynamic shapes
    trt_cache_dir: str = None         # serialized engines (and INT8 calibration tables)
    trt_use_static: bool = False      # reuse the engines saved in trt_cache_dir
    trt_calib_mode: bool = False      # INT8: calibrate on the data run through the predictor
    collect_shape_range_file: str = None  # Paddle: record every tensor's shape range here
    #                                       (written when the runner is closed)
    profile_file_prefix: str = None   # onnxruntime: write its profile (JSON) under this prefix
    openvino_cache_dir: str = None    # OpenVINO's compiled models (None: in
    #                                   ``resources.cache_dir("openvino")``)
    openvino_fixed_shapes: int = 4   # OpenVINO, dynamic export: input shapes that get a
    #                                   program compiled for their size (0: none)

    def resolve(self, recorded=None, model_precision="fp32"):
        """These options with ``engine`` one of ``ENGINES``: GPU or TensorRT on a GPU, else
        the CPU engine asked, with auto ``recorded`` (an export's default) or oneDNN, and
        ``--enable_mkldnn False`` plain; ``precision`` what runs a model of
        ``model_precision`` (``check_precision``)."""
        self.check()
        if self.device == "gpu":
            opts = replace(self, engine="tensorrt" if self.use_trt else "gpu")
        elif self.engine in ("gpu", "tensorrt"):
            opts = self
        else:
            opts = replace(self, engine=self._cpu_engine(recorded))
        return replace(opts, precision=check_precision(opts.precision, model_precision,
                                                       opts.engine))

    def _cpu_engine(self, recorded):
        engine = self.engine
        if not self.enable_mkldnn:
            if engine not in ("auto", "plain"):
                raise UserError(f"--enable_mkldnn False asks for the plain CPU kernels, "
                                f"--engine {engine} for another engine: pass one of them")
            engine = "plain"
        elif engine == "auto":
            engine = recorded or DEFAULT_CPU_ENGINE
        return engine

    def check(self):
        """Refuse values no backend knows, naming the flag."""
        for flag, value, allowed in (("--device", self.device, DEVICES),
                                     ("--engine", self.engine, ("auto",) + ENGINES),
                                     ("--program", self.program, PROGRAMS),
                                     ("--precision", self.precision, PRECISIONS)):
            if value not in allowed:
                allowed = ENGINE_CHOICES if flag == "--engine" else allowed
                raise UserError(f"{flag}: expected one of {', '.join(allowed)}, got {value!r}")
        if self.use_trt and self.device != "gpu":
            raise UserError("--use_trt needs --device gpu")
        if self.use_trt and self.collect_shape_range_file:
            raise UserError("shape ranges are collected without TensorRT (they are its input)")
        return self

    def replace(self, **changes):
        return replace(self, **changes)

    def paddle_defaults(self):
        """These options with Paddle Inference's defaults where ours differ: interpolations
        left off oneDNN, no memory reuse, no placement-pass fallback for a PIR program."""
        return replace(self, onednn_interp=False, memory_optim=False, onednn_pir_fallback=False)


def check_precision(precision, model_precision, engine):
    """The precision ``engine`` runs a model of ``model_precision`` (fp32 | int8) at, for
    ``--precision precision``; one error line for a pair that cannot run."""
    asked = model_precision if precision == "auto" else precision
    if engine == "tensorrt":
        if model_precision == "int8" and asked != "int8":
            raise UserError(f"--precision {precision}: this is an INT8 export; TensorRT runs it "
                            f"in int8 (leave --precision out)")
        if asked not in ("fp32", "fp16", "int8"):
            raise UserError(f"--precision {asked}: TensorRT runs fp32, fp16 or int8")
        return asked
    if model_precision == "int8":
        if asked != "int8":
            raise UserError(f"--precision {asked}: this is an INT8 export (mobileseg quant); it "
                            f"runs in int8 (leave --precision out), the FP32 model is the "
                            f"export it was made beside")
        if engine not in INT8_ENGINES + ("onnxruntime",):
            raise UserError(f"--engine {engine}: an INT8 export runs on int8 kernels: oneDNN's "
                            f"(--engine onednn), OpenVINO's (--engine openvino) or TensorRT")
        return asked
    if asked == "int8":
        raise UserError("--precision int8 runs an INT8 export: make one with mobileseg quant "
                        "(TensorRT also calibrates an FP32 export: --use_trt)")
    if asked == "fp16":
        raise UserError("--precision fp16 is TensorRT's (--device gpu --use_trt); on the CPU: "
                        "fp32 or bf16")
    if asked == "bf16" and engine != "onednn":
        raise UserError(f"--precision bf16 runs on oneDNN (--engine onednn), not "
                        f"{'onnxruntime' if engine == 'onnxruntime' else '--engine ' + engine}")
    return asked


@dataclass(frozen=True)
class ModelFiles:
    """The files a runner loads. ``source`` names the model in messages."""

    format: str                  # paddle | onnx
    source: str
    program: str = None          # paddle: the program file (.pdmodel legacy, .json PIR)
    params: str = None           # paddle: the parameters
    program_kind: str = None     # paddle: legacy | pir
    onnx: str = None             # onnx: the .onnx file
    dynamic_shape: bool = True   # a dynamic batch or H/W (TensorRT then needs shape ranges)
    precision: str = "fp32"      # fp32 | int8 (quantized: an export of mobileseg quant)

    @classmethod
    def from_paddle(cls, program, params, dynamic_shape=True, precision="fp32"):
        """Bare Paddle program and parameter files (e.g. paddleseg's export)."""
        for what, path in (("program", program), ("params", params)):
            if not os.path.isfile(path):
                raise UserError(f"{what} file not found: {path}")
        kind = "pir" if program.endswith(".json") else "legacy"
        return cls("paddle", program, program=program, params=params, program_kind=kind,
                   dynamic_shape=dynamic_shape, precision=precision)

    @classmethod
    def from_onnx(cls, path, dynamic_shape=True):
        """A bare .onnx file."""
        if not os.path.isfile(path):
            raise UserError(f"onnx file not found: {path}")
        return cls("onnx", path, onnx=path, dynamic_shape=dynamic_shape)

    @classmethod
    def of(cls, model, backend, program="auto", engine=None):
        """The files ``backend`` loads from ``model`` (a ``DeployConfig`` or ``ModelFiles``)
        for ``engine`` (resolved: OpenVINO runs an export's own program for it)."""
        if isinstance(model, cls):
            files = model
        elif isinstance(model, DeployConfig):
            files = cls._of_deploy(model, backend, program, engine)
        else:
            raise TypeError(f"expected a DeployConfig or ModelFiles, got {type(model).__name__}")
        if backend == "paddle" and files.format != "paddle":
            raise UserError(f"{files.source}: this is an {files.format} export; "
                            f"use --backend onnxruntime")
        if backend == "onnxruntime" and files.format != "onnx":
            raise UserError(f"{files.source}: a Paddle export; onnxruntime needs an export "
                            f"made with --format onnx")
        if engine == "openvino" and files.program_kind != "legacy":
            raise UserError(f"{files.source}: --engine openvino runs a legacy program "
                            f"(.pdmodel), not {os.path.basename(files.program)}: use --engine "
                            f"onednn or plain")
        return files

    @classmethod
    def _of_deploy(cls, deploy, backend, program, engine=None):
        dynamic = deploy.dynamic_hw or deploy.input_shape[0] == -1
        if deploy.format != ("onnx" if backend == "onnxruntime" else "paddle"):
            return cls(deploy.format, deploy.path)  # the other backend's: refused by ``of``
        if deploy.format == "onnx":
            return cls("onnx", deploy.path, onnx=deploy.file("onnx"), dynamic_shape=dynamic,
                       precision=deploy.precision)
        if program == "auto":
            program = "legacy" if "legacy" in deploy.files else "pir"
        if program not in ("legacy", "pir"):
            raise UserError(f"--program: expected auto, legacy or pir, got {program!r}")
        if engine == "openvino" and program == "pir":
            raise UserError(f"{deploy.path}: --engine openvino runs the legacy program, not "
                            f"the PIR one (" + ("leave out --program pir)" if "legacy" in
                            deploy.files else "exported with --program pir: re-export with "
                            "--program both, or use --engine onednn)"))
        if engine == "openvino":
            if "openvino" not in deploy.files and deploy.precision == "int8":
                raise UserError(f"{deploy.path}: --engine openvino needs an OpenVINO program "
                                f"(model.openvino.pdmodel), which an INT8 export quantized with "
                                f"--engine onednn (or by an older version) lacks: quantize it "
                                f"again with --engine auto or openvino, or use --engine onednn")
            if "openvino" not in deploy.files:  # its pooling form is wrong on OpenVINO
                raise UserError(f"{deploy.path}: --engine openvino needs an export of this "
                                f"version (model.openvino.pdmodel); re-export the model or use "
                                f"--engine onednn")
        program, params = engine_files(deploy.files, engine, program)
        return cls("paddle", deploy.path, program=deploy.file(program),
                   params=deploy.file(params), program_kind="pir" if program == "pir"
                   else "legacy", dynamic_shape=dynamic, precision=deploy.precision)


def engine_files(files, engine, program="legacy"):
    """(program key, params key) of an export's ``files`` block that ``engine`` loads, for the
    asked ``program`` (legacy or pir): OpenVINO its own program, whose parameters are the
    shared ones, or, in an INT8 export, its own (its scales have other names)."""
    if engine != "openvino":
        return program, "params"
    return "openvino", "openvino_params" if "openvino_params" in files else "params"


class Runner:
    """The interface of every backend's runner."""

    backend = None  # the --backend value

    def __call__(self, batch):
        """(N, 3, H, W) float32 numpy -> the model's first output as numpy."""
        raise NotImplementedError

    def close(self):
        """Release the predictor or session (Paddle writes a collected shape file then)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def backend_module(backend):
    try:
        name = BACKENDS[backend]
    except KeyError:
        raise UserError(f"--backend: expected auto, {' or '.join(BACKENDS)}, "
                        f"got {backend!r}") from None
    return importlib.import_module(name)


def resolve_backend(model, backend="auto"):
    """``backend``, with auto: onnxruntime for an ONNX model, Paddle Inference otherwise."""
    if backend == "auto":
        return "onnxruntime" if getattr(model, "format", None) == "onnx" else "paddle"
    backend_module(backend)  # refuses an unknown name
    return backend


def check_device(opts, backend="paddle"):
    """Refuse, with one line, a device or engine the installed ``backend`` lacks (before any
    slow work that would need it)."""
    backend_module(backend).check_device(opts.check())


def create_runner(model, backend="auto", opts=None):
    """A runner of ``model`` (a ``DeployConfig`` or ``ModelFiles``) on ``backend`` (auto,
    paddle, onnxruntime) set up as ``opts`` (``PredictorOptions``) asks."""
    backend = resolve_backend(model, backend)
    if backend == "onnxruntime" and opts is not None and opts.engine != "auto":
        raise UserError(f"--engine {opts.engine}: the engines are Paddle Inference's; an ONNX "
                        f"export runs on onnxruntime (leave --engine out)")
    opts = resolve_options(model, opts, backend)
    module = backend_module(backend)
    module.check_device(opts)
    files = ModelFiles.of(model, backend, opts.program, opts.engine)
    return module.create(files, opts)


def resolve_options(model, opts=None, backend="paddle"):
    """``opts`` (default ``PredictorOptions()``) resolved for ``model`` on ``backend``: engine
    auto is the engine its deploy.yaml records, unless PIR is asked for (OpenVINO runs the
    legacy one); precision auto is the model's."""
    opts = opts or PredictorOptions()
    model_precision = getattr(model, "precision", "fp32")
    if backend == "onnxruntime":  # engines are Paddle's (refused by create_runner)
        return replace(opts.check(), precision=check_precision(
            opts.precision, model_precision, "onnxruntime"))
    recorded = getattr(model, "engine", None) if opts.program != "pir" else None
    if model_precision == "int8" and opts.program == "pir":
        raise UserError("--program pir: an INT8 export is a legacy program")
    return opts.resolve(recorded, model_precision)


__all__ = ["BACKENDS", "DEVICES", "ENGINES", "ENGINE_CHOICES", "INT8_ENGINES", "PRECISIONS",
           "PROGRAMS", "ModelFiles", "PredictorOptions", "Runner", "check_device",
           "check_precision", "cpu_count", "create_runner", "engine_files", "resolve_backend",
           "resolve_options"]
