"""INT8 post-training quantization: ``mobileseg quant`` writes an export like ``mobileseg export``
(same folder layout, ``deploy.yaml`` recording the precision and the calibration), which
``mobileseg infer`` and ``mobileseg bench`` run unchanged.

    mobileseg quant --config C --model_path W --save_dir D [--num_calib 32] [--algo avg]
                    [--format paddle|onnx] [--engine auto|onednn|openvino]

Calibration images: ``--num_calib`` images spread evenly over the config's ``train_dataset``,
read through the config's *validation* transforms (what inference sees), one image per batch
at its own size. Weights are quantized per output channel (abs-max), activations per tensor
with the scales ``--algo`` finds on the calibration images. ``--model_path`` may be a checkpoint
of quantization-aware training (``mobileseg train --quant``, see ``mobileseg_paddle.qat``): its
float weights are quantized the same way, its convolutions' inputs with the scales training
learned (``--qat_scales trained``; ``calibrated``: found again like the rest), and deploy.yaml
records the method.

What each runtime accepts (Paddle 3.3.1, paddle2onnx 2.1.0, Paddle Lite 2.13):

- ``--format paddle``: Paddle's ``PostTrainingQuantization`` on the legacy program, written in
  the ``quantize_linear``/``dequantize_linear`` form with int8 weights (``onnx_format=True``).
  Paddle Inference's oneDNN INT8 passes (``enable_mkldnn_int8``) turn it into int8 kernels; the
  same form is what Lite's opt folds into its ARM int8 kernels (``mobileseg lite --precision
  int8``). The older ``fake_quantize_*`` form runs on oneDNN too, but Lite needs the other one.
  Paddle Inference's OpenVINO engine runs the same form (its low-precision transformations make
  the convolutions int8) on the export's OpenVINO program (``model.openvino.pdmodel``, see
  export.py), quantized on its own with its own ``model.openvino.pdiparams`` (its variables'
  names differ), the per-tensor scales stored with shape [1]: Paddle 3.3.1 saves them 0-D,
  which OpenVINO's frontend refuses ("dims of scale should not be greater than 2").
  ``--engine auto`` writes both programs and records the engine measured faster.
- ``--format onnx``: paddle2onnx 2.1.0 refuses either form ("Only support e4m3 or e5m2 now": it
  reads Paddle's float ``dequantize_linear`` input as FP8), so the ONNX export is quantized by
  onnxruntime's own ``quantize_static`` (QDQ, int8 weights per channel, uint8 activations) on the
  FP32 ONNX export, calibrated on the same images. ``--algo`` maps to its calibration methods
  (``ONNX_METHODS``).
"""

import argparse
import contextlib
import copy
import io
import os
import sys
import tempfile
import time

import numpy as np

from mobileseg_paddle.errors import UserError, one_line, run_main

# Paddle's names for the activation-scale searches (``PostTrainingQuantization(algo=...)``):
# avg: the mean of the per-image abs-max (the default: on the membrane model it kept mIoU and
# was the fastest); abs_max: the overall abs-max; hist: a percentile of the histogram; KL:
# the KL-divergence threshold; mse: the scale of least quantization error
ALGOS = ("avg", "abs_max", "hist", "KL", "mse")
DEFAULT_ALGO = "avg"
# onnxruntime's calibration for each algo (None: it has no counterpart)
ONNX_METHODS = {"avg": ("MinMax", {"CalibMovingAverage": True}), "abs_max": ("MinMax", {}),
                "hist": ("Percentile", {}), "KL": ("Entropy", {}), "mse": None}
DEFAULT_NUM_CALIB = 32
MIN_NUM_CALIB = 4  # fewer images give scales of a handful of pixels' extremes
# the ops whose weights and inputs become int8 (the rest stays float32 between them)
QUANTIZABLE_OPS = ("conv2d", "depthwise_conv2d", "mul", "matmul", "matmul_v2")
WEIGHT_QUANTIZE = "channel_wise_abs_max"
QUANT_OPS = ("quantize_linear", "dequantize_linear")
CONV_OPS = ("conv2d", "depthwise_conv2d")
QAT_SCALES = ("trained", "calibrated")


# ----------------------------------------------------------------------------------------------
# Calibration images


