"""INT8 (and BF16) accuracy against FP32 on real data: val mIoU of each precision and the pixel
agreement of each reduced-precision run with its own format's FP32 labels.

Cases:

1. MobileSeg-MobileNetV2 on the membrane images (../shared/data/membrane: 24 train, 6 val;
   the recipe of tests/helpers/membrane.py), trained through ``mobileseg train`` or reused with
   ``--membrane_config``/``--membrane_weights``;
2. the four other backbones (MobileNetV3-large, Lite-HRNet-18, ShuffleNetV2, GhostNet) on the
   quick start's synthetic shapes data (300 train / 50 val images of 96x96, 4 classes): the
   model section of each ``configs/mobileseg/mobileseg_<name>_cityscapes_1024x512_80k.yml``
   (the model zoo's head settings) without ``pretrained``, the quick start's recipe otherwise,
   trained from scratch for ``--iters`` iterations through ``mobileseg train``. The quick
   start's SGD (lr 0.1) leaves these backbones nearly untrained in 800 iterations (measured:
   MobileNetV3 mIoU 0.30, ShuffleNetV2 0.50); ``--optimizer adam`` (Adam lr 0.01, the membrane
   recipe's optimizer; schedule, warm-up and losses unchanged) trains them to 0.84-0.87 in
   800 (Lite-HRNet-18 with plain cross-entropy instead of OHEM: ``CE_BACKBONES``).

Times on 2 busy cores: training 800 iterations 4-7 min, Lite-HRNet-18 13 min; a case's
exports and evaluation ~1 min, Lite-HRNet-18's a few minutes (``--reuse_exports`` keeps the
exports of an earlier run).

For each: the FP32 Paddle export (oneDNN) and the FP32 ONNX export; INT8 through
``mobileseg_paddle.deploy.quant.quantize`` for Paddle (run on oneDNN and on OpenVINO, each
engine its own quantized program) and ONNX (onnxruntime),
calibrated on ``--num_calib`` train images (at most the train split: 24 on membrane); BF16 is
the FP32 Paddle export run on oneDNN in bfloat16. All are evaluated on the config's
val_dataset with paddleseg's metric. The goal: INT8 mIoU within ``--max_drop`` points of
FP32 and pixel agreement >= ``--min_agreement`` %; rows that miss it are marked.

    python benchmarks/quant_accuracy.py [--work_dir /tmp/qacc] [--cases ...] [--iters 800]
        [--optimizer sgd|adam] [--membrane_config C --membrane_weights W] [--num_calib 32]
        [--algo avg]

Trained weights stay in ``--work_dir`` (training is skipped when the checkpoint exists) and
each case's figures are merged into ``<work_dir>/quant_accuracy.json`` (a case already there
for the same weights and calibration is not evaluated again unless ``--reeval``), so a rerun
or a run of a subset of ``--cases`` is cheap; the table shows every case of the JSON.
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# case name: (backbone shown, config of the model zoo)
QUICKSTART_BACKBONES = {
    "mobilenetv3": ("MobileNetV3-large", "mobileseg_mobilenetv3_cityscapes_1024x512_80k.yml"),
    "litehrnet18": ("Lite-HRNet-18", "mobileseg_litehrnet18_cityscapes_1024x512_80k.yml"),
    "shufflenetv2": ("ShuffleNetV2", "mobileseg_shufflenetv2_cityscapes_1024x512_80k.yml"),
    "ghostnet": ("GhostNet", "mobileseg_ghostnet_cityscapes_1024x512_80k.yml"),
}
CASES = ("membrane",) + tuple(QUICKSTART_BACKBONES)
# trained with plain cross-entropy instead of the quick start's OHEM: from scratch, OHEM (its
# 20,000 hardest pixels) kept Lite-HRNet-18, ours and PaddleSeg's alike (the same losses to 4
# decimals), at the class prior on this Ice Lake in every run (seeds, optimizers, learning
# rates, initializations); plain cross-entropy left that plateau
CE_BACKBONES = ("litehrnet18",)
MEMBRANE_OPTIMIZER = "Adam 0.01, CE (membrane recipe)"
QUICKSTART_DATA = {"num_train": 300, "num_val": 50, "size": 96, "seed": 0}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_yaml(path, dic):
    import yaml
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(dic, f, sort_keys=False)
    return path


def train(config, save_dir, iters, extra=()):
    """Train ``config`` through the real ``mobileseg train`` (with the flags ``extra``) unless
    ``save_dir`` already holds its final checkpoint; returns (weights, seconds or None when
    skipped)."""
    weights = os.path.join(save_dir, f"iter_{iters}", "model.pdparams")
    if os.path.isfile(weights):
        log(f"trained weights exist, training skipped: {weights}")
        return weights, None
    cmd = [sys.executable, "-m", "mobileseg_paddle", "train", "--config", config, "--device",
           "cpu", "--save_dir", save_dir, "--save_interval", str(iters), "--log_iters", "50",
           "--num_workers", "0", "--seed", "0", "--keep_checkpoint_max", "1", "--overwrite",
           *map(str, extra)]
    log("training: " + " ".join(cmd[1:]))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.time()
    proc = subprocess.run(cmd, env=env)
    seconds = time.time() - t0
    if proc.returncode != 0 or not os.path.isfile(weights):
        raise SystemExit(f"training failed (exit {proc.returncode}); no {weights}")
    log(f"trained {iters} iterations in {seconds:.0f} s")
    return weights, seconds


def membrane_case(args):
    """(config, weights, train seconds, iterations) of the membrane MobileNetV2."""
    if args.membrane_config or args.membrane_weights:
        if not (args.membrane_config and args.membrane_weights):
            raise SystemExit("--membrane_config and --membrane_weights go together")
        import yaml
        with open(args.membrane_config) as f:
            iters = (yaml.safe_load(f) or {}).get("iters")
        return args.membrane_config, args.membrane_weights, None, iters
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from helpers import membrane

    work = os.path.join(args.work_dir, "membrane")
    list_dir = membrane.write_lists(os.path.join(work, "lists"))
    config = write_yaml(os.path.join(work, f"membrane_{args.membrane_iters}.yml"),
                        membrane.config_dict(list_dir, args.membrane_iters))
    weights, seconds = train(config, os.path.join(work, f"train_{args.membrane_iters}"),
                             args.membrane_iters)
    return config, weights, seconds, args.membrane_iters


def recipe_suffix(args, name):
    """What a quick-start case's config and training folder are named after besides the
    iterations: the optimizer (Adam and its lr) and the cross-entropy of ``CE_BACKBONES``."""
    return ((f"_adam{args.adam_lr:g}" if args.optimizer == "adam" else "")
            + ("_ce" if name in CE_BACKBONES else ""))


def quickstart_case(args, name):
    """(config, weights, train seconds, iterations) of ``name``'s backbone on the quick
    start's data."""
    from mobileseg_paddle import synthetic
    from mobileseg_paddle.config import load_config
    from mobileseg_paddle.quickstart import quickstart_config

    data_dir = os.path.join(args.work_dir, "quickstart_data")
    if not os.path.isfile(os.path.join(data_dir, "val.txt")):
        d = QUICKSTART_DATA
        log(f"generating the quick start's data in {data_dir}")
        synthetic.generate(data_dir, d["num_train"], d["num_val"], d["size"], d["seed"])
    zoo = os.path.join(ROOT, "configs", "mobileseg", QUICKSTART_BACKBONES[name][1])
    from mobileseg_paddle.builder import without_pretrained
    model = without_pretrained(copy.deepcopy(load_config(zoo, sections=("model",)).dic["model"]))
    model["num_classes"] = synthetic.NUM_CLASSES
    dic = quickstart_config(data_dir, args.iters, args.batch_size, synthetic.NUM_CLASSES)
    dic["model"] = model
    if name in CE_BACKBONES:
        dic["loss"] = {"types": [{"type": "MSP_CrossEntropyLoss"}] * 3, "coef": [1, 1, 1]}
    if args.optimizer == "adam":
        # the membrane recipe's optimizer (tests/helpers/membrane.py); the rest as the quick start
        dic["optimizer"] = {"type": "Adam", "weight_decay": 1.0e-4}
        dic["lr_scheduler"]["learning_rate"] = args.adam_lr
    suffix = recipe_suffix(args, name)
    work = os.path.join(args.work_dir, name)
    config = write_yaml(os.path.join(work, f"{name}{suffix}_{args.iters}.yml"), dic)
    weights, seconds = train(config, os.path.join(work, f"train{suffix}_{args.iters}"),
                             args.iters)
    return config, weights, seconds, args.iters


