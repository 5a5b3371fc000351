"""Segment images with an exported MobileSeg (``mobileseg export``): Paddle Inference on CPU
(``--engine``: the export's recorded engine by default, or oneDNN, OpenVINO, the plain
kernels), GPU and TensorRT, or onnxruntime for an ONNX export (the runners are in
``mobileseg_paddle.deploy.runners``).

    mobileseg infer --config output/inference/deploy.yaml --image_path images/ \
        --save_dir output/result

Flag names follow PaddleSeg's ``deploy/python/infer.py`` (``--config --image_path --batch_size
--save_dir --device --use_trt --precision --min_subgraph_size --enable_auto_tune
--auto_tuned_shape_file --cpu_threads --enable_mkldnn --benchmark --with_argmax
--print_detail``) and ``tools/predict.py`` (``--custom_color``); boolean flags take True/False
as there.

Input: one image, a folder (searched recursively) or a list file (one image path per line,
relative to the list file; a second column, e.g. a label path, is ignored). A file whose name
is not valid UTF-8 (which OpenCV cannot open) is skipped with a warning.

Output, under ``--save_dir`` and nowhere else: ``masks/<name>.png`` (class id per pixel) and
``overlays/<name>.jpg`` (the image blended with the class colours, paddleseg's by default).
``<name>`` is the image's path relative to the input folder (for a list file: the list's
folder, or the deepest folder holding all listed images when entries point above it) without
its extension, so the input's folder structure is kept. Images that would share a name
(``x.png`` and ``x.jpg``) keep their extension in it (``x.png.png``, ``x.jpg.png``); a name
still taken gets ``~2``, ``~3``... Names are compared ignoring case, so no two inputs share an
output on any file system. An output that would be one of the input images is refused before
anything is written.

Library use::

    seg = Segmenter.from_deploy("output/inference")      # Paddle Inference, CPU
    label_map = seg.predict([cv2.imread("a.jpg")])[0]    # (H, W) int32
"""

import argparse
import os
import sys
import time
from collections import Counter

import cv2
import numpy as np

from mobileseg_paddle import palette
from mobileseg_paddle.deploy.deploy_yaml import MIN_INPUT_SIZE, DeployConfig
from mobileseg_paddle.deploy.runners import (
    ENGINE_CHOICES,
    PRECISIONS,
    PredictorOptions,
    check_device,
    create_runner,
    resolve_backend,
)
from mobileseg_paddle.errors import UserError, run_main

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# ----------------------------------------------------------------------------------------------
# Pre/post-processing


class Segmenter:
    """Images (HxWx3 uint8 BGR, as cv2 reads them) -> label maps (HxW int32) at their size."""

    def __init__(self, deploy, runner):
        self.deploy = deploy
        self.runner = runner

    @classmethod
    def from_deploy(cls, path, backend="auto", opts=None):
        """A Segmenter of the export at ``path`` (its folder or deploy.yaml); ``backend`` and
        ``opts`` as ``runners.create_runner`` takes them."""
        deploy = DeployConfig(path)
        return cls(deploy, create_runner(deploy, backend, opts))

    def preprocess(self, img):
        """BGR uint8 image -> (3, h, w) float32 network input, as in training (RGB, /255,
        mean/std), resized when the export has a fixed size."""
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
            shape = getattr(img, "shape", None)
            raise UserError(f"image of shape {shape}: expected H x W x 3 (BGR)")
        policy = self.deploy.size_policy
        if policy.get("mode") == "resize":
            h, w = policy["size"]
            img = cv2.resize(img, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)
        else:
            min_size = int(policy.get("min_size", MIN_INPUT_SIZE))
            if min(img.shape[:2]) < min_size:
                raise UserError(f"image of {img.shape[1]}x{img.shape[0]} pixels is smaller "
                                  f"than the model's minimum {min_size}x{min_size}")
            max_side = policy.get("max_side")
            if max_side and max(img.shape[:2]) > int(max_side):
                # bounded memory: the label map is resized back to the image in postprocess
                scale = int(max_side) / max(img.shape[:2])
                size = (max(min_size, round(img.shape[1] * scale)),
                        max(min_size, round(img.shape[0] * scale)))
                img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        x = cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        x = (x - self.deploy.mean) / self.deploy.std
        return x.transpose(2, 0, 1)

    def check_batch(self, batch):
        """Refuse a network input of the wrong rank, channels, dtype or (fixed) size."""
        batch = np.asarray(batch)
        if batch.ndim != 4:
            raise UserError(f"input of shape {list(batch.shape)} has rank {batch.ndim}; "
                              f"expected rank 4 (N, 3, H, W)")
        if batch.shape[1] != 3:
            raise UserError(f"input of shape {list(batch.shape)} has {batch.shape[1]} "
                              f"channels; expected 3 (N, 3, H, W)")
        for axis, want in enumerate(self.deploy.input_shape):
            if want != -1 and batch.shape[axis] != want:
                raise UserError(f"input of shape {list(batch.shape)} does not fit the "
                                  f"exported shape {self.deploy.input_shape}")
        return batch.astype(np.float32, copy=False)

    def run(self, batch):
        """Raw network output for an (N, 3, H, W) batch."""
        return self.runner(self.check_batch(batch))

    def predict(self, images, batch_size=1):
        """Label maps for a list of BGR images, each at its image's size. Images of different
        sizes go in separate batches (a batch has one size), of at most the exported batch."""
        if self.deploy.input_shape[0] != -1:
            batch_size = min(batch_size, self.deploy.input_shape[0])
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


