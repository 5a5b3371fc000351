"""Small datasets, configs and command runners shared by the training tests."""

import os
import pathlib
import subprocess
import sys

import yaml

from helpers import ROOT

NUM_CLASSES = 4


def make_data(root, num_train=8, num_val=3, size=64, seed=0):
    """The synthetic shapes dataset, tiny (see mobileseg_paddle/synthetic.py)."""
    from mobileseg_paddle import synthetic
    return pathlib.Path(synthetic.generate(str(root), num_train, num_val, size, seed))


def config_dict(data_dir, iters=10, batch_size=2, lr=0.05, num_classes=NUM_CLASSES,
                backbone="MSP_MobileNetV2_x0_25"):
    """A small MobileSeg training config on the files in ``data_dir``."""
    data_dir = str(data_dir)

    def dataset(mode, extra=()):
        return {"type": "Dataset", "dataset_root": data_dir, "num_classes": num_classes,
                "mode": mode, f"{mode}_path": os.path.join(data_dir, f"{mode}.txt"),
                "transforms": list(extra) + [{"type": "Normalize"}]}
    return {
        "batch_size": batch_size, "iters": iters,
        "train_dataset": dataset("train", [{"type": "RandomHorizontalFlip"}]),
        "val_dataset": dataset("val"),
        "optimizer": {"type": "SGD", "momentum": 0.9, "weight_decay": 4.0e-5},
        "lr_scheduler": {"type": "PolynomialDecay", "learning_rate": lr, "end_lr": 0.0,
                         "power": 0.9, "warmup_iters": 2, "warmup_start_lr": 1.0e-3},
        "loss": {"types": [{"type": "MSP_OhemCrossEntropyLoss", "min_kept": 1000}] * 3,
                 "coef": [1, 1, 1]},
        "model": {"type": "MSP_MobileSeg", "num_classes": num_classes,
                  "backbone": {"type": backbone}, "cm_bin_sizes": [1, 2, 4], "cm_out_ch": 32,
                  "arm_out_chs": [16, 24, 32], "seg_head_inter_chs": [16, 16, 16]},
    }


def write_config(path, dic):
    with open(path, "w") as f:
        yaml.safe_dump(dic, f, sort_keys=False)
    return str(path)


def run_module(*args, timeout=240, **popen):
    """``python -m mobileseg_paddle ARGS`` in a subprocess (the real command line)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "mobileseg_paddle", *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, env=env, **popen)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def train_log_values(text, key):
    """Values of ``key: <number>`` in the trainer's [TRAIN] lines, e.g. key='loss'."""
    out = []
    for line in text.splitlines():
        if "[TRAIN]" in line:
            part = line.split(f" {key}: ", 1)[1]
            out.append(float(part.split(",")[0].split()[0]))
    return out
