"""Mask R-CNN (and Faster R-CNN) builders for fine-tuning, chosen by name in :data:`MODELS`.

Every builder is ``build(*, num_classes, weights="coco" | "none" | path, **options) -> nn.Module``:

- ``num_classes`` counts the background, as torchvision does: PennFudan's one class "person" is
  ``num_classes=2``; labels in the targets are ``1..num_classes-1``.
- ``weights="coco"`` loads the detector trained on COCO (91 classes) and then *replaces the heads*
  whose size depends on the number of classes: the box predictor (``FastRCNNPredictor``: class scores
  and per-class box deltas) and the mask predictor (``MaskRCNNPredictor``: one 28 x 28 mask per class).
  Everything else (backbone, FPN, RPN, the box head's MLP, the mask head's convolutions) keeps its COCO
  weights: that is fine-tuning. The file is fetched through :func:`detseg.pretrained.load_state_dict`
  (torch hub cache, SHA-256 checked; offline, one line naming the URL and ``--weights none``).
- ``weights="none"`` starts from random weights (and no ImageNet backbone either).
- ``weights=<path>`` loads a checkpoint written by ``train.py`` (or a bare state_dict) of the same
  architecture and number of classes.

``options`` go to torchvision's ``MaskRCNN`` / ``FasterRCNN`` constructor (``min_size``, ``max_size``,
``box_detections_per_img``, ...). The slim model takes its :class:`SlimConfig` fields instead.

=========================  ===============================================  ==============
name                       what                                             COCO weights
=========================  ===============================================  ==============
maskrcnn_resnet50_fpn      the tutorial's model (He et al. 2017), 44 M      yes (37.9 / 34.6 box / mask AP)
maskrcnn_resnet50_fpn_v2   improved recipe (Li et al. 2021), 46 M           yes (47.4 / 41.8)
fasterrcnn_resnet50_fpn    boxes only (Ren et al. 2015), 41 M               yes (37.0 box AP)
maskrcnn_mobilenet_v3_fpn  MobileNetV3-Large FPN backbone, faster           backbone, RPN, box head
maskrcnn_slim              ResNet-18 FPN with 64 channels, small heads,     no: trains from scratch
                           256 px: trains on 2 CPU cores in minutes
=========================  ===============================================  ==============
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from slim_maskrcnn import SlimConfig, checkpoint_slim_fields, slim_maskrcnn
from torch import nn
from torchvision.models.detection import (
    FasterRCNN,
    FasterRCNN_MobileNet_V3_Large_FPN_Weights,
    FasterRCNN_ResNet50_FPN_Weights,
    MaskRCNN,
    MaskRCNN_ResNet50_FPN_V2_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
)
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from detseg import pretrained
from detseg.engine import load_checkpoint, load_model_state, model_state
from detseg.errors import UserError

WEIGHT_KEYWORDS = ("coco", "none")


def replace_heads(model: nn.Module, num_classes: int) -> nn.Module:
    """Give a COCO-trained detector new class-dependent predictors for ``num_classes`` (incl. background).

    The box predictor maps the box head's feature vector ``[R, 1024]`` to class scores ``[R, C]`` and
    box deltas ``[R, 4C]``; the mask predictor maps the mask head's ``[R, 256, 14, 14]`` features to
    ``[R, C, 28, 28]`` mask logits. Both are freshly initialised; the rest of ``model`` is unchanged.
    """
    box_predictor = model.roi_heads.box_predictor
    model.roi_heads.box_predictor = FastRCNNPredictor(
        box_predictor.cls_score.in_features, num_classes
    )
    if getattr(model.roi_heads, "mask_predictor", None) is not None:
        mask_predictor = model.roi_heads.mask_predictor
        in_channels = mask_predictor.conv5_mask.in_channels
        hidden = mask_predictor.conv5_mask.out_channels
        model.roi_heads.mask_predictor = MaskRCNNPredictor(in_channels, hidden, num_classes)
    return model


def _check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise UserError(
            f"num_classes must count the background and at least one class, got {num_classes}",
            fix="pass the number of object classes + 1",
        )


def _ensure_cached(weights: Any) -> None:
    """Make sure the COCO file is in torch's hub cache, or raise the one-line offline message."""
    if not pretrained.cache_path(weights).is_file():
        pretrained.load_state_dict(  # downloads (hash-checked) or raises UserError
            weights,
            offline_hint="or pass --weights none to train from scratch on the built-in data",
        )


