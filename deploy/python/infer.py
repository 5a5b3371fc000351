"""Segment images with an exported MobileSeg (``deploy/export.py``): Paddle Inference on CPU
(oneDNN on by default, or off), GPU and TensorRT, or onnxruntime for an ONNX export.

    python -m deploy.python.infer --config output/inference/deploy.yaml \
        --image_path images/ --save_dir output/result

Flag names follow PaddleSeg's ``deploy/python/infer.py`` (``--config --image_path --batch_size
--save_dir --device --use_trt --precision --min_subgraph_size --enable_auto_tune
--auto_tuned_shape_file --cpu_threads --enable_mkldnn --benchmark --with_argmax
--print_detail``); boolean flags take True/False as there.

Input: one image, a folder (searched recursively) or a list file (one image path per line,
relative to the list file; a second column, e.g. a label path, is ignored).
Output, under ``--save_dir``: ``masks/<name>.png`` (class id per pixel) and
``overlays/<name>.jpg`` (the image blended with the class colours), keeping the folder
structure of the input.

Library use::

    seg = Segmenter.from_deploy("output/inference")      # Paddle Inference, CPU, oneDNN
    label_map = seg.predict([cv2.imread("a.jpg")])[0]    # (H, W) int32
"""

import argparse
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import yaml

from deploy.export import DEPLOY_FORMAT_VERSION, DEPLOY_KEY, MIN_INPUT_SIZE

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DeployError(Exception):
    """A user error: a missing or incompatible file, a bad flag or a bad input."""


# ----------------------------------------------------------------------------------------------
# deploy.yaml


class DeployConfig:
    """The parsed and checked ``deploy.yaml`` of an export folder."""

    def __init__(self, path):
        if os.path.isdir(path):
            path = os.path.join(path, "deploy.yaml")
        if not os.path.isfile(path):
            raise DeployError(f"deploy.yaml not found: {path}")
        self.path = os.path.abspath(path)
        self.dir = os.path.dirname(self.path)
        try:
            with open(path, encoding="utf-8") as f:
                doc = yaml.safe_load(f)
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise DeployError(f"{path}: not a valid YAML file ({type(e).__name__})") from None
        if not isinstance(doc, dict) or DEPLOY_KEY not in doc:
            raise DeployError(f"{path}: no '{DEPLOY_KEY}' section: not written by mobileseg "
                              f"export (re-export the model with deploy/export.py)")
        info = doc[DEPLOY_KEY]
        version = info.get("format_version") if isinstance(info, dict) else None
        if version != DEPLOY_FORMAT_VERSION:
            raise DeployError(f"{path}: deploy format_version {version!r} is not supported by "
                              f"this version (expects {DEPLOY_FORMAT_VERSION}); re-export the "
                              f"model with this version's deploy/export.py")
        try:
            self.format = info["format"]
            self.files = dict(info["files"])
            inp = info["input"]
            self.input_name = inp["name"]
            self.input_shape = [int(v) for v in inp["shape"]]
            self.size_policy = dict(inp["size_policy"])
            self.mean = np.asarray(info["normalize"]["mean"], np.float32)
            self.std = np.asarray(info["normalize"]["std"], np.float32)
            self.num_classes = int(info["num_classes"])
            self.class_names = list(info["class_names"])
            self.output_kind = info["output"]["kind"]
            self.output_op = info["output"]["op"]
        except (KeyError, TypeError, ValueError) as e:
            raise DeployError(f"{path}: missing or malformed field {e}") from None
        if self.format not in ("paddle", "onnx"):
            raise DeployError(f"{path}: format {self.format!r}: expected paddle or onnx")
        if len(self.input_shape) != 4 or self.input_shape[1] != 3:
            raise DeployError(f"{path}: input shape {self.input_shape}: expected [N, 3, H, W]")
        self.palette = np.asarray(info.get("palette") or default_palette(self.num_classes),
                                  np.uint8)
        self.dynamic_hw = -1 in self.input_shape[2:]
        self.info = info

    def file(self, key):
        """Absolute path of a model file named in ``files``; raises if it is missing."""
        name = self.files.get(key)
        if not name:
            raise DeployError(f"{self.path}: no '{key}' file in this export "
                              f"(has: {', '.join(sorted(self.files))})")
        path = os.path.join(self.dir, name)
        if not os.path.isfile(path):
            raise DeployError(f"{key} file not found: {path}")
        return path