def check_calibration(num_calib, algo, fmt="paddle"):
    """Refuse a calibration the command cannot run, before any slow work."""
    if algo not in ALGOS:
        raise UserError(f"--algo: expected one of {', '.join(ALGOS)}, got {algo!r}")
    if fmt == "onnx" and ONNX_METHODS[algo] is None:
        raise UserError(f"--algo {algo}: onnxruntime's quantizer has no such calibration; "
                        f"use one of {', '.join(a for a in ALGOS if ONNX_METHODS[a])}")
    if not isinstance(num_calib, int) or num_calib < MIN_NUM_CALIB:
        raise UserError(f"--num_calib {num_calib}: expected at least {MIN_NUM_CALIB} "
                        f"calibration images")


def check_qat_scales(qat_scales):
    if qat_scales not in QAT_SCALES:
        raise UserError(f"--qat_scales: expected one of {', '.join(QAT_SCALES)}, got "
                        f"{qat_scales!r}")


def calibration_images(cfg, num_calib, config_name="--config"):
    """``num_calib`` (1, 3, H, W) float32 arrays: images spread evenly over ``cfg``'s
    ``train_dataset`` (a paddleseg ``Config``), through its ``val_dataset`` transforms."""
    from paddleseg.cvlibs import SegBuilder

    from mobileseg_paddle.checks import CheckedDataset, check_samples

    train = cfg.dic.get("train_dataset")
    if not isinstance(train, dict) or not train:
        raise UserError(f"{config_name}: no train_dataset: the calibration images are taken "
                        f"from it (add one, as for training)")
    val = cfg.dic.get("val_dataset")
    transforms = (val or {}).get("transforms") if isinstance(val, dict) else None
    dic = copy.deepcopy(train)
    dic["transforms"] = copy.deepcopy(transforms) or [{"type": "Normalize"}]
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # paddleseg prints the component
            dataset = SegBuilder(cfg).build_component(dic)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{config_name}: train_dataset: {one_line(e)}") from None
    check_samples(dataset, "train_dataset")
    if len(dataset) < num_calib:
        raise UserError(f"--num_calib {num_calib}: the train_dataset of {config_name} has only "
                        f"{len(dataset)} images; pass --num_calib {len(dataset)} or fewer "
                        f"(at least {MIN_NUM_CALIB})")
    dataset = CheckedDataset(dataset, "train_dataset")
    picks = np.unique(np.linspace(0, len(dataset) - 1, num_calib).round().astype(int))
    return [np.ascontiguousarray(np.asarray(dataset[int(i)]["img"], np.float32)[None])
            for i in picks]


def calibration_info(num_images, algo, source="train_dataset", shapes=None):
    """The ``precision.calibration`` block of deploy.yaml."""
    info = {"images": int(num_images), "source": source,
            "transforms": "val_dataset" if source == "train_dataset" else "none",
            "activations": algo, "weights": WEIGHT_QUANTIZE}
    if shapes:
        info["sizes"] = sorted({f"{s[2]}x{s[3]}" for s in shapes})[:8]
    return info


# ----------------------------------------------------------------------------------------------
# Paddle programs


@contextlib.contextmanager
def _legacy_static():
    """Paddle's legacy static mode (what ``PostTrainingQuantization`` runs in), for the
    duration; dygraph and PIR as they were afterwards."""
    import paddle

    with paddle.pir_utils.OldIrGuard():
        paddle.enable_static()
        try:
            yield
        finally:
            paddle.disable_static()


