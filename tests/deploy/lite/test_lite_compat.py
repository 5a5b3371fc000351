"""The compatibility pass (mobileseg_paddle/deploy/lite/program_compat.py): each fix on the
protobuf, and on a tiny exported model that Paddle Lite 2.13 refuses without the fix and runs
correctly with it."""

import os

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest
from paddle.base.proto import framework_pb2 as pb

from helpers.lite import require_lite_runtime
from mobileseg_paddle.deploy.export import save_paddle_programs
from mobileseg_paddle.deploy.lite.program_compat import (
    FIXES,
    apply_fixes,
    op_types,
    read_program,
    write_program,
)
from mobileseg_paddle.errors import UserError

pytestmark = pytest.mark.lite

FIX_BY_NAME = {fix.name: fix for fix in FIXES}


def _program_with(op_type, attrs=(), inputs=(("X", "x"),), outputs=(("Out", "y"),)):
    program = pb.ProgramDesc()
    block = program.blocks.add()
    block.idx, block.parent_idx = 0, -1
    for name, dims in (("x", [1, 8, 4, 4]), ("y", [1, 128])):
        var = block.vars.add()
        var.name = name
        var.type.type = pb.VarType.DENSE_TENSOR
        var.type.dense_tensor.tensor.data_type = pb.VarType.FP32
        var.type.dense_tensor.tensor.dims.extend(dims)
    op = block.ops.add()
    op.type = op_type
    for param, arg in inputs:
        slot = op.inputs.add()
        slot.parameter = param
        slot.arguments.append(arg)
    for param, arg in outputs:
        slot = op.outputs.add()
        slot.parameter = param
        slot.arguments.append(arg)
    for name, value in attrs:
        a = op.attrs.add()
        a.name, a.type, a.f = name, pb.FLOAT, value
    return program


@pytest.mark.parametrize("name, op_type, attr, value", [
    ("relu6_threshold", "relu6", "threshold", 6.0),
    ("swish_beta", "swish", "beta", 1.0),
])
def test_missing_attr_fix_adds_the_attribute_once(name, op_type, attr, value):
    program = _program_with(op_type)
    assert apply_fixes(program)[name] == 1
    attrs = {a.name: a for a in program.blocks[0].ops[0].attrs}
    assert attrs[attr].type == pb.FLOAT and attrs[attr].f == value
    assert apply_fixes(program)[name] == 0  # idempotent
    assert len(program.blocks[0].ops[0].attrs) == 1


def test_missing_attr_fix_keeps_an_existing_value():
    program = _program_with("relu6", attrs=[("threshold", 3.0)])
    assert apply_fixes(program)["relu6_threshold"] == 0
    assert program.blocks[0].ops[0].attrs[0].f == 3.0


def test_xshape_fix_adds_an_output_shaped_0_plus_input():
    program = _program_with("flatten_contiguous_range")
    assert apply_fixes(program)["flatten_contiguous_range_xshape"] == 1
    op, block = program.blocks[0].ops[0], program.blocks[0]
    xshape = [o for o in op.outputs if o.parameter == "XShape"]
    assert len(xshape) == 1
    var = next(v for v in block.vars if v.name == xshape[0].arguments[0])
    assert list(var.type.dense_tensor.tensor.dims) == [0, 1, 8, 4, 4]
    assert not var.persistable
    assert apply_fixes(program)["flatten_contiguous_range_xshape"] == 0


def test_fixes_leave_other_ops_alone():
    program = _program_with("relu")
    before = program.SerializeToString()
    assert sum(apply_fixes(program).values()) == 0
    assert program.SerializeToString() == before


# --- each fix against Paddle Lite --------------------------------------------------------------

class Tiny(nn.Layer):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2D(3, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if self.kind == "relu6":
            return F.relu6(y * 4.0)  # scaled so that some values exceed 6
        if self.kind == "swish":
            return F.swish(y)
        return paddle.flatten(y, start_axis=1)


# fix name -> the tiny model that needs it
NEEDED_BY = {"relu6_threshold": "relu6", "swish_beta": "swish",
             "flatten_contiguous_range_xshape": "flatten"}


def test_every_fix_has_a_lite_test():
    assert set(NEEDED_BY) == set(FIX_BY_NAME)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """{kind: folder with model.pdmodel/.pdiparams (legacy, no fixes) and ref.npy}, and x."""
    runtime = require_lite_runtime()
    out = tmp_path_factory.mktemp("tiny_lite_models")
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype("float32")
    folders = {}
    for kind in ("relu6", "swish", "flatten"):
        paddle.seed(0)
        model = Tiny(kind)
        model.eval()
        folders[kind] = out / kind
        folders[kind].mkdir()
        np.save(folders[kind] / "ref.npy", model(paddle.to_tensor(x)).numpy())
        save_paddle_programs(model, str(folders[kind]), [1, 3, 16, 16], program="legacy")
    return runtime, folders, x


@pytest.mark.parametrize("fix_name", sorted(NEEDED_BY))
def test_lite_refuses_without_the_fix_and_matches_with_it(tiny_models, fix_name):
    runtime, folders, x = tiny_models
    folder = folders[NEEDED_BY[fix_name]]
    params = str(folder / "model.pdiparams")
    original = read_program(str(folder / "model.pdmodel"))
    assert FIX_BY_NAME[fix_name].op_type in op_types(original)

    without = str(folder / "without.pdmodel")
    write_program(original, without)
    with pytest.raises(UserError):
        runtime.opt(without, params, {"x86": str(folder / "without_x86")})

    counts = apply_fixes(original)
    assert counts[fix_name] == 1
    assert sum(counts.values()) == 1  # the tiny model needs exactly this fix
    fixed = str(folder / "fixed.pdmodel")
    write_program(original, fixed)
    result = runtime.opt(fixed, params, {t: str(folder / f"fixed_{t}") for t in ("x86", "arm")})
    for target in ("x86", "arm"):
        assert os.path.getsize(result["models"][target]) > 0
    _, outputs = runtime.run(result["models"]["x86"], x)
    got, ref = outputs[0], np.load(folder / "ref.npy")
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    if fix_name == "relu6_threshold":
        assert ref.max() == pytest.approx(6.0)  # the clipping is exercised