def default_palette(n):
    """Distinct colours for n classes (the bit-interleaved palette of VOC)."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, lab = 0, i
        r = g = b = 0
        while lab:
            r |= ((lab >> 0) & 1) << (7 - c)
            g |= ((lab >> 1) & 1) << (7 - c)
            b |= ((lab >> 2) & 1) << (7 - c)
            c, lab = c + 1, lab >> 3
        pal[i] = (r, g, b)
    return pal


# ----------------------------------------------------------------------------------------------
# Runners: (N, 3, H, W) float32 -> the exported output, as numpy


@dataclass
class PredictorOptions:
    """How to run a Paddle Inference model (names follow PaddleSeg's infer.py flags)."""

    device: str = "cpu"               # cpu | gpu
    enable_mkldnn: bool = True        # oneDNN on CPU
    cpu_threads: int = 0              # 0: all cores
    ir_optim: bool = True
    program: str = "auto"             # auto (legacy if exported) | legacy | pir
    onednn_cache_capacity: int = 10   # input shapes whose oneDNN primitives stay cached
    onednn_interp: bool = True        # interpolation on oneDNN too (legacy program)
    memory_optim: bool = True         # reuse intermediate buffers (legacy program)
    gpu_mem_mb: int = 512
    gpu_id: int = 0
    use_trt: bool = False
    precision: str = "fp32"           # fp32 | fp16 | int8
    min_subgraph_size: int = 3
    trt_workspace_mb: int = 1024
    max_batch_size: int = 1
    shape_range_file: str = None      # collected shape ranges -> TensorRT dynamic shapes
    trt_cache_dir: str = None         # serialized engines (and INT8 calibration tables)
    trt_use_static: bool = False      # reuse the engines saved in trt_cache_dir
    trt_calib_mode: bool = False      # INT8: calibrate on the data run through the predictor


def cpu_count():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def paddle_model_files(deploy, program="auto"):
    """(program file, params file, program kind) of a Paddle export."""
    if deploy.format != "paddle":
        raise DeployError(f"{deploy.path}: this is an {deploy.format} export; "
                          f"use --backend onnxruntime")
    if program == "auto":
        program = "legacy" if "legacy" in deploy.files else "pir"
    if program not in ("legacy", "pir"):
        raise DeployError(f"--program: expected auto, legacy or pir, got {program!r}")
    return deploy.file(program), deploy.file("params"), program


def make_paddle_config(deploy, opts, config_cls=None):
    """A ``paddle.inference.Config`` for ``deploy`` set up as ``opts`` asks.

    ``config_cls`` replaces ``paddle.inference.Config`` (the tests pass a recorder to check the
    GPU/TensorRT calls, which a CPU build of Paddle refuses)."""
    import paddle.inference as pi

    model_file, params_file, program = paddle_model_files(deploy, opts.program)
    onednn_interp = (opts.device == "cpu" and opts.enable_mkldnn and opts.onednn_interp
                     and program == "legacy")
    if onednn_interp:
        config = (config_cls or pi.Config)()
        prog = mark_onednn_interpolations(_read(model_file))
        params = _read(params_file)
        config.set_model_buffer(prog, len(prog), params, len(params))
    else:
        config = (config_cls or pi.Config)(model_file, params_file)
    config.switch_ir_optim(opts.ir_optim)
    if opts.device == "gpu":
        config.enable_use_gpu(opts.gpu_mem_mb, opts.gpu_id)
        if opts.use_trt:
            _set_tensorrt(config, deploy, opts, pi)
    elif opts.device == "cpu":
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(opts.cpu_threads or cpu_count())
        if opts.enable_mkldnn:
            config.enable_mkldnn()
            config.set_mkldnn_cache_capacity(opts.onednn_cache_capacity)
            if program == "pir":
                # Paddle 3.3.1 cannot run PIR interpolation ops on oneDNN (see export.py);
                # without the placement pass they run on the plain CPU kernels.
                config.delete_pass("onednn_placement_pass")
        else:
            config.disable_mkldnn()
        if opts.use_trt:
            raise DeployError("--use_trt needs --device gpu")
    else:
        raise DeployError(f"--device: expected cpu or gpu, got {opts.device!r}")
    if program == "legacy" and opts.memory_optim:
        # (on a PIR program Paddle 3.3.1 fails with "Not find ... memory_optimize_pass")
        config.enable_memory_optim()
    config.disable_glog_info()
    return config


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def mark_onednn_interpolations(program_bytes):
    """Legacy program bytes with ``use_mkldnn`` set on the interpolations oneDNN computes
    exactly as Paddle does: bilinear with align_corners=False and align_mode=0 (half-pixel
    centres). The analysis predictor leaves every interpolation on the plain CPU kernel, which
    for the final full-size upsampling is slow (70 ms at 512x1024 on one core against 4 ms)
    and needs layout conversions around it; Paddle's ``interpolate_onednn_pass`` moves all of
    them, but oneDNN's align_corners=True bilinear and its nearest rounding differ from
    Paddle's (0.06 relative error on Lite-HRNet)."""
    from paddle.base import core

    desc = core.ProgramDesc(program_bytes)
    for b in range(desc.num_blocks()):
        block = desc.block(b)
        for i in range(block.op_size()):
            op = block.op(i)
            if (op.type() == "bilinear_interp_v2" and not op.attr("align_corners")
                    and op.attr("align_mode") == 0 and op.attr("data_layout") == "NCHW"):
                op._set_attr("use_mkldnn", True)
    return desc.serialize_to_string()


PRECISIONS = {"fp32": "Float32", "fp16": "Half", "int8": "Int8"}


def _set_tensorrt(config, deploy, opts, pi):
    if opts.precision not in PRECISIONS:
        raise DeployError(f"--precision: expected one of {sorted(PRECISIONS)}, "
                          f"got {opts.precision!r}")
    precision = getattr(pi.PrecisionType, PRECISIONS[opts.precision])
    if opts.trt_cache_dir:
        os.makedirs(opts.trt_cache_dir, exist_ok=True)
        config.set_optim_cache_dir(opts.trt_cache_dir)
    try:
        config.enable_tensorrt_engine(
            workspace_size=opts.trt_workspace_mb << 20, max_batch_size=opts.max_batch_size,
            min_subgraph_size=opts.min_subgraph_size, precision_mode=precision,
            use_static=opts.trt_use_static,
            use_calib_mode=opts.precision == "int8" and opts.trt_calib_mode)
    except RuntimeError as e:  # a build without TensorRT refuses here
        raise DeployError(f"TensorRT: {last_line(e)}") from None
    dynamic = deploy.dynamic_hw or deploy.input_shape[0] == -1
    if opts.shape_range_file:
        if not os.path.isfile(opts.shape_range_file):
            raise DeployError(f"--auto_tuned_shape_file not found: {opts.shape_range_file} "
                              f"(collect it with --enable_auto_tune True)")
        config.enable_tuned_tensorrt_dynamic_shape(opts.shape_range_file, True)
    elif dynamic:
        raise DeployError("TensorRT on a dynamic-shape export needs the shape ranges of the "
                          "graph: run with --enable_auto_tune True (collects them from the input "
                          "images) or pass --auto_tuned_shape_file")


def check_device(opts):
    """Refuse GPU/TensorRT on a Paddle build that lacks them, with one line."""
    import paddle
    if opts.device == "gpu" and not paddle.is_compiled_with_cuda():
        raise DeployError("--device gpu: this paddlepaddle is a CPU build; install "
                          "paddlepaddle-gpu (with TensorRT for --use_trt)")
    if opts.use_trt and not _compiled_with_tensorrt():
        raise DeployError("--use_trt: this paddlepaddle was built without TensorRT")


def _compiled_with_tensorrt():
    import paddle
    fn = getattr(paddle, "is_compiled_with_tensorrt", None) or getattr(
        getattr(paddle, "device", None), "is_compiled_with_tensorrt", None)
    try:
        return bool(fn()) if fn else paddle.is_compiled_with_cuda()
    except Exception:
        return False


class PaddleRunner:
    """Paddle Inference predictor of a Paddle export."""

    backend = "paddle"

    def __init__(self, deploy, opts=None):
        import paddle.inference as pi

        self.deploy = deploy
        self.opts = opts or PredictorOptions()
        check_device(self.opts)
        try:
            self.predictor = pi.create_predictor(make_paddle_config(deploy, self.opts))
        except DeployError:
            raise
        except Exception as e:  # an unreadable or damaged program or parameter file
            raise DeployError(f"cannot load {paddle_model_files(deploy, self.opts.program)[0]}: "
                              f"{last_line(e)}") from None
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def __call__(self, batch):
        self.input.reshape(list(batch.shape))
        self.input.copy_from_cpu(np.ascontiguousarray(batch))
        self.predictor.run()
        return self.output.copy_to_cpu()


class OnnxRunner:
    """onnxruntime session of an ONNX export (same inputs and outputs as PaddleRunner)."""

    backend = "onnxruntime"

    def __init__(self, deploy, opts=None):
        import onnxruntime as ort

        self.deploy = deploy
        self.opts = opts = opts or PredictorOptions()
        path = deploy.file("onnx")
        so = ort.SessionOptions()
        so.intra_op_num_threads = opts.cpu_threads or cpu_count()
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if opts.device == "gpu":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise DeployError("--device gpu: this onnxruntime has no CUDA provider "
                                  "(install onnxruntime-gpu)")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(path, so, providers=providers)
        except Exception as e:
            raise DeployError(f"cannot load {path}: {last_line(e)}") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch):
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch)})[0]


