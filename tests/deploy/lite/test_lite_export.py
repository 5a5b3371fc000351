"""Legacy-format export (``save_paddle_programs(..., program="legacy")`` with the legacy-op
builders of mobileseg_paddle/models/export_rewrites.py), traced in this process: every builder
traces, writes the legacy op, and the exported program computes what the dygraph model computes."""

import contextlib

import numpy as np
import paddle
import paddle.inference as pi
import paddle.nn as nn
import paddle.nn.functional as F  # noqa: F401  (the case expressions use it)
import pytest

from mobileseg_paddle.deploy.export import save_paddle_programs
from mobileseg_paddle.deploy.lite.program_compat import op_types, read_program
from mobileseg_paddle.models import export_rewrites
from mobileseg_paddle.models.export_rewrites import LEGACY_BUILDERS

pytestmark = pytest.mark.lite

# case -> (expression of y, a (1, 8, 16, 16) tensor; the shim it needs; the legacy op expected)
CASES = {
    "F.sigmoid": ("F.sigmoid(y)", "sigmoid", "sigmoid"),
    "nn.Sigmoid": ("nn.Sigmoid()(y)", "sigmoid", "sigmoid"),
    "Tensor.sigmoid": ("y.sigmoid()", "sigmoid", "sigmoid"),
    "tanh": ("paddle.tanh(y)", "tanh", "tanh"),
    "exp": ("paddle.exp(0.1 * y)", "exp", "exp"),
    "sqrt": ("paddle.sqrt(y * y + 1.0)", "sqrt", "sqrt"),
    "rsqrt": ("paddle.rsqrt(y * y + 1.0)", "rsqrt", "rsqrt"),
    "abs": ("paddle.abs(y)", "abs", "abs"),
    "floor": ("paddle.floor(4.0 * y)", "floor", "floor"),
    "ceil": ("paddle.ceil(4.0 * y)", "ceil", "ceil"),
    "log": ("paddle.log(y * y + 1.0)", "log", "log"),
    "multiply": ("paddle.multiply(y, y + 1.0)", "multiply", "elementwise_mul"),
    "maximum": ("paddle.maximum(y, 0.5 * y)", "maximum", "elementwise_max"),
    "minimum": ("paddle.minimum(y, 0.5 * y)", "minimum", "elementwise_min"),
    "matmul": ("paddle.matmul(y, y, transpose_y=True)", "matmul", "matmul_v2"),
    "sum_axis": ("paddle.sum(y, axis=1, keepdim=True)", "sum", "reduce_sum"),
    "sum_all": ("paddle.sum(y)", "sum", "reduce_sum"),
    "argmax": ("paddle.argmax(y, axis=1)", "argmax", "arg_max"),
    "argmax_keepdim": ("paddle.argmax(y, axis=1, keepdim=True, dtype='int32')", "argmax",
                       "arg_max"),
}
SHAPE = [1, 3, 16, 16]


class Case(nn.Layer):
    def __init__(self, expr):
        super().__init__()
        self.expr = expr
        self.conv = nn.Conv2D(3, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)  # noqa: F841  (used by the expression)
        return eval(self.expr)


def run_legacy_program(folder, x):
    """Paddle Inference on the legacy program, without its graph passes (the ops as written)."""
    config = pi.Config(str(folder / "model.pdmodel"), str(folder / "model.pdiparams"))
    config.disable_gpu()
    config.switch_ir_optim(False)
    config.disable_glog_info()
    predictor = pi.create_predictor(config)
    predictor.get_input_handle(predictor.get_input_names()[0]).copy_from_cpu(x)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def export_case(folder, expr, x):
    """Trace the case; return a result dict (or {"error": ...} when the trace fails)."""
    paddle.seed(0)
    model = Case(expr)
    model.eval()
    ref = model(paddle.to_tensor(x)).numpy()
    folder.mkdir()
    try:
        save_paddle_programs(model, str(folder), SHAPE, program="legacy")
    except Exception as e:
        return {"error": type(e).__name__ + ": " + str(e)[-300:]}
    got = run_legacy_program(folder, x)
    return {"ops": op_types(read_program(str(folder / "model.pdmodel"))),
            "shape": list(got.shape), "ref_shape": list(ref.shape),
            "dtype": str(got.dtype), "ref_dtype": str(ref.dtype),
            "max_abs_diff": float(np.abs(got.astype("float64") - ref).max()),
            "ref_scale": float(np.abs(ref).max())}


X = np.random.default_rng(0).standard_normal(SHAPE).astype("float32")


def test_every_shim_has_a_case():
    assert {shim for _, shim, _ in CASES.values()} == set(LEGACY_BUILDERS)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("legacy_cases")
    return {name: export_case(out / name.replace(".", "_"), expr, X)
            for name, (expr, _, _) in CASES.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_shim_exports_the_legacy_op_and_matches_dygraph(exported, name):
    result = exported[name]
    assert "error" not in result, result.get("error")
    assert CASES[name][2] in result["ops"]
    assert result["shape"] == result["ref_shape"]
    assert result["dtype"] == result["ref_dtype"]
    assert result["max_abs_diff"] <= 1e-5 * max(result["ref_scale"], 1.0)


def test_without_the_shims_paddle_3_cannot_trace_sigmoid(tmp_path, monkeypatch):
    """Why the shims exist: the same export with them disabled fails."""
    monkeypatch.setattr(export_rewrites, "legacy_op_shims", contextlib.nullcontext)
    result = export_case(tmp_path / "sigmoid", "F.sigmoid(y)", X)
    assert "error" in result
    assert "Variable" in result["error"]
    monkeypatch.undo()
    assert "error" not in export_case(tmp_path / "again", "F.sigmoid(y)", X)  # no state left
