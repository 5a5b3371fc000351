"""Reading a legacy program's combined parameter file (``.pdiparams``) as Paddle writes it."""

import numpy as np
from paddle.base.proto import framework_pb2 as pb

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
