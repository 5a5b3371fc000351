"""The one place where our components enter PaddleSeg's component manager.

paddleseg 2.8.0 already registers ``MobileSeg`` and the backbones under their plain names, so
ours carry the prefix ``MSP_`` (MobileSeg-Paddle): ``MSP_MobileSeg``, ``MSP_MobileNetV2_x1_0``,
... A config selects ours by writing ``type: MSP_...``; paddleseg's own stay available.
"""

from paddleseg.cvlibs import manager

from . import losses, transforms
from .models import mobileseg
from .models.backbones import ghostnet, lite_hrnet, mobilenetv2, mobilenetv3, shufflenetv2

PREFIX = "MSP_"

MODELS = [mobileseg.MobileSeg]

BACKBONES = [
    mobilenetv2.MobileNetV2_x0_25, mobilenetv2.MobileNetV2_x0_5, mobilenetv2.MobileNetV2_x0_75,
    mobilenetv2.MobileNetV2_x1_0, mobilenetv2.MobileNetV2_x1_5, mobilenetv2.MobileNetV2_x2_0,
    mobilenetv3.MobileNetV3_large_x0_35, mobilenetv3.MobileNetV3_large_x0_5,
    mobilenetv3.MobileNetV3_large_x0_75, mobilenetv3.MobileNetV3_large_x1_0,
    mobilenetv3.MobileNetV3_large_x1_25,
    mobilenetv3.MobileNetV3_small_x0_35, mobilenetv3.MobileNetV3_small_x0_5,
    mobilenetv3.MobileNetV3_small_x0_75, mobilenetv3.MobileNetV3_small_x1_0,
    mobilenetv3.MobileNetV3_small_x1_25,
    lite_hrnet.Lite_HRNet_18, lite_hrnet.Lite_HRNet_30, lite_hrnet.Lite_HRNet_naive,
    lite_hrnet.Lite_HRNet_wider_naive,
    shufflenetv2.ShuffleNetV2_x0_25, shufflenetv2.ShuffleNetV2_x0_33,
    shufflenetv2.ShuffleNetV2_x0_5, shufflenetv2.ShuffleNetV2_x1_0,
    shufflenetv2.ShuffleNetV2_x1_5, shufflenetv2.ShuffleNetV2_x2_0,
    shufflenetv2.ShuffleNetV2_swish,
    ghostnet.GhostNet_x0_5, ghostnet.GhostNet_x1_0, ghostnet.GhostNet_x1_3,
]

LOSSES = [losses.CrossEntropyLoss, losses.OhemCrossEntropyLoss]

TRANSFORMS = [transforms.MapLabels]


def _add(mgr, component):
    name = PREFIX + component.__name__
    existing = mgr.components_dict.get(name)
    if existing is not None and existing is not component:
        raise RuntimeError(f"{mgr.name}: {name} is already registered by {existing.__module__}")
    mgr.components_dict[name] = component


def register_all():
    for component in MODELS:
        _add(manager.MODELS, component)
    for component in BACKBONES:
        _add(manager.BACKBONES, component)
    for component in LOSSES:
        _add(manager.LOSSES, component)
    for component in TRANSFORMS:
        _add(manager.TRANSFORMS, component)


register_all()
