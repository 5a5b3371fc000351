"""Seconds per training iteration of MobileSeg-MobileNetV2: ours vs paddleseg 2.8.0's own model.

Both models get the published head settings, the same three OHEM losses (ours: paddleseg's
crash on Paddle 3), the same optimizer and the same batches (batch 4 of 256x256 crops from a
real dataset, read once and reused, so only the training step is timed). Rounds alternate
between the two models so that load on the machine affects both alike.

    python benchmarks/train_speed.py [--data /path/to/dataset] [--rounds 5] [--iters 5]

``--data`` is a folder with image/ and label/ (0/255 masks), e.g. the membrane set; without it
the synthetic shapes dataset is generated.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def batches(data_dir, count, batch_size=4, crop=256, seed=0):
    """``count`` (image, label) batches of ``crop`` x ``crop`` random crops, as numpy."""
    import cv2

    from mobileseg_paddle import synthetic
    if data_dir is None:
        data_dir = synthetic.generate(os.path.join(tempfile.gettempdir(), "msp_bench_data"),
                                      num_train=16, num_val=0, size=2 * crop)
        pairs = [(os.path.join(data_dir, "images", n), os.path.join(data_dir, "labels", n))
                 for n in sorted(os.listdir(os.path.join(data_dir, "images")))]
        to_class = None
    else:
        names = sorted(os.listdir(os.path.join(data_dir, "image")))
        pairs = [(os.path.join(data_dir, "image", n), os.path.join(data_dir, "label", n))
                 for n in names]
        to_class = {255: 1}
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        imgs, labels = [], []
        for _ in range(batch_size):
            img_path, label_path = pairs[rng.integers(len(pairs))]
            img = cv2.imread(img_path, cv2.IMREAD_COLOR).astype("float32")
            label = cv2.imread(label_path, cv2.IMREAD_GRAYSCALE)
            if to_class:
                label = np.where(label == 255, 1, label)
            y, x = (rng.integers(0, s - crop + 1) for s in label.shape)
            imgs.append(((img[y:y + crop, x:x + crop] / 255.0 - 0.5) / 0.5).transpose(2, 0, 1))
            labels.append(label[y:y + crop, x:x + crop].astype("int64"))
        out.append((np.stack(imgs), np.stack(labels)))
    return out


def build(ours, num_classes):
    import paddle
    from paddleseg.cvlibs import manager
    prefix = "MSP_" if ours else ""
    backbone = manager.BACKBONES[prefix + "MobileNetV2_x1_0"]()
    model = manager.MODELS[prefix + "MobileSeg"](
        num_classes=num_classes, backbone=backbone, cm_bin_sizes=[1, 2, 4], cm_out_ch=128,
        arm_out_chs=[32, 64, 128], seg_head_inter_chs=[32, 32, 32])
    lr = paddle.optimizer.lr.PolynomialDecay(0.005, decay_steps=1000, power=0.9)
    opt = paddle.optimizer.Momentum(lr, momentum=0.9, parameters=model.parameters(),
                                    weight_decay=5e-4)
    return model, opt


def step(model, opt, losses, img, label):
    """One iteration as paddleseg's trainer does it."""
    from paddleseg.core.train import loss_computation
    logits = model(img)
    loss = sum(loss_computation(logits, label, None, losses))
    loss.backward()
    opt.step()
    opt._learning_rate.step()
    model.clear_gradients()
    return float(loss)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per round")
    args = parser.parse_args(argv)

    import paddle

    import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components)
    from mobileseg_paddle import compat
    from mobileseg_paddle.losses import OhemCrossEntropyLoss
    compat.apply()
    paddle.set_device("cpu")
    paddle.seed(0)
    num_classes = 2 if args.data else 4
    data = [(paddle.to_tensor(img), paddle.to_tensor(lab))
            for img, lab in batches(args.data, args.iters + 2)]
    losses = {"types": [OhemCrossEntropyLoss(min_kept=130000)] * 3, "coef": [1, 1, 1]}
    runs = {"ours (MSP_MobileSeg)": build(True, num_classes),
            "paddleseg MobileSeg": build(False, num_classes)}
    times = {name: [] for name in runs}
    for model, opt in runs.values():  # warm-up
        model.train()
        for img, label in data[:2]:
            step(model, opt, losses, img, label)
    for r in range(args.rounds):
        for name, (model, opt) in runs.items():
            start = time.perf_counter()
            for img, label in data[2:]:
                step(model, opt, losses, img, label)
            times[name].append((time.perf_counter() - start) / args.iters)
        print(f"round {r + 1}/{args.rounds}: " +
              ", ".join(f"{n} {t[-1]:.3f} s/it" for n, t in times.items()), flush=True)
    print(f"\nbatch 4 x 3 x 256 x 256, {os.cpu_count()} CPU cores, "
          f"median of {args.rounds} rounds x {args.iters} iterations:")
    for name, t in times.items():
        print(f"  {name:22s} {np.median(t):.3f} s/iteration  (min {min(t):.3f}, max {max(t):.3f})")


if __name__ == "__main__":
    main()