@contextlib.contextmanager
def _linear_time_graph_edits():
    """Paddle's graph edits during post-training quantization, made in linear instead of
    quadratic time, for the duration; the quantized program is the same (its op order may
    differ, as it does from run to run).

    - ``IrGraph.link_to``/``update_input_link``/``update_output_link`` without their asserts:
      each converts the graph's whole node set to Python to test that the nodes belong to it.
    - ``IrGraph.all_persistable_nodes`` inside ``AddQuantDequantForInferencePass.apply`` (the
      last pass, writing the quantize_linear/dequantize_linear pairs): it looks two scale nodes
      up by name in a fresh set of all persistable nodes for every activation it quantizes;
      there the set is built once and kept up to date (the pass adds persistable nodes through
      ``create_persistable_node`` only, and removes ops through ``safe_remove_nodes``, which
      drops the set).
    The time saved on a large graph (Lite-HRNet-18) is in the README's INT8 section."""
    from paddle.base.framework import IrGraph
    from paddle.static.quantization.quantization_pass import AddQuantDequantForInferencePass

    kept = {}  # id(IrGraph.graph) -> its persistable IrVarNodes, while the pass runs on it

    def link_to(self, node_in, node_out):
        node_in.append_output(node_out)
        node_out.append_input(node_in)

    def update_input_link(self, old_input_node, new_input_node, op_node):
        old_input_node.remove_output(op_node)
        op_node.remove_input(old_input_node)
        new_input_node.append_output(op_node)
        op_node.append_input(new_input_node)
        op_node.rename_input(old_input_node.name(), new_input_node.name())

    def update_output_link(self, old_output_node, new_output_node, op_node):
        old_output_node.remove_input(op_node)
        op_node.remove_output(old_output_node)
        new_output_node.append_input(op_node)
        op_node.append_output(new_output_node)
        op_node.rename_output(old_output_node.name(), new_output_node.name())

    def all_persistable_nodes(self):
        key = id(self.graph)
        if key not in kept:
            return saved["all_persistable_nodes"](self)
        if kept[key] is None:
            kept[key] = saved["all_persistable_nodes"](self)
        return set(kept[key])

    def create_persistable_node(self, *args, **kwargs):
        node = saved["create_persistable_node"](self, *args, **kwargs)
        if kept.get(id(self.graph)) is not None:
            kept[id(self.graph)].add(node)
        return node

    def safe_remove_nodes(self, remove_nodes):
        if id(self.graph) in kept:
            kept[id(self.graph)] = None
        return saved["safe_remove_nodes"](self, remove_nodes)

    def pass_apply(self, graph):
        kept[id(graph.graph)] = None
        try:
            return saved["apply"](self, graph)
        finally:
            kept.pop(id(graph.graph), None)

    patches = [(IrGraph, fn.__name__, fn) for fn in (
        link_to, update_input_link, update_output_link, all_persistable_nodes,
        create_persistable_node, safe_remove_nodes)] + [
        (AddQuantDequantForInferencePass, "apply", pass_apply)]
    saved = {name: cls.__dict__[name] for cls, name, _ in patches}
    for cls, name, fn in patches:
        setattr(cls, name, fn)
    try:
        yield
    finally:
        for cls, name, _ in patches:
            setattr(cls, name, saved[name])


def quantize_program(src_dir, dst_dir, batches, algo=DEFAULT_ALGO, model_filename="model.pdmodel",
                     params_filename="model.pdiparams", input_name="x", vector_scales=False,
                     input_scales=None):
    """Quantize the legacy program ``src_dir/model_filename`` (with ``params_filename``) on
    ``batches`` (float32 NCHW arrays) and write it to ``dst_dir`` as ``model_filename`` with
    the parameters beside it under the program's name (``model.pdmodel`` -> ``model.pdiparams``,
    ``model.openvino.pdmodel`` -> ``model.openvino.pdiparams``), in the
    ``quantize_linear``/``dequantize_linear`` form with int8 weights. ``vector_scales``: the
    per-tensor scales stored with shape [1] (``_scales_as_vectors``), for OpenVINO.
    ``input_scales`` ({``qat.weight_digest``: scale}, quantization-aware training's): the input
    scale of each convolution with one of those weights, in place of the calibrated one. Prints
    Paddle's progress bars (one per stage, batch by batch)."""
    import paddle
    from paddle.static.quantization import PostTrainingQuantization

    if not batches:
        raise UserError("no calibration images")
    if program_is_quantized(os.path.join(src_dir, model_filename)):
        raise UserError(f"{os.path.join(src_dir, model_filename)}: already quantized")
    with _legacy_static(), _linear_time_graph_edits():
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            exe = paddle.static.Executor(paddle.CPUPlace())
            ptq = PostTrainingQuantization(
                executor=exe, scope=scope, model_dir=src_dir, model_filename=model_filename,
                params_filename=params_filename,
                data_loader=lambda: ({input_name: b} for b in batches),
                batch_nums=len(batches), algo=algo, quantizable_op_type=list(QUANTIZABLE_OPS),
                weight_quantize_type=WEIGHT_QUANTIZE, onnx_format=True)
            if input_scales:
                _with_trained_scales(ptq, input_scales)
            ptq.quantize()
            ptq._fetch_list = _float_tail(ptq._program, ptq._fetch_list)
            if vector_scales:
                _scales_as_vectors(scope)
            ptq.save_quantized_model(dst_dir, model_filename=model_filename,
                                     params_filename=params_filename)
    return dst_dir


