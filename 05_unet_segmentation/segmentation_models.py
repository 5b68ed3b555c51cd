"""Every segmentation model of this lesson, chosen by name from one visible dict.

Each builder is ``build(*, num_classes, width, weights) -> nn.Module``; ``weights`` is ``"none"``
(random initialisation: what the CPU defaults use) or ``"pretrained"`` (ImageNet backbone for
``fcn8s`` / ``pspnet`` at full width, COCO-with-VOC-labels weights for the torchvision models), loaded
through :func:`detseg.pretrained.load_state_dict`: the real hash-checked download, or one line saying
where to put the file when offline.

All models map ``[N, 3, H, W]`` images to logits ``[N, C, H, W]``; torchvision's models and our PSPNet
return an ``OrderedDict`` with ``"out"`` (and ``"aux"``), which :func:`logits_of` unwraps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torchvision
from fcn8s import FCN8s, load_vgg16_imagenet
from pspnet import PSPNet
from torch import Tensor, nn
from torchvision.models import segmentation as tv_seg
from unet import UNET_PAPER, UNet, count_parameters  # noqa: F401  (re-exported)

from detseg.errors import UserError
from detseg.pretrained import load_state_dict

WEIGHTS_CHOICES = ("none", "pretrained")


def _no_pretrained(name: str, weights: str) -> None:
    if weights != "none":
        raise UserError(
            f"model {name!r} has no pretrained weights (it is trained from scratch)",
            fix="pass --weights none",
        )


def build_unet(*, num_classes: int, width: float = 1.0, weights: str = "none") -> nn.Module:
    """U-Net, depth 4, base width 16 x ``width`` (16 trains in minutes on a CPU), batch norm."""
    _no_pretrained("unet", weights)
    return UNet(in_channels=3, num_classes=num_classes, base_width=max(4, int(16 * width)), depth=4)


def build_unet_paper(*, num_classes: int, width: float = 1.0, weights: str = "none") -> nn.Module:
    """The paper's U-Net (width 64, valid convolutions): output smaller than input, see unet.py."""
    _no_pretrained("unet_paper", weights)
    return UNet(in_channels=3, num_classes=num_classes, **UNET_PAPER)


def build_fcn8s(*, num_classes: int, width: float = 0.25, weights: str = "none") -> nn.Module:
    """FCN-8s on VGG16; ``weights="pretrained"`` loads ImageNet VGG16 and needs ``width=1``."""
    if weights == "pretrained" and width != 1.0:
        raise UserError("ImageNet VGG16 weights need the full-width encoder", fix="pass --width 1")
    model = FCN8s(num_classes=num_classes, width=width)
    if weights == "pretrained":
        load_vgg16_imagenet(model, load_state_dict(torchvision.models.VGG16_Weights.IMAGENET1K_V1))
    return model


def build_pspnet(*, num_classes: int, width: float = 1.0, weights: str = "none") -> nn.Module:
    """PSPNet on a dilated ResNet-18; ``weights="pretrained"`` loads the ImageNet backbone."""
    model = PSPNet(num_classes=num_classes)
    if weights == "pretrained":
        model.load_backbone(load_state_dict(torchvision.models.ResNet18_Weights.IMAGENET1K_V1))
    return model


def _torchvision_builder(name: str, weights_enum: Any) -> Callable[..., nn.Module]:
    builder = getattr(tv_seg, name)

    def build(*, num_classes: int, width: float = 1.0, weights: str = "none") -> nn.Module:
        if weights == "none":
            return builder(weights=None, weights_backbone=None, num_classes=num_classes)
        # pretrained: 21 COCO-with-VOC classes; load them, then replace the last layer(s)
        model = builder(weights=None, weights_backbone=None, num_classes=21, aux_loss=None)
        state = load_state_dict(weights_enum)
        model.load_state_dict(state, strict=False)
        replace_last_layers(model, num_classes)
        return model

    build.__doc__ = f"torchvision's {name}; ``pretrained`` = {weights_enum}."
    return build


def replace_last_layers(model: nn.Module, num_classes: int) -> None:
    """Swap the final 1x1 convolution(s) of a torchvision segmentation model for ``num_classes``."""
    for head_name in ("classifier", "aux_classifier"):
        head = getattr(model, head_name, None)
        if head is None:
            continue
        if hasattr(head, "low_classifier"):  # LR-ASPP has two 1x1 classifiers
            for attr in ("low_classifier", "high_classifier"):
                old = getattr(head, attr)
                setattr(head, attr, nn.Conv2d(old.in_channels, num_classes, 1))
            continue
        old = head[-1]
        head[-1] = nn.Conv2d(old.in_channels, num_classes, 1)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "unet": build_unet,
    "unet_paper": build_unet_paper,
    "fcn8s": build_fcn8s,
    "pspnet": build_pspnet,
    "fcn_resnet50": _torchvision_builder(
        "fcn_resnet50", tv_seg.FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1
    ),
    "deeplabv3_mobilenet_v3_large": _torchvision_builder(
        "deeplabv3_mobilenet_v3_large",
        tv_seg.DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1,
    ),
    "lraspp_mobilenet_v3_large": _torchvision_builder(
        "lraspp_mobilenet_v3_large",
        tv_seg.LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1,
    ),
}


def build_model(
    name: str, *, num_classes: int, width: float = 1.0, weights: str = "none"
) -> nn.Module:
    """Look ``name`` up in :data:`MODELS` (a clear error lists the names) and build it."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}", fix=f"use one of {', '.join(MODELS)}")
    if weights not in WEIGHTS_CHOICES:
        raise UserError(f"unknown --weights {weights!r}", fix="use 'none' or 'pretrained'")
    return MODELS[name](num_classes=num_classes, width=width, weights=weights)


def logits_of(output: Tensor | dict[str, Tensor]) -> Tensor:
    """The main logits ``[N, C, H, W]`` of any model here (``output["out"]`` for dict outputs)."""
    return output["out"] if isinstance(output, dict) else output


@torch.no_grad()
def predict_logits(model: nn.Module, images: Tensor) -> Tensor:
    """Eval-mode logits, resized to the input when a model (the paper U-Net) returns fewer pixels."""
    logits = logits_of(model(images))
    if logits.shape[-2:] != images.shape[-2:]:
        logits = torch.nn.functional.interpolate(logits, size=images.shape[-2:], mode="bilinear")
    return logits
