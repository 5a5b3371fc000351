"""Paddle Lite ARM INT8 against FP32 on real trained models: val mIoU of the FP32 and INT8 ARM
models run on Lite's ARM kernels under qemu (numerics, not speed), and the pixel agreement of
the INT8 labels with the FP32 ones.

The models are those benchmarks/quant_accuracy.py trained (reused from ``--trained_dir``, its
``--work_dir``; nothing is trained here): MobileSeg-MobileNetV2 on the membrane images and the
four other backbones on the quick start's synthetic shapes (see that script's docstring).

For each case, ``mobileseg_paddle.deploy.lite.convert`` writes the FP32 and the INT8 ARM model
(``model_arm.nb``, logits) at a fixed input shape: membrane 1x3x256x256 (as
tests/deploy/lite/test_lite_int8.py; the images are 512x512 and the model was trained on 256
crops of them, so at half scale its FP32 mIoU is far below the 512 one: ``--membrane_size 512``
adds the case membrane@512), the quick start 1x3x96x96 (its images' size); INT8 is
calibrated on ``--num_calib`` train images (at most the train split: 24 on membrane) with
``--algo``. Every image of the config's val_dataset then goes through the demo's preprocessing
(``pipeline.preprocess`` with the manifest's mean/std) into both models on the ARM runtime
(``arm_runtime.build_runtime``, cached) under qemu-aarch64; the label maps (``manifest.labels_of``)
are resized to the label's size (nearest, as the demo) and scored against the val_dataset's
labels (after its transforms: the membrane's 0/255 masks mapped to 0/1) with paddleseg's metric
(intersections and unions accumulated over the val set, mean over classes, ignore_index left
out). The goal: INT8 mIoU within ``--max_drop`` points of FP32 and agreement >= ``--min_agreement``
%; rows that miss it are marked, with the spread of the per-image agreement.

    python benchmarks/lite_int8_accuracy.py [--work_dir /tmp/lite8acc] [--trained_dir /tmp/qacc]
        [--cases ...] [--membrane_size 256] [--num_calib 32] [--algo avg] [--reeval]
        [--table_only]

Times: a conversion 5-30 s, Lite-HRNet-18's INT8 one about 130 s (Lite's opt ~100 s of it);
qemu runs take about a second per 96x96 image and model
(Lite-HRNet-18 longer). Progress lines name the case, the step and the elapsed seconds; the
default ``--cases`` run Lite-HRNet-18 last.

The conversions stay in ``<work_dir>/<case>/{fp32,int8}_arm`` and are kept by a rerun for the
same weights, shape and calibration; each case's figures are merged into
``<work_dir>/lite_int8_accuracy.json`` (a case already there for the same conversions is not
evaluated again unless ``--reeval``); the table shows every case of the JSON.
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quant_accuracy import (  # noqa: E402
    CASES,
    QUICKSTART_BACKBONES,
    QUICKSTART_DATA,
    add_study_args,
    load_cases,
    log,
    print_table,
    recipe_suffix,
    row_misses,
    save_cases,
)

PRECISIONS = ("fp32", "int8")
MEMBRANE_SIZE = 256  # tests/deploy/lite/test_lite_int8.py's input
SLOW = "litehrnet18"  # its INT8 conversion is the slowest (~130 s): run last by default
DEFAULT_CASES = tuple(c for c in CASES if c != SLOW) + (SLOW,)
JSON_NAME = "lite_int8_accuracy.json"
SIDECAR = "benchmark.json"  # beside a conversion's manifest: what it was made from, how long


@contextlib.contextmanager
def heartbeat(what, every=60.0):
    """A progress line every ``every`` seconds while the block runs (a long INT8 calibration
    prints nothing of its own but Paddle's progress bars)."""
    t0, stop = time.time(), threading.Event()

    def beat():
        while not stop.wait(every):
            log(f"{what}: still running, {time.time() - t0:.0f} s")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def trained_model(args, name):
    """(config, weights, backbone, data, input size) of ``name`` as quant_accuracy.py named
    them in ``--trained_dir``; SystemExit saying how to train them when they are missing."""
    work = os.path.join(args.trained_dir, name)
    if name == "membrane":
        n = args.membrane_iters
        config, weights = (os.path.join(work, f"membrane_{n}.yml"),
                           os.path.join(work, f"train_{n}", f"iter_{n}", "model.pdparams"))
        found = ("MobileNetV2", "membrane (EM, 512x512)", args.membrane_size)
    else:
        suffix = recipe_suffix(args, name)
        config = os.path.join(work, f"{name}{suffix}_{args.iters}.yml")
        weights = os.path.join(work, f"train{suffix}_{args.iters}", f"iter_{args.iters}",
                               "model.pdparams")
        size = QUICKSTART_DATA["size"]
        found = (QUICKSTART_BACKBONES[name][0], f"quick start (synthetic, {size}x{size})", size)
    missing = [p for p in (config, weights) if not os.path.isfile(p)]
    if missing:
        raise SystemExit(f"{name}: no {' and no '.join(missing)}: train it first with "
                         f"python benchmarks/quant_accuracy.py --work_dir {args.trained_dir} "
                         f"--cases {name}")
    return (config, weights) + found


def num_train_images(config):
    from mobileseg_paddle.config import load_config
    cfg = load_config(config, sections=("model", "train_dataset"))
    with open(cfg.dic["train_dataset"]["train_path"]) as f:
        return sum(1 for line in f if line.strip())


def converted(name, precision, config, weights, save_dir, size, num_calib, algo):
    """``save_dir`` holding ``precision``'s ARM model (converted now unless an earlier run
    left one made from the same inputs); returns its sidecar dict (+ "reused")."""
    from mobileseg_paddle.deploy.lite import manifest as mf
    from mobileseg_paddle.deploy.lite.convert import convert

    source = {"config": os.path.abspath(config), "weights": os.path.abspath(weights),
              "weights_mtime": os.path.getmtime(weights), "input_shape": [1, 3, size, size]}
    if precision == "int8":
        source.update(num_calib=num_calib, algo=algo)
    sidecar = os.path.join(save_dir, SIDECAR)
    if os.path.isfile(os.path.join(save_dir, mf.FILENAME)) and os.path.isfile(sidecar):
        with open(sidecar) as f:
            done = json.load(f)
        if {k: done.get(k) for k in source} == source:
            log(f"{name} {precision}: kept the conversion in {save_dir} "
                f"({done['seconds']} s when made)")
            return dict(done, reused=True)
    what = f"{name} {precision}: converting"
    log(f"{what} into {save_dir}")
    t0 = time.time()
    extra = {"precision": "int8", "num_calib": num_calib, "algo": algo} \
        if precision == "int8" else {}
    with heartbeat(what):
        convert(config, weights, save_dir, source["input_shape"], "arm",
                log=lambda message: log(f"{name} {precision}: {message}"), **extra)
    done = dict(source, seconds=round(time.time() - t0, 1))
    with open(sidecar, "w") as f:
        json.dump(done, f, indent=2)
    log(f"{name} {precision}: converted in {done['seconds']} s")
    return dict(done, reused=False)


def evaluate(name, config, dirs, arm):
    """Both ARM models on every val image under qemu: {"val_images", "results": {precision:
    {"miou", "class_iou", "qemu_seconds_per_image"}}, "agreement", "agreement_per_image"}."""
    import cv2
    import numpy as np
    import paddle
    from paddleseg.cvlibs import SegBuilder
    from paddleseg.utils import metrics

    from mobileseg_paddle import compat
    from mobileseg_paddle.config import load_config
    from mobileseg_paddle.deploy.lite import check
    from mobileseg_paddle.deploy.lite import manifest as mf
    from mobileseg_paddle.deploy.lite.pipeline import preprocess

    compat.apply()  # paddleseg 2.8's metric on Paddle 3
    cfg = load_config(config, sections=("model", "val_dataset"))
    with contextlib.redirect_stdout(io.StringIO()):
        dataset = SegBuilder(cfg).val_dataset
    manifests = {p: mf.read_manifest(d) for p, d in dirs.items()}
    nbs = {p: mf.model_file(manifests[p], d, "arm") for p, d in dirs.items()}
    for p, nb in nbs.items():
        check.check_arm_nb(nb, arm["runtime"]["version"])
        mf.check_lite_version(manifests[p], dirs[p], arm["runtime"]["version"])
    spec = manifests["fp32"]["input"]
    _, _, h, w = spec["shape"]
    areas = {p: [0, 0, 0] for p in PRECISIONS}
    qemu_s = {p: 0.0 for p in PRECISIONS}
    same = pixels = 0
    per_image = {}
    t0 = last = time.time()
    for i, (image, _) in enumerate(dataset.file_list):
        truth = np.asarray(dataset[i]["label"]).astype("int64")
        truth = truth.reshape(1, *truth.shape[-2:])
        x = preprocess(image, h, w, spec["mean"], spec["std"])
        labels = {}
        for p in PRECISIONS:
            t = time.time()
            out = check.run_on_arm(arm["runner"], nbs[p], x, arm["qemu"])
            qemu_s[p] += time.time() - t
            pred = mf.labels_of(manifests[p], out)
            if pred.shape != truth.shape[1:]:
                pred = cv2.resize(pred, (truth.shape[2], truth.shape[1]),
                                  interpolation=cv2.INTER_NEAREST)
            labels[p] = pred.astype("int64")[None]
            area = metrics.calculate_area(paddle.to_tensor(labels[p]), paddle.to_tensor(truth),
                                          dataset.num_classes, dataset.ignore_index)
            areas[p] = [a + b for a, b in zip(areas[p], area)]
        agree = int((labels["int8"] == labels["fp32"]).sum())
        same, pixels = same + agree, pixels + truth.size
        per_image[os.path.basename(image)] = agree / truth.size
        if time.time() - last >= 30 or i + 1 == len(dataset.file_list):
            last = time.time()
            log(f"{name} evaluate: {i + 1}/{len(dataset.file_list)} images, "
                f"{last - t0:.0f} s")
    n = len(dataset.file_list)
    results = {}
    for p in PRECISIONS:
        class_iou, miou = metrics.mean_iou(*areas[p])
        results[p] = {"miou": float(miou), "class_iou": [float(v) for v in class_iou],
                      "qemu_seconds_per_image": round(qemu_s[p] / max(n, 1), 2)}
    return {"val_images": n, "results": results, "agreement": same / max(pixels, 1),
            "agreement_per_image": per_image, "evaluate_seconds": round(time.time() - t0, 1)}


def without_reused(conversion):
    return {k: v for k, v in conversion.items() if k != "reused"}


def goal_misses(case, max_drop, min_agreement):
    r = case["results"]
    return row_misses(r["fp32"]["miou"], r["int8"]["miou"], case["agreement"], max_drop,
                      min_agreement)


def spread(values):
    """min / median / max of per-image agreements, in percent."""
    v = sorted(values)
    return f"{100 * v[0]:.2f} / {100 * statistics.median(v):.2f} / {100 * v[-1]:.2f}"


def table(cases, max_drop, min_agreement):
    lines = ["| model | data | input | calib | val images | FP32 ARM mIoU | INT8 ARM mIoU (Δ pt) | "
             "agreement % (per image min / median / max) | .nb MB FP32 / INT8 | conversion s "
             "FP32 / INT8 | qemu s/image FP32 / INT8 | goal |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    def order(key):
        base = key.split("@")[0]
        return (CASES.index(base) if base in CASES else len(CASES), key)

    for name in sorted(cases, key=order):
        case = cases[name]
        r, conv = case["results"], case["conversions"]
        delta = round((r["int8"]["miou"] - r["fp32"]["miou"]) * 100, 2) + 0.0  # no "-0.00"
        misses = goal_misses(case, max_drop, min_agreement)
        lines.append(
            f"| MobileSeg-{case['backbone']} | {case['data']} | {case['input_size']}x"
            f"{case['input_size']} | {case['num_calib']} ({case['algo']}) | {case['val_images']} | "
            f"{r['fp32']['miou']:.4f} | {r['int8']['miou']:.4f} ({delta:+.2f}) | "
            f"{100 * case['agreement']:.2f} ({spread(case['agreement_per_image'].values())}) | "
            + " / ".join(f"{conv[p]['nb_bytes'] / 1e6:.2f}" for p in PRECISIONS) + " | "
            + " / ".join(f"{conv[p]['seconds']:.0f}" for p in PRECISIONS) + " | "
            + " / ".join(f"{r[p]['qemu_seconds_per_image']:.1f}" for p in PRECISIONS) + " | "
            + ("ok" if not misses else "**MISSED**: " + "; ".join(misses)) + " |")
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work_dir", default="/tmp/lite8acc", help="conversions and the JSON")
    p.add_argument("--trained_dir", default="/tmp/qacc",
                   help="quant_accuracy.py's --work_dir: the trained configs and weights")
    p.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), choices=CASES)
    p.add_argument("--iters", type=int, default=800,
                   help="quick-start cases: the training iterations of the weights to use")
    p.add_argument("--optimizer", default="adam", choices=("sgd", "adam"),
                   help="quick-start cases: the weights trained with this optimizer")
    p.add_argument("--adam_lr", type=float, default=0.01)
    p.add_argument("--membrane_iters", type=int, default=300)
    p.add_argument("--membrane_size", type=int, default=MEMBRANE_SIZE,
                   help="membrane's input H = W (the images are 512x512); another size than "
                        f"{MEMBRANE_SIZE} is the case membrane@<size>")
    add_study_args(p, JSON_NAME)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    out_json, cases = load_cases(args, JSON_NAME)
    arm = None
    for name in [] if args.table_only else args.cases:
        log(f"===== case {name}")
        t0 = time.time()
        config, weights, backbone, data, size = trained_model(args, name)
        key = name if name != "membrane" or size == MEMBRANE_SIZE else f"{name}@{size}"
        num_calib = min(args.num_calib, num_train_images(config))
        conversions = {}
        dirs = {p: os.path.join(args.work_dir, key.replace("@", "_"), f"{p}_arm")
                for p in PRECISIONS}
        for p, save_dir in dirs.items():
            conversions[p] = converted(key, p, config, weights, save_dir, size, num_calib,
                                       args.algo)
            conversions[p]["nb_bytes"] = os.path.getsize(os.path.join(save_dir, "model_arm.nb"))
        prev = cases.get(key)
        if (prev and not args.reeval and all(c["reused"] for c in conversions.values())
                and all(without_reused(prev["conversions"][p]) == without_reused(
                    conversions[p]) for p in PRECISIONS)):
            log(f"{key}: already evaluated for these conversions ({out_json}); --reeval to redo")
            continue
        if arm is None:
            from mobileseg_paddle.deploy.lite import arm_runtime, check
            runtime = arm_runtime.build_runtime(log=log)  # cached: quick after the first build
            arm = {"runtime": runtime, "runner": check.build_runner(runtime),
                   "qemu": check.find_qemu()}
        case = evaluate(key, config, dirs, arm)
        case.update(backbone=backbone, data=data, input_size=size, num_calib=num_calib,
                    algo=args.algo, config=os.path.abspath(config),
                    weights=os.path.abspath(weights), conversions=conversions,
                    lite_version=arm["runtime"]["version"],
                    case_seconds=round(time.time() - t0))
        case["goal_misses"] = goal_misses(case, args.max_drop, args.min_agreement)
        cases[key] = case
        save_cases(out_json, args, cases)
        r = case["results"]
        log(f"{key}: mIoU FP32 {r['fp32']['miou']:.4f}, INT8 {r['int8']['miou']:.4f}, "
            f"agreement {100 * case['agreement']:.2f}% ({case['case_seconds']} s); "
            f"written to {out_json}")
    if not cases:
        return 0
    print_table(f"Paddle Lite ARM (qemu-aarch64) INT8 against FP32 (val mIoU; Δ in points; "
                f"agreement: share of val pixels whose INT8 label equals the FP32 one; goal: "
                f"drop <= {args.max_drop} pt and agreement >= {args.min_agreement}%)",
                table(cases, args.max_drop, args.min_agreement), out_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