def _with_trained_scales(ptq, scales):
    """Have ``ptq`` (a ``PostTrainingQuantization``) write ``scales`` (see ``quantize_program``)
    as the thresholds of its convolutions' inputs: set between its calibration and the program
    update that stores the thresholds (an input read by several convolutions takes the largest,
    so none clips)."""
    from mobileseg_paddle.qat import weight_digest

    update = ptq._update_program

    def update_with_trained_scales():
        thresholds = (ptq._quantized_var_threshold if ptq._algo in ("KL", "hist")
                      else ptq._quantized_threshold)
        convs = [op for op in ptq._program.global_block().ops if op.type in CONV_OPS]
        trained = {}
        for op in convs:
            weight = np.array(ptq._scope.find_var(op.input("Filter")[0]).get_tensor())
            scale = scales.get(weight_digest(weight))
            x = op.input("Input")[0]
            if scale is not None and x in thresholds:
                trained[x] = max(trained.get(x, 0.0), scale)
        thresholds.update(trained)
        found = sum(op.input("Input")[0] in trained for op in convs)
        print(f"input scales of {found} of {len(convs)} convolutions from quantization-aware "
              f"training", flush=True)
        update()

    ptq._update_program = update_with_trained_scales


def _float_tail(program, fetch_list):
    """Remove from ``program`` the quantize/dequantize pairs on activations that reach no
    quantized op (one of ``QUANTIZABLE_OPS`` with weights) downstream; returns ``fetch_list``
    with the same variables under their float names.

    Paddle's calibration writes a pair on the output of every op it observes, the logits
    included (the classifier conv's output, then the upsampled logits): rounded to 8 bits and
    clipped to their calibrated range right before the argmax, classes could tie or saturate.
    No int8 kernel reads these tensors, so the labels come from float logits, as in FP32. The
    orphaned scales are pruned on saving."""
    block = program.global_block()
    ops = list(block.ops)
    # a quantized op is one of QUANTIZABLE_OPS with weights (a product of two activations is
    # left in float)
    weights = {v.name for v in program.list_vars() if v.persistable}
    for op in ops:  # a weight's own quantize/dequantize pair
        if op.type in QUANT_OPS and op.input("X")[0] in weights:
            weights.add(op.output("Y")[0])
    feeds_int8 = set()  # variables from which a quantized op is reachable
    for op in reversed(ops):
        inputs = {v for name in op.input_names for v in op.input(name)}
        outputs = {v for name in op.output_names for v in op.output(name)}
        if (op.type in QUANTIZABLE_OPS and inputs & weights) or outputs & feeds_int8:
            feeds_int8.update(inputs)
    source = {}  # quantize_linear's Y -> its float X (activations only: weights are int8)
    for op in ops:
        if op.type == "quantize_linear" and not block.var(op.input("X")[0]).persistable:
            source[op.output("Y")[0]] = op.input("X")[0]
    float_of = {}  # a dequantize_linear's Y reaching no quantized op -> the float variable
    readers = {}  # quantize_linear's Y -> its dequantize_linear ops' Ys
    for op in ops:
        if op.type == "dequantize_linear" and op.input("X")[0] in source:
            readers.setdefault(op.input("X")[0], []).append(op.output("Y")[0])
            if op.output("Y")[0] not in feeds_int8:
                float_of[op.output("Y")[0]] = source[op.input("X")[0]]
    dropped = set(float_of) | {q for q, ys in readers.items() if all(y in float_of for y in ys)}
    for i in reversed(range(len(ops))):
        op = ops[i]
        if op.type in QUANT_OPS and op.output("Y")[0] in dropped:
            block._remove_op(i)
            continue
        for name in op.input_names:
            for v in op.input(name):
                if v in float_of:
                    op._rename_input(v, float_of[v])
    return [block.var(float_of.get(v.name, v.name)) for v in fetch_list]


def _scales_as_vectors(scope):
    """Store the 0-D tensors of ``scope`` (the per-tensor activation scales and zero points of
    Paddle 3.3.1's quantization; the program declares them [1]) with shape [1]. OpenVINO's
    Paddle frontend refuses a 0-D scale ("dims of scale should not be greater than 2"); oneDNN
    and Lite read either."""
    import paddle

    for name in scope.local_var_names():
        var = scope.find_var(name)
        try:
            tensor = var.get_tensor()
        except Exception:  # not a tensor (feed/fetch lists, readers)
            continue
        if not tensor._is_initialized():
            continue
        value = np.array(tensor)
        if value.ndim == 0:
            tensor.set(value.reshape(1), paddle.CPUPlace())


