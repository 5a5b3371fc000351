"""Label value mapping for datasets whose masks are not stored as class ids (``MSP_MapLabels``).

The common case is a binary mask saved as 0/255: with paddleseg's default ``ignore_index: 255``
the foreground would silently be ignored. Put this transform FIRST in the dataset's transforms
(before any crop or padding: padding fills labels with the ignore index, which the mapping must
not touch); ``mobileseg train/val`` refuse it anywhere else::

    transforms:
      - type: MSP_MapLabels
        mapping: {255: 1}        # or: threshold: 128  (label >= 128 -> 1, else 0)
      - type: RandomPaddingCrop
        ...

It changes ``data['label']`` only (train and val) and leaves values not in ``mapping`` as they are.
"""

import numpy as np

__all__ = ["MapLabels"]


class MapLabels:
    """Map label values: either ``mapping`` {old: new} or ``threshold`` (>= -> 1, below -> 0).

    Args:
        mapping (dict[int, int], optional): value replacements, e.g. ``{255: 1}``.
        threshold (int, optional): binarize: ``label >= threshold`` becomes 1, the rest 0.
    """

    def __init__(self, mapping=None, threshold=None):
        if (mapping is None) == (threshold is None):
            raise ValueError("MSP_MapLabels: give exactly one of `mapping` or `threshold`")
        if mapping is not None:
            if not isinstance(mapping, dict) or not mapping:
                raise ValueError(f"MSP_MapLabels: `mapping` must be a non-empty dict like "
                                 f"{{255: 1}}, got {mapping!r}")
            for k, v in mapping.items():
                if not all(isinstance(x, int) and 0 <= x <= 255 for x in (k, v)):
                    raise ValueError(f"MSP_MapLabels: mapping entries must be integers in "
                                     f"[0, 255], got {k!r}: {v!r}")
            self.lut = np.arange(256, dtype=np.uint8)
            for k, v in mapping.items():
                self.lut[k] = v
        else:
            if not isinstance(threshold, int) or not 0 < threshold <= 255:
                raise ValueError(f"MSP_MapLabels: `threshold` must be an integer in [1, 255], "
                                 f"got {threshold!r}")
            self.lut = (np.arange(256) >= threshold).astype(np.uint8)
        self.mapping = mapping
        self.threshold = threshold

    def __call__(self, data):
        label = data.get("label")
        if label is not None:
            label = np.asarray(label)
            if label.dtype != np.uint8:
                if label.size and (label.min() < 0 or label.max() > 255):
                    raise ValueError(f"MSP_MapLabels: label values must be in [0, 255], got "
                                     f"[{label.min()}, {label.max()}]")
                label = label.astype(np.uint8)
            data["label"] = self.lut[label]
        return data
