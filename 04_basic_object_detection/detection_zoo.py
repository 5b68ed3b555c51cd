"""The detectors of this folder, each chosen by name from a visible dict.

:data:`PRETRAINED`: torchvision's COCO-trained detectors (91 COCO ids, 80 used; names in
:data:`COCO_CATEGORIES`). Their weights come from torchvision's URLs through
:func:`detseg.pretrained.load_state_dict` (torch hub cache, SHA-256 prefix checked on download);
offline, one line names the URL, the file to put in the cache and the alternative that needs no
download (a detector trained here with ``train_detector.py``).

:data:`TRAINABLE`: the detectors ``train_detector.py`` trains from scratch on a CPU:

- ``ssdlite320``: torchvision's SSDlite320-MobileNetV3-Large (Howard et al. 2019: MobileNetV3 +
  SSDLite heads of depthwise-separable convs, 6 feature maps, 320 x 320 input), random init;
  ``width_mult`` narrows the backbone for CPU training (1.0 is the published model).
- ``retinanet_small``: RetinaNet (Lin et al. 2017: FPN + focal loss) on a ResNet-18 FPN with 128
  channels and P3-P7, images resized to ``image_size`` (default 256).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import torchvision
from torch import nn
from torchvision.models import detection as tv_detection

from detseg.errors import UserError
from detseg.pretrained import load_state_dict

D = tv_detection
# name -> (builder, COCO weights); every builder takes weights=None, weights_backbone=None, num_classes
PRETRAINED: dict[str, tuple[Callable[..., nn.Module], Any]] = {
    "fasterrcnn_resnet50_fpn": (D.fasterrcnn_resnet50_fpn, D.FasterRCNN_ResNet50_FPN_Weights.COCO_V1),
    "fasterrcnn_resnet50_fpn_v2": (D.fasterrcnn_resnet50_fpn_v2, D.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1),
    "fasterrcnn_mobilenet_v3_large_fpn": (D.fasterrcnn_mobilenet_v3_large_fpn, D.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1),
    "fasterrcnn_mobilenet_v3_large_320_fpn": (D.fasterrcnn_mobilenet_v3_large_320_fpn, D.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1),
    "retinanet_resnet50_fpn": (D.retinanet_resnet50_fpn, D.RetinaNet_ResNet50_FPN_Weights.COCO_V1),
    "retinanet_resnet50_fpn_v2": (D.retinanet_resnet50_fpn_v2, D.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1),
    "ssd300_vgg16": (D.ssd300_vgg16, D.SSD300_VGG16_Weights.COCO_V1),
    "ssdlite320_mobilenet_v3_large": (D.ssdlite320_mobilenet_v3_large, D.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1),
    "fcos_resnet50_fpn": (D.fcos_resnet50_fpn, D.FCOS_ResNet50_FPN_Weights.COCO_V1),
}  # fmt: skip

# index = torchvision label (0 = background, "N/A" for the 11 unused COCO ids)
COCO_CATEGORIES: list[str] = list(D.FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])

OFFLINE_HINT = (
    "or use a detector trained here without any download: "
    "python 04_basic_object_detection/train_detector.py, then --weights <its best.pt>"
)


def build_pretrained(name: str, *, load_weights: bool = True) -> tuple[nn.Module, list[str]]:
    """A COCO-pretrained torchvision detector (eval mode) and its class names (index = label).

    Args:
        name: a key of :data:`PRETRAINED`.
        load_weights: False builds the architecture with random weights (tests, timing).
    Raises:
        UserError: unknown name; or the weights are not cached and cannot be downloaded.
    """
    if name not in PRETRAINED:
        raise UserError(
            f"unknown pretrained detector {name!r}", fix=f"use one of {list(PRETRAINED)}"
        )
    builder, weights = PRETRAINED[name]
    model = builder(
        weights=None, weights_backbone=None, num_classes=len(weights.meta["categories"])
    )
    if load_weights:
        model.load_state_dict(load_state_dict(weights, offline_hint=OFFLINE_HINT))
    return model.eval(), list(weights.meta["categories"])


SSD_NORM = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)  # SSDlite's BatchNorm (torchvision)


def mobilenet_v3_for_ssdlite(width_mult: float = 1.0) -> nn.Module:
    """torchvision's MobileNetV3-Large as SSDlite builds it (reduced tail, :data:`SSD_NORM`),
    random weights with the classifier's own (Kaiming) initialisation. Its ``features`` (the trunk)
    is what SSDlite's backbone is made of and what :mod:`ssdlite_pretraining` pretrains."""
    return torchvision.models.mobilenet_v3_large(
        weights=None, norm_layer=SSD_NORM, reduced_tail=True, width_mult=width_mult
    )