def program_is_quantized(path):
    """True when the legacy program file ``path`` holds quantization ops (either form)."""
    from paddle.base import core

    with open(path, "rb") as f:
        desc = core.ProgramDesc(f.read())
    for b in range(desc.num_blocks()):
        block = desc.block(b)
        for i in range(block.op_size()):
            kind = block.op(i).type()
            if kind in QUANT_OPS or kind.startswith(("fake_quantize", "fake_channel_wise",
                                                     "fake_dequantize")):
                return True
    return False


# ----------------------------------------------------------------------------------------------
# ONNX


def quantize_onnx(src, dst, batches, algo=DEFAULT_ALGO, input_name="x"):
    """onnxruntime's static QDQ quantization of the FP32 ONNX model ``src`` into ``dst``:
    int8 weights per channel, uint8 activations calibrated on ``batches``."""
    from onnxruntime import quantization as q

    method, extra = ONNX_METHODS[algo]

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {input_name: b}

    with tempfile.TemporaryDirectory(prefix="ort-calib-", dir=os.path.dirname(dst)) as scratch:
        # onnxruntime's recommended pre-processing: its basic graph optimizations turn
        # paddle2onnx's Constant weights into initializers (only those are quantized per
        # channel, as weights) and fold each BatchNorm into its conv
        pre = os.path.join(scratch, "pre.onnx")
        q.quant_pre_process(src, pre, skip_symbolic_shape=True)
        # uint8 activations with int8 weights: the pair onnxruntime's x86 int8 kernels run
        # fastest (int8 activations were slower than float32 here, uint8 1.4x faster)
        q.quantize_static(pre, dst, Reader(), quant_format=q.QuantFormat.QDQ,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          per_channel=True, calibrate_method=getattr(q.CalibrationMethod, method),
                          op_types_to_quantize=["Conv", "MatMul", "Gemm"], extra_options=extra,
                          calibration_providers=["CPUExecutionProvider"])
    return dst


# ----------------------------------------------------------------------------------------------
# Accuracy


def evaluate(runners, cfg, config_name="--config", log=print):
    """mIoU of each runner ({name: runner} of exports with an argmax or logits output) on
    ``cfg``'s ``val_dataset`` (read through its transforms, as ``mobileseg val``), with
    paddleseg's metric, and the share of pixels whose label equals the first runner's.
    Returns {name: {"miou", "agreement"}} and the number of images."""
    import paddle
    from paddleseg.cvlibs import SegBuilder
    from paddleseg.utils import metrics

    from mobileseg_paddle import compat
    from mobileseg_paddle.checks import CheckedDataset, check_samples

    compat.apply()  # paddleseg 2.8's metric on Paddle 3 (idempotent)
    if not cfg.dic.get("val_dataset"):
        raise UserError(f"{config_name}: no val_dataset to evaluate on")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            dataset = SegBuilder(cfg).val_dataset
    except Exception as e:
        raise UserError(f"{config_name}: val_dataset: {one_line(e)}") from None
    check_samples(dataset, "val_dataset")
    dataset = CheckedDataset(dataset, "val_dataset")
    names = list(runners)
    areas = {n: [0, 0, 0] for n in names}
    same = {n: 0 for n in names}
    pixels = 0
    for i in range(len(dataset)):
        data = dataset[i]
        x = np.ascontiguousarray(np.asarray(data["img"], np.float32)[None])
        label = np.asarray(data["label"]).astype("int64").reshape(1, *x.shape[2:])
        first = None
        for n in names:
            out = np.asarray(runners[n](x))
            pred = out.argmax(1) if out.ndim == 4 else out.reshape(label.shape)
            pred = pred.astype("int64")
            first = pred if first is None else first
            same[n] += int((pred == first).sum())
            area = metrics.calculate_area(paddle.to_tensor(pred), paddle.to_tensor(label),
                                          dataset.num_classes, dataset.ignore_index)
            areas[n] = [a + b for a, b in zip(areas[n], area)]
        pixels += label.size
        log(f"  evaluated {i + 1}/{len(dataset)} images")
    result = {}
    for n in names:
        _, miou = metrics.mean_iou(*areas[n])
        result[n] = {"miou": float(miou), "agreement": same[n] / max(pixels, 1)}
    return result, len(dataset)


