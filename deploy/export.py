"""Export a trained MobileSeg to a Paddle Inference model or to ONNX, with a ``deploy.yaml``.

    python -m deploy.export --config configs/mobileseg/mobileseg_mobilenetv2_cityscapes_1024x512_80k.yml \
        --model_path output/best_model/model.pdparams --save_dir output/inference

Flags follow PaddleSeg's ``tools/export.py`` (``--config --model_path --save_dir --input_shape
--output_op``) plus ``--format paddle|onnx``.

What is written (into a temporary folder next to ``save_dir``, renamed into place when complete):

- ``--format paddle``: ``model.pdmodel`` (program, legacy format) and ``model.json`` (the same
  program in Paddle 3's PIR format), sharing one ``model.pdiparams``; ``deploy.yaml``.
  ``deploy.yaml`` points Paddle Inference at ``model.pdmodel``: on Paddle 3.3.1 a PIR program
  that contains an interpolation cannot run with oneDNN (the PIR oneDNN executor does not
  convert the ``double[]`` ``scale`` attribute of ``bilinear_interp``/``nearest_interp``:
  "ConvertPirAttribute2RuntimeAttribute not support ArrayAttribute<DoubleAttribute>"), while
  the same program in the legacy format runs through the oneDNN passes of the analysis
  predictor (deploy/python/infer.py also moves the interpolations that oneDNN computes
  exactly onto it). ``--program pir`` or ``legacy`` writes only one of them.
- ``--format onnx``: ``model.onnx`` (through paddle2onnx) and ``deploy.yaml``.

Deploy-time rewrites of the model (same maths, checked by tests/test_export.py):

- the bias of a convolution followed by BatchNorm is moved into the BatchNorm's running mean
  (BN(conv(x) + b) == BN'(conv(x)) with mean' = mean - b). Paddle 3 traces a conv bias as a
  reshape + add that the inference conv+BN fusion passes do not match, which left those convs,
  their adds and their BatchNorms as separate ops.
- adaptive average poolings to more than one bin (the context module's bins 2 and 4; a bin of
  1 is a global pooling and stays) are exported in a form that is exact for every input size. Paddle: a ``pool3d``
  over a depth of one (``AdaptiveAvgPoolAs3D``), because oneDNN's adaptive ``pool2d`` gives
  wrong numbers once a predictor has run another input size (relative error 1.4 on a bare
  4-bin pooling run at 4x8 then 7x11; 0.05 on MobileNetV2 at 128x256 then 200x328). ONNX: the
  matrix-product form (``MobileContextModule.pool_by_matmul``), because paddle2onnx refuses
  adaptive pooling on dynamic shapes and on static ones writes an AveragePool that is only
  right when the feature size is a multiple of the bin count (0.05 at 200x328). (The
  matrix-product form cannot be traced into a legacy program: Paddle 3.3's matmul, sum and
  logical_and have no legacy-program implementation.)
"""

import argparse
import copy
import os
import shutil
import sys
import tempfile

import yaml

DEPLOY_KEY = "MobileSegDeploy"
DEPLOY_FORMAT_VERSION = 1
OUTPUT_OPS = ("argmax", "softmax", "none")
OUTPUT_KINDS = {"argmax": "label_map", "softmax": "probabilities", "none": "logits"}
PROGRAMS = ("both", "legacy", "pir")
MIN_INPUT_SIZE = 64  # the models are checked from 64x64 up
DEFAULT_ONNX_OPSET = 13

