"""The pieces ``train.py`` hands to the core engine: optimizer groups, cosine schedule, step
function, evaluation (COCO mAP@0.5 and mAP@0.5:0.95 with :mod:`detseg.metrics`), predictions.

The EMA of the weights is the core's :class:`detseg.engine.WithEMA`: it lives inside the trained
module, so the engine's checkpoints hold it and ``--resume`` restores it exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from yolov7_loss import YOLOv7Loss

from detseg.boxes import box_convert
from detseg.data.formats import coco
from detseg.data.letterbox import unletterbox_boxes
from detseg.data.types import DetectionDataset
from detseg.metrics import evaluate_coco
from detseg.yolo_decode import postprocess

EVAL_SCORE_THRESHOLD = 0.001  # as the authors' test.py: mAP needs the whole precision-recall curve
EVAL_IOU_THRESHOLD = 0.65


def make_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float = 5e-4
) -> torch.optim.Optimizer:
    """Three groups as the authors: BatchNorm weights and biases without weight decay, the rest
    with it. ``name``: ``"sgd"`` (momentum 0.937, Nesterov) or ``"adamw"`` (betas 0.937, 0.999)."""
    decay, no_decay = [], []
    for module in model.modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            is_bn = isinstance(module, nn.BatchNorm2d)
            (
                no_decay if is_bn or param_name == "bias" or "implicit" in param_name else decay
            ).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.937, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.937, 0.999))
    raise ValueError(f"unknown optimizer {name!r}")


class CosineFactor:
    """The lr factor of step ``t``: 1 for the first ``hold_steps`` (the first epoch, the warm-up),
    then a cosine from 1 to ``final_fraction`` at ``total_steps`` (the authors' ``one_cycle`` over
    the epochs after the first).

    A callable object, not a function: ``LambdaLR.state_dict()`` saves its attributes, so a
    checkpoint holds ``total_steps`` and ``--resume`` continues the same curve, also after a time
    budget shortened it (``yolov7_budget``). Holding the first epoch flat makes that epoch the same
    whatever the schedule's length, so a run whose length is decided after it equals the run given
    that length from the start.
    """

    def __init__(self, total_steps: int, hold_steps: int, final_fraction: float = 0.01) -> None:
        self.total_steps, self.hold_steps = int(total_steps), int(hold_steps)
        self.final_fraction = float(final_fraction)

    def __call__(self, step: int) -> float:
        span = self.total_steps - self.hold_steps
        if step <= self.hold_steps or span <= 0:
            return 1.0
        progress = min(step - self.hold_steps, span) / span
        return 1 + (self.final_fraction - 1) * (1 - math.cos(math.pi * progress)) / 2


def cosine_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    final_fraction: float = 0.01,
    hold_steps: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step :class:`CosineFactor` schedule (one factor object shared by every parameter group);
    the engine's linear warm-up multiplies the first steps on top."""
    factor = CosineFactor(max(1, total_steps), hold_steps, final_fraction)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_step_fn(loss_fn: YOLOv7Loss):
    """``step(model, batch, device) -> {"box", "obj", "cls"}`` for :func:`detseg.engine.train`."""

    def step(model: nn.Module, batch: Any, device: torch.device) -> dict[str, Tensor]:
        images, targets, _ = batch
        raw = model(images.to(device, non_blocking=True))
        return loss_fn(raw, targets.to(device))

    return step


@torch.no_grad()
def predict(
    model: nn.Module,
    images: Tensor,
    *,
    score_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    max_detections: int = 300,
) -> list[dict[str, Tensor]]:
    """Detections on a batch of letterboxed images [N, 3, S, S]: per image ``{"boxes" xyxy in input
    pixels, "scores", "labels" 0..C-1}`` after class-wise NMS."""
    was_training = model.training
    model.eval()
    decoded = model(images)
    model.train(was_training)
    return postprocess(
        decoded, score_threshold=score_threshold, iou_threshold=iou_threshold,
        max_detections=max_detections,
    )  # fmt: skip


def detections_to_coco(
    detections: Sequence[dict[str, Any]], metas: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Detections on letterboxed inputs -> COCO results in original pixels (category = label + 1,
    as :func:`detseg.data.formats.coco.to_dict` numbers YOLO classes)."""
    results = []
    for det, meta in zip(detections, metas):
        boxes = unletterbox_boxes(
            det["boxes"].cpu().numpy().astype(np.float32), meta["scale"], meta["pad"], meta["size"]
        )
        xywh = box_convert(boxes.astype(np.float64), "xyxy", "xywh")
        for box, score, label in zip(xywh, det["scores"].tolist(), det["labels"].tolist()):
            results.append({
                "image_id": int(meta["image_id"]), "category_id": int(label) + 1,
                "score": float(score), "bbox": [float(v) for v in box],
            })  # fmt: skip
    return results


def evaluate(
    model: nn.Module, loader: Iterable[Any], dataset: DetectionDataset, device: torch.device | str
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """COCO box AP of ``model`` over ``loader`` (letterboxed, not augmented) against ``dataset``.

    Returns:
        ``({"map50", "map", "fitness"}, COCO results)``; fitness = 0.1 mAP@0.5 + 0.9 mAP@0.5:0.95
        (the authors' choice of the best checkpoint).
    """
    results: list[dict[str, Any]] = []
    for images, _, metas in loader:
        detections = predict(
            model, images.to(device), score_threshold=EVAL_SCORE_THRESHOLD,
            iou_threshold=EVAL_IOU_THRESHOLD,
        )  # fmt: skip
        results += detections_to_coco(detections, metas)
    gt = coco.to_dict(dataset)
    if not results:
        return {"map50": 0.0, "map": 0.0, "fitness": 0.0}, results
    stats = evaluate_coco(gt, results, "bbox").stats
    map50, map_ = max(0.0, float(stats["AP50"])), max(0.0, float(stats["AP"]))
    return {"map50": map50, "map": map_, "fitness": 0.1 * map50 + 0.9 * map_}, results