# ----------------------------------------------------------------------------------------------
# Command line


def quantize(config, save_dir, model_path=None, num_calib=DEFAULT_NUM_CALIB, algo=DEFAULT_ALGO,
             fmt="paddle", input_shape=None, output_op="argmax", opset=None, model=None,
             batches=None, engine="auto", tune_shape=None, tune_threads=0, qat_scales="trained"):
    """Write an INT8 export of ``config``'s model into ``save_dir``; returns its deploy.yaml.
    ``batches`` (optional) replaces the calibration images of the config (the benchmark passes
    inputs of its own). ``engine`` (Paddle format): auto quantizes a program for oneDNN (and
    Lite) and one for OpenVINO and records the faster, as ``mobileseg export --engine auto``
    (``tune_shape``/``tune_threads`` as ``export``'s); openvino writes both and records
    OpenVINO; onednn writes and records oneDNN's only. ``qat_scales`` (``QAT_SCALES``): for a
    checkpoint of quantization-aware training, the convolutions' input scales it learned
    (trained; ``--format onnx`` calibrates all the same) or calibrated ones."""
    from mobileseg_paddle.config import load_config
    from mobileseg_paddle.deploy import export as ex

    check_calibration(num_calib, algo, fmt)
    check_qat_scales(qat_scales)
    if model_path is not None:
        _refuse_quantized_weights(model_path)
    if batches is None:
        cfg = load_config(config)
        t0 = time.time()
        batches = calibration_images(cfg, num_calib, f"--config {config}")
        print(f"calibration: {len(batches)} images of the train_dataset through the val "
              f"transforms ({time.time() - t0:.1f} s)", flush=True)
        info = calibration_info(len(batches), algo, shapes=[b.shape for b in batches])
    else:
        info = calibration_info(len(batches), algo, source="given", shapes=[b.shape for b in batches])
    kwargs = {} if opset is None else {"opset": opset}
    aware, scales = trained_input_scales(model_path, qat_scales if fmt == "paddle" else
                                         "calibrated", info, algo,
                                         log=lambda m: print(m, flush=True))
    method = "quantization-aware training" if aware else "post-training"
    return ex.export(config, save_dir, model_path=model_path, input_shape=input_shape,
                     output_op=output_op, fmt=fmt, program="legacy", model=model,
                     engine=engine, tune_shape=tune_shape, tune_threads=tune_threads,
                     quant=ex.Quantization(batches, algo, info, method, scales), **kwargs)


def trained_input_scales(model_path, qat_scales, info, algo, log=print):
    """(whether ``model_path`` is a checkpoint of quantization-aware training, the input scales
    of its convolutions it learned or None): None for other weights or ``qat_scales``
    calibrated. Records trained scales in ``info`` (the calibration block) and says which."""
    if model_path is None:
        return False, None
    state = _quantization_aware(model_path)
    if state is None:
        return False, None
    scales = None
    if qat_scales == "trained":
        from mobileseg_paddle.qat import input_scales
        try:
            scales = input_scales(state)
        except UserError as e:
            raise UserError(f"--model_path {model_path}: {e}") from None
        info["activations"] = f"trained ({algo} where training learned none)"
    log(f"{model_path}: weights of quantization-aware training; the convolutions' input "
        f"scales {'as trained' if scales else 'calibrated again'}")
    return True, scales


def _quantization_aware(model_path):
    """The state of ``model_path`` if it is a checkpoint of quantization-aware training."""
    from mobileseg_paddle.checkpoint import load_state, resolve_weights
    from mobileseg_paddle.qat import has_quanters

    try:
        state = load_state(resolve_weights(model_path))
    except UserError as e:
        raise UserError(f"--model_path: {e}") from None
    return state if isinstance(state, dict) and has_quanters(state) else None


def _refuse_quantized_weights(model_path):
    """An INT8 export's parameters (or its folder) given as the weights to quantize."""
    from mobileseg_paddle.deploy.deploy_yaml import FILENAME, DeployConfig, is_our_export

    folder = model_path if os.path.isdir(model_path) else os.path.dirname(model_path)
    if os.path.isfile(os.path.join(folder, FILENAME)) and is_our_export(folder):
        dep = DeployConfig(folder)
        what = "an INT8 export, already quantized" if dep.precision == "int8" else "an export"
        raise UserError(f"--model_path {model_path}: {what}; quantize the trained weights "
                        f"(model.pdparams of training) instead")