CITYSCAPES_CLASSES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle"]
CITYSCAPES_PALETTE = [
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
    [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
    [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100],
    [0, 80, 100], [0, 0, 230], [119, 11, 32]]
KNOWN_DATASETS = {"Cityscapes": (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE)}


class ExportError(Exception):
    """A user error in the export request (bad path, flag or weights)."""


# ----------------------------------------------------------------------------------------------
# Model


def build_model(config_path, model_path=None):
    """Build the model of a PaddleSeg config and load ``model_path`` into it.

    With ``model_path`` every ``pretrained`` entry of the model config is dropped first (the
    checkpoint replaces those weights, so nothing is downloaded). Returns (model in eval mode,
    paddleseg Config). The work is ``mobileseg_paddle.builder.build_model``; the paths are
    checked here first so a mistyped one fails before paddle is imported."""
    if not os.path.isfile(config_path):
        raise ExportError(f"--config: file not found: {config_path}")
    if model_path is not None and not os.path.exists(model_path):
        raise ExportError(f"--model_path: file not found: {model_path}")
    from mobileseg_paddle.builder import BuildError, build_model as build

    try:
        return build(config_path, model_path)
    except BuildError as e:
        raise ExportError(str(e)) from None


def prepare_for_deploy(model, target="paddle"):
    """A deep copy of ``model`` in eval mode with the deploy-time rewrites for ``target``
    ("paddle" or "onnx") applied (see the module docstring); ``model`` is not modified."""
    import paddle.nn as nn

    model = copy.deepcopy(model)
    model.eval()
    for layer in model.sublayers(include_self=True):
        _fold_conv_bias_into_bn(layer, nn)
        if target == "onnx" and hasattr(layer, "pool_by_matmul"):
            layer.pool_by_matmul = True
        if target == "paddle":
            for name, sub in list(layer._sub_layers.items()):
                if isinstance(sub, nn.AdaptiveAvgPool2D) and _binned(sub):
                    layer._sub_layers[name] = AdaptiveAvgPoolAs3D(sub._output_size)
    return model


def _binned(pool):
    size = pool._output_size
    sizes = list(size) if isinstance(size, (list, tuple)) else [size, size]
    return pool._data_format == "NCHW" and sizes != [1, 1]


def AdaptiveAvgPoolAs3D(output_size):
    """``nn.AdaptiveAvgPool2D(output_size)`` computed as a 3-D adaptive pooling of the input
    with a depth of one: the same numbers, but a ``pool3d`` op, which Paddle Inference runs on
    its own kernel. (oneDNN's adaptive ``pool2d`` goes wrong once a predictor has seen another
    input size; see the module docstring.)"""
    import paddle.nn as nn
    import paddle.nn.functional as F

    sizes = list(output_size) if isinstance(output_size, (list, tuple)) else [output_size] * 2

    class _Pool(nn.Layer):
        def forward(self, x):
            return F.adaptive_avg_pool3d(x.unsqueeze(2), [1] + sizes).squeeze(2)

    return _Pool()


def _fold_conv_bias_into_bn(layer, nn):
    """For a layer holding a Conv2D then a BatchNorm2D as its conv/bn pair (``ConvBNAct``),
    move the conv bias into the BatchNorm running mean. Only layers whose ``forward`` applies
    the two in sequence qualify: ``ConvBNAct`` names them with ``_conv_name``/``_bn_name``."""
    conv_name, bn_name = getattr(layer, "_conv_name", None), getattr(layer, "_bn_name", None)
    if conv_name is None or bn_name is None:
        return
    conv, bn = getattr(layer, conv_name, None), getattr(layer, bn_name, None)
    if not isinstance(conv, nn.Conv2D) or not isinstance(bn, nn.BatchNorm2D):
        return
    if conv.bias is None:
        return
    bn._mean.set_value(bn._mean.numpy() - conv.bias.numpy())
    conv.bias = None


class DeployHead:
    """Factory of the exported network: main logit of the model followed by ``output_op``.

    (N, 3, H, W) float32 -> argmax: (N, H, W) int32 label map; softmax: (N, C, H, W) float32
    probabilities; none: (N, C, H, W) float32 logits."""

    @staticmethod
    def wrap(model, output_op, channels_last_argmax=True):
        import paddle
        import paddle.nn as nn

        class _Deployed(nn.Layer):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, x):
                logit = self.model(x)[0]
                if output_op == "argmax":
                    return _argmax_int32(logit, channels_last_argmax)
                if output_op == "softmax":
                    return paddle.nn.functional.softmax(logit, axis=1)
                return logit

        wrapped = _Deployed(model)
        wrapped.eval()
        return wrapped


def _argmax_int32(x, channels_last):
    """(N, C, H, W) -> (N, H, W) int32 index of the largest channel.

    ``channels_last``: transpose to (N, H, W, C) first and reduce the last axis. Paddle's CPU
    arg_max over axis 1 of a full-size map is slow (37 ms of a 130 ms MobileNetV2 run at
    512x1024); over the contiguous last axis it is 4x faster, and under oneDNN the transpose
    is nearly free because the tensor is already stored channels-last.
    Paddle 3.3's ``paddle.argmax`` has no legacy-program branch ("must be Value, but got
    Variable"), so there the op is appended directly."""
    import paddle
    from paddle.base import core, framework
    from paddle.base.layer_helper import LayerHelper

    axis = 1
    if channels_last:
        x, axis = paddle.transpose(x, [0, 2, 3, 1]), 3
    if paddle.in_dynamic_mode() or framework.in_pir_mode():
        return paddle.argmax(x, axis=axis, dtype="int32")
    helper = LayerHelper("arg_max")
    out = helper.create_variable_for_type_inference("int32")
    helper.append_op(type="arg_max", inputs={"X": x}, outputs={"Out": [out]},
                     attrs={"axis": axis, "keepdims": False, "flatten": False,
                            "dtype": core.VarDesc.VarType.INT32})
    out.stop_gradient = True
    return out


