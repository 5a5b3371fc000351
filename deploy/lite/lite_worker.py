"""Paddle Lite side of the Lite tools; runs in the Python 3.7-3.10 interpreter that has paddlelite.

Only paddlelite, numpy and the standard library are used (no paddle, no project imports), and the
syntax stays Python 3.7-compatible. Each subcommand prints one line
``MOBILESEG_LITE_RESULT {json}`` (``{"error": msg}`` for an error the user can act on).

  version
  ops   --model_file F --param_file F --targets arm     op report: which ops have kernels
  opt   --model_file F --param_file F --targets arm --out PREFIX    write PREFIX.nb
  run   --nb F --input x.npy --output out.npz [--threads 1]         outputs as out_0, out_1 ...
  bench --nb F --shape 1,3,256,256 [--threads 1 --warmup 10 --repeats 50]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

RESULT_PREFIX = "MOBILESEG_LITE_RESULT "


def emit(result):
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def fail(message):
    emit({"error": message})
    sys.exit(2)


def lite():
    import paddlelite.lite as lite_module
    return lite_module


def cmd_version(args):
    emit({"version": lite().Opt().version(), "python": sys.version.split()[0]})


def _make_opt(args):
    for path in (args.model_file, args.param_file):
        if not os.path.isfile(path):
            fail("no such file: %s" % path)
    opt = lite().Opt()
    opt.set_model_file(args.model_file)
    opt.set_param_file(args.param_file)
    opt.set_valid_places(args.targets)
    return opt


def parse_op_report(text):
    """Opt's table 'OP_name kARM kHost ...' -> {op: True if any target column has a kernel}."""
    lines = text.splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if l.strip().startswith("OP_name"))
    except StopIteration:
        return None
    ops = {}
    for line in lines[start + 1:]:
        fields = line.split()
        if not fields or not all(f == "Y" for f in fields[1:]):
            break
        ops[fields[0]] = len(fields) > 1
    return ops


def cmd_ops(args):
    _make_opt(args)  # validates the files before the child process runs
    # check_if_model_supported prints the report and then exits the process, so it runs in a child.
    code = ("import sys, paddlelite.lite as l\n"
            "o = l.Opt(); o.set_model_file(sys.argv[1]); o.set_param_file(sys.argv[2])\n"
            "o.set_valid_places(sys.argv[3]); o.check_if_model_supported(True)\n")
    proc = subprocess.run([sys.executable, "-c", code, args.model_file, args.param_file,
                           args.targets], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = proc.stdout.decode("utf-8", "replace")
    ops = parse_op_report(text)
    if ops is None:
        fail("Paddle Lite's op report was not found in its output:\n" + text[-2000:])
    # Ops Lite has never heard of are left out of the table and named only in its error line:
    # "... These unsupported ops are: 'op_a, op_b'."
    named = re.search(r"unsupported ops are: '([^']*)'", text)
    for op in (named.group(1).split(",") if named else []):
        if op.strip():
            ops[op.strip()] = False
    emit({"ops": ops, "unsupported": sorted(k for k, v in ops.items() if not v),
          "report": text})


def cmd_opt(args):
    opt = _make_opt(args)
    opt.set_model_type("naive_buffer")
    opt.set_optimize_out(args.out)
    opt.run()
    nb = args.out + ".nb"
    if not os.path.isfile(nb):
        fail("Paddle Lite's opt wrote no %s" % nb)
    emit({"nb": nb, "version": opt.version()})


def _predictor(nb, threads):
    if not os.path.isfile(nb):
        fail("no such file: %s" % nb)
    # The x86 wheel's MobileConfig has no set_threads: its MKL/OpenMP kernels follow these
    # variables, which must be set before paddlelite is imported.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    lt = lite()
    config = lt.MobileConfig()
    config.set_model_from_file(nb)
    if hasattr(config, "set_threads"):
        config.set_threads(threads)
    return lt.create_paddle_predictor(config)


def cmd_run(args):
    import numpy as np
    if not os.path.isfile(args.input):
        fail("no such file: %s" % args.input)
    x = np.ascontiguousarray(np.load(args.input).astype("float32"))
    predictor = _predictor(args.nb, args.threads)
    predictor.get_input(0).from_numpy(x)
    predictor.run()
    outputs = {}
    for i, name in enumerate(predictor.get_output_names()):
        outputs["out_%d" % i] = np.array(predictor.get_output(i).numpy())
    np.savez(args.output, **outputs)
    emit({"outputs": {k: list(v.shape) for k, v in outputs.items()}})


def cmd_bench(args):
    import numpy as np
    shape = [int(s) for s in args.shape.split(",")]
    predictor = _predictor(args.nb, args.threads)
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    predictor.get_input(0).from_numpy(x)
    for _ in range(args.warmup):
        predictor.run()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        predictor.run()
        times.append((time.perf_counter() - t0) * 1000.0)
    emit({"median_ms": statistics.median(times), "mean_ms": statistics.mean(times),
          "min_ms": min(times), "threads": args.threads, "repeats": args.repeats,
          "warmup": args.warmup})


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("version")
    for name in ("ops", "opt"):
        p = sub.add_parser(name)
        p.add_argument("--model_file", required=True)
        p.add_argument("--param_file", required=True)
        p.add_argument("--targets", default="arm")
        if name == "opt":
            p.add_argument("--out", required=True)
    p = sub.add_parser("run")
    p.add_argument("--nb", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--threads", type=int, default=1)
    p = sub.add_parser("bench")
    p.add_argument("--nb", required=True)
    p.add_argument("--shape", default="1,3,256,256")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    handlers = {"version": cmd_version, "ops": cmd_ops, "opt": cmd_opt, "run": cmd_run,
                "bench": cmd_bench}
    if args.cmd not in handlers:
        parser.error("a subcommand is required")
    handlers[args.cmd](args)


if __name__ == "__main__":
    main()
