"""Reading a legacy program's combined parameter file (``.pdiparams``) as Paddle writes it, and
a legacy program's ops in a form two traces of one model can be compared in."""

import numpy as np
from paddle.base.proto import framework_pb2 as pb

from mobileseg_paddle.deploy.lite.program_compat import read_program

DTYPES = {pb.VarType.FP32: "<f4", pb.VarType.INT64: "<i8", pb.VarType.INT32: "<i4",
          pb.VarType.INT8: "<i1"}


def read_params(program, path):
    """{name: array} of a ``.pdiparams`` of ``program`` (a framework_pb2 ProgramDesc; the file
    is save_combine's: the persistable tensors sorted by name, each: u32 version, u64 LoD
    levels, u32 version, i32 size + TensorDesc, raw data)."""
    tensors = sorted(v.name for b in program.blocks for v in b.vars
                     if v.persistable and v.type.type == pb.VarType.DENSE_TENSOR)
    with open(path, "rb") as f:
        data = f.read()
    pos, out = 0, {}
    for name in tensors:
        lod_levels = int(np.frombuffer(data, "<u8", 1, pos + 4)[0])
        pos += 12
        for _ in range(lod_levels):
            pos += 8 + int(np.frombuffer(data, "<u8", 1, pos)[0])
        size = int(np.frombuffer(data, "<i4", 1, pos + 4)[0])
        desc = pb.VarType.TensorDesc.FromString(data[pos + 8:pos + 8 + size])
        pos += 8 + size
        count = int(np.prod(desc.dims))
        out[name] = np.frombuffer(data, DTYPES[desc.data_type], count, pos).reshape(desc.dims)
        pos += out[name].nbytes
    assert pos == len(data), f"{path}: {len(data) - pos} bytes after the last tensor"
    return out


VOLATILE_ATTRS = {"op_callstack", "op_namescope", "op_device"}  # where the trace ran, not what


def program_signature(path):
    """Every op of every block in order: type, attributes, and its inputs/outputs as variables
    renamed by first use, with their types and dims; and {name: that number}. Names carry
    process-wide counters (``conv2d_7.w_0``): a process that built other layers before names
    the same program's variables differently."""
    program = read_program(path)
    names = {}
    descs = {v.name: v for block in program.blocks for v in block.vars}

    def var(name):
        desc = descs.get(name)
        kind = None if desc is None else (desc.type.type, desc.persistable,
                                          tuple(desc.type.dense_tensor.tensor.dims),
                                          desc.type.dense_tensor.tensor.data_type)
        return names.setdefault(name, len(names)), kind

    ops = []
    for block in program.blocks:
        for op in block.ops:
            attrs = sorted(a.SerializeToString() for a in op.attrs
                           if a.name not in VOLATILE_ATTRS)
            slots = [(s.parameter, [var(n) for n in s.arguments])
                     for s in (*op.inputs, *op.outputs)]
            ops.append((op.type, attrs, slots))
    return program, ops, names
