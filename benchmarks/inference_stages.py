"""Where Paddle Inference spends its time against onnxruntime, stage by stage, on one model.

    python benchmarks/inference_stages.py [--model mobilenetv2] [--turns 5] [--runs_per_turn 6]

The model of ``configs/mobileseg`` (random weights and BatchNorm statistics) is exported as
``mobileseg bench`` does it (Paddle: legacy program, dynamic H/W, oneDNN; onnxruntime: static
shape) and both exports are cut into the same stages:

  lowres  input -> main head's logits at 1/8 size (backbone, context module, decoder, head)
  full    the served graph: lowres + bilinear upsampling to full size + argmax (int32 labels)
  small   the served graph at 1x3x64x128, where the per-run fixed cost of a runtime dominates

Each (stage, backend) runs in its own process (deploy.benchmark's workers) and all take turns,
so load changes hit them alike. ``full - lowres`` is the cost of the upsampling + argmax tail.
With ``--onednn_verbose`` it also reports how much of Paddle's lowres run oneDNN itself times
in its primitives (ONEDNN_VERBOSE=1), i.e. how much is kernel time rather than framework time,
next to onnxruntime's profiler on its lowres run, both grouped the same way (first convolution,
depthwise convolutions, other convolutions, then the rest by kind).
"""

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# none of these imports paddle: the onnxruntime profile worker runs without it
from mobileseg_paddle import resources  # noqa: E402
from mobileseg_paddle.deploy.benchmark import (  # noqa: E402
    build_pair,
    machine_description,
    model_configs,
    summarize,
    time_in_turns,
)
from mobileseg_paddle.deploy.deploy_yaml import DeployConfig  # noqa: E402
from mobileseg_paddle.deploy.runners import PredictorOptions, cpu_count, create_runner  # noqa: E402

SHAPE, SMALL_SHAPE = [1, 3, 512, 1024], [1, 3, 64, 128]


def cut_paddle(deploy_dir, out_dir):
    """Copy of a legacy Paddle export whose output is the input of the last bilinear
    interpolation (the low-resolution logits): the ops after its producer are dropped."""
    from paddle.base import core

    dep = DeployConfig(os.path.join(deploy_dir, "deploy.yaml"))
    desc = core.ProgramDesc(open(dep.file("legacy"), "rb").read())
    block = desc.block(0)
    ops = [block.op(i) for i in range(block.op_size())]
    interp = [op for op in ops if op.type() == "bilinear_interp_v2"][-1]
    lowres = interp.input("X")[0]
    producer = max(i for i, op in enumerate(ops) if lowres in op.output_arg_names())
    fetch = [i for i, op in enumerate(ops) if op.type() == "fetch"]
    if len(fetch) != 1:
        raise RuntimeError(f"expected one fetch op, found {len(fetch)}")
    ops[fetch[0]].set_input("X", [lowres])
    # drop everything between the producer and the fetch (the upsampling + argmax tail)
    block._remove_op(producer + 1, fetch[0])
    shutil.copytree(deploy_dir, out_dir)
    with open(os.path.join(out_dir, os.path.basename(dep.file("legacy"))), "wb") as f:
        f.write(desc.serialize_to_string())
    return out_dir


def cut_onnx(deploy_dir, out_dir):
    """Copy of an ONNX export whose output is the input of its last Resize."""
    import onnx
    import onnx.utils

    path = os.path.join(deploy_dir, "model.onnx")
    model = onnx.load(path)
    resize = [n for n in model.graph.node if n.op_type == "Resize"][-1]
    shutil.copytree(deploy_dir, out_dir)
    onnx.utils.extract_model(path, os.path.join(out_dir, "model.onnx"),
                             [model.graph.input[0].name], [resize.input[0]])
    return out_dir


def export_stages(config_path, work, seed):
    """{(stage, backend): deploy folder} for the stages described in the module docstring."""
    from mobileseg_paddle.deploy.export import export  # (imports paddle)

    ours, _, _ = build_pair(config_path, seed)
    paddle_dir = os.path.dirname(export(config_path, os.path.join(work, "paddle"),
                                        input_shape=[-1, 3, -1, -1], output_op="argmax",
                                        fmt="paddle", program="legacy", model=ours,
                                        engine="onednn"))
    onnx_dir = os.path.dirname(export(config_path, os.path.join(work, "onnx"), input_shape=SHAPE,
                                      output_op="argmax", fmt="onnx", model=ours))
    onnx_small = os.path.dirname(export(config_path, os.path.join(work, "onnx_small"),
                                        input_shape=SMALL_SHAPE, output_op="argmax", fmt="onnx",
                                        model=ours))
    return {
        ("lowres", "paddle"): cut_paddle(paddle_dir, os.path.join(work, "paddle_lowres")),
        ("lowres", "onnxruntime"): cut_onnx(onnx_dir, os.path.join(work, "onnx_lowres")),
        ("full", "paddle"): paddle_dir, ("full", "onnxruntime"): onnx_dir,
        ("small", "paddle"): paddle_dir, ("small", "onnxruntime"): onnx_small,
    }


