"""A small synthetic segmentation dataset for the offline quick start and the tests.

Each image shows a few shapes (disks, rectangles, triangles) on a textured, noisy background.
Each class has its own outline and its own surface pattern (level stripes, checks, diagonal
stripes; blotches for the background), but all colours come from one distribution and noise is
added everywhere, so the colour of a pixel says nothing about its class: the model has to look
at the neighbourhood (pattern and outline), i.e. use context.

Layout written under ``root``::

    images/{train,val}_0000.png   RGB, size x size
    labels/{train,val}_0000.png   uint8 class ids: 0 background, 1 disk, 2 rectangle, 3 triangle
    train.txt, val.txt            "images/x.png labels/x.png" per line (PaddleSeg's file list)
"""

import os

import cv2
import numpy as np

CLASS_NAMES = ("background", "disk", "rectangle", "triangle")
NUM_CLASSES = len(CLASS_NAMES)


def _blotches(rng, size, cells):
    """Smooth random field (size, size), about unit variance, ``cells`` blobs across."""
    field = rng.normal(0, 1, (cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(field, (size, size), interpolation=cv2.INTER_CUBIC)


def _texture(rng, size, kind):
    """An RGB float texture (size, size, 3) of a random colour; the pattern depends on ``kind``:
    0 blotches (background), 1 level stripes, 2 checks, 3 diagonal stripes. Colours overlap
    between kinds, so only the pattern of a neighbourhood, not a pixel, tells them apart."""
    colour = rng.uniform(50, 205, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(6, 9)
    angle = rng.uniform(-0.3, 0.3)
    u = xx * np.cos(angle) + yy * np.sin(angle) + rng.uniform(0, period)
    v = -xx * np.sin(angle) + yy * np.cos(angle) + rng.uniform(0, period)
    if kind == 0:
        pattern = _blotches(rng, size, size // 12)
    elif kind == 1:
        pattern = np.sign(np.sin(v * 2 * np.pi / period))
    elif kind == 2:
        pattern = np.sign(np.sin(u * 2 * np.pi / period) * np.sin(v * 2 * np.pi / period))
    else:
        pattern = np.sign(np.sin((u + v) * np.sqrt(2) * np.pi / period))
    contrast = rng.uniform(25, 45)
    return colour[None, None, :] + (contrast * pattern + 8 * _blotches(rng, size, 4))[..., None]


def _shape_mask(rng, size, kind):
    """A uint8 mask (size, size) of one randomly placed and sized shape of class ``kind``."""
    mask = np.zeros((size, size), np.uint8)
    r = rng.uniform(0.10, 0.22) * size
    cx, cy = rng.uniform(r, size - r, size=2)
    if kind == 1:
        cv2.circle(mask, (int(cx), int(cy)), int(r), 1, -1)
    elif kind == 2:
        box = ((cx, cy), (2 * r * rng.uniform(0.7, 1.0), 2 * r * rng.uniform(0.5, 1.0)),
               rng.uniform(0, 90))
        cv2.fillPoly(mask, [cv2.boxPoints(box).astype(np.int32)], 1)
    else:
        start = rng.uniform(0, 2 * np.pi)
        angles = start + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.3, 0.3, 3)
        pts = np.stack([cx + r * 1.2 * np.cos(angles), cy + r * 1.2 * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.clip(pts, 0, size - 1).astype(np.int32)], 1)
    return mask


def make_sample(rng, size):
    """Return (image uint8 (size, size, 3) RGB, label uint8 (size, size))."""
    image = _texture(rng, size, 0)
    label = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(2, 5)):
        kind = int(rng.integers(1, NUM_CLASSES))
        mask = _shape_mask(rng, size, kind).astype(bool)
        image[mask] = _texture(rng, size, kind)[mask]
        label[mask] = kind  # later shapes occlude earlier ones
    image += rng.normal(0, rng.uniform(5, 20), image.shape)
    image = cv2.GaussianBlur(image, (3, 3), 0) if rng.random() < 0.5 else image
    return np.clip(image, 0, 255).astype(np.uint8), label


def generate(root, num_train=200, num_val=40, size=128, seed=0):
    """Write the dataset under ``root`` (see the module docstring); return ``root``.

    Generation is deterministic in ``seed``; an existing complete dataset with the same
    settings is reused."""
    stamp = os.path.join(root, "DONE")
    settings = f"{num_train} {num_val} {size} {seed}\n"
    if os.path.isfile(stamp) and open(stamp).read() == settings:
        return root
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "labels"), exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_train), ("val", num_val)):
        lines = []
        for i in range(count):
            image, label = make_sample(rng, size)
            name = f"{split}_{i:04d}.png"
            cv2.imwrite(os.path.join(root, "images", name), image[:, :, ::-1])
            cv2.imwrite(os.path.join(root, "labels", name), label)
            lines.append(f"images/{name} labels/{name}\n")
        with open(os.path.join(root, f"{split}.txt"), "w") as f:
            f.writelines(lines)
    with open(stamp, "w") as f:
        f.write(settings)
    return root
