"""The offline quick start: ``mobileseg quickstart`` (or ``python -m mobileseg_paddle.quickstart``).

Needs no GPU and no network. It generates the synthetic shapes dataset (synthetic.py), writes a
MobileSeg-MobileNetV2 config for it, trains from scratch through PaddleSeg's trainer (progress
lines with ETA), evaluates mIoU on the validation split, segments a few validation images
(overlays and colour masks) and prints where everything went. Defaults fit in 10 minutes on
2 CPU cores.
"""

import argparse
import json
import os
import shutil
import sys
import time

import yaml

DEFAULT_OUT = "mobileseg_quickstart"


def add_arguments(p):
    p.add_argument("--out_dir", default=DEFAULT_OUT, help="Where data, config and results go.")
    p.add_argument("--iters", type=int, default=1000, help="Training iterations.")
    p.add_argument("--batch_size", type=int, default=8, help="Batch size.")
    p.add_argument("--num_train", type=int, default=300, help="Synthetic training images.")
    p.add_argument("--num_val", type=int, default=50, help="Synthetic validation images.")
    p.add_argument("--image_size", type=int, default=128, help="Side of the square images.")
    p.add_argument("--num_predict", type=int, default=6, help="Validation images to overlay.")
    p.add_argument("--num_workers", type=int, default=0, help="Data loader worker processes.")
    p.add_argument("--log_iters", type=int, default=20, help="Iterations between log lines.")
    p.add_argument("--seed", type=int, default=0, help="Data and training seed.")


def quickstart_config(data_dir, iters, batch_size, num_classes):
    """The training recipe: configs/mobileseg's, scaled to small images and a short run."""
    def dataset(mode):
        return {"type": "Dataset", "dataset_root": data_dir, "num_classes": num_classes,
                "mode": mode, f"{mode}_path": os.path.join(data_dir, f"{mode}.txt"),
                "transforms": ([{"type": "RandomHorizontalFlip"},
                                {"type": "RandomVerticalFlip", "prob": 0.5},
                                {"type": "RandomDistort", "brightness_range": 0.3,
                                 "contrast_range": 0.3, "saturation_range": 0.3}]
                               if mode == "train" else []) + [{"type": "Normalize"}]}
    ohem = {"type": "MSP_OhemCrossEntropyLoss", "min_kept": 20000}
    warmup = min(50, iters // 10)
    return {
        "batch_size": batch_size,
        "iters": iters,
        "train_dataset": dataset("train"),
        "val_dataset": dataset("val"),
        "optimizer": {"type": "SGD", "momentum": 0.9, "weight_decay": 4.0e-5},
        "lr_scheduler": dict({"type": "PolynomialDecay", "learning_rate": 0.05, "end_lr": 0.0,
                              "power": 0.9},
                             **({"warmup_iters": warmup, "warmup_start_lr": 1.0e-4}
                                if warmup else {})),
        "loss": {"types": [ohem, ohem, ohem], "coef": [1, 1, 1]},
        "model": {"type": "MSP_MobileSeg", "num_classes": num_classes,
                  "backbone": {"type": "MSP_MobileNetV2_x1_0"},
                  "cm_bin_sizes": [1, 2, 4], "cm_out_ch": 128, "arm_out_chs": [32, 64, 128],
                  "seg_head_inter_chs": [32, 32, 32]},
    }


def run(args):
    """Run every step; return 0 (the exit status)."""
    from . import cli, synthetic
    start = time.time()
    out = os.path.abspath(args.out_dir)
    data_dir = os.path.join(out, "data")
    save_dir = os.path.join(out, "output")
    config_path = os.path.join(out, "quickstart.yml")

    _step(f"1/4 generating {args.num_train}+{args.num_val} synthetic images in {data_dir}")
    synthetic.generate(data_dir, args.num_train, args.num_val, args.image_size, args.seed)
    os.makedirs(out, exist_ok=True)
    with open(config_path, "w") as f:
        yaml.safe_dump(quickstart_config(data_dir, args.iters, args.batch_size,
                                         synthetic.NUM_CLASSES), f, sort_keys=False)

    _step(f"2/4 training MobileSeg-MobileNetV2 for {args.iters} iterations (CPU)")
    status = cli.main(["train", "--config", config_path, "--device", "cpu", "--save_dir",
                       save_dir, "--save_interval", str(args.iters), "--log_iters",
                       str(args.log_iters), "--num_workers", str(args.num_workers), "--seed",
                       str(args.seed), "--keep_checkpoint_max", "1"])
    if status:
        return status
    weights = os.path.join(save_dir, f"iter_{args.iters}", "model.pdparams")

    _step("3/4 evaluating on the validation split")
    val_args = cli.build_parser().parse_args(
        ["val", "--config", config_path, "--device", "cpu", "--model_path", weights])
    result = cli.run_val(val_args)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(result, f, indent=2)

    _step(f"4/4 segmenting {args.num_predict} validation images")
    predict_dir = os.path.join(out, "predict_images")  # a folder: outputs keep plain names
    shutil.rmtree(predict_dir, ignore_errors=True)
    os.makedirs(predict_dir)
    with open(os.path.join(data_dir, "val.txt")) as f:
        images = [line.split()[0] for line in f if line.strip()][:args.num_predict]
    for image in images:
        shutil.copy(os.path.join(data_dir, image), predict_dir)
    result_dir = os.path.join(out, "predict")
    status = cli.main(["predict", "--config", config_path, "--device", "cpu", "--model_path",
                       weights, "--image_path", predict_dir, "--save_dir", result_dir])
    if status:
        return status

    minutes = (time.time() - start) / 60
    ious = ", ".join(f"{n} {v:.3f}" for n, v in zip(synthetic.CLASS_NAMES, result["class_iou"]))
    print(f"""
==================== MobileSeg quick start: done in {minutes:.1f} min ====================
validation mIoU : {result['miou']:.4f}   (per class: {ious})
data            : {data_dir}
config          : {config_path}
weights         : {weights}
metrics         : {os.path.join(out, 'metrics.json')}
overlays        : {os.path.join(result_dir, 'added_prediction')}
colour masks    : {os.path.join(result_dir, 'pseudo_color_prediction')}
again by hand   : mobileseg val --config {config_path} --device cpu --model_path {weights}
""")
    return 0


def _step(text):
    print(f"\n[quickstart] {text}", flush=True)


def main(argv=None):
    from .cli import main as cli_main
    return cli_main(["quickstart"] + list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
