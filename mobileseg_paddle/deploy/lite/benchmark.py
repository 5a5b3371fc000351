"""Lite x86 vs Paddle Inference, 1 thread, per model: median latency after warm-up.

  python -m mobileseg_paddle.deploy.lite.benchmark [--models mobilenetv2,ghostnet] [--shape 1,3,256,256]
                                  [--warmup 10] [--repeats 50]

Weights are random (latency does not depend on them). Prints the machine, the thread count and
one line per model. Paddle Inference runs the very legacy program that Lite converted, set up
as Paddle Inference sets it up by default (``PredictorOptions.paddle_defaults``).
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

from mobileseg_paddle import resources
from mobileseg_paddle.deploy.runners import ModelFiles, PredictorOptions, create_runner
from mobileseg_paddle.errors import run_main

MODELS = ["mobilenetv2", "mobilenetv3", "litehrnet18", "shufflenetv2", "ghostnet"]


def config_path(name):
    return resources.path("configs", "mobileseg",
                        f"mobileseg_{name}_cityscapes_1024x512_80k.yml")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def paddle_inference_ms(model_dir, shape, warmup, repeats, onednn):
    """Median ms of Paddle Inference (CPU, 1 thread, Paddle's own set-up) on the legacy program
    Lite converted (``model.pdmodel``: Paddle 3.3.1's oneDNN executor rejects PIR
    interpolations). Times the predictor's run alone, without the input and output copies."""
    files = ModelFiles.from_paddle(os.path.join(model_dir, "model.pdmodel"),
                              os.path.join(model_dir, "model.pdiparams"))
    opts = PredictorOptions(cpu_threads=1, enable_mkldnn=onednn).paddle_defaults()
    with create_runner(files, "paddle", opts) as runner:
        runner.feed(np.random.default_rng(0).standard_normal(shape).astype("float32"))
        for _ in range(warmup):
            runner.run()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            runner.run()
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--shape", default="1,3,256,256")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    return run_main("lite benchmark", lambda: _run(args))


def _run(args):
    from .convert import convert, parse_input_shape
    from .lite_env import LiteRuntime
    from .predict import benchmark_nb

    shape = parse_input_shape(args.shape)
    runtime = LiteRuntime.find()
    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.machine()}")
    print(f"input {shape}, 1 thread, median of {args.repeats} runs after {args.warmup} warm-up; "
          f"Paddle Lite {runtime.version()} (x86 .nb) vs Paddle Inference on the same program, "
          f"with and without oneDNN")
    print(f"{'model':<14}{'Lite x86 ms':>12}{'Inference oneDNN ms':>21}{'Inference plain ms':>20}")
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as work:
            save_dir = os.path.join(work, "lite")
            convert(config_path(name), None, save_dir, shape, "x86", runtime=runtime,
                    log=lambda message: None)
            lite = benchmark_nb(save_dir, threads=1, warmup=args.warmup, repeats=args.repeats,
                                runtime=runtime)
            onednn, plain = (paddle_inference_ms(save_dir, shape, args.warmup, args.repeats, on)
                             for on in (True, False))
        print(f"{name:<14}{lite['median_ms']:>12.2f}{onednn:>21.2f}{plain:>20.2f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