# ----------------------------------------------------------------------------------------------
# Writing programs


def parse_input_shape(values):
    """``--input_shape N C H W`` -> list of 4 ints, -1 (or None) meaning dynamic.
    None -> [-1, 3, -1, -1]."""
    if values is None:
        return [-1, 3, -1, -1]
    if len(values) != 4:
        raise ExportError(f"--input_shape: expected 4 values N C H W, got {len(values)}: "
                          f"{' '.join(str(v) for v in values)}")
    shape = []
    for v in values:
        try:
            v = int(v)
        except (TypeError, ValueError):
            raise ExportError(f"--input_shape: {v!r} is not an integer") from None
        if v == 0 or v < -1:
            raise ExportError(f"--input_shape: sizes must be positive or -1 (dynamic), got {v}")
        shape.append(v)
    if shape[1] != 3:
        raise ExportError(f"--input_shape: the models take 3-channel (RGB) images, got C={shape[1]}")
    for name, v in zip("HW", shape[2:]):
        if v != -1 and v < MIN_INPUT_SIZE:
            raise ExportError(f"--input_shape: {name}={v} is below the smallest supported size "
                              f"{MIN_INPUT_SIZE}")
    return shape


def _input_spec(shape):
    import paddle
    return [paddle.static.InputSpec([None if v == -1 else v for v in shape], "float32", "x")]


def save_paddle_programs(net, out_dir, shape, program="both"):
    """Trace ``net`` and save it as ``model.pdmodel`` (legacy) and/or ``model.json`` (PIR)
    with one ``model.pdiparams``. Returns {"legacy": file, "pir": file} for what was written."""
    import paddle

    if program not in PROGRAMS:
        raise ExportError(f"--program: expected one of {PROGRAMS}, got {program!r}")
    spec = _input_spec(shape)
    written = {}
    if program in ("both", "legacy"):
        with paddle.pir_utils.DygraphOldIrGuard():
            static = paddle.jit.to_static(net, input_spec=spec, full_graph=True)
            paddle.jit.save(static, os.path.join(out_dir, "model"))
        written["legacy"] = "model.pdmodel"
        info = os.path.join(out_dir, "model.pdiparams.info")
        if os.path.exists(info):  # training-only metadata, not read by inference
            os.remove(info)
    if program in ("both", "pir"):
        sub = os.path.join(out_dir, "_pir") if written else out_dir
        with paddle.pir_utils.DygraphPirGuard():
            static = paddle.jit.to_static(net, input_spec=spec, full_graph=True)
            paddle.jit.save(static, os.path.join(sub, "model"))
        if sub != out_dir:
            # both formats store the same parameters in the same order: keep one file
            if not _same_file(os.path.join(sub, "model.pdiparams"),
                              os.path.join(out_dir, "model.pdiparams")):
                raise RuntimeError("the legacy and PIR exports wrote different parameter files")
            os.replace(os.path.join(sub, "model.json"), os.path.join(out_dir, "model.json"))
            shutil.rmtree(sub)
        written["pir"] = "model.json"
    return written


def _same_file(a, b):
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def save_onnx(net, out_dir, shape, opset=DEFAULT_ONNX_OPSET):
    """Trace ``net`` to a PIR program in a scratch folder and convert it with paddle2onnx to
    ``out_dir/model.onnx``. Returns "model.onnx"."""
    import paddle
    import paddle2onnx

    with tempfile.TemporaryDirectory(prefix="p2o-", dir=out_dir) as scratch:
        with paddle.pir_utils.DygraphPirGuard():
            static = paddle.jit.to_static(net, input_spec=_input_spec(shape), full_graph=True)
            paddle.jit.save(static, os.path.join(scratch, "model"))
        # optimize_tool="None": paddle2onnx's default ("polygraphy") switches on polygraphy's
        # automatic pip installs (POLYGRAPHY_AUTOINSTALL_DEPS=1), which can replace packages
        # of the environment (it upgraded numpy to 2.x here); its "onnxoptimizer" option
        # fails on paddle2onnx 2.1.0's own pass list. onnxruntime optimizes the graph itself.
        paddle2onnx.export(os.path.join(scratch, "model.json"),
                           os.path.join(scratch, "model.pdiparams"),
                           os.path.join(out_dir, "model.onnx"), opset_version=opset,
                           auto_upgrade_opset=True, enable_onnx_checker=True,
                           optimize_tool="None")
    if not os.path.isfile(os.path.join(out_dir, "model.onnx")):
        raise RuntimeError("paddle2onnx did not write model.onnx")
    return "model.onnx"


