"""What a fused inverted-residual kernel gains on MobileNetV2 (issue 13's floor lever).

    python benchmarks/fused_inverted_residual.py [--input_shape 1 3 512 1024] [--threads 2]
                                                 [--turns 5] [--runs_per_turn 10]

MobileNetV2's 17 inverted residual units (everything between the stem and the decoder) of the
model of ``configs/mobileseg`` (random weights and BatchNorm statistics) in
fused_inverted_residual.c, compiled here (gcc, AVX-512, OpenMP): each unit in one pass over its
output rows, the expanded tensor kept in a per-thread ring of three rows, BatchNorm folded into
the weights; the stem too. Timed taking turns, on a random image:

  fused           the fused units, from the stem's output
  units <engine>  the same units traced into a legacy program, on Paddle Inference's OpenVINO
                  engine (the default engine of MobileNetV2's export) and on oneDNN
  model <engine>  the model as ``mobileseg bench`` times the default configuration (the
                  dynamic-size export, argmax output), on OpenVINO and on oneDNN
  split           the model split around the kernel (``Split``): stem and units in C, the
                  decoder to the labels as a program on OpenVINO. Paddle Inference's OpenVINO
                  engine takes the whole program as one operator (its openvino_subgraph_pass),
                  so a custom operator cannot run inside it
  sgemm           onnxruntime's MatMul of two 2048x2048 matrices: the floor's rate
  fma             independent FMAs on registers (``fma_loop``): the cores' arithmetic limit

Every path is checked first (units and stem within 1e-4 of dygraph relative to the largest
magnitude, the split's labels equal to the export's on 99.9 % of the pixels or more); then the
median of each turn, the ratios of the medians per turn, the models over the floor (FLOPs /
sgemm rate), the rates as fractions of the FMA peak, and the fused kernel's time per unit.
Exit status 2 on a CPU without AVX-512, without gcc, or at an input size the kernel does not
take (a multiple of 32 is needed); 1 if a path computes something else.
"""

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import paddle  # noqa: E402

from mobileseg_paddle.deploy.benchmark import (  # noqa: E402
    SGEMM_N,
    build_pair,
    cpu_flags,
    machine_description,
    model_configs,
    sgemm_runner,
)
from mobileseg_paddle.deploy.deploy_yaml import DeployConfig  # noqa: E402
from mobileseg_paddle.deploy.export import export, save_paddle_programs  # noqa: E402
from mobileseg_paddle.deploy.runners import ModelFiles, PredictorOptions, create_runner  # noqa: E402
from mobileseg_paddle.errors import UserError  # noqa: E402
from mobileseg_paddle.models.export_rewrites import (  # noqa: E402
    DeployModel,
    prepare_for_deploy,
)
from mobileseg_paddle.models.layers import upsample_logits  # noqa: E402

ENGINES = ("openvino", "onednn")  # Paddle Inference's: MobileNetV2's default, and oneDNN's
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fused_inverted_residual.c")
FLOAT_P = ctypes.POINTER(ctypes.c_float)
FMA_VECTORS = 200_000_000  # about 6.4 GFLOP a run of the FMA-peak loop


def compile_kernel(folder):
    """fused_inverted_residual.c built into ``folder`` and loaded (ctypes). libgomp reads
    OMP_NUM_THREADS and GOMP_SPINCOUNT as it loads."""
    if shutil.which("gcc") is None:
        raise UserError("the fused kernel is compiled here: no gcc on PATH")
    if "avx512f" not in cpu_flags():
        raise UserError("the fused kernel needs a CPU with AVX-512 (avx512f in /proc/cpuinfo)")
    lib = os.path.join(folder, "libfused_ir.so")
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", SOURCE,
                    "-o", lib], check=True)
    kernel = ctypes.CDLL(lib)
    kernel.blk_new.restype = ctypes.c_void_p
    kernel.blk_new.argtypes = [ctypes.c_int] * 7 + [FLOAT_P] * 6
    kernel.blk_run.argtypes = [ctypes.c_void_p, FLOAT_P, FLOAT_P]
    kernel.stem_new.restype = ctypes.c_void_p
    kernel.stem_new.argtypes = [ctypes.c_int] * 4 + [FLOAT_P] * 2
    kernel.stem_run.argtypes = [ctypes.c_void_p, FLOAT_P, FLOAT_P]
    kernel.fma_loop.argtypes = [ctypes.c_long]
    kernel.fma_loop.restype = ctypes.c_long
    return kernel