def create_runner(deploy, backend="auto", opts=None):
    if backend == "auto":
        backend = "onnxruntime" if deploy.format == "onnx" else "paddle"
    if backend == "paddle":
        return PaddleRunner(deploy, opts)
    if backend == "onnxruntime":
        if deploy.format != "onnx":
            raise DeployError(f"{deploy.path}: a Paddle export; onnxruntime needs an export "
                              f"made with --format onnx")
        return OnnxRunner(deploy, opts)
    raise DeployError(f"--backend: expected auto, paddle or onnxruntime, got {backend!r}")


def last_line(e, limit=300):
    """An exception's last non-empty message line (Paddle puts the cause last), cut to ``limit``
    characters. (``mobileseg_paddle.builder.one_line`` does the same for the training side;
    deploy modules do not import that package at import time, since importing it loads paddle
    and paddleseg, and the onnxruntime runner and benchmark workers must stay without them.)"""
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    text = lines[-1] if lines else type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ----------------------------------------------------------------------------------------------
# Pre/post-processing


class Segmenter:
    """Images (HxWx3 uint8 BGR, as cv2 reads them) -> label maps (HxW int32) at their size."""

    def __init__(self, deploy, runner):
        self.deploy = deploy
        self.runner = runner

    @classmethod
    def from_deploy(cls, path, backend="auto", opts=None):
        deploy = DeployConfig(path)
        return cls(deploy, create_runner(deploy, backend, opts))

    def preprocess(self, img):
        """BGR uint8 image -> (3, h, w) float32 network input, as in training (RGB, /255,
        mean/std), resized when the export has a fixed size."""
        import cv2

        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
            shape = getattr(img, "shape", None)
            raise DeployError(f"image of shape {shape}: expected H x W x 3 (BGR)")
        policy = self.deploy.size_policy
        if policy.get("mode") == "resize":
            h, w = policy["size"]
            img = cv2.resize(img, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)
        else:
            min_size = int(policy.get("min_size", MIN_INPUT_SIZE))
            if min(img.shape[:2]) < min_size:
                raise DeployError(f"image of {img.shape[1]}x{img.shape[0]} pixels is smaller "
                                  f"than the model's minimum {min_size}x{min_size}")
        x = cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        x = (x - self.deploy.mean) / self.deploy.std
        return x.transpose(2, 0, 1)

    def check_batch(self, batch):
        """Refuse a network input of the wrong rank, channels, dtype or (fixed) size."""
        batch = np.asarray(batch)
        if batch.ndim != 4:
            raise DeployError(f"input of shape {list(batch.shape)} has rank {batch.ndim}; "
                              f"expected rank 4 (N, 3, H, W)")
        if batch.shape[1] != 3:
            raise DeployError(f"input of shape {list(batch.shape)} has {batch.shape[1]} "
                              f"channels; expected 3 (N, 3, H, W)")
        for axis, want in enumerate(self.deploy.input_shape):
            if want != -1 and batch.shape[axis] != want:
                raise DeployError(f"input of shape {list(batch.shape)} does not fit the "
                                  f"exported shape {self.deploy.input_shape}")
        return batch.astype(np.float32, copy=False)

    def run(self, batch):
        """Raw network output for an (N, 3, H, W) batch."""
        return self.runner(self.check_batch(batch))

    def predict(self, images, batch_size=1):
        """Label maps for a list of BGR images, each at its image's size. Images of different
        sizes go in separate batches (a batch has one size)."""
        out = [None] * len(images)
        groups = {}
        for i, img in enumerate(images):
            x = self.preprocess(img)
            groups.setdefault(x.shape, []).append((i, x))
        for items in groups.values():
            for s in range(0, len(items), batch_size):
                chunk = items[s:s + batch_size]
                result = self.run(np.stack([x for _, x in chunk]))
                for (i, _), r in zip(chunk, result):
                    out[i] = self.postprocess(r, images[i].shape[:2])
        return out

    def postprocess(self, result, size):
        """One image's output -> (H, W) int32 label map at ``size`` (H, W)."""
        import cv2

        h, w = size
        if self.deploy.output_kind == "label_map":
            label = result.astype(np.int32)
            if label.shape != (h, w):
                label = cv2.resize(label.astype(np.float32), (w, h),
                                   interpolation=cv2.INTER_NEAREST).astype(np.int32)
            return label
        scores = result  # (C, h', w') probabilities or logits
        if scores.shape[1:] != (h, w):
            scores = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR)
                               for c in scores])
        return scores.argmax(axis=0).astype(np.int32)