def measure(config, weights, out_dir, num_calib, algo, reuse=False, int8_weights=None,
            int8_suffix=""):
    """Exports, INT8 exports and their evaluation; returns the case's figures. An export or
    a runner that fails is recorded in ``errors`` and left out; the rest are measured.
    ``reuse``: keep an export of ``out_dir`` that is newer than its weights. ``int8_weights``:
    the INT8 exports are of these weights (quantization-aware training's), written to
    ``int8_*<int8_suffix>``; FP32 stays ``weights``', the reference."""
    from mobileseg_paddle.config import load_config
    from mobileseg_paddle.deploy import export as ex
    from mobileseg_paddle.deploy.deploy_yaml import FILENAME, DeployConfig
    from mobileseg_paddle.deploy.quant import evaluate, quantize
    from mobileseg_paddle.deploy.runners import PredictorOptions, create_runner
    from mobileseg_paddle.errors import one_line

    cfg = load_config(config)
    with open(cfg.dic["train_dataset"]["train_path"]) as f:
        num_train = sum(1 for line in f if line.strip())
    num_calib = min(num_calib, num_train)
    int8_weights = int8_weights or weights
    dirs = {k: os.path.join(out_dir, k) for k in ("fp32_paddle", "fp32_onnx")}
    dirs.update({k: os.path.join(out_dir, k + int8_suffix) for k in ("int8_paddle", "int8_onnx")})
    seconds, errors, reused = {}, {}, []

    def step(key, fn):
        done = os.path.join(dirs[key], FILENAME)
        source = int8_weights if key.startswith("int8") else weights
        if reuse and os.path.isfile(done) and os.path.getmtime(done) > os.path.getmtime(source):
            log(f"{key}: kept the export in {dirs[key]} (--reuse_exports)")
            reused.append(key)
            return
        log(f"{key}: writing {dirs[key]}")
        t0 = time.time()
        try:
            fn()
        except Exception as e:
            errors[key] = one_line(e)
            log(f"{key}: FAILED: {errors[key]}")
            return
        seconds[key] = round(time.time() - t0, 1)
        log(f"{key}: {seconds[key]} s")

    step("fp32_paddle", lambda: ex.export(config, dirs["fp32_paddle"], model_path=weights,
                                          output_op="argmax", fmt="paddle", program="legacy",
                                          engine="onednn"))
    step("fp32_onnx", lambda: ex.export(config, dirs["fp32_onnx"], model_path=weights,
                                        output_op="argmax", fmt="onnx", program="legacy"))
    step("int8_paddle", lambda: quantize(config, dirs["int8_paddle"], model_path=int8_weights,
                                         num_calib=num_calib, algo=algo, fmt="paddle",
                                         output_op="argmax"))
    step("int8_onnx", lambda: quantize(config, dirs["int8_onnx"], model_path=int8_weights,
                                       num_calib=num_calib, algo=algo, fmt="onnx",
                                       output_op="argmax"))

    def runner(key, precision="auto", engine="auto"):
        return create_runner(DeployConfig(dirs[key]), "auto", PredictorOptions(
            cpu_threads=2, precision=precision, engine=engine,
            openvino_cache_dir=os.path.join(out_dir, "openvino_cache")))

    quiet = lambda m: None  # noqa: E731
    t0 = time.time()
    # agreement is with the first runner's labels: each format against its own FP32
    # (result, export, precision, engine)
    groups = {"paddle": (("fp32_paddle", "fp32_paddle", "auto", "onednn"),
                         ("int8_paddle", "int8_paddle", "auto", "onednn"),
                         ("int8_openvino", "int8_paddle", "auto", "openvino"),
                         ("bf16_paddle", "fp32_paddle", "bf16", "onednn"),
                         ("fp32_ort", "fp32_onnx", "auto", "auto")),
              "onnx": (("fp32_ort", "fp32_onnx", "auto", "auto"),
                       ("int8_ort", "int8_onnx", "auto", "auto"))}
    results = {}
    n_images = None
    for group, members in groups.items():
        runners = {}
        try:
            for name, key, precision, engine in members:
                if key in errors:
                    errors.setdefault(name, f"no {key} export")
                    continue
                try:
                    runners[name] = runner(key, precision, engine)
                except Exception as e:
                    errors[name] = one_line(e)
                    log(f"{name}: FAILED to load: {errors[name]}")
            if members[0][0] not in runners:  # no FP32 reference in this format
                continue
            log(f"evaluating {', '.join(runners)} on the val_dataset")
            res, n_images = evaluate(runners, cfg, config, log=quiet)
        finally:
            for r in runners.values():
                r.close()
        for name, v in res.items():
            if group == "paddle" and name == "fp32_ort":
                results["fp32_ort"] = {"miou": v["miou"], "agreement_vs_fp32_paddle":
                                       v["agreement"]}
            elif group == "onnx" and name == "fp32_ort":
                assert abs(v["miou"] - results["fp32_ort"]["miou"]) < 1e-9
            else:
                results[name] = v
    seconds["evaluate"] = round(time.time() - t0, 1)
    log(f"evaluated {n_images} images in {seconds['evaluate']} s")
    return {"num_calib": num_calib, "algo": algo, "val_images": n_images, "results": results,
            "seconds": seconds, "errors": errors, "reused_exports": reused}


