"""Paddle Lite side of the Lite tools; runs in the Python 3.7-3.10 interpreter that has paddlelite.

Only paddlelite, numpy and the standard library are used (no paddle, no project imports), and the
syntax stays Python 3.7-compatible. The request is one JSON object on stdin; the result is one
line ``MOBILESEG_LITE_RESULT {json}`` on stdout (``{"error": msg}`` for an error the user can act
on). Every result carries ``version`` (Paddle Lite's). Arrays travel as ``{"dtype", "shape",
"b64"}`` (C-order bytes, base64). Requests::

  {"cmd": "version"}
  {"cmd": "opt", "model_file": F, "param_file": F, "outputs": {"arm": PREFIX, ...},
   "check_only": false, "fp16": ["arm"], "folded": ["quantize_linear", ...]}
      op report of every target first (-> "reports"); only if every op of every target has a
      kernel, opt writes PREFIX.nb per target (-> "models"), with FP16 kernels (opt's
      enable_fp16) for the targets listed in "fp16". The "folded" ops have no kernels but opt
      folds them into others (an INT8 program's quant ops): reported with false, not counted
      as unsupported; opt aborts if one is left over
  {"cmd": "run", "nb": F, "input": ARRAY, "threads": 1, "expect_version": V}      -> "outputs"
  {"cmd": "bench", "nb": F, "shape": [1, 3, H, W], "threads": 1, "warmup": 10, "repeats": 50,
   "expect_version": V}                                    -> median_ms, mean_ms, min_ms ...

With ``expect_version`` other than this Lite's, run and bench load nothing and return only the
version: a ``.nb`` of another release must not be loaded, and the caller words the error.

  echo '{"cmd": "version"}' | python3 lite_worker.py
"""

import base64
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
    try:
        import paddlelite.lite as lite_module
    except ImportError as e:
        fail(f"{sys.executable} cannot import paddlelite.lite ({e}): install "
             f"paddlelite==2.13rc0 and numpy there")
    return lite_module


def lite_version():
    return lite().Opt().version()