# ----------------------------------------------------------------------------------------------
# deploy.yaml


def deploy_info(model, cfg, shape, output_op, fmt, files, config_path=None):
    """The content of deploy.yaml.

    ``Deploy`` is the block PaddleSeg's own deploy tools read (model, params, transforms,
    input_shape, output_op); ``MobileSegDeploy`` is ours, versioned, and complete enough for
    inference without the training config."""
    import paddle

    import mobileseg_paddle

    transforms = [dict(t) for t in cfg.val_dataset_cfg.get("transforms", [])] or [
        {"type": "Normalize"}]
    normalize = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    for t in transforms:
        if t.get("type") == "Normalize":
            normalize = {"mean": _triple(t.get("mean", [0.5])), "std": _triple(t.get("std", [0.5]))}
            t.update(mean=normalize["mean"], std=normalize["std"])
    num_classes = int(model.num_classes)
    dataset_type = (cfg.val_dataset_cfg or cfg.train_dataset_cfg or {}).get("type")
    names, palette = KNOWN_DATASETS.get(dataset_type, (None, None))
    if names is None or len(names) != num_classes:
        names, palette = [f"class_{i}" for i in range(num_classes)], None
    dynamic_hw = shape[2] == -1 or shape[3] == -1
    if dynamic_hw:
        size_policy = {"mode": "keep", "min_size": MIN_INPUT_SIZE,
                       "note": "images run at their own size"}
    else:
        size_policy = {"mode": "resize", "size": [shape[2], shape[3]],
                       "note": "images are resized to size (H, W); outputs are resized back"}
    out_kind = OUTPUT_KINDS[output_op]
    model_cfg = cfg.dic.get("model", {})
    backbone = model_cfg.get("backbone", {})
    ours = {
        "format_version": DEPLOY_FORMAT_VERSION,
        "exporter": f"mobileseg_paddle {mobileseg_paddle.__version__}",
        "paddle_version": paddle.__version__,
        "format": fmt,
        "files": files,
        "model": {"type": model_cfg.get("type"),
                  "backbone": backbone.get("type") if isinstance(backbone, dict) else None,
                  "config": os.path.basename(config_path) if config_path else None},
        "input": {"name": "x", "shape": list(shape), "dtype": "float32", "layout": "NCHW",
                  "color": "RGB", "size_policy": size_policy},
        "normalize": {"scale": "1/255", **normalize},
        "num_classes": num_classes,
        "class_names": names,
        "output": {"op": output_op, "kind": out_kind,
                   "dtype": "int32" if output_op == "argmax" else "float32",
                   "shape": ["N", "H", "W"] if output_op == "argmax" else ["N", num_classes, "H", "W"]},
    }
    if palette is not None:
        ours["palette"] = palette
    paddleseg_block = {
        "transforms": transforms,
        "input_shape": list(shape),
        "output_op": output_op,
        "output_dtype": ours["output"]["dtype"],
    }
    if fmt == "paddle":
        paddleseg_block["model"] = files.get("legacy") or files.get("pir")
        paddleseg_block["params"] = files["params"]
    else:
        paddleseg_block["model"] = files["onnx"]
    return {"Deploy": paddleseg_block, DEPLOY_KEY: ours}