def row_misses(fp32_miou, int8_miou, agreement, max_drop, min_agreement, label=""):
    """How one INT8 result misses the goal (empty: met); shared with lite_int8_accuracy.py."""
    prefix = f"{label} " if label else ""
    drop = (fp32_miou - int8_miou) * 100
    misses = [f"{prefix}mIoU -{drop:.2f} pt"] if drop > max_drop else []
    if agreement * 100 < min_agreement:
        misses.append(f"{prefix}agreement {agreement * 100:.2f}%")
    return misses


def goal_met(case, max_drop, min_agreement):
    """Each INT8 row's misses of the goal (empty: met)."""
    r = case["results"]
    misses = []
    for name, ref, label in (("int8_paddle", "fp32_paddle", "INT8 Paddle"),
                             ("int8_openvino", "fp32_paddle", "INT8 OpenVINO"),
                             ("int8_ort", "fp32_ort", "INT8 ORT")):
        if name == "int8_openvino" and name not in r and name not in case.get("errors", {}):
            continue  # a case measured before OpenVINO ran INT8 exports
        if name not in r or ref not in r:
            misses.append(f"{label} failed")
            continue
        misses += row_misses(r[ref]["miou"], r[name]["miou"], r[name]["agreement"], max_drop,
                             min_agreement, label)
    return misses


