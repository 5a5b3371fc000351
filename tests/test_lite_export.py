"""Legacy-format export (deploy/lite/legacy_export.py): every legacy op shim traces, writes the
legacy op, and the exported program computes what the dygraph model computes."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from deploy.lite.legacy_export import LEGACY_BUILDERS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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

CHILD = textwrap.dedent("""
    import json, os, sys
    os.environ["FLAGS_enable_pir_api"] = "0"
    import numpy as np, paddle, paddle.nn as nn, paddle.nn.functional as F
    from deploy.lite.legacy_export import export_legacy
    from deploy.lite.program_compat import op_types, read_program

    class Case(nn.Layer):
        def __init__(self, expr):
            super().__init__()
            self.expr = expr
            self.conv = nn.Conv2D(3, 8, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return eval(self.expr)

    out, cases = sys.argv[1], json.loads(sys.argv[2])
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype("float32")
    results = {}
    for name, expr in cases.items():
        paddle.disable_static()
        paddle.seed(0)
        model = Case(expr)
        model.eval()
        ref = model(paddle.to_tensor(x)).numpy()
        prefix = os.path.join(out, name.replace(".", "_"))
        try:
            export_legacy(model, prefix, [1, 3, 16, 16])
        except Exception as e:
            results[name] = {"error": type(e).__name__ + ": " + str(e)[-300:]}
            continue
        paddle.enable_static()
        exe = paddle.static.Executor(paddle.CPUPlace())
        program, feeds, fetches = paddle.static.load_inference_model(prefix, exe)
        got = exe.run(program, feed={feeds[0]: x}, fetch_list=fetches)[0]
        results[name] = {"ops": op_types(read_program(prefix + ".pdmodel")),
                         "shape": list(got.shape), "ref_shape": list(ref.shape),
                         "dtype": str(got.dtype), "ref_dtype": str(ref.dtype),
                         "max_abs_diff": float(np.abs(got.astype("float64") - ref).max()),
                         "ref_scale": float(np.abs(ref).max())}
    print("RESULTS " + json.dumps(results))
""")


def _run_child(tmp_path, cases, extra_code=""):
    script = tmp_path / "export_cases.py"  # dy2static reads the source, so it must be a file
    script.write_text(extra_code + CHILD)
    env = dict(os.environ, PYTHONPATH=ROOT, FLAGS_enable_pir_api="0")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), json.dumps(cases)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = proc.stdout.decode("utf-8", "replace")
    assert proc.returncode == 0, text[-3000:]
    line = next(l for l in text.splitlines() if l.startswith("RESULTS "))
    return json.loads(line[len("RESULTS "):])


def test_every_shim_has_a_case():
    assert {shim for _, shim, _ in CASES.values()} == set(LEGACY_BUILDERS)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return _run_child(tmp_path_factory.mktemp("legacy_cases"),
                      {name: expr for name, (expr, _, _) in CASES.items()})


@pytest.mark.parametrize("name", sorted(CASES))
def test_shim_exports_the_legacy_op_and_matches_dygraph(exported, name):
    result = exported[name]
    assert "error" not in result, result.get("error")
    assert CASES[name][2] in result["ops"]
    assert result["shape"] == result["ref_shape"]
    assert result["dtype"] == result["ref_dtype"]
    assert result["max_abs_diff"] <= 1e-5 * max(result["ref_scale"], 1.0)


def test_without_the_shims_paddle_3_cannot_trace_sigmoid(tmp_path):
    """Why the shims exist: the same export with them disabled fails."""
    disable = textwrap.dedent("""
        import contextlib
        import deploy.lite.legacy_export as legacy_export
        legacy_export.legacy_op_shims = contextlib.nullcontext
    """)
    result = _run_child(tmp_path, {"F.sigmoid": "F.sigmoid(y)"}, extra_code=disable)
    assert "error" in result["F.sigmoid"]
    assert "Variable" in result["F.sigmoid"]["error"]
