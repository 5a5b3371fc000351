"""The one palette and the one overlay of every command that paints a label map (``predict``,
``infer``, the Lite host runner; the C++ demo implements the same functions in
deploy/lite/cpp/src/prepost.cc).

Both are paddleseg 2.8.0's: ``color_map`` equals ``paddleseg.utils.visualize.get_color_map_list``
(the VOC bit-interleaved colours without the first, so class 0 is (128, 0, 0)), ``overlay`` its
``visualize`` blend (``cv2.addWeighted(image, 0.6, colours, 0.4, 0)``) and ``pseudo_color_image``
its ``get_pseudo_color_map``. numpy and OpenCV only: the onnxruntime side paints without paddle.
tests/test_palette.py checks all four painters against paddleseg pixel for pixel."""

import cv2
import numpy as np

OVERLAY_WEIGHT = 0.6  # paddleseg's visualize(weight=0.6): the image's share of the blend


def color_map(num_classes=256, custom_color=None):
    """(num_classes, 3) uint8 RGB colours, class k in row k; ``custom_color`` (r g b r g b ...)
    overwrites the start of the flat list, as paddleseg's ``--custom_color``."""
    n = num_classes + 1
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        lab, j = i, 0
        while lab:
            for c in range(3):
                cmap[i, c] |= ((lab >> c) & 1) << (7 - j)
            j, lab = j + 1, lab >> 3
    cmap = cmap[1:]
    if not custom_color:
        return cmap
    custom = [int(v) for v in custom_color]
    if any(not 0 <= v <= 255 for v in custom):
        raise ValueError(f"custom colour values must be in 0..255, got {custom_color}")
    # paddleseg assigns into the flat r g b list: a partial triple changes only its first
    # channels, and a longer list adds classes
    flat = custom + cmap.reshape(-1).tolist()[len(custom):]
    if len(flat) % 3:
        raise ValueError(f"{len(custom)} custom colour values: expected r g b triples")
    return np.array(flat, np.uint8).reshape(-1, 3)


def _colors(colors):
    # also accepts paddleseg's flat [r, g, b, r, g, b, ...] list
    return color_map() if colors is None else np.asarray(colors, np.uint8).reshape(-1, 3)


def colorize(label, colors=None):
    """(H, W) integer label map -> (H, W, 3) uint8 BGR colour image. Labels without a colour
    (negative, or past the map) are black, as a palette PNG with that palette shows them."""
    colors = _colors(colors)
    label = np.asarray(label)
    known = (label >= 0) & (label < len(colors))
    bgr = colors[:, ::-1][np.where(known, label, 0)]
    bgr[~known] = 0
    return bgr


def overlay(image_bgr, label, colors=None, weight=OVERLAY_WEIGHT):
    """The BGR image blended with the class colours as paddleseg's ``visualize`` does."""
    return cv2.addWeighted(image_bgr, weight, colorize(label, colors), 1 - weight, 0)


def pseudo_color_image(label, colors=None):
    """A palette-mode PIL image of the label map (paddleseg's ``get_pseudo_color_map``)."""
    from PIL import Image  # only this function needs Pillow

    image = Image.fromarray(np.asarray(label).astype(np.uint8), mode="P")
    image.putpalette(_colors(colors).reshape(-1).tolist())
    return image
