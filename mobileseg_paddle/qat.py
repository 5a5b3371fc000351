"""Quantization-aware fine-tuning (``mobileseg train --quant``): every ``nn.Conv2D`` of the model
(depthwise ones included) becomes Paddle's ``QuantizedConv2D``, which runs the convolution on
fake-quantized inputs and weights, the rounding error the INT8 export will have, so training
adapts the weights to it (straight-through gradients). The fake quantization is the one
``mobileseg quant`` deploys: weights per output channel (abs-max), each convolution's input per
tensor, its scale the moving average (rate 0.9) of the batches' abs-max.

A wrapped convolution keeps its parameters under their own keys (``<conv>.weight``, ``.bias``)
and adds the quantizers' state (``<conv>._fake_quant_weight._scale``,
``<conv>._fake_quant_input._scale/_state/_accum``), so a checkpoint of this training is the
float model's state dict plus those keys. Everything that loads weights into a float model
(``val``, ``predict``, ``export``, ``quant``) takes the float part (``float_state``).
``mobileseg quant`` writes the INT8 export with the input scales training learned
(``input_scales``: the weights adapted to them) and calibrates only what training did not
quantize (``--qat_scales calibrated``: every scale found again). Resuming such a run needs
``--quant`` again.
"""

import hashlib
import re

import numpy as np

from .errors import UserError

# the state of one quantizer of a wrapped convolution (group 1: the convolution's prefix)
QUANTER_KEY = re.compile(r"(.+)\._fake_quant_(?:weight\._scale|input\._(?:scale|state|accum))")
INPUT_SCALE_KEY = re.compile(r"(.+)\._fake_quant_input\._scale")
MOVING_RATE = 0.9


def quantization_aware(model):
    """Wrap every ``nn.Conv2D`` of ``model`` in place for quantization-aware training; returns
    the number wrapped."""
    import paddle.nn as nn
    from paddle.quantization.imperative.qat import ImperativeQuantizeInputs

    if has_quanters(model.state_dict()):
        raise UserError("the model is already quantization-aware")
    count = sum(isinstance(m, nn.Conv2D) for m in model.sublayers())
    if not count:
        raise UserError(f"{type(model).__name__} has no Conv2D to quantize")
    ImperativeQuantizeInputs(quantizable_layer_type=["Conv2D"],
                             weight_quantize_type="channel_wise_abs_max",
                             activation_quantize_type="moving_average_abs_max",
                             moving_rate=MOVING_RATE).apply(model)
    return count


def has_quanters(state):
    return any(QUANTER_KEY.fullmatch(k) for k in state)


def float_state(state):
    """``state`` without the quantizers' keys, each checked to belong to a convolution the
    state holds (``<conv>.weight``): anything else is left for the strict key check."""
    kept = {}
    for k, v in state.items():
        m = QUANTER_KEY.fullmatch(k)
        if m is None or f"{m.group(1)}.weight" not in state:
            kept[k] = v
    return kept


def weight_digest(weight):
    """A convolution's identity across dygraph and exported programs: its float32 weight's
    shape and bytes (names change with tracing; the weights are written unchanged)."""
    a = np.ascontiguousarray(np.asarray(weight, dtype=np.float32))
    return hashlib.sha1(repr(a.shape).encode() + a.tobytes()).hexdigest()


def input_scales(state):
    """{``weight_digest`` of a wrapped convolution's weight: the abs-max scale of its input
    that training learned} of a checkpoint's ``state``."""
    scales = {}
    for k, v in state.items():
        m = INPUT_SCALE_KEY.fullmatch(k)
        weight = state.get(f"{m.group(1)}.weight") if m else None
        if weight is None:
            continue
        value = np.asarray(v, dtype=np.float32).reshape(-1)
        if value.size != 1 or not np.isfinite(value[0]) or value[0] <= 0:
            raise UserError(f"{k}: expected one positive finite scale, got {value[:4].tolist()}")
        scales[weight_digest(weight)] = float(value[0])
    return scales


def mismatch_hint(missing, unexpected):
    """Why a strict load failed when the difference is exactly the quantizers (resuming)."""
    if unexpected and all(QUANTER_KEY.fullmatch(k) for k in unexpected) and not missing:
        return ("a checkpoint of quantization-aware training (mobileseg train --quant): "
                "resume it with --quant")
    if missing and all(QUANTER_KEY.fullmatch(k) for k in missing) and not unexpected:
        return ("a float checkpoint, which a quantization-aware run cannot resume: fine-tune "
                "from its weights with --quant --model_path instead")
    return None