def conv_group(in_channels, groups, out_channels):
    """The group a convolution's time is reported under (same rule for both runtimes)."""
    if in_channels == 3:
        return "conv: first (3 input channels)"
    if groups > 1 and groups == in_channels == out_channels:
        return "conv: depthwise"
    return "conv: other"


def onednn_group(fields):
    """Report group of one ``onednn_verbose,...,exec`` line split at commas: convolutions by
    ``conv_group`` (read from the problem descriptor, e.g. ``g32mb1_ic32oc32_ih256...``), any
    other primitive by its kind."""
    kind = fields[5]
    if kind != "convolution":
        return kind
    desc = next(f for f in fields if "mb" in f and "_ic" in f)
    m = re.match(r"(?:g(\d+))?mb\d+_ic(\d+)oc(\d+)_", desc)
    if not m:
        raise ValueError(f"unexpected oneDNN convolution descriptor: {desc}")
    return conv_group(int(m.group(2)), int(m.group(1) or 1), int(m.group(3)))


def onnxruntime_group(event):
    """Report group of one node event of onnxruntime's profile (``cat == "Node"``)."""
    op = event["args"]["op_name"]
    if op not in ("Conv", "FusedConv"):
        return op
    x, w = (list(s.values())[0] for s in event["args"]["input_type_shape"][:2])
    in_channels, out_channels, per_group = x[1], w[0], w[1]
    return conv_group(in_channels, in_channels // per_group, out_channels)


def _run_worker(flag, deploy_dir, threads, runs, **env):
    """stdout of this script run as ``flag deploy_dir threads runs`` in a fresh process with
    ``env`` added to the environment; a failure raises with the worker's last stderr line."""
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), flag, deploy_dir, str(threads), str(runs)],
        capture_output=True, text=True, env=resources.child_env(**env), cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip()
                           else f"{flag} worker exited with {proc.returncode}")
    return proc.stdout


def onednn_primitive_times(deploy_dir, threads, runs):
    """{report group: ms per run} of what oneDNN reports for a Paddle export (see
    ``onednn_group``), plus the wall time per run measured around the same runs (verbose
    logging itself adds a little)."""
    stdout = _run_worker("--_verbose_worker", deploy_dir, threads, runs, ONEDNN_VERBOSE="1")
    timed = stdout.split("@@start\n", 1)[1]
    per_kind = collections.Counter()
    wall = None
    for line in timed.splitlines():
        fields = line.split(",")
        if line.startswith("onednn_verbose,") and "primitive" in fields and "exec" in fields:
            per_kind[onednn_group(fields)] += float(fields[-1]) / runs
        elif line.startswith("@@wall "):
            wall = float(line.split()[1])
    return dict(per_kind), wall


def onnxruntime_node_times(deploy_dir, threads, runs):
    """{report group: ms per run} from onnxruntime's profiler over ``runs`` runs of an ONNX
    export after 5 warm-up runs, plus the wall time per run of those profiled runs. Runs in a
    fresh process, like the oneDNN one, so both are measured the same way."""
    stdout = _run_worker("--_profile_worker", deploy_dir, threads, runs)
    result = json.loads(stdout.strip().splitlines()[-1])
    return result["groups"], result["wall"]


def _profile_worker(deploy_dir, threads, runs):
    threads, runs = int(threads), int(runs)
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="mobileseg-ortprof-") as tmp:
        opts = PredictorOptions(cpu_threads=threads,
                                profile_file_prefix=os.path.join(tmp, "profile"))
        runner = create_runner(DeployConfig(os.path.join(deploy_dir, "deploy.yaml")),
                               "onnxruntime", opts)
        warmup = 5
        times = []
        for _ in range(warmup + runs):
            t0 = time.perf_counter()
            runner(x)
            times.append(time.perf_counter() - t0)
        with open(runner.end_profiling()) as f:
            events = json.load(f)
    # the profile holds every run: keep the node events of the last ``runs`` runs
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(nodes) // (warmup + runs)
    per_group = collections.Counter()
    for e in nodes[-per_run * runs:]:
        per_group[onnxruntime_group(e)] += e["dur"] / 1e3 / runs
    print(json.dumps({"groups": per_group, "wall": float(np.median(times[warmup:])) * 1e3}))
    return 0


