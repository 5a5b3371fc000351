"""The ISBI 2012 membrane images of ``../shared/data/membrane`` (30 grayscale 512x512 images,
masks 0 = membrane, 255 = cell) as a PaddleSeg dataset, and a MobileSeg-MobileNetV2 trained on
them briefly through ``mobileseg train``: a model with real, confident outputs for the tests that
bound reduced-precision or ARM results. Without ``../shared`` the tests skip, or fail when
CI=true."""

import os

from helpers import ROOT, missing
from helpers.train_helpers import run_module, write_config

MEMBRANE = os.path.join(os.path.dirname(ROOT), "shared", "data", "membrane")
NUM_VAL = 6  # the last six images by number are held out
BASE_CONFIG = os.path.join(ROOT, "configs", "mobileseg",
                           "mobileseg_mobilenetv2_cityscapes_1024x512_80k.yml")


def require_membrane():
    """The membrane folder; skip (fail with CI=true) when ``../shared`` is not beside the repo."""
    if os.path.isdir(os.path.join(MEMBRANE, "image")):
        return MEMBRANE
    message = f"{MEMBRANE}: the membrane data of ../shared is not beside this checkout"
    missing(message)


def images(split):
    """Absolute paths of the ``train`` or ``val`` images, in number order."""
    names = sorted(os.listdir(os.path.join(require_membrane(), "image")),
                   key=lambda n: int(os.path.splitext(n)[0]))
    names = names[:-NUM_VAL] if split == "train" else names[-NUM_VAL:]
    return [os.path.join(MEMBRANE, "image", n) for n in names]


def write_lists(out_dir):
    """train.txt / val.txt ("image label" per line, absolute paths) in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    for split in ("train", "val"):
        with open(os.path.join(out_dir, f"{split}.txt"), "w") as f:
            for image in images(split):
                f.write(f"{image} {image.replace(os.sep + 'image' + os.sep, os.sep + 'label' + os.sep)}\n")
    return out_dir


def config_dict(list_dir, iters=150, batch_size=4, crop=256):
    """MobileSeg-MobileNetV2 (the model zoo's config, no pretrained download) on the membrane
    images: masks mapped 255 -> 1, random crops of ``crop`` for training."""
    def dataset(mode, transforms):
        return {"type": "Dataset", "dataset_root": MEMBRANE, "num_classes": 2, "mode": mode,
                f"{mode}_path": os.path.join(list_dir, f"{mode}.txt"),
                "transforms": [{"type": "MSP_MapLabels", "mapping": {255: 1}}, *transforms,
                               {"type": "Normalize"}]}
    return {
        "_base_": BASE_CONFIG, "batch_size": batch_size, "iters": iters,
        "train_dataset": dataset("train", [
            {"type": "RandomPaddingCrop", "crop_size": [crop, crop]},
            {"type": "RandomHorizontalFlip"}, {"type": "RandomVerticalFlip"}]),
        "val_dataset": dataset("val", []),
        # Adam and plain cross entropy learn this in a few hundred steps (the recipe's SGD and
        # OHEM stay at "all cell" that long); 150 iterations: mIoU 0.68 on the 6 held out
        "optimizer": {"_inherited_": False, "type": "Adam", "weight_decay": 1.0e-4},
        "lr_scheduler": {"_inherited_": False, "type": "PolynomialDecay", "learning_rate": 0.01,
                         "end_lr": 0.0, "power": 0.9},
        "loss": {"_inherited_": False, "types": [{"type": "CrossEntropyLoss"}] * 3,
                 "coef": [1, 0.4, 0.4]},
        "model": {"num_classes": 2, "pretrained": None,
                  "backbone": {"type": "MSP_MobileNetV2_x1_0", "pretrained": None}},
    }


def train_model(work, iters=150, seed=0):
    """(config path, weights path) of a model trained ``iters`` iterations on the membrane
    training images through the real ``mobileseg train``, seeded, so a session's bounds meet the
    same model each time on one machine."""
    list_dir = write_lists(os.path.join(work, "lists"))
    config = write_config(os.path.join(work, "membrane.yml"), config_dict(list_dir, iters))
    out = os.path.join(work, "train")
    proc = run_module("train", "--config", config, "--device", "cpu", "--save_dir", out,
                      "--save_interval", str(iters), "--log_iters", "20", "--num_workers", "0",
                      "--seed", str(seed), timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    weights = os.path.join(out, f"iter_{iters}", "model.pdparams")
    assert os.path.isfile(weights), os.listdir(out)
    return config, weights