def encode_array(a):
    import numpy as np
    a = np.ascontiguousarray(a)
    return {"dtype": str(a.dtype), "shape": list(a.shape),
            "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(d):
    import numpy as np
    return np.frombuffer(base64.b64decode(d["b64"]), dtype=d["dtype"]).reshape(d["shape"])


def require_files(*paths):
    for path in paths:
        if not os.path.isfile(path):
            fail(f"no such file: {path}")


# --- opt -------------------------------------------------------------------------------------

def parse_op_report(text):
    """Opt's table 'OP_name kARM kHost ...' -> {op: True if any target column has a kernel}."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip().startswith("OP_name"))
    except StopIteration:
        return None
    ops = {}
    for line in lines[start + 1:]:
        fields = line.split()
        if not fields or not all(f == "Y" for f in fields[1:]):
            break
        ops[fields[0]] = len(fields) > 1
    return ops


# check_if_model_supported prints the report and then ends the process (and opt.run aborts on an
# unsupported op), so the report of each target comes from a child of this worker.
OP_REPORT = ("import sys, paddlelite.lite as l\n"
             "o = l.Opt(); o.set_model_file(sys.argv[1]); o.set_param_file(sys.argv[2])\n"
             "o.set_valid_places(sys.argv[3]); o.check_if_model_supported(True)\n")


def op_report(model_file, param_file, target, folded=()):
    proc = subprocess.run([sys.executable, "-c", OP_REPORT, model_file, param_file, target],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = proc.stdout.decode("utf-8", "replace")
    ops = parse_op_report(text)
    if ops is None:
        fail(f"Paddle Lite's op report for {target} was not found in its output:\n"
             f"{text[-2000:]}")
    # Ops Lite has never heard of are left out of the table and named only in its error line:
    # "... These unsupported ops are: 'op_a, op_b'."
    named = re.search(r"unsupported ops are: '([^']*)'", text)
    for op in (named.group(1).split(",") if named else []):
        if op.strip():
            ops[op.strip()] = False
    return {"ops": ops, "unsupported": sorted(k for k, v in ops.items()
                                              if not v and k not in folded)}


def cmd_opt(req):
    require_files(req["model_file"], req["param_file"])
    outputs = req["outputs"]
    folded = req.get("folded") or ()
    reports = {t: op_report(req["model_file"], req["param_file"], t, folded) for t in outputs}
    result = {"version": lite_version(), "reports": reports, "models": {}}
    if req.get("check_only") or any(r["unsupported"] for r in reports.values()):
        emit(result)  # no .nb for any target: the caller reports the unsupported ops
        return
    for target, prefix in outputs.items():
        opt = lite().Opt()
        opt.set_model_file(req["model_file"])
        opt.set_param_file(req["param_file"])
        if target in req.get("fp16", ()):
            opt.enable_fp16()  # before set_valid_places, or the places stay FP32
        opt.set_valid_places(target)
        opt.set_model_type("naive_buffer")
        opt.set_optimize_out(prefix)
        opt.run()
        if not os.path.isfile(prefix + ".nb"):
            fail(f"Paddle Lite's opt wrote no {prefix}.nb")
        result["models"][target] = prefix + ".nb"
    emit(result)


# --- run, bench ------------------------------------------------------------------------------

def _predictor(req):
    """(version, predictor), predictor None when the .nb is of another Lite release."""
    require_files(req["nb"])
    # The x86 wheel's MobileConfig has no set_threads: its MKL/OpenMP kernels follow these
    # variables, which must be set before paddlelite is imported.
    threads = int(req.get("threads", 1))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    version = lite_version()
    if req.get("expect_version") not in (None, version):
        return version, None
    config = lite().MobileConfig()
    config.set_model_from_file(req["nb"])
    if hasattr(config, "set_threads"):
        config.set_threads(threads)
    return version, lite().create_paddle_predictor(config)


def cmd_run(req):
    import numpy as np
    version, predictor = _predictor(req)
    if predictor is None:
        return emit({"version": version})
    predictor.get_input(0).from_numpy(np.ascontiguousarray(decode_array(req["input"]),
                                                           dtype=np.float32))
    predictor.run()
    outputs = [encode_array(np.array(predictor.get_output(i).numpy()))
               for i in range(len(predictor.get_output_names()))]
    emit({"version": version, "outputs": outputs})


def cmd_bench(req):
    import numpy as np
    version, predictor = _predictor(req)
    if predictor is None:
        return emit({"version": version})
    warmup, repeats = int(req.get("warmup", 10)), int(req.get("repeats", 50))
    x = np.random.default_rng(0).standard_normal(req["shape"]).astype("float32")
    predictor.get_input(0).from_numpy(x)
    for _ in range(warmup):
        predictor.run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.run()
        times.append((time.perf_counter() - t0) * 1000.0)
    emit({"version": version, "median_ms": statistics.median(times),
          "mean_ms": statistics.mean(times), "min_ms": min(times),
          "threads": int(req.get("threads", 1)), "repeats": repeats, "warmup": warmup})


def cmd_version(req):
    emit({"version": lite_version(), "python": sys.version.split()[0]})


HANDLERS = {"version": cmd_version, "opt": cmd_opt, "run": cmd_run, "bench": cmd_bench}


def main():
    if len(sys.argv) > 1:
        print(__doc__, file=sys.stderr)
        sys.exit(0 if sys.argv[1] in ("-h", "--help") else 2)
    try:
        req = json.loads(sys.stdin.read())
    except ValueError as e:
        fail(f"the request on stdin is not JSON: {e}")
    if not isinstance(req, dict) or req.get("cmd") not in HANDLERS:
        fail(f"the request needs \"cmd\": one of {', '.join(sorted(HANDLERS))}")
    HANDLERS[req["cmd"]](req)


if __name__ == "__main__":
    main()