def build_parser():
    from mobileseg_paddle.deploy.deploy_yaml import OUTPUT_OPS
    from mobileseg_paddle.deploy.runners import INT8_ENGINES

    p = argparse.ArgumentParser(
        prog="mobileseg quant",
        description="INT8 post-training quantization of a trained MobileSeg into an export "
                    "(as mobileseg export writes) that mobileseg infer runs.")
    p.add_argument("--config", required=True, help="the training config (.yml)")
    p.add_argument("--model_path", default=None, help="trained weights (model.pdparams)")
    p.add_argument("--save_dir", default="./output/inference_model_int8",
                   help="folder to write (replaced if it holds a previous export)")
    p.add_argument("--num_calib", type=int, default=DEFAULT_NUM_CALIB,
                   help=f"calibration images taken from the train_dataset (default "
                        f"{DEFAULT_NUM_CALIB}, at least {MIN_NUM_CALIB})")
    p.add_argument("--algo", default=DEFAULT_ALGO, choices=ALGOS,
                   help="how activation scales are found on the calibration images")
    p.add_argument("--qat_scales", default="trained", choices=QAT_SCALES,
                   help="a checkpoint of mobileseg train --quant: its convolutions' input scales "
                        "as training learned them, or calibrated like the rest (paddle format; "
                        "onnx calibrates all)")
    p.add_argument("--format", default="paddle", choices=("paddle", "onnx"))
    p.add_argument("--input_shape", nargs="+", default=None, metavar="DIM",
                   help="input shape N C H W; -1 for a dynamic dimension (default: -1 3 -1 -1)")
    p.add_argument("--output_op", default="argmax", choices=OUTPUT_OPS)
    p.add_argument("--engine", default="auto", choices=("auto",) + INT8_ENGINES,
                   help="paddle format: the CPU engine the INT8 export runs on by default; auto: "
                        "the faster measured; onednn: no OpenVINO program written")
    p.add_argument("--eval", action="store_true",
                   help="then compare the INT8 export with the FP32 model on the val_dataset: "
                        "mIoU of each and their pixel agreement")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)

    def run():
        path = quantize(args.config, args.save_dir, model_path=args.model_path,
                        num_calib=args.num_calib, algo=args.algo, fmt=args.format,
                        input_shape=args.input_shape, output_op=args.output_op,
                        engine=args.engine, qat_scales=args.qat_scales)
        print(f"quantized to {os.path.dirname(path)} (deploy.yaml, {args.format}, int8)")
        if args.eval:
            report_accuracy(args.config, args.model_path, os.path.dirname(path), args.format)

    return run_main("quant", run)


def report_accuracy(config, model_path, int8_dir, fmt="paddle"):
    """Print the val mIoU of the FP32 model (its export of the same format, in a scratch
    folder) and of the INT8 export in ``int8_dir``, and their pixel agreement."""
    from mobileseg_paddle.config import load_config
    from mobileseg_paddle.deploy import export as ex
    from mobileseg_paddle.deploy.deploy_yaml import DeployConfig
    from mobileseg_paddle.deploy.runners import PredictorOptions, create_runner

    cfg = load_config(config)
    int8 = DeployConfig(int8_dir)
    with tempfile.TemporaryDirectory(prefix="fp32-", dir=os.path.dirname(int8.dir)) as scratch:
        fp32_dir = os.path.join(scratch, "fp32")
        ex.export(config, fp32_dir, model_path=model_path, input_shape=int8.input_shape,
                  output_op=int8.output_op, fmt=fmt, program="legacy",
                  engine="onednn" if fmt == "paddle" else "auto")
        runners = {"fp32": create_runner(DeployConfig(fp32_dir), "auto", PredictorOptions()),
                   "int8": create_runner(int8, "auto", PredictorOptions())}
        try:
            result, n = evaluate(runners, cfg, f"--config {config}",
                                 log=lambda m: print(m, flush=True))
        finally:
            for r in runners.values():
                r.close()
    fp, q = result["fp32"], result["int8"]
    print(f"val_dataset ({n} images): mIoU fp32 {fp['miou']:.4f}, int8 {q['miou']:.4f} "
          f"({(q['miou'] - fp['miou']) * 100:+.2f} points); pixel agreement "
          f"{q['agreement'] * 100:.2f}%")
    return result


if __name__ == "__main__":
    sys.exit(main())