def overlay(img, label, palette, alpha=0.5):
    """The BGR image blended with the class colours (palette is RGB)."""
    colors = palette[np.clip(label, 0, len(palette) - 1)][..., ::-1]
    return (img.astype(np.float32) * (1 - alpha) + colors * alpha).round().astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Files


def list_images(path):
    """(image paths, common root) for an image, a folder (recursive) or a list file."""
    if not os.path.exists(path):
        raise DeployError(f"--image_path not found: {path}")
    if os.path.isdir(path):
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
                       if f.lower().endswith(IMAGE_EXTS))
        if not files:
            raise DeployError(f"--image_path {path}: no images ({', '.join(IMAGE_EXTS)})")
        return files, path
    if path.lower().endswith(IMAGE_EXTS):
        return [path], os.path.dirname(path)
    base = os.path.dirname(os.path.abspath(path))
    files = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                p = parts[0] if os.path.isabs(parts[0]) else os.path.join(base, parts[0])
                if not os.path.isfile(p):
                    raise DeployError(f"{path}, line {n}: image not found: {p}")
                files.append(p)
    except UnicodeDecodeError:
        raise DeployError(f"--image_path {path}: neither an image ({', '.join(IMAGE_EXTS)}) "
                          f"nor a text list of images") from None
    if not files:
        raise DeployError(f"--image_path {path}: the list is empty")
    return files, base


