"""Compatibility pass: rewrite a legacy ``.pdmodel`` written by Paddle 3.3 so Paddle Lite 2.13 reads it.

Paddle 3 dropped some op attributes whose value became fixed (``relu6``'s ``threshold`` ...), but
Lite 2.13 still reads them and aborts when one is missing ("No attributes called threshold found
for relu6"). Each fix below is named, adds back exactly the value Paddle 2.x wrote, and is tested
in tests/deploy/lite/test_lite_compat.py. The set was found by converting all five MobileSeg models.

The pass works on the ProgramDesc protobuf (paddle's ``framework_pb2``) and needs no Lite.
"""

from dataclasses import dataclass

from paddle.base.proto import framework_pb2 as pb


@dataclass(frozen=True)
class MissingAttrFix:
    """Add attribute ``attr`` = ``value`` to every ``op_type`` op that lacks it."""
    name: str
    op_type: str
    attr: str
    value: object

    def apply(self, op, block):
        if op.type != self.op_type or any(a.name == self.attr for a in op.attrs):
            return False
        a = op.attrs.add()
        a.name = self.attr
        _set_attr_value(a, self.value)
        return True


@dataclass(frozen=True)
class MissingXShapeFix:
    """Give every ``op_type`` op the ``XShape`` output Paddle 2.x wrote (a variable of shape
    [0] + the input's shape). Paddle 3 drops it for some shape ops; Lite's opt dereferences it
    for flatten_contiguous_range and crashes with SIGSEGV without it."""
    name: str
    op_type: str

    def apply(self, op, block):
        if op.type != self.op_type or any(o.parameter == "XShape" for o in op.outputs):
            return False
        x_name = next(i.arguments[0] for i in op.inputs if i.parameter == "X")
        out_name = next(o.arguments[0] for o in op.outputs if o.parameter == "Out")
        x_var = next(v for v in block.vars if v.name == x_name)
        xshape = block.vars.add()
        xshape.CopyFrom(x_var)
        xshape.name = out_name + ".xshape"
        xshape.persistable = False
        dims = xshape.type.dense_tensor.tensor.dims
        dims.insert(0, 0)
        out = op.outputs.add()
        out.parameter = "XShape"
        out.arguments.append(xshape.name)
        return True


def _set_attr_value(attr, value):
    if isinstance(value, bool):
        attr.type, attr.b = pb.BOOLEAN, value
    elif isinstance(value, int):
        attr.type, attr.i = pb.INT, value
    elif isinstance(value, float):
        attr.type, attr.f = pb.FLOAT, value
    elif isinstance(value, str):
        attr.type, attr.s = pb.STRING, value
    else:
        raise TypeError(f"unsupported attribute value {value!r}")


# Ordered; names appear in the conversion log and the manifest.
FIXES = (
    # Paddle 3 writes relu6 without ``threshold`` (now always 6); Lite reads it.
    MissingAttrFix("relu6_threshold", "relu6", "threshold", 6.0),
    # Paddle 3 writes swish without ``beta`` (always 1: x * sigmoid(x)); Lite reads it.
    MissingAttrFix("swish_beta", "swish", "beta", 1.0),
    # Paddle 3 writes flatten without its XShape output (GhostNet's SE block flattens); Lite's
    # opt crashes (SIGSEGV) on it. unsqueeze2/squeeze2 also lack XShape but Lite copes.
    MissingXShapeFix("flatten_contiguous_range_xshape", "flatten_contiguous_range"),
)


def read_program(path):
    program = pb.ProgramDesc()
    with open(path, "rb") as f:
        program.ParseFromString(f.read())
    return program


def write_program(program, path):
    with open(path, "wb") as f:
        f.write(program.SerializeToString())


def apply_fixes(program, fixes=FIXES):
    """Apply ``fixes`` in place to every op of every block; return {fix name: ops changed}."""
    counts = {fix.name: 0 for fix in fixes}
    for block in program.blocks:
        for op in block.ops:
            for fix in fixes:
                counts[fix.name] += bool(fix.apply(op, block))
    return counts


def make_lite_compatible(pdmodel_path):
    """Rewrite ``pdmodel_path`` in place; return {fix name: ops changed} (zeros included)."""
    program = read_program(pdmodel_path)
    counts = apply_fixes(program)
    write_program(program, pdmodel_path)
    return counts


def op_types(program):
    """Sorted op types of all blocks (the program's op inventory)."""
    return sorted({op.type for block in program.blocks for op in block.ops})