def folded(unit):
    """A ConvBNAct's convolution with its BatchNorm folded in: (weight, bias) as float32."""
    conv, bn = getattr(unit, unit._conv_name), getattr(unit, unit._bn_name)
    scale = bn.weight.numpy() / np.sqrt(bn._variance.numpy() + bn._epsilon)
    weight = conv.weight.numpy() * scale.reshape(-1, 1, 1, 1)
    bias = bn.bias.numpy() - bn._mean.numpy() * scale
    return np.ascontiguousarray(weight, "float32"), np.ascontiguousarray(bias, "float32")


class FusedChain:
    """The units as fused kernels, with their output buffers (the weights stay referenced)."""

    def __init__(self, kernel, units, shape):
        self.kernel, self.blocks, self.keep = kernel, [], []
        c, h, w = shape
        for unit in units:
            (w1, b1), (wd, bd), (w2, b2) = (folded(unit._expand_conv),
                                            folded(unit._bottleneck_conv),
                                            folded(unit._linear_conv))
            ce, co = w1.shape[0], w2.shape[0]
            stride = unit._bottleneck_conv._conv._stride[0]
            if ce % 8 or co % 8 or (stride == 2 and (h % 2 or w % 2)):
                raise UserError(f"a unit of {c}->{ce}->{co} channels at {h}x{w}, stride "
                                f"{stride}: the kernel needs multiples of 8 channels and an even "
                                f"size before a stride of 2 (an input size a multiple of 32)")
            arrays = [w1.reshape(ce, c), b1, wd.reshape(ce, 9), bd, w2.reshape(co, ce), b2]
            handle = self.kernel.blk_new(c, ce, co, stride, h, w, int(unit.shortcut),
                                         *[a.ctypes.data_as(FLOAT_P) for a in arrays])
            h, w = h // stride, w // stride
            out = np.zeros((co, h, w), "float32")
            flops = 2 * (h * stride * w * stride * c * ce + h * w * ce * 9 + h * w * ce * co)
            self.blocks.append((f"{c}->{ce}->{co} s{stride} at {h * stride}x{w * stride}",
                                handle, out, flops))
            self.keep.append(arrays)
            c = co

    def __call__(self, x, times=None):
        x = np.ascontiguousarray(x[0], "float32")
        for i, (_, handle, out, _) in enumerate(self.blocks):
            start = time.perf_counter()
            self.kernel.blk_run(handle, x.ctypes.data_as(FLOAT_P), out.ctypes.data_as(FLOAT_P))
            if times is not None:
                times[i].append(time.perf_counter() - start)
            x = out
        return x[None]