def overlay(img, label, colors=None, weight=palette.OVERLAY_WEIGHT):
    """The BGR image blended with the class colours (see ``mobileseg_paddle.palette``)."""
    return palette.overlay(img, label, colors, weight)


# ----------------------------------------------------------------------------------------------
# Files


def list_images(path):
    """(image paths, common root, skipped paths) for an image, a folder (recursive) or a list
    file. Skipped: names that are not valid UTF-8 (OpenCV crashes on them)."""
    if not os.path.exists(path):
        raise UserError(f"--image_path not found: {path}")
    if os.path.isdir(path):
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
                       if f.lower().endswith(IMAGE_EXTS))
        root = path
    elif path.lower().endswith(IMAGE_EXTS):
        files = [path]
        root = os.path.dirname(os.path.abspath(path))
    else:
        files = _read_list(path)
        # the list's folder, or above it when entries point there (``../x.png``): every
        # name relative to the root then stays inside --save_dir
        root = os.path.commonpath([os.path.dirname(os.path.abspath(path))]
                                  + [os.path.dirname(f) for f in files])
    usable = [f for f in files if _utf8(f)]
    skipped = [f for f in files if not _utf8(f)]
    if not usable:
        what = "no images" if not skipped else "no image with a UTF-8 name"
        raise UserError(f"--image_path {_shown(path)}: {what} ({', '.join(IMAGE_EXTS)})")
    for f in usable:
        if not cv2.haveImageReader(f):
            raise UserError(f"cannot read image {f} (not an image, or corrupt)")
    return usable, root, skipped


def _read_list(path):
    base = os.path.dirname(os.path.abspath(path))
    files, seen = [], set()
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                p = os.path.normpath(os.path.join(base, parts[0]))
                if not os.path.isfile(p):
                    raise UserError(f"{path}, line {n}: image not found: {p}")
                if p not in seen:  # one image listed twice is segmented once
                    seen.add(p)
                    files.append(p)
    except UnicodeDecodeError:
        raise UserError(f"--image_path {path}: neither an image ({', '.join(IMAGE_EXTS)}) "
                        f"nor a text list of images") from None
    if not files:
        raise UserError(f"--image_path {path}: the list is empty")
    return files


def _utf8(path):
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as lone surrogates
        return False