def print_table(title, text, out_json):
    print(f"\n{title}\n")
    print(text)
    print(f"\nfigures: {out_json}")


def optimizer_of(key):
    """How the case ``key`` was trained (the JSON of a run before ``--optimizer`` existed)."""
    if key == "membrane":
        return MEMBRANE_OPTIMIZER
    return "Adam" if key.endswith("+adam") else "SGD 0.1 (quick start)"


def table(cases, max_drop, min_agreement):
    lines = ["| model | data | training | val images | FP32 mIoU | FP32 ORT mIoU | INT8 Paddle "
             "oneDNN mIoU (Δ pt, agree %) | INT8 Paddle OpenVINO mIoU (Δ pt, agree %) | INT8 ORT "
             "mIoU (Δ pt, agree %) | BF16 Paddle mIoU (Δ pt, agree %) | goal |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def cell(r, name, ref):
        if name == "int8_openvino" and name not in r and name not in case.get("errors", {}):
            return "not measured"
        if name not in r or ref not in r:
            return "failed (errors in the JSON)"
        m = r[name]["miou"]
        delta = round((m - r[ref]["miou"]) * 100, 2) + 0.0  # no "-0.00"
        return (f"{m:.4f} ({delta:+.2f}, "
                f"{r[name]['agreement'] * 100:.2f}%)")

    def miou(r, name):
        return f"{r[name]['miou']:.4f}" if name in r else "failed"

    def order(key):
        base = key.split("+")[0]
        return (CASES.index(base) if base in CASES else len(CASES), key)

    for name in sorted(cases, key=order):
        case = cases[name]
        r = case["results"]
        misses = goal_met(case, max_drop, min_agreement)
        lines.append(
            f"| MobileSeg-{case['backbone']} | {case['data']} | {case['iters'] or '?'} it, "
            f"{case.get('optimizer') or optimizer_of(name)}"
            + (f" + quantization-aware {case['qat']['iters']} it, lr {case['qat']['lr']:g}"
               if case.get("qat") else "") + " | "
            f"{case['val_images']} | {miou(r, 'fp32_paddle')} | {miou(r, 'fp32_ort')} | "
            f"{cell(r, 'int8_paddle', 'fp32_paddle')} | "
            f"{cell(r, 'int8_openvino', 'fp32_paddle')} | "
            f"{cell(r, 'int8_ort', 'fp32_ort')} | {cell(r, 'bf16_paddle', 'fp32_paddle')} | "
            f"{'ok' if not misses else '**MISSED**: ' + '; '.join(misses)} |")
    return "\n".join(lines)


def add_study_args(p, json_name):
    """The calibration, goal and JSON options this study shares with lite_int8_accuracy.py."""
    p.add_argument("--num_calib", type=int, default=32,
                   help="calibration images (at most the train split's: 24 on membrane)")
    p.add_argument("--algo", default="avg", help="activation scale search (quant.ALGOS)")
    p.add_argument("--max_drop", type=float, default=1.0, help="goal: INT8 mIoU drop, points")
    p.add_argument("--min_agreement", type=float, default=98.0,
                   help="goal: INT8 pixel agreement with FP32, percent")
    p.add_argument("--reeval", action="store_true",
                   help="evaluate again cases the JSON already holds")
    p.add_argument("--json", default=None, help=f"default: <work_dir>/{json_name}")
    p.add_argument("--table_only", action="store_true",
                   help="print the table of the JSON, run nothing")


def load_cases(args, json_name):
    """(path of the study's JSON, its cases so far); makes ``--work_dir`` absolute."""
    args.work_dir = os.path.abspath(args.work_dir)
    os.makedirs(args.work_dir, exist_ok=True)
    out_json = args.json or os.path.join(args.work_dir, json_name)
    if not os.path.isfile(out_json):
        return out_json, {}
    with open(out_json) as f:
        return out_json, json.load(f).get("cases", {})


def save_cases(out_json, args, cases):
    with open(out_json, "w") as f:
        json.dump({"goal": {"max_drop_points": args.max_drop,
                            "min_agreement_percent": args.min_agreement},
                   "cases": cases}, f, indent=2)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work_dir", default="/tmp/qacc",
                   help="data, configs, trained weights, exports and the JSON")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--iters", type=int, default=800,
                   help="training iterations of the quick-start cases (batch --batch_size)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--optimizer", default="adam", choices=("sgd", "adam"),
                   help="quick-start cases: the quick start's SGD (lr 0.1), or Adam (lr "
                        "--adam_lr, weight decay 1e-4, as the membrane recipe); the same "
                        "poly schedule, warm-up and OHEM losses")
    p.add_argument("--adam_lr", type=float, default=0.01)
    p.add_argument("--membrane_iters", type=int, default=300)
    p.add_argument("--membrane_config", default=None,
                   help="reuse a trained membrane model: its config (.yml) ...")
    p.add_argument("--membrane_weights", default=None, help="... and its model.pdparams")
    p.add_argument("--qat_iters", type=int, default=0,
                   help="then fine-tune each case's weights with quantization-aware training "
                        "(mobileseg train --quant) for this many iterations and measure its "
                        "INT8 exports against the same FP32 model")
    p.add_argument("--qat_lr", type=float, default=0.001,
                   help="learning rate of that fine-tuning (the config's schedule)")
    add_study_args(p, "quant_accuracy.json")
    p.add_argument("--reuse_exports", action="store_true",
                   help="keep the exports an earlier run wrote (newer than the weights) "
                        "instead of writing them again")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    out_json, cases = load_cases(args, "quant_accuracy.json")
    for name in [] if args.table_only else args.cases:
        log(f"===== case {name}")
        t0 = time.time()
        if name == "membrane":
            config, weights, train_s, iters = membrane_case(args)
            backbone, data = "MobileNetV2", "membrane (EM, 512x512)"
        else:
            config, weights, train_s, iters = quickstart_case(args, name)
            backbone, data = QUICKSTART_BACKBONES[name][0], "quick start (synthetic, 96x96)"
        key = name if name == "membrane" or args.optimizer == "sgd" else f"{name}+adam"
        prev = cases.get(key)
        exports = "exports" if key == name else "exports_adam"
        if (prev and not args.reeval and prev["weights"] == os.path.abspath(weights)
                and prev["algo"] == args.algo
                and prev.get("requested_num_calib") == args.num_calib):
            log(f"{key}: already evaluated for these weights ({out_json}); --reeval to redo")
            case = prev
        else:
            case = measure(config, weights, os.path.join(args.work_dir, name, exports),
                           args.num_calib, args.algo, reuse=args.reuse_exports)
            if train_s is None and prev and prev["weights"] == os.path.abspath(weights):
                train_s = prev.get("train_seconds")
            case.update(backbone=backbone, data=data, config=os.path.abspath(config),
                        weights=os.path.abspath(weights), iters=iters,
                        optimizer=(f"Adam {args.adam_lr:g}" if key.endswith("+adam")
                                   else optimizer_of(key))
                        + (", cross-entropy" if name in CE_BACKBONES else ""),
                        requested_num_calib=args.num_calib,
                        train_seconds=None if train_s is None else round(train_s),
                        case_seconds=round(time.time() - t0))
            case["goal_misses"] = goal_met(case, args.max_drop, args.min_agreement)
            cases[key] = case
            save_cases(out_json, args, cases)
            log(f"{key}: mIoU " + ", ".join(f"{n} {v['miou']:.4f}" for n, v in
                                           case["results"].items())
                + "".join(f"; {n} FAILED" for n in case["errors"]) + f"; written to {out_json}")
        if args.qat_iters:
            qat_case(args, cases, out_json, key, case, config, weights, exports)
    if not cases:
        return 0
    print_table(f"INT8 / BF16 against FP32 (val mIoU; Δ in points against the same format's "
                f"FP32; agreement: share of pixels with the same label as that FP32; goal: "
                f"drop <= {args.max_drop} pt and agreement >= {args.min_agreement}%)",
                table(cases, args.max_drop, args.min_agreement), out_json)
    return 0