def _load_weights_file(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a ``train.py`` checkpoint or a bare state_dict into ``model`` (strict)."""
    load_model_state(
        model,
        model_state(load_checkpoint(path)),
        what="--weights",
        path=path,
        fix="pass the --model and number of classes the file was trained with, or use --weights "
        "coco / none",
    )
    return model


def _from_torchvision(
    constructor: Callable[..., nn.Module],
    coco: Any,
    *,
    num_classes: int,
    weights: str | Path,
    options: dict[str, Any],
) -> nn.Module:
    """Shared path of the torchvision builders: COCO + new heads, random, or a file."""
    _check_num_classes(num_classes)
    if str(weights) == "coco":
        _ensure_cached(coco)
        model = constructor(weights=coco, **options)
        return replace_heads(model, num_classes)
    model = constructor(weights=None, weights_backbone=None, num_classes=num_classes, **options)
    return model if str(weights) == "none" else _load_weights_file(model, weights)


def build_maskrcnn_resnet50_fpn(
    *, num_classes: int, weights: str | Path = "coco", **options: Any
) -> MaskRCNN:
    """Mask R-CNN, ResNet-50 FPN (the torchvision tutorial's model)."""
    return _from_torchvision(
        torchvision.models.detection.maskrcnn_resnet50_fpn,
        MaskRCNN_ResNet50_FPN_Weights.COCO_V1,
        num_classes=num_classes,
        weights=weights,
        options=options,
    )


def build_maskrcnn_resnet50_fpn_v2(
    *, num_classes: int, weights: str | Path = "coco", **options: Any
) -> MaskRCNN:
    """Mask R-CNN v2: BatchNorm in FPN and heads, 4-conv box head, 2-conv RPN head (Li et al. 2021)."""
    return _from_torchvision(
        torchvision.models.detection.maskrcnn_resnet50_fpn_v2,
        MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
        num_classes=num_classes,
        weights=weights,
        options=options,
    )


def build_fasterrcnn_resnet50_fpn(
    *, num_classes: int, weights: str | Path = "coco", **options: Any
) -> FasterRCNN:
    """Faster R-CNN, ResNet-50 FPN: boxes only (masks in the targets are ignored)."""
    return _from_torchvision(
        torchvision.models.detection.fasterrcnn_resnet50_fpn,
        FasterRCNN_ResNet50_FPN_Weights.COCO_V1,
        num_classes=num_classes,
        weights=weights,
        options=options,
    )


def build_maskrcnn_mobilenet_v3_fpn(
    *, num_classes: int, weights: str | Path = "coco", **options: Any
) -> MaskRCNN:
    """Mask R-CNN on torchvision's MobileNetV3-Large FPN detector (2 FPN levels + pool, 5 sizes x 3 ratios).

    torchvision publishes no Mask R-CNN with this backbone, so ``weights="coco"`` takes the COCO
    *Faster* R-CNN MobileNetV3-Large FPN (backbone, FPN, RPN and box head) and adds a new mask head
    (2 convolutions of 128 channels) and new predictors. Default input: shorter side 320..800 as given
    by ``min_size`` (torchvision's default 800).
    """
    _check_num_classes(num_classes)
    options = {"rpn_score_thresh": 0.05, **options}
    mask_options = {
        key: options.pop(key)
        for key in ("mask_roi_pool", "mask_head", "mask_predictor")
        if key in options
    }
    coco = str(weights) == "coco"
    if coco:
        _ensure_cached(FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1)
    faster = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1 if coco else None,
        weights_backbone=None,
        **({} if coco else {"num_classes": num_classes}),
    )
    channels = faster.backbone.out_channels
    model = MaskRCNN(
        faster.backbone,
        num_classes=None,
        rpn_anchor_generator=faster.rpn.anchor_generator,
        rpn_head=faster.rpn.head,
        box_head=faster.roi_heads.box_head,
        box_predictor=faster.roi_heads.box_predictor,
        mask_roi_pool=mask_options.get(
            "mask_roi_pool", MultiScaleRoIAlign(["0", "1"], output_size=14, sampling_ratio=2)
        ),
        mask_head=mask_options.get("mask_head", MaskRCNNHeads(channels, [128, 128], 1)),
        mask_predictor=mask_options.get("mask_predictor", MaskRCNNPredictor(128, 128, num_classes)),
        **options,
    )
    if coco:
        return replace_heads(model, num_classes)
    return model if str(weights) == "none" else _load_weights_file(model, weights)


def build_maskrcnn_slim(
    *, num_classes: int, weights: str | Path = "none", config: SlimConfig | dict | None = None
) -> MaskRCNN:
    """The slim Mask R-CNN (:mod:`slim_maskrcnn`), trained from scratch: no COCO weights exist for it."""
    _check_num_classes(num_classes)
    if str(weights) == "coco":
        raise UserError(
            "maskrcnn_slim has no COCO weights (it is trained from scratch)",
            fix="pass --weights none, or a checkpoint of this model",
        )
    model = slim_maskrcnn(num_classes, config)
    return model if str(weights) == "none" else _load_weights_file(model, weights)


# name -> builder; a visible dict (STYLE.md #5). All take (*, num_classes, weights, ...).
MODELS: dict[str, Callable[..., nn.Module]] = {
    "maskrcnn_resnet50_fpn": build_maskrcnn_resnet50_fpn,
    "maskrcnn_resnet50_fpn_v2": build_maskrcnn_resnet50_fpn_v2,
    "fasterrcnn_resnet50_fpn": build_fasterrcnn_resnet50_fpn,
    "maskrcnn_mobilenet_v3_fpn": build_maskrcnn_mobilenet_v3_fpn,
    "maskrcnn_slim": build_maskrcnn_slim,
}
# what --weights means when not given: the COCO detector where one exists
DEFAULT_WEIGHTS: dict[str, str] = {name: "coco" for name in MODELS} | {"maskrcnn_slim": "none"}


def has_masks(model: nn.Module) -> bool:
    """True for Mask R-CNN models (a mask head), False for Faster R-CNN."""
    return getattr(model.roi_heads, "mask_predictor", None) is not None


def build_model(
    name: str,
    *,
    num_classes: int,
    weights: str | Path | None = None,
    image_size: Sequence[int] | None = None,
    slim: dict[str, Any] | None = None,
) -> nn.Module:
    """Build ``MODELS[name]`` with the options ``train.py`` stores in its checkpoints.

    Args:
        name: a key of :data:`MODELS`.
        num_classes: object classes + 1 (background).
        weights: ``"coco"``, ``"none"``, a file, or None for :data:`DEFAULT_WEIGHTS`.
        image_size: ``(min_size, max_size)`` of the model's resize; None keeps the model's default.
        slim: :class:`SlimConfig` fields (``maskrcnn_slim`` only).
    Raises:
        UserError: unknown name; slim options for another model.
    """
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}", fix=f"use one of {', '.join(MODELS)}")
    weights = DEFAULT_WEIGHTS[name] if weights is None else weights
    if name == "maskrcnn_slim":
        config = SlimConfig.from_dict(slim or {})
        if image_size is not None:
            config.min_size, config.max_size = (int(v) for v in image_size)
        return build_maskrcnn_slim(num_classes=num_classes, weights=weights, config=config)
    if slim:
        raise UserError("slim options apply to --model maskrcnn_slim only", fix="drop them")
    options: dict[str, Any] = {}
    if image_size is not None:
        options["min_size"], options["max_size"] = (int(v) for v in image_size)
    return MODELS[name](num_classes=num_classes, weights=weights, **options)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def load_trained(path: str | Path, *, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model from a ``train.py`` checkpoint (``best.pt`` / ``last.pt``), in eval mode.

    Returns:
        ``(model, config)``: ``config`` is the checkpoint's plain dict; it holds ``model``,
        ``num_classes``, ``classes``, ``category_ids``, ``image_size`` and ``slim``.
    Raises:
        UserError: not a checkpoint of ``train.py`` (no config naming the model), or weights that do
            not fit.
    """
    checkpoint = load_checkpoint(path)
    config = checkpoint.get("config") or {}
    if "model" not in config or "num_classes" not in config:
        raise UserError(
            "checkpoint has no model config (was it written by this folder's train.py?)",
            path=path,
            fix="pass best.pt or last.pt of a train.py run",
        )
    model = build_model(
        config["model"],
        num_classes=int(config["num_classes"]),
        weights="none",
        image_size=config.get("image_size"),
        slim=checkpoint_slim_fields(config.get("slim") or {})
        if config["model"] == "maskrcnn_slim"
        else None,
    )
    load_model_state(
        model,
        model_state(checkpoint),
        what="the checkpoint's weights",
        path=path,
        fix="the file was changed after training: retrain, or pass another checkpoint",
    )
    return model.to(device).eval(), config
