"""``mobileseg lite`` (also ``python -m mobileseg_paddle.deploy.lite``): convert a checkpoint to
Paddle Lite models, run or time them on this machine.

  mobileseg lite --config C --model_path W --save_dir D [--input_shape 1 3 256 256]
                 [--valid_targets arm,x86] [--output_op none|argmax]
                 [--precision fp32|fp16|int8] [--num_calib 32] [--algo avg]
                                                    # convert (also: `convert` subcommand)
  mobileseg lite segment --model_dir D --image I --out_dir O     # x86 host check
  mobileseg lite bench --model_dir D [--repeats 50]               # x86 latency, 1 thread
  mobileseg lite build-runtime [--source S] [--no-fp16] [--android_ndk N]
                             # the armv8 light API from source, tailored, cached
  mobileseg lite check --model_dir D [--reference dygraph|x86] [--image I]
                             # run model_arm.nb on ARM kernels under qemu-aarch64 and compare
                             # (exit 0 within the bounds, 1 outside them)

Bad input: one line "mobileseg lite: error: ..." on stderr and exit status 2 (as the other
mobileseg commands).
"""

import argparse
import sys

from mobileseg_paddle.errors import ArgumentParser, run_main

COMMANDS = ("convert", "segment", "bench", "build-runtime", "check")


def add_convert_args(parser):
    """The flags of the convert step (PaddleSeg's export flags)."""
    parser.add_argument("--config", required=True, help="PaddleSeg config (.yml)")
    parser.add_argument("--model_path", default=None, help="weights (.pdparams); random if absent")
    parser.add_argument("--save_dir", required=True, help="folder for the .nb files + manifest")
    parser.add_argument("--input_shape", nargs="+", default=["1", "3", "256", "256"],
                        metavar="DIM", help="fixed input: 1 3 H W (as paddleseg's export) or 1,3,H,W")
    parser.add_argument("--valid_targets", default="arm",
                        help="comma/space separated: arm (phone), x86 (host checks)")
    parser.add_argument("--output_op", default="none",
                        help="none: logits (1, C, H, W) float32, the demo takes the argmax; "
                             "argmax: the int64 (1, H, W) label map in the graph (what "
                             "Paddle-Lite-Demo's segmentation demo reads)")
    parser.add_argument("--precision", default="fp32",
                        help="fp32; fp16: FP16 kernels in the ARM model (ARMv8.2 cores, "
                             "e.g. Snapdragon 855); int8: post-training quantization, int8 "
                             "conv/fc kernels (calibrated on the config's train_dataset)")
    parser.add_argument("--num_calib", type=int, default=None,
                        help="--precision int8: calibration images from the train_dataset "
                             "(default 32, at least 4)")
    parser.add_argument("--algo", default=None,
                        help="--precision int8: how activation scales are found: avg (default), "
                             "abs_max, hist, KL, mse")
    from mobileseg_paddle.deploy.quant import QAT_SCALES  # no paddle import
    parser.add_argument("--qat_scales", default="trained", choices=QAT_SCALES,
                        help="--precision int8 of a checkpoint of mobileseg train --quant: its "
                             "convolutions' input scales as training learned them, or "
                             "calibrated like the rest")


def build_parser():
    parser = ArgumentParser(prog="mobileseg lite", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    add_convert_args(sub.add_parser("convert", help="checkpoint -> .nb + manifest.json"))
    p = sub.add_parser("segment", help="run the x86 .nb on an image (host check)")
    p.add_argument("--model_dir", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--out_dir", required=True)
    p = sub.add_parser("bench", help="Lite x86 latency, 1 thread")
    p.add_argument("--model_dir", required=True)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    p = sub.add_parser("check", help="run model_arm.nb under qemu-aarch64, compare")
    p.add_argument("--model_dir", required=True)
    p.add_argument("--reference", default="dygraph",
                   help="dygraph (the checkpoint the manifest names) or x86 (model_x86.nb)")
    p.add_argument("--image", help="the input image (default: noise; an int8 model: its first "
                                   "calibration image)")
    p.add_argument("--source", help="Paddle Lite source for the runtime (see build-runtime)")
    return parser


def run(args):
    if args.cmd == "convert":
        from .convert import convert
        convert(args.config, args.model_path, args.save_dir, args.input_shape, args.valid_targets,
                output_op=args.output_op, precision=args.precision, num_calib=args.num_calib,
                algo=args.algo, qat_scales=args.qat_scales)
    elif args.cmd == "check":
        from . import check
        result = check.check(args.model_dir, args.reference, source=args.source, image=args.image,
                             log=lambda m: print(m, file=sys.stderr))
        print(check.describe(result))
        return 0 if result["passed"] else 1
    elif args.cmd == "segment":
        from .predict import segment
        mask, overlay = segment(args.model_dir, args.image, args.out_dir)
        print(f"wrote {mask} and {overlay}")
    else:
        from .predict import benchmark_nb
        r = benchmark_nb(args.model_dir, warmup=args.warmup, repeats=args.repeats)
        print(f"Lite x86, {r['threads']} thread: median {r['median_ms']:.2f} ms, "
              f"mean {r['mean_ms']:.2f} ms, min {r['min_ms']:.2f} ms "
              f"({r['repeats']} runs after {r['warmup']} warm-up)")


def main(argv=None):
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "build-runtime":  # its own parser (also arm_runtime's __main__)
        from .arm_runtime import main as build_main
        return build_main(argv[1:])
    if argv and argv[0] not in (*COMMANDS, "-h", "--help"):
        argv.insert(0, "convert")  # the export command's flags work without a subcommand
    return run_main("lite", lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