class FusedStem:
    """The stem (3x3 convolution, stride 2, BatchNorm, ReLU6) in the kernel's C."""

    def __init__(self, kernel, stem, image_shape):
        self.kernel = kernel
        weight, bias = folded(stem)
        _, c, h, w = image_shape
        self.keep = (weight, bias)
        self.handle = kernel.stem_new(c, weight.shape[0], h, w, weight.ctypes.data_as(FLOAT_P),
                                      bias.ctypes.data_as(FLOAT_P))
        self.out = np.zeros((1, weight.shape[0], h // 2, w // 2), "float32")

    def __call__(self, image):
        image = np.ascontiguousarray(image, "float32")
        self.kernel.stem_run(self.handle, image.ctypes.data_as(FLOAT_P),
                             self.out.ctypes.data_as(FLOAT_P))
        return self.out


class Decoder(paddle.nn.Layer):
    """The model after its backbone, from the features it uses laid end to end in one
    (1, n) input (a predictor of one input), up to the logits at ``size``."""

    def __init__(self, model, shapes, size):
        super().__init__()
        self.model, self.shapes, self.size = model, shapes, size

    def forward(self, flat):
        feats, start = [], 0
        for c, h, w in self.shapes:
            feats.append(paddle.reshape(flat[:, start:start + c * h * w], [1, c, h, w]))
            start += c * h * w
        m = self.model
        logit = m.seg_heads[0](m.ppseg_head(feats)[0])
        return [upsample_logits(logit, paddle.zeros([1, 1, *self.size]))]  # its size only


class Split:
    """The default export's model split around the kernel: the stem and the units in C, the
    decoder (to the labels) on Paddle Inference's OpenVINO engine, which takes a whole program
    as one operator; the features it uses handed over as one numpy array."""

    def __init__(self, model, kernel, fused, work, threads, image_shape):
        net = prepare_for_deploy(model, target="openvino")  # the default export's rewrites
        stages = net.backbone.stages
        last = [sum(len(st.units) for st in stages[:k + 1]) - 1 for k in net.backbone.out_index]
        self.taps = [last[i] for i in net.backbone_indices]
        self.fused, self.stem = fused, FusedStem(kernel, model.backbone.conv1, image_shape)
        shapes = [fused.blocks[i][2].shape for i in self.taps]
        decoder = DeployModel(Decoder(net, shapes, image_shape[2:]), "argmax",
                              channels_last_argmax=False)
        files = traced(decoder, os.path.join(work, "decoder"),
                       [1, sum(int(np.prod(s)) for s in shapes)])
        self.decoder = engine_runner(files, "openvino", threads, work)

    def __call__(self, image):
        self.fused(self.stem(image))
        flat = np.concatenate([self.fused.blocks[i][2].ravel() for i in self.taps])
        return self.decoder(flat[None])


def traced(net, folder, shape):
    """``net`` traced at ``shape`` into a legacy program in ``folder``: its ``ModelFiles``."""
    os.makedirs(folder, exist_ok=True)
    save_paddle_programs(net, folder, shape, program="legacy")
    return ModelFiles.from_paddle(os.path.join(folder, "model.pdmodel"),
                                  os.path.join(folder, "model.pdiparams"), dynamic_shape=False)


def engine_runner(source, engine, threads, work):
    """Our runner of ``source`` (``ModelFiles`` or ``DeployConfig``) on Paddle Inference's
    ``engine``, OpenVINO compiling into ``work``."""
    return create_runner(source, "paddle", PredictorOptions(
        engine=engine, cpu_threads=threads, openvino_cache_dir=os.path.join(work, "openvino")))


class Units(paddle.nn.Layer):
    def __init__(self, units):
        super().__init__()
        self.units = paddle.nn.LayerList(units)

    def forward(self, x):
        for unit in self.units:
            x = unit(x)
        return x


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input_shape", type=int, nargs=4, default=[1, 3, 512, 1024])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--runs_per_turn", type=int, default=10)
    args = parser.parse_args(argv)
    n, c, h, w = args.input_shape
    if n != 1 or c != 3 or h <= 0 or w <= 0 or h % 32 or w % 32:
        raise UserError(f"--input_shape {n} {c} {h} {w}: expected 1 3 H W with H and W "
                        f"positive multiples of 32")
    if args.threads < 1 or args.turns < 1 or args.runs_per_turn < 1:
        raise UserError("--threads, --turns and --runs_per_turn: expected positive numbers")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("GOMP_SPINCOUNT", "0")  # the kernel's idle threads yield to OpenVINO's

    work = tempfile.mkdtemp(prefix="fused-ir-")
    try:
        kernel = compile_kernel(work)
        config = model_configs(["mobilenetv2"])["mobilenetv2"]
        model = build_pair(config, 0)[0]
        backbone = model.backbone
        units = [u for stage in backbone.stages for u in stage.units]
        image = np.random.default_rng(0).standard_normal(args.input_shape).astype("float32")
        with paddle.no_grad():
            x = backbone.conv1(paddle.to_tensor(image)).numpy()
            reference = Units(units)(paddle.to_tensor(x)).numpy()
        fused = FusedChain(kernel, units, x.shape[1:])

        deploy = DeployConfig(export(config, os.path.join(work, "model"),
                                     input_shape=[-1, 3, -1, -1], output_op="argmax",
                                     fmt="paddle", program="legacy", model=model,
                                     engine="openvino"))
        files = traced(Units(units), os.path.join(work, "units"), list(x.shape))
        runs = {"fused": (fused, x)}
        for what, source, feed in (("units", files, x), ("model", deploy, image)):
            for engine in ENGINES:
                runs[f"{what} {engine}"] = (engine_runner(source, engine, args.threads, work), feed)
        split = Split(model, kernel, fused, work, args.threads, args.input_shape)
        runs["split"] = (split, image)
        runs["sgemm"] = (sgemm_runner(SGEMM_N, args.threads), None)
        runs["fma"] = (lambda _: kernel.fma_loop(FMA_VECTORS), None)
        fma_flops = 32 * kernel.fma_loop(FMA_VECTORS)  # 16 lanes x 2 FLOPs a vector FMA
        model_flops = 2 * int(paddle.flops(model, args.input_shape, print_detail=False))

        machine = machine_description()
        print(f"# {machine['cpu']}, {machine['usable_cpus']} usable CPUs, load average "
              f"{machine['load_average'][0]:.2f}, {args.threads} thread(s); MobileNetV2's 17 "
              f"units on its stem's output "
              f"{'x'.join(map(str, x.shape))} (input {'x'.join(map(str, args.input_shape))}); "
              f"{args.turns} turns of {args.runs_per_turn} runs each, after a warm-up")
        scale = np.abs(reference).max()
        for name in ["fused"] + [f"units {e}" for e in ENGINES]:
            err = np.abs(runs[name][0](x) - reference).max() / scale
            print(f"{name}: max |error| / max |dygraph| = {err:.2e}")
            if err > 1e-4:
                print(f"fused_inverted_residual: {name} differs from dygraph", file=sys.stderr)
                return 1

        err = np.abs(split.stem(image) - x).max() / np.abs(x).max()
        print(f"fused stem: max |error| / max |dygraph| = {err:.2e}")
        if err > 1e-4:
            print("fused_inverted_residual: the fused stem differs from dygraph", file=sys.stderr)
            return 1
        labels = runs["model openvino"][0](image)
        agree = float(np.mean(split(image) == labels))
        print(f"split: labels equal to the default export's on {100 * agree:.3f} % of the pixels")
        if agree < 0.999:
            print("fused_inverted_residual: the split model's labels differ", file=sys.stderr)
            return 1

        per_unit = [[] for _ in fused.blocks]
        medians = {name: [] for name in runs}
        for turn in range(args.turns + 1):  # turn 0: warm-up
            for name, (run, feed) in runs.items():
                times = []
                for _ in range(args.runs_per_turn):
                    start = time.perf_counter()
                    run(feed, per_unit) if name == "fused" and turn else run(feed)
                    times.append(time.perf_counter() - start)
                if turn:
                    medians[name].append(1e3 * float(np.median(times)))

        def spread(values):
            return f"{np.median(values):.2f}x (per turn {min(values):.2f}-{max(values):.2f}x)"

        flops = sum(b[3] for b in fused.blocks)
        for name in ["fused"] + [f"units {e}" for e in ENGINES]:
            ms = medians[name]
            print(f"{name:14s} per turn {' '.join(f'{m:.1f}' for m in ms)} ms; median "
                  f"{np.median(ms):.1f} ms ({flops / np.median(ms) / 1e6:.0f} GFLOP/s)"
                  + ("" if name == "fused" else ", over the fused: " + spread(
                      [u / f for u, f in zip(ms, medians["fused"])])))
        floors = [model_flops / (2 * SGEMM_N ** 3 / t) for t in medians["sgemm"]]
        rate = 2 * SGEMM_N ** 3 / np.median(medians["sgemm"]) / 1e6
        peak = fma_flops / np.median(medians["fma"]) / 1e6
        print(f"model: {model_flops / 1e9:.2f} GFLOP, floor {np.median(floors):.1f} ms (sgemm "
              f"{rate:.0f} GFLOP/s), 1.25x of it {1.25 * np.median(floors):.1f} ms; FMA peak "
              f"{peak:.0f} GFLOP/s: sgemm at {rate / peak:.0%} of it, the fused units at "
              f"{flops / np.median(medians['fused']) / 1e6 / peak:.0%}")
        for name in [f"model {e}" for e in ENGINES] + ["split"]:
            whole = medians[name]
            print(f"  {name:14s} {np.median(whole):.1f} ms, "
                  f"{spread([m / f for m, f in zip(whole, floors)])} of the floor")
        print("  split over the default (model openvino): " + spread(
            [m / d for m, d in zip(medians["split"], medians["model openvino"])]))
        for (name, _, _, fl), t in zip(fused.blocks, per_unit):
            m = float(np.median(t))
            print(f"  {name:28s} {1e3 * m:6.2f} ms {fl / m / 1e9:6.1f} GFLOP/s")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:
        print(f"fused_inverted_residual: {e}", file=sys.stderr)
        sys.exit(2)