def qat_case(args, cases, out_json, key, case, config, weights, exports):
    """Quantization-aware fine-tuning of ``key``'s trained weights (``mobileseg train --quant
    --model_path``, ``--qat_iters`` at ``--qat_lr``), then its INT8 exports measured against
    the original FP32 model; recorded as ``<key>+qat<iters>_lr<lr>``."""
    t0 = time.time()
    tag = f"qat{args.qat_iters}_lr{args.qat_lr:g}"
    qat_weights, qat_s = train(
        config, os.path.join(os.path.dirname(os.path.dirname(weights)), tag), args.qat_iters,
        ["--quant", "--model_path", weights, "--iters", args.qat_iters, "--learning_rate",
         args.qat_lr])
    qat = measure(config, weights, os.path.join(args.work_dir, key.split("+")[0], exports),
                  case["num_calib"], args.algo, reuse=True, int8_weights=qat_weights,
                  int8_suffix="_" + tag)
    qat.update({k: case[k] for k in ("backbone", "data", "config", "weights", "iters",
                                     "optimizer", "requested_num_calib")})
    qat.update(qat={"iters": args.qat_iters, "lr": args.qat_lr, "weights": qat_weights,
                    "train_seconds": None if qat_s is None else round(qat_s)},
               case_seconds=round(time.time() - t0))
    qat["goal_misses"] = goal_met(qat, args.max_drop, args.min_agreement)
    cases[f"{key}+{tag}"] = qat
    save_cases(out_json, args, cases)
    log(f"{key}+{tag}: INT8 " + ", ".join(
        f"{n} {v['miou']:.4f} ({v['agreement'] * 100:.2f}%)" for n, v in qat["results"].items()
        if n.startswith("int8")) + f"; misses: {qat['goal_misses'] or 'none'}")


if __name__ == "__main__":
    sys.exit(main())