def _triple(v):
    v = [float(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
    return v * 3 if len(v) == 1 else v


# ----------------------------------------------------------------------------------------------
# Export


def export(config, save_dir, model_path=None, input_shape=None, output_op="argmax",
           fmt="paddle", program="both", opset=DEFAULT_ONNX_OPSET, model=None):
    """Export and return the path of the written deploy.yaml.

    ``model`` (optional) is an already built and loaded model to export instead of building
    one from ``config`` and ``model_path`` (``config`` still provides transforms and names)."""
    if output_op not in OUTPUT_OPS:
        raise ExportError(f"--output_op: expected one of {OUTPUT_OPS}, got {output_op!r}")
    if fmt not in ("paddle", "onnx"):
        raise ExportError(f"--format: expected paddle or onnx, got {fmt!r}")
    shape = parse_input_shape(input_shape)
    save_dir = os.path.abspath(save_dir)
    _check_save_dir(save_dir)
    if model is None:
        model, cfg = build_model(config, model_path)
    else:
        _, cfg = _config_only(config)
    net = DeployHead.wrap(prepare_for_deploy(model, target=fmt), output_op,
                          channels_last_argmax=(fmt == "paddle"))

    parent = os.path.dirname(save_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(save_dir)}.partial-", dir=parent)
    try:
        if fmt == "paddle":
            files = save_paddle_programs(net, tmp, shape, program)
            files["params"] = "model.pdiparams"
        else:
            files = {"onnx": save_onnx(net, tmp, shape, opset)}
        info = deploy_info(model, cfg, shape, output_op, fmt, files, config)
        with open(os.path.join(tmp, "deploy.yaml"), "w", encoding="utf-8") as f:
            yaml.dump(info, f, Dumper=_DeployDumper, sort_keys=False, allow_unicode=True)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it private
        _move_into_place(tmp, save_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return os.path.join(save_dir, "deploy.yaml")


class _DeployDumper(yaml.SafeDumper):
    """YAML without anchors/aliases, short lists of numbers or strings on one line."""

    def ignore_aliases(self, data):
        return True


def _represent_list(dumper, data):
    flow = all(isinstance(v, (int, float, str)) for v in data) and len(data) <= 4 or all(
        isinstance(v, (int, float)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_DeployDumper.add_representer(list, _represent_list)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _config_only(config_path):
    if not os.path.isfile(config_path):
        raise ExportError(f"--config: file not found: {config_path}")
    import mobileseg_paddle  # noqa: F401
    from paddleseg.cvlibs import Config
    return None, Config(config_path)


def _check_save_dir(save_dir):
    """An existing save_dir is replaced only when it holds a previous export (a deploy.yaml),
    so a mistyped path never wipes unrelated files."""
    if os.path.exists(save_dir):
        if not os.path.isdir(save_dir):
            raise ExportError(f"--save_dir {save_dir} exists and is not a folder")
        content = os.listdir(save_dir)
        if content and "deploy.yaml" not in content:
            raise ExportError(f"--save_dir {save_dir} is not empty and holds no previous export "
                              f"(no deploy.yaml); choose a new or empty folder")
    parent = os.path.dirname(save_dir) or "."
    probe = parent
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ExportError(f"--save_dir {save_dir}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        raise ExportError(f"--save_dir {save_dir}: folder {probe} is not writable")


def _move_into_place(tmp, save_dir):
    """Replace ``save_dir`` by the completed ``tmp`` folder (renames on one file system)."""
    old = None
    if os.path.exists(save_dir):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(save_dir)}.old-",
                               dir=os.path.dirname(save_dir))
        os.rmdir(old)
        os.rename(save_dir, old)
    try:
        os.rename(tmp, save_dir)
    except BaseException:
        if old is not None:
            os.rename(old, save_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Command line


def build_parser():
    p = argparse.ArgumentParser(
        prog="mobileseg export",
        description="Export a MobileSeg model to Paddle Inference or ONNX, with a deploy.yaml.")
    p.add_argument("--config", required=True, help="the training config (.yml)")
    p.add_argument("--model_path", default=None,
                   help="trained weights (model.pdparams); without it the config's pretrained "
                        "weights (or random ones) are exported")
    p.add_argument("--save_dir", default="./output/inference_model",
                   help="folder to write (replaced if it holds a previous export)")
    p.add_argument("--input_shape", nargs="+", default=None, metavar="DIM",
                   help="input shape N C H W; -1 for a dynamic dimension (default: -1 3 -1 -1)")
    p.add_argument("--output_op", default="argmax", choices=OUTPUT_OPS,
                   help="argmax: int32 label map; softmax: probabilities; none: logits")
    p.add_argument("--format", default="paddle", choices=("paddle", "onnx"))
    p.add_argument("--program", default="both", choices=PROGRAMS,
                   help="paddle format only: legacy model.pdmodel, PIR model.json, or both")
    p.add_argument("--opset", type=int, default=DEFAULT_ONNX_OPSET, help="ONNX opset version")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        path = export(args.config, args.save_dir, model_path=args.model_path,
                      input_shape=args.input_shape, output_op=args.output_op, fmt=args.format,
                      program=args.program, opset=args.opset)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported to {os.path.dirname(path)} (deploy.yaml, {args.format})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