def _shown(path):
    """``path`` printable on one line (undecodable bytes as \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def output_names(files, root):
    """Output name (relative, no extension) of each input; see the module docstring."""
    rels = [os.path.relpath(f, root) for f in files]
    stems = [os.path.splitext(r)[0] for r in rels]
    clashes = Counter(s.casefold() for s in stems)
    taken, names = set(), []
    for rel, stem in zip(rels, stems):
        want = stem if clashes[stem.casefold()] == 1 else rel
        name, k = want, 1
        while name.casefold() in taken:
            k += 1
            name = f"{want}~{k}"
        taken.add(name.casefold())
        names.append(name)
    return names


def output_paths(files, root, save_dir, overlays=True):
    """[(mask path, overlay path or None)] per input, all inside ``save_dir``; refuses an output
    that would be one of the inputs (e.g. --image_path save_dir/masks), before any is written."""
    save_dir = os.path.normpath(os.path.abspath(save_dir))
    inputs = {os.path.realpath(f): f for f in files}
    ids = {}
    for f in files:
        st = os.stat(f)
        ids[st.st_dev, st.st_ino] = f
    out = []
    for name in output_names(files, root):
        mask = os.path.join(save_dir, "masks", name + ".png")
        over = os.path.join(save_dir, "overlays", name + ".jpg") if overlays else None
        for p in filter(None, (mask, over)):
            if os.path.commonpath([save_dir, os.path.normpath(p)]) != save_dir:
                raise AssertionError(f"output {p} outside {save_dir}")  # not by construction
            real = os.path.realpath(p)
            hit = inputs.get(real)
            if hit is None and os.path.exists(real):
                st = os.stat(real)
                hit = ids.get((st.st_dev, st.st_ino))
            if hit is not None:
                raise UserError(f"--save_dir {save_dir}: the output {p} would overwrite the "
                                f"input image {hit}; choose another --save_dir")
        out.append((mask, over))
    return out


def read_image(path):
    if not os.path.isfile(path):  # before OpenCV, which warns on stderr for a missing file
        raise UserError(f"cannot read image {path} (no such file)")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"cannot read image {path} (not an image, or corrupt)")
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
        raise UserError(f"--save_dir {save_dir} is not writable: "
                        f"{e.strerror or type(e).__name__}") from None


def write_image(path, img, params=()):
    """``cv2.imwrite`` that fails loudly: encode in memory, then ``write_bytes``."""
    ok, data = cv2.imencode(os.path.splitext(path)[1], img, list(params))
    if not ok:
        raise UserError(f"cannot encode {path}")
    write_bytes(path, data.tobytes())


def write_bytes(path, data):
    """Write a temporary file beside ``path`` and rename it over: a full disk or a kill never
    leaves a truncated file under the final name. One error naming the file."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def mask_image(label, num_classes):
    return label.astype(np.uint8 if num_classes <= 256 else np.uint16)


def overlay_colors(num_classes, custom_color=None):
    """The overlay's colours: paddleseg's palette, its start replaced by ``--custom_color``."""
    try:
        return palette.color_map(max(num_classes, 256), custom_color)
    except ValueError as e:
        raise UserError(f"--custom_color: {e}") from None


# ----------------------------------------------------------------------------------------------
# Shape ranges (TensorRT dynamic shapes) and INT8 calibration


def collect_shape_ranges(deploy, images, shape_file, batch_size=1, program="auto"):
    """Run ``images`` through Paddle Inference in shape-collection mode, writing the min/max/opt
    shape of every tensor to ``shape_file`` (what TensorRT dynamic shapes are built from).
    Runs on the CPU; the file is then used by a GPU predictor."""
    # Paddle's own CPU set-up (as this collection always ran): the interpolation marking and
    # memory reuse only change how the graph runs, not its shapes
    opts = PredictorOptions(program=program, engine="onednn", onednn_interp=False,
                            memory_optim=False, collect_shape_range_file=shape_file)
    with create_runner(deploy, "paddle", opts) as runner:
        Segmenter(deploy, runner).predict(images, batch_size)
    if not os.path.isfile(shape_file):  # written when the predictor is released
        raise UserError(f"shape collection did not write {shape_file}")
    return shape_file