def _verbose_worker(deploy_dir, threads, runs):
    runner = create_runner(DeployConfig(os.path.join(deploy_dir, "deploy.yaml")), "paddle",
                           PredictorOptions(engine="onednn", cpu_threads=int(threads)))
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    for _ in range(5):
        runner(x)
    sys.stdout.flush()
    print("@@start", flush=True)
    times = []
    for _ in range(int(runs)):
        t0 = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - t0)
    sys.stdout.flush()
    print(f"@@wall {np.median(times) * 1e3:.3f}", flush=True)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--_verbose_worker"]:
        return _verbose_worker(*argv[1:4])
    if argv[:1] == ["--_profile_worker"]:
        return _profile_worker(*argv[1:4])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mobilenetv2", help="a model name of configs/mobileseg")
    p.add_argument("--threads", type=int, default=0, help="0: all usable CPUs")
    p.add_argument("--turns", type=int, default=5)
    p.add_argument("--runs_per_turn", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--onednn_verbose", action="store_true",
                   help="also report oneDNN's own primitive times for Paddle's lowres stage")
    p.add_argument("--save_json", default=None)
    args = p.parse_args(argv)

    threads = args.threads or cpu_count()
    machine = machine_description()
    print(f"machine: {machine['cpu']}, {machine['usable_cpus']} CPUs, {threads} threads, "
          f"load {machine['load_average'][0]:.2f}; paddle {machine['versions']['paddlepaddle']}, "
          f"onnxruntime {machine['versions'].get('onnxruntime')}")
    config = model_configs([args.model])[args.model]
    with tempfile.TemporaryDirectory(prefix="mobileseg-stages-") as work:
        dirs = export_stages(config, work, args.seed)
        specs = {f"{stage}-{backend}": {
            "kind": "deploy", "path": d, "threads": threads, "seed": args.seed, "warmup": 3,
            "shape": SMALL_SHAPE if stage == "small" else SHAPE}
            for (stage, backend), d in dirs.items()}
        times, _, errors = time_in_turns(specs, args.turns, args.runs_per_turn, work)
        verbose = profile = None
        if args.onednn_verbose:
            runs = args.turns * args.runs_per_turn
            verbose = onednn_primitive_times(dirs[("lowres", "paddle")], threads, runs)
            profile = onnxruntime_node_times(dirs[("lowres", "onnxruntime")], threads, runs)
    for name, err in errors.items():
        print(f"{name}: failed: {err}")
    stats = {name: summarize(t) for name, t in times.items()}
    print(f"\n{args.model}, {threads} threads, median of {args.turns}x{args.runs_per_turn} runs "
          f"(p10-p90), load {os.getloadavg()[0]:.2f} at the end\n")
    print("| stage | Paddle Inference (oneDNN) | onnxruntime | Paddle - onnxruntime |")
    print("|---|---|---|---|")
    rows = [("lowres", "1x3x512x1024 to 1/8-size logits"), ("full", "1x3x512x1024, served"),
            ("small", "1x3x64x128, served")]
    med = {}
    for stage, label in rows:
        cells = []
        for backend in ("paddle", "onnxruntime"):
            s = stats.get(f"{stage}-{backend}")
            med[stage, backend] = s["median_ms"] if s else float("nan")
            cells.append(f"{s['median_ms']:.1f} ms ({s['p10_ms']:.1f}-{s['p90_ms']:.1f})"
                         if s else "failed")
        print(f"| {stage}: {label} | {cells[0]} | {cells[1]} | "
              f"{med[stage, 'paddle'] - med[stage, 'onnxruntime']:+.1f} ms |")
    tail = {b: med["full", b] - med["lowres", b] for b in ("paddle", "onnxruntime")}
    print(f"| full - lowres: upsampling + argmax | {tail['paddle']:.1f} ms | "
          f"{tail['onnxruntime']:.1f} ms | {tail['paddle'] - tail['onnxruntime']:+.1f} ms |")
    if verbose:
        kinds, wall = verbose
        ort_nodes, ort_wall = profile
        print("\nKernel times of the lowres stage, ms per run (median wall time of the same "
              "runs, with the logging on, in brackets): oneDNN's own (ONEDNN_VERBOSE) in Paddle's "
              "run and onnxruntime's profiler, each in a fresh process\n")
        print("| group | Paddle Inference (oneDNN) | onnxruntime |")
        print("|---|---|---|")
        print(f"| all kernels (wall) | {sum(kinds.values()):.2f} ms ({wall:.1f} ms) | "
              f"{sum(ort_nodes.values()):.2f} ms ({ort_wall:.1f} ms) |")
        groups = sorted(set(kinds) | set(ort_nodes),
                        key=lambda g: (not g.startswith("conv:"), -kinds.get(g, 0), g))
        for g in groups:
            cells = [f"{d[g]:.2f} ms" if g in d else "-" for d in (kinds, ort_nodes)]
            print(f"| {g} | {cells[0]} | {cells[1]} |")
    if args.save_json:
        with open(args.save_json, "w") as f:
            json.dump({"machine": machine, "threads": threads, "stats": stats,
                       "onednn_verbose": verbose, "onnxruntime_profile": profile,
                       "errors": errors}, f, indent=2)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