def read_image(path):
    import cv2
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise DeployError(f"cannot read image {path} (not an image, or corrupt)")
    return img


def prepare_output_dir(save_dir):
    """Create ``save_dir`` and check that files can be written in it."""
    try:
        os.makedirs(save_dir, exist_ok=True)
        probe = os.path.join(save_dir, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise DeployError(f"--save_dir {save_dir} is not writable: "
                          f"{e.strerror or type(e).__name__}") from None


def write_image(path, img):
    import cv2
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, img):
        raise DeployError(f"cannot write {path}")


def mask_image(label, num_classes):
    return label.astype(np.uint8 if num_classes <= 256 else np.uint16)


# ----------------------------------------------------------------------------------------------
# Shape ranges (TensorRT dynamic shapes) and INT8 calibration


def collect_shape_ranges(deploy, images, shape_file, batch_size=1, program="auto"):
    """Run ``images`` through Paddle Inference in shape-collection mode, writing the min/max/opt
    shape of every tensor to ``shape_file`` (what TensorRT dynamic shapes are built from).
    Runs on the CPU; the file is then used by a GPU predictor."""
    import paddle.inference as pi

    model_file, params_file, _ = paddle_model_files(deploy, program)
    config = pi.Config(model_file, params_file)
    config.disable_gpu()
    config.disable_glog_info()
    config.collect_shape_range_info(shape_file)
    predictor = pi.create_predictor(config)
    seg = Segmenter(deploy, _PredictorCall(predictor))
    seg.predict(images, batch_size)
    del seg, predictor  # the file is written when the predictor is destroyed
    if not os.path.isfile(shape_file):
        raise DeployError(f"shape collection did not write {shape_file}")
    return shape_file


