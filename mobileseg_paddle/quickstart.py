"""The offline quick start: ``mobileseg quickstart`` (or ``python -m mobileseg_paddle.quickstart``).

Needs no GPU and no network. It generates the synthetic shapes dataset (synthetic.py; 300
training and 50 validation images of 96x96, 4 classes), writes a MobileSeg-MobileNetV2 config
for it, trains from scratch through PaddleSeg's trainer (800 iterations of batch 8, progress
lines with ETA), evaluates mIoU on the validation split, segments a few validation images
(overlays and colour masks) and prints where everything went. Measured on a 2-core CPU:
6 minutes, validation mIoU 0.775 (the run is deterministic for a given seed).
"""

import json
import os
import shutil
import sys
import time

import yaml

DEFAULT_OUT = "mobileseg_quickstart"


def add_arguments(p):
    p.add_argument("--out_dir", default=DEFAULT_OUT, help="Where data, config and results go.")
    p.add_argument("--iters", type=int, default=800, help="Training iterations.")
    p.add_argument("--batch_size", type=int, default=8, help="Batch size.")
    p.add_argument("--num_train", type=int, default=300, help="Synthetic training images.")
    p.add_argument("--num_val", type=int, default=50, help="Synthetic validation images.")
    p.add_argument("--image_size", type=int, default=96, help="Side of the square images.")
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
        "lr_scheduler": dict({"type": "PolynomialDecay", "learning_rate": 0.1, "end_lr": 0.0,
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
    """Run every step; return the exit status."""
    from . import cli, synthetic
    start = time.time()
    out = os.path.abspath(args.out_dir)
    data_dir = os.path.join(out, "data")
    save_dir = os.path.join(out, "output")
    config_path = os.path.join(out, "quickstart.yml")
    result_dir = os.path.join(out, "predict")

    _step(f"1/4 generating {args.num_train}+{args.num_val} synthetic images in {data_dir}")
    synthetic.generate(data_dir, args.num_train, args.num_val, args.image_size, args.seed)
    with open(config_path, "w") as f:
        yaml.safe_dump(quickstart_config(data_dir, args.iters, args.batch_size,
                                         synthetic.NUM_CLASSES), f, sort_keys=False)

    _step(f"2/4 training MobileSeg-MobileNetV2 for {args.iters} iterations (CPU)")
    status = cli.main(["train", "--config", config_path, "--device", "cpu", "--save_dir",
                       save_dir, "--save_interval", args.iters, "--log_iters", args.log_iters,
                       "--num_workers", args.num_workers, "--seed", args.seed,
                       "--keep_checkpoint_max", "1", "--overwrite"])  # a re-run starts over
    if status:
        return status
    weights = os.path.join(save_dir, f"iter_{args.iters}", "model.pdparams")

    cli.SHOW_SETUP_INFO = False  # the training step printed the environment and config
    try:
        _step("3/4 evaluating on the validation split")
        result = cli.run_val(cli.build_parser().parse_args(
            ["val", "--config", config_path, "--device", "cpu", "--model_path", weights]))
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(result, f, indent=2)

        _step(f"4/4 segmenting {args.num_predict} validation images")
        status = cli.main(["predict", "--config", config_path, "--device", "cpu",
                           "--model_path", weights, "--save_dir", result_dir, "--image_path",
                           _copy_val_images(data_dir, os.path.join(out, "predict_images"),
                                            args.num_predict)])
    finally:
        cli.SHOW_SETUP_INFO = True
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


def _copy_val_images(data_dir, folder, count):
    """Copy the first ``count`` validation images into ``folder`` (predict names its outputs
    after the path below the folder it is given) and return the folder."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    with open(os.path.join(data_dir, "val.txt")) as f:
        images = [line.split()[0] for line in f if line.strip()][:count]
    for image in images:
        shutil.copy(os.path.join(data_dir, image), folder)
    return folder


def _step(text):
    print(f"\n[quickstart] {text}", flush=True)


def main(argv=None):
    from .cli import main as cli_main
    return cli_main(["quickstart"] + list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