def calibrate_int8(deploy, images, opts, batch_size=1):
    """INT8 calibration hook: run representative ``images`` through a TensorRT predictor in
    calibration mode, which writes the calibration table into ``opts.trt_cache_dir``; the
    INT8 engines built afterwards read it. Needs a GPU build with TensorRT."""
    if not opts.trt_cache_dir:
        raise UserError("INT8 calibration needs --trt_cache_dir (where the table is written)")
    calib = opts.replace(trt_calib_mode=True, precision="int8")
    with create_runner(deploy, "paddle", calib) as runner:
        Segmenter(deploy, runner).predict(images, batch_size)


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
    p.add_argument("--save_dir", default="./output",
                   help="where masks/ and overlays/ go: masks/<name>.png, overlays/<name>.jpg, "
                        "<name> the image's path relative to the input folder without its "
                        "extension, or with it when two images would share a name (x.png, "
                        "x.jpg); nothing is written outside it")
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--backend", default="auto", choices=("auto", "paddle", "onnxruntime"),
                   help="auto: Paddle Inference for a Paddle export, onnxruntime for ONNX")
    p.add_argument("--program", default="auto", choices=("auto", "legacy", "pir"),
                   help="which exported program Paddle Inference loads (auto: legacy)")
    p.add_argument("--use_trt", default=False, **b, help="TensorRT (with --device gpu)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: the export's (fp32, or int8 for mobileseg quant's); bf16: an "
                        "FP32 export on oneDNN in bfloat16; fp16/int8 with TensorRT")
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
    p.add_argument("--engine", default="auto", choices=ENGINE_CHOICES,
                   help="Paddle Inference on CPU: auto (the engine the export recorded as "
                        "fastest; oneDNN for older exports), onednn, openvino (its bundled "
                        "OpenVINO), plain (its own kernels)")
    p.add_argument("--enable_mkldnn", default=True, **b,
                   help="PaddleSeg's flag: False is --engine plain")
    p.add_argument("--ir_optim", default=True, **b)
    p.add_argument("--benchmark", default=False, **b, help="print the time per image")
    p.add_argument("--with_argmax", default=True, **b,
                   help="kept for PaddleSeg compatibility: masks are always label maps")
    p.add_argument("--print_detail", default=False, **b)
    p.add_argument("--save_overlay", default=True, **b)
    p.add_argument("--overlay_alpha", type=float, default=1 - palette.OVERLAY_WEIGHT,
                   help="the colours' share of the overlay (paddleseg's: 0.4)")
    p.add_argument("--custom_color", nargs="+", type=int, default=None, metavar="V",
                   help="overlay colours as r g b r g b ... from class 0 on, as PaddleSeg's "
                        "predict (default: paddleseg's palette)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_main("infer", lambda: _run(args))


def _warn(message):
    print(f"mobileseg infer: warning: {message}", file=sys.stderr)


def _run(args):
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {args.batch_size}")
    deploy = DeployConfig(args.config)
    colors = overlay_colors(deploy.num_classes, args.custom_color)
    files, root, skipped = list_images(args.image_path)
    for f in skipped:
        _warn(f"{_shown(f)}: the file name is not valid UTF-8 (OpenCV cannot open it); skipped")
    outputs = output_paths(files, root, args.save_dir, args.save_overlay)
    opts = PredictorOptions(
        device=args.device, engine=args.engine, enable_mkldnn=args.enable_mkldnn,
        cpu_threads=args.cpu_threads,
        ir_optim=args.ir_optim, program=args.program, use_trt=args.use_trt,
        precision=args.precision, min_subgraph_size=args.min_subgraph_size,
        max_batch_size=args.batch_size, trt_cache_dir=args.trt_cache_dir,
        trt_use_static=args.trt_use_static,
        shape_range_file=args.auto_tuned_shape_file if args.use_trt else None)
    backend = resolve_backend(deploy, args.backend)
    if args.use_trt:
        check_device(opts, backend)  # before the slow steps that serve TensorRT
        if args.enable_auto_tune:
            collect_shape_ranges(deploy, [read_image(f) for f in files],
                                 args.auto_tuned_shape_file, args.batch_size, args.program)
        elif not (deploy.dynamic_hw or deploy.input_shape[0] == -1):
            opts.shape_range_file = None  # a fixed-shape export needs no ranges
        if args.precision == "int8" and args.calib_image_path:
            calib_files, _, _ = list_images(args.calib_image_path)
            calibrate_int8(deploy, [read_image(f) for f in calib_files], opts, args.batch_size)
            opts.trt_calib_mode = True
    seg = Segmenter(deploy, create_runner(deploy, backend, opts))
    prepare_output_dir(args.save_dir)
    if args.print_detail:
        print(f"model: {deploy.path} ({deploy.format}), output: {deploy.output_kind}, "
              f"classes: {deploy.num_classes}, device: {args.device}, "
              f"engine: {getattr(seg.runner, 'opts', opts).engine}, TensorRT: {args.use_trt}")
    times, written = [], 0
    for s in range(0, len(files), args.batch_size):
        chunk = files[s:s + args.batch_size]
        images = [read_image(f) for f in chunk]
        t0 = time.perf_counter()
        labels = seg.predict(images, args.batch_size)
        times.append((time.perf_counter() - t0) / len(chunk))
        for f, img, label, (mask_path, overlay_path) in zip(chunk, images, labels,
                                                            outputs[s:s + args.batch_size]):
            write_image(mask_path, mask_image(label, deploy.num_classes))
            written += 1
            if overlay_path:
                write_image(overlay_path, overlay(img, label, colors, 1 - args.overlay_alpha))
            if args.print_detail:
                print(f"{f}: {img.shape[1]}x{img.shape[0]}, classes present: "
                      f"{sorted(np.unique(label).tolist())}")
    seg.runner.close()
    if args.benchmark and times:
        warm = times[1:] or times
        print(f"{len(files)} images, {seg.runner.backend}: {np.median(warm) * 1e3:.1f} ms per "
              f"image (median, pre/post-processing included, first batch excluded)")
    print(f"wrote {written} masks to {os.path.join(args.save_dir, 'masks')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
