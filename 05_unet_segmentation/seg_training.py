"""What every lesson of this folder trains with: datasets, losses, evaluation, threshold sweep.

- Binary tasks (``salt``) use one logit channel, BCE + soft Dice loss, and a probability threshold.
- Multi-class tasks (``road``: not road / road; ``street``: 7 classes) use cross-entropy with
  ``ignore_index=255`` (pixels whose label colour is unknown), plus 0.4 x the auxiliary head's loss
  when the model has one (PSPNet, torchvision FCN / DeepLabV3), as in the PSPNet paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from segmentation_models import logits_of, predict_logits
from torch import Tensor, nn

from detseg.data import recipes
from detseg.data.torch_datasets import SegmentationTorchDataset, subset
from detseg.data.transforms import Compose, HorizontalFlip, Normalize
from detseg.data.types import SegmentationDataset
from detseg.errors import UserError
from detseg.metrics.segmentation import SegmentationMeter

IGNORE_INDEX = 255


@dataclass(frozen=True)
class Task:
    """A dataset of this folder: which built-in recipe stands in, and how it is trained."""

    recipe: str
    binary: bool  # one logit channel + threshold (salt) vs softmax over classes
    val_split: str | None  # the real layout's validation split, or None to hold out a fraction
    main_metric: str  # what the quality bar is stated in


TASKS = {
    "salt": Task(recipe="salt", binary=True, val_split=None, main_metric="iou_salt"),
    "road": Task(recipe="road", binary=False, val_split=None, main_metric="iou_road"),
    "street": Task(recipe="street", binary=False, val_split="val", main_metric="mean_iou"),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UserError(f"unknown --dataset {name!r}", fix=f"use one of {', '.join(TASKS)}")
    return TASKS[name]


def read_dataset(
    task: Task, split: str, *, data_path: Path | None, num_images: int | None, seed: int
) -> SegmentationDataset:
    """The real dataset at ``data_path`` (same reader), or the built-in one generated on first use."""
    if data_path is None:
        return recipes.load(task.recipe, seed=seed, num_images=num_images, split=split)
    if not Path(data_path).exists():
        raise UserError("dataset folder not found", path=data_path, fix="check --data-path")
    return recipes.get(task.recipe).read(Path(data_path), split)


def output_channels(task: Task, dataset: SegmentationDataset) -> int:
    return 1 if task.binary else dataset.num_classes


def make_datasets(
    task: Task,
    *,
    data_path: Path | None = None,
    num_images: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset, SegmentationDataset]:
    """Train and validation torch datasets (flip augmentation on train) and the train records."""
    train_aug = Compose([HorizontalFlip(0.5)])
    normalize = Normalize()
    source = read_dataset(task, "train", data_path=data_path, num_images=num_images, seed=seed)
    if len(source) == 0:
        raise UserError("the dataset has no images", path=source.root, fix="check --data-path")
    if task.val_split is None:
        train = subset(
            SegmentationTorchDataset(source, train_aug, normalize, seed=seed),
            "train",
            val_fraction=val_fraction,
            seed=seed,
        )
        val = subset(
            SegmentationTorchDataset(source, None, normalize, seed=seed),
            "val",
            val_fraction=val_fraction,
            seed=seed,
        )
    else:
        val_source = read_dataset(
            task, task.val_split, data_path=data_path, num_images=num_images, seed=seed
        )
        train = SegmentationTorchDataset(source, train_aug, normalize, seed=seed)
        val = SegmentationTorchDataset(val_source, None, normalize, seed=seed)
    return train, val, source


def soft_dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """1 - soft Dice of sigmoid(logits) [N, 1, H, W] against a {0, 1} target [N, H, W], per image."""
    probs = torch.sigmoid(logits[:, 0]).flatten(1)
    target = target.flatten(1).float()
    intersection = (probs * target).sum(1)
    return (1 - (2 * intersection + eps) / (probs.sum(1) + target.sum(1) + eps)).mean()


def segmentation_loss(
    output: Tensor | dict[str, Tensor], target: Tensor, *, binary: bool
) -> dict[str, Tensor]:
    """Losses for one batch: ``{"bce", "dice"}`` (binary) or ``{"ce"[, "aux"]}`` (multi-class)."""
    logits = logits_of(output)
    if binary:
        valid = target != IGNORE_INDEX
        target_float = (target == 1).float()
        bce = F.binary_cross_entropy_with_logits(logits[:, 0][valid], target_float[valid])
        return {"bce": bce, "dice": soft_dice_loss(logits, target_float)}
    losses = {"ce": F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)}
    if isinstance(output, dict) and "aux" in output:
        losses["aux"] = 0.4 * F.cross_entropy(output["aux"], target, ignore_index=IGNORE_INDEX)
    return losses


def make_step(binary: bool):
    """Engine step function: ``(model, (images, masks), device) -> loss dict``."""

    def step(model: nn.Module, batch: Any, device: torch.device) -> dict[str, Tensor]:
        images, masks = batch
        output = model(images.to(device))
        return segmentation_loss(output, masks.to(device), binary=binary)

    return step


def predict_classes(logits: Tensor, *, binary: bool, threshold: float = 0.5) -> Tensor:
    """Class map [N, H, W] from logits [N, C, H, W]."""
    if binary:
        return (torch.sigmoid(logits[:, 0]) > threshold).long()
    return logits.argmax(1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    device: torch.device,
    *,
    class_names: list[str],
    binary: bool,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Dataset-level metrics: ``mean_iou``, ``pixel_accuracy``, ``mean_dice``, ``iou_<class>``."""
    model.eval()
    meter = SegmentationMeter(num_classes=len(class_names), ignore_index=IGNORE_INDEX)
    for images, masks in loader:
        logits = predict_logits(model, images.to(device))
        meter.update(predict_classes(logits, binary=binary, threshold=threshold).cpu(), masks)
    result = meter.compute()
    metrics = {key: float(result[key]) for key in ("mean_iou", "pixel_accuracy", "mean_dice")}
    for name, value in zip(class_names, result["iou"]):
        metrics[f"iou_{name}"] = float(value)
    return metrics


@torch.no_grad()
def threshold_sweep(
    model: nn.Module, loader: Any, device: torch.device, thresholds: np.ndarray
) -> dict[float, float]:
    """Foreground IoU of a binary model at each probability threshold (one pass over ``loader``)."""
    model.eval()
    intersection = np.zeros(len(thresholds))
    union = np.zeros(len(thresholds))
    for images, masks in loader:
        probs = torch.sigmoid(predict_logits(model, images.to(device))[:, 0]).cpu()
        valid = masks != IGNORE_INDEX
        truth = (masks == 1) & valid
        for i, threshold in enumerate(thresholds):
            pred = (probs > threshold) & valid
            intersection[i] += (pred & truth).sum().item()
            union[i] += (pred | truth).sum().item()
    return {
        float(t): float(i / u) if u else float("nan")
        for t, i, u in zip(thresholds, intersection, union)
    }
