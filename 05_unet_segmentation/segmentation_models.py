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
from pathlib import Path
from typing import Any

import torch
import torchvision
from fcn8s import FCN8s, load_vgg16_imagenet
from pspnet import PSPNet
from torch import Tensor, nn
from torchvision.models import segmentation as tv_seg
from unet import UNET_PAPER, UNet, count_parameters  # noqa: F401  (re-exported)

from detseg.engine.checkpoint import load_checkpoint, load_model_state, model_state
from detseg.errors import UserError
from detseg.pretrained import load_state_dict

WEIGHTS_CHOICES = ("none", "pretrained")


def _no_pretrained(name: str, weights: str) -> None:
    if weights != "none":
        raise UserError(
            f"model {name!r} has no pretrained weights (it is trained from scratch)",
            fix="leave out --pretrained",
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


def build_pspnet(
    *, num_classes: int, width: float = 1.0, weights: str = "none", output_stride: int = 8
) -> nn.Module:
    """PSPNet on a dilated ResNet-18 (output stride 8, as in the paper); ``weights="pretrained"``
    loads the ImageNet backbone."""
    model = PSPNet(num_classes=num_classes, output_stride=output_stride)
    if weights == "pretrained":
        model.load_backbone(load_state_dict(torchvision.models.ResNet18_Weights.IMAGENET1K_V1))
    return model


def build_pspnet_os16(*, num_classes: int, width: float = 1.0, weights: str = "none") -> nn.Module:
    """PSPNet with only the last stage dilated (output stride 16): 3x fewer multiply-adds,
    what the CPU comparison in lesson 3 uses."""
    return build_pspnet(num_classes=num_classes, width=width, weights=weights, output_stride=16)


def _torchvision_builder(name: str, weights_enum: Any) -> Callable[..., nn.Module]:
    builder = getattr(tv_seg, name)

    def build(*, num_classes: int, width: float = 1.0, weights: str = "none") -> nn.Module:
        if weights == "none":
            return builder(weights=None, weights_backbone=None, num_classes=num_classes)
        # pretrained: 21 COCO-with-VOC classes; load them, then replace the last layer(s). FCN and
        # DeepLabV3 were published with an auxiliary head (trained with it, as torchvision does)
        state = load_state_dict(weights_enum)
        aux = any(key.startswith("aux_classifier.") for key in state)
        model = builder(weights=None, weights_backbone=None, num_classes=21, aux_loss=aux or None)
        load_model_state(
            model,
            state,
            what=f"the pretrained weights {weights_enum}",
            fix="delete the cached file so that it is downloaded again, or use --pretrained none",
        )
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
    "pspnet_os16": build_pspnet_os16,
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
    name: str, *, num_classes: int, width: float | None = None, weights: str = "none"
) -> nn.Module:
    """Look ``name`` up in :data:`MODELS` (a clear error lists the names) and build it.

    ``width=None`` keeps the builder's own default (0.25 for ``fcn8s``, 1.0 for the others).
    """
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}", fix=f"use one of {', '.join(MODELS)}")
    if weights not in WEIGHTS_CHOICES:
        raise UserError(f"unknown --pretrained {weights!r}", fix="use 'none' or 'pretrained'")
    if width is not None and not width > 0:
        raise UserError(f"--width must be > 0, got {width}", fix="e.g. --width 0.5")
    extra = {} if width is None else {"width": width}
    return MODELS[name](num_classes=num_classes, weights=weights, **extra)


def logits_of(output: Tensor | dict[str, Tensor]) -> Tensor:
    """The main logits ``[N, C, H, W]`` of any model here (``output["out"]`` for dict outputs)."""
    return output["out"] if isinstance(output, dict) else output


def count_multiply_adds(model: nn.Module, size: tuple[int, int], in_channels: int = 3) -> int:
    """Multiply-adds of every (transposed) convolution for one image of ``size`` (H, W).

    Runs the model once under forward hooks; build it on the ``meta`` device to allocate nothing.
    Linear layers, pooling, normalisation and interpolation are not counted (they are small here).
    """
    total: list[int] = []

    def count(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        per_value = module.weight[
            0
        ].numel()  # Conv2d [out, in/g, k, k]; ConvTranspose2d [in, out/g, k, k]
        counted = inputs[0] if isinstance(module, nn.ConvTranspose2d) else output
        total.append(counted.numel() * per_value)

    convolutions = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    hooks = [m.register_forward_hook(count) for m in convolutions]
    device = next(model.parameters()).device
    training = model.training
    model.eval()  # batch norm on a batch of one 1x1 map (PSPNet's 1x1 bin) refuses training mode
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, *size, device=device))
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return int(sum(total))


class LogitsOnly(nn.Module):
    """Wrap a model so that it returns the main logits tensor (``output["out"]`` for dicts): what
    ONNX export and timing want from PSPNet and torchvision's models."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return logits_of(self.model(images))


@torch.no_grad()
def predict_logits(model: nn.Module, images: Tensor) -> Tensor:
    """Eval-mode logits, resized to the input when a model (the paper U-Net) returns fewer pixels."""
    logits = logits_of(model(images))
    if logits.shape[-2:] != images.shape[-2:]:
        logits = torch.nn.functional.interpolate(logits, size=images.shape[-2:], mode="bilinear")
    return logits


def load_trained(path: str | Path, *, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model written by ``train.py`` from its checkpoint alone, in eval mode.

    Returns:
        ``(model, config)``; ``config`` is the training run's (``model``, ``width``,
        ``num_outputs``, ``classes``, ``palette``, ``binary``, ``image_size``, ...).
    Raises:
        UserError: the file is missing, unreadable, or not a checkpoint of this folder's ``train.py``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            "checkpoint not found",
            path=path,
            fix="train first (python 05_unet_segmentation/train.py) or pass --weights",
        )
    checkpoint = load_checkpoint(path)
    config = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    if not isinstance(config, dict) or config.get("model") not in MODELS:
        raise UserError(
            "not a checkpoint written by this folder's train.py (no model name in its config)",
            path=path,
            fix="pass a best.pt / last.pt from runs/05_unet_segmentation/",
        )
    model = build_model(
        config["model"], num_classes=int(config["num_outputs"]), width=config.get("width")
    )
    load_weights(model, checkpoint, path=path)
    return model.to(device).eval(), config


def load_weights(model: nn.Module, checkpoint: dict[str, Any], *, path: str | Path) -> None:
    """Copy a checkpoint's (or bare state dict's) weights into ``model``; a mismatch is a UserError."""
    load_model_state(
        model,
        model_state(checkpoint),
        path=path,
        fix="pass a checkpoint trained with the same --model, --width and --dataset",
    )