def build_ssdlite320(
    num_classes: int,
    *,
    width_mult: float = 1.0,
    anchor_scales: tuple[float, float] = (0.2, 0.95),
    image_size: int = 320,
    score_thresh: float = 0.001,
    **_: Any,
) -> nn.Module:
    """SSDlite320-MobileNetV3-Large with ``num_classes`` (incl. background), random weights.

    The same construction as ``torchvision.models.detection.ssdlite320_mobilenet_v3_large`` (reduced
    tail, normal init, BatchNorm eps 0.001 momentum 0.03, 6 maps, aspect ratios 2 and 3), with the
    backbone's ``width_mult``, the default boxes' ``anchor_scales`` and the input side exposed:
    ``anchor_scales`` are SSD's smallest and largest box side as a fraction of the input, spread
    linearly over the 6 maps (the paper's 0.2-0.95 suit COCO; the built-in shapes are 0.05-0.5 of
    the image); ``image_size`` is the fixed square input (320 in the paper; 256, the built-in
    scenes' own size, costs 0.6x per step). :func:`load_pretrained_trunk` puts pretrained
    weights into its backbone.
    """
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import (
        SSDLiteHead,
        _mobilenet_extractor,
        _normal_init,
    )

    norm_layer = SSD_NORM
    backbone = mobilenet_v3_for_ssdlite(width_mult)
    _normal_init(backbone)
    extractor = _mobilenet_extractor(backbone, 6, norm_layer)
    size = (image_size, image_size)
    low, high = anchor_scales
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=low, max_ratio=high)
    out_channels = det_utils.retrieve_out_channels(extractor, size)
    head = SSDLiteHead(out_channels, anchors.num_anchors_per_location(), num_classes, norm_layer)
    return SSD(
        extractor,
        anchors,
        size,
        num_classes,
        head=head,
        score_thresh=score_thresh,
        nms_thresh=0.55,
        detections_per_img=100,
        topk_candidates=300,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def build_retinanet_small(
    num_classes: int, *, image_size: int = 256, channels: int = 128, score_thresh: float = 0.05,
    **_: Any,
) -> nn.Module:  # fmt: skip
    """RetinaNet on ResNet-18 + FPN (``channels`` wide, P3-P7), random weights, fixed image side.

    Anchors: 3 scales x 3 ratios per level, base sizes 16-256 px (the paper's 32-512 halved for
    images of 256 px). ``num_classes`` counts the background as torchvision does (it is unused by
    the focal loss, which scores each class on its own).
    """
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    resnet = torchvision.models.resnet18(weights=None)
    backbone = BackboneWithFPN(
        resnet,
        return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
        in_channels_list=[128, 256, 512],
        out_channels=channels,
        extra_blocks=LastLevelP6P7(channels, channels),
    )
    sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in (16, 32, 64, 128, 256))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    head = RetinaNetHead(channels, anchors.num_anchors_per_location()[0], num_classes)
    return RetinaNet(
        backbone,
        num_classes,
        min_size=image_size,
        max_size=image_size,
        anchor_generator=anchors,
        head=head,
        score_thresh=score_thresh,
        detections_per_img=100,
    )


TRAINABLE: dict[str, Callable[..., nn.Module]] = {
    "ssdlite320": build_ssdlite320,
    "retinanet_small": build_retinanet_small,
}


def build_trainable(name: str, num_classes: int, **options: Any) -> nn.Module:
    """A detector of :data:`TRAINABLE` with ``num_classes`` (object classes + 1 background)."""
    if name not in TRAINABLE:
        raise UserError(f"unknown detector {name!r}", fix=f"use one of {list(TRAINABLE)}")
    return TRAINABLE[name](num_classes, **options)


def calibrate_batchnorm(model: nn.Module, images: Any) -> nn.Module:
    """Set every BatchNorm's running statistics from ``images`` (a [B, 3, H, W] tensor in [0, 1]).

    A freshly initialised SSDlite in eval mode has running statistics 0 / 1 that shrink its
    activations layer after layer to ~1e-20 (denormal floats, slow and meaningless); timing or
    parity checks of an untrained model use this first. Returns ``model`` in eval mode.
    """
    model.train()
    _average_batchnorm(model, lambda: model.backbone((images - 0.5) / 0.5))
    return model.eval()


def _average_batchnorm(model: nn.Module, run: Callable[[], Any]) -> None:
    """Reset every BatchNorm's running statistics, let ``run()`` (forward passes, no gradients)
    set them to their cumulative average, then restore each layer's momentum."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative average over the calls of run()
    try:
        with torch.no_grad():
            run()
    finally:
        for module, momentum in zip(norms, momenta):
            module.momentum = momentum


def recompute_batchnorm(model: nn.Module, batches: Iterable[Sequence[Any]]) -> nn.Module:
    """Replace every BatchNorm's running statistics by their average over ``batches`` (lists of
    [3, H, W] images in [0, 1], as the detector takes them): "precise BN" (Wu & Johnson 2021).

    ``train_detector.py`` calls it before every evaluation. In a short run from scratch the running
    averages (momentum 0.03) are far from the statistics the network trains with: they start at
    0 / 1 while the activations of a fresh SSDlite have variances down to 1e-7, and 0.97 ** k takes
    hundreds of steps to forget the start. Evaluated with them, a model that fits 16 training
    images exactly (AP50 1.0 with the batch statistics) scored AP50 0.02 on the same images.
    The whole model runs (backbone and heads, whose SSDlite head has BatchNorm too) in eval mode
    with only the BatchNorm layers in training mode; returns ``model`` in the mode it came in.
    """
    was_training = model.training
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()

    def run() -> None:
        for images in batches:
            model(list(images))

    try:
        _average_batchnorm(model, run)
    finally:
        model.train(was_training)
    return model


def load_pretrained_trunk(
    model: nn.Module, trunk_state: dict[str, Any], *, width_mult: float
) -> nn.Module:
    """Put a pretrained MobileNetV3 trunk (the ``state_dict`` of
    ``mobilenet_v3_for_ssdlite(width_mult).features``) into SSDlite's backbone.

    SSDlite cuts the trunk in two at C4's expansion layer (``model.backbone.features[0]`` and
    ``[1]``; the extra layers and the heads stay as they are): the same cut is made on a trunk
    holding ``trunk_state`` and its weights and BatchNorm statistics copied over. Returns ``model``.
    """
    from torchvision.models.detection.ssdlite import _mobilenet_extractor

    backbone = mobilenet_v3_for_ssdlite(width_mult)
    backbone.features.load_state_dict(trunk_state)
    model.backbone.features.load_state_dict(
        _mobilenet_extractor(backbone, 6, SSD_NORM).features.state_dict()
    )
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