class _PredictorCall:
    def __init__(self, predictor):
        self.predictor = predictor

    def __call__(self, batch):
        p = self.predictor
        h = p.get_input_handle(p.get_input_names()[0])
        h.reshape(list(batch.shape))
        h.copy_from_cpu(np.ascontiguousarray(batch))
        p.run()
        return p.get_output_handle(p.get_output_names()[0]).copy_to_cpu()


def calibrate_int8(deploy, images, opts, batch_size=1):
    """INT8 calibration hook: run representative ``images`` through a TensorRT predictor in
    calibration mode, which writes the calibration table into ``opts.trt_cache_dir``; the
    INT8 engines built afterwards read it. Needs a GPU build with TensorRT."""
    if not opts.trt_cache_dir:
        raise DeployError("INT8 calibration needs --trt_cache_dir (where the table is written)")
    calib = PredictorOptions(**{**opts.__dict__, "trt_calib_mode": True, "precision": "int8"})
    seg = Segmenter(deploy, PaddleRunner(deploy, calib))
    seg.predict(images, batch_size)
    del seg


# ----------------------------------------------------------------------------------------------
# Command line


def str2bool(v):
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "on"):
        return True
    if s in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {v!r}")


def build_parser():
    p = argparse.ArgumentParser(prog="mobileseg infer",
                                description="Segment images with an exported MobileSeg.")
    b = dict(type=str2bool, nargs="?", const=True)
    p.add_argument("--config", required=True, help="deploy.yaml of an export (or its folder)")
    p.add_argument("--image_path", required=True, help="an image, a folder or a list file")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--save_dir", default="./output", help="where masks/ and overlays/ go")
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--backend", default="auto", choices=("auto", "paddle", "onnxruntime"),
                   help="auto: Paddle Inference for a Paddle export, onnxruntime for ONNX")
    p.add_argument("--program", default="auto", choices=("auto", "legacy", "pir"),
                   help="which exported program Paddle Inference loads (auto: legacy)")
    p.add_argument("--use_trt", default=False, **b, help="TensorRT (with --device gpu)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"))
    p.add_argument("--min_subgraph_size", type=int, default=3)
    p.add_argument("--enable_auto_tune", default=False, **b,
                   help="collect the shape ranges for TensorRT dynamic shapes from the images "
                        "first (into --auto_tuned_shape_file)")
    p.add_argument("--auto_tuned_shape_file", default="auto_tune_tmp.pbtxt")
    p.add_argument("--trt_cache_dir", default=None,
                   help="folder of serialized TensorRT engines and INT8 calibration tables")
    p.add_argument("--trt_use_static", default=False, **b,
                   help="reuse the engines saved in --trt_cache_dir")
    p.add_argument("--calib_image_path", default=None,
                   help="INT8: representative images to calibrate on first")
    p.add_argument("--cpu_threads", type=int, default=0, help="0: all cores")
    p.add_argument("--enable_mkldnn", default=True, **b, help="oneDNN on CPU (default True)")
    p.add_argument("--ir_optim", default=True, **b)
    p.add_argument("--benchmark", default=False, **b, help="print the time per image")
    p.add_argument("--with_argmax", default=True, **b,
                   help="kept for PaddleSeg compatibility: masks are always label maps")
    p.add_argument("--print_detail", default=False, **b)
    p.add_argument("--save_overlay", default=True, **b)
    p.add_argument("--overlay_alpha", type=float, default=0.5)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except DeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args):
    if args.batch_size < 1:
        raise DeployError(f"--batch_size must be >= 1, got {args.batch_size}")
    deploy = DeployConfig(args.config)
    files, root = list_images(args.image_path)
    prepare_output_dir(args.save_dir)
    opts = PredictorOptions(
        device=args.device, enable_mkldnn=args.enable_mkldnn, cpu_threads=args.cpu_threads,
        ir_optim=args.ir_optim, program=args.program, use_trt=args.use_trt,
        precision=args.precision, min_subgraph_size=args.min_subgraph_size,
        max_batch_size=args.batch_size, trt_cache_dir=args.trt_cache_dir,
        trt_use_static=args.trt_use_static,
        shape_range_file=args.auto_tuned_shape_file if args.use_trt else None)
    if args.use_trt:
        check_device(opts)
        if args.enable_auto_tune:
            collect_shape_ranges(deploy, [read_image(f) for f in files],
                                 args.auto_tuned_shape_file, args.batch_size, args.program)
        elif not (deploy.dynamic_hw or deploy.input_shape[0] == -1):
            opts.shape_range_file = None  # a fixed-shape export needs no ranges
        if args.precision == "int8" and args.calib_image_path:
            calib_files, _ = list_images(args.calib_image_path)
            calibrate_int8(deploy, [read_image(f) for f in calib_files], opts, args.batch_size)
            opts.trt_calib_mode = True
    if args.print_detail:
        print(f"model: {deploy.path} ({deploy.format}), output: {deploy.output_kind}, "
              f"classes: {deploy.num_classes}, device: {args.device}, "
              f"oneDNN: {args.enable_mkldnn}, TensorRT: {args.use_trt}")
    backend = args.backend
    seg = Segmenter(deploy, create_runner(deploy, backend, opts))
    times = []
    for s in range(0, len(files), args.batch_size):
        chunk = files[s:s + args.batch_size]
        images = [read_image(f) for f in chunk]
        t0 = time.perf_counter()
        labels = seg.predict(images, args.batch_size)
        times.append((time.perf_counter() - t0) / len(chunk))
        for f, img, label in zip(chunk, images, labels):
            rel = os.path.splitext(os.path.relpath(f, root))[0]
            write_image(os.path.join(args.save_dir, "masks", rel + ".png"),
                        mask_image(label, deploy.num_classes))
            if args.save_overlay:
                write_image(os.path.join(args.save_dir, "overlays", rel + ".jpg"),
                            overlay(img, label, deploy.palette, args.overlay_alpha))
            if args.print_detail:
                print(f"{f}: {img.shape[1]}x{img.shape[0]}, classes present: "
                      f"{sorted(np.unique(label).tolist())}")
    if args.benchmark and times:
        warm = times[1:] or times
        print(f"{len(files)} images, {seg.runner.backend}: {np.median(warm) * 1e3:.1f} ms per "
              f"image (median, pre/post-processing included, first batch excluded)")
    print(f"wrote {len(files)} masks to {os.path.join(args.save_dir, 'masks')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
