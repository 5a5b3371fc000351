"""The Python reference of the demo's pre- and post-processing (paddleseg's own transforms and
visualisation), which the C++ library (deploy/lite/cpp) is tested against.

preprocess: file -> cv2 BGR -> float32 -> RGB -> cv2.resize INTER_LINEAR to (H, W)
            -> x / 255 -> (x - mean) / std -> (1, 3, H, W)           [paddleseg Compose]
            OpenCV's own resize, with Intel IPP off: the IPP build used by default in
            opencv-python computes float bilinear weights slightly differently; the C++ library
            implements OpenCV's own algorithm, which is portable and matches it bit for bit.
postprocess: logits (1, C, H, W) -> argmax over C -> uint8 label map (H, W)
             -> nearest resize to the image size -> palette mask + overlay, both from
             mobileseg_paddle.palette (paddleseg's colours and blend, shared with predict/infer)
"""

import os

import cv2
import numpy as np
from paddleseg.transforms import Compose, Normalize, Resize

from mobileseg_paddle import palette
from mobileseg_paddle.errors import UserError


def preprocess(image_path, height, width, mean, std):
    """Model input (1, 3, height, width) float32 for ``image_path``, as paddleseg computes it."""
    # the isfile test first: OpenCV prints a warning of its own for a missing file
    if not os.path.isfile(image_path) or cv2.imread(image_path) is None:
        raise UserError(f"{image_path}: no such image file or not an image")
    transforms = Compose([Resize(target_size=(width, height)), Normalize(mean=mean, std=std)])
    use_ipp = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        return transforms({"img": image_path})["img"][np.newaxis].astype(np.float32)
    finally:
        cv2.ipp.setUseIPP(use_ipp)


def labels_from_logits(logits):
    """(1, C, H, W) logits -> (H, W) uint8 labels (first maximum on ties)."""
    logits = np.asarray(logits)
    if logits.ndim != 4 or logits.shape[0] != 1 or logits.shape[1] > 256:
        raise UserError(f"expected logits of shape (1, C<=256, H, W), got {logits.shape}")
    return np.argmax(logits[0], axis=0).astype(np.uint8)


def visualize(image_path, labels, weight=palette.OVERLAY_WEIGHT):
    """(mask labels at the image size, overlay BGR uint8) as the demo writes them."""
    image = cv2.imread(image_path)
    full = cv2.resize(labels, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    return full, palette.overlay(image, full, weight=weight)


def save_results(image_path, labels, out_dir, stem):
    """Write ``stem``_mask.png (palette PNG) and ``stem``_overlay.png like the C++ demo."""
    os.makedirs(out_dir, exist_ok=True)
    full, overlay = visualize(image_path, labels)
    mask_path = os.path.join(out_dir, f"{stem}_mask.png")
    overlay_path = os.path.join(out_dir, f"{stem}_overlay.png")
    palette.pseudo_color_image(full).save(mask_path)
    cv2.imwrite(overlay_path, overlay)
    return mask_path, overlay_path
