"""What every lesson and script of this folder trains with: tasks and datasets, losses, evaluation,
the threshold sweep, and :func:`fit`, the one call into the core engine.

- Binary tasks (``salt``) use one logit channel, BCE + soft Dice loss, and a probability threshold.
- Multi-class tasks (``road``: not road / road; ``street``: 7 classes) use cross-entropy with
  ``ignore_index=255`` (pixels whose label colour is unknown), plus 0.4 x the auxiliary head's loss
  when the model has one (PSPNet, torchvision FCN / DeepLabV3), as in the PSPNet paper.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from segmentation_models import logits_of, predict_logits
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from detseg import engine
from detseg.data import recipes
from detseg.data.torch_datasets import SegmentationTorchDataset, split_indices
from detseg.data.transforms import Compose, HorizontalFlip, Normalize, resize
from detseg.data.types import SegmentationDataset
from detseg.engine.budget import train_within_budget
from detseg.engine.distributed import make_loader
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
    image_size: tuple[int, int] | None  # (height, width) every pair is resized to; None: as stored
    cache: bool  # keep decoded (and resized) pairs in memory: decoding dominates a step otherwise


TASKS = {
    "salt": Task("salt", True, None, "iou_salt", image_size=None, cache=False),
    "road": Task("road", False, None, "iou_road", image_size=(160, 480), cache=True),
    "street": Task("street", False, "val", "mean_iou", image_size=(128, 128), cache=True),
}


def get_task(name: str) -> Task:
    """The :class:`Task` named ``name``; a UserError lists the names."""
    if name not in TASKS:
        raise UserError(f"unknown --dataset {name!r}", fix=f"use one of {', '.join(TASKS)}")
    return TASKS[name]


def read_dataset(
    task: Task, split: str, *, data_path: Path | None, seed: int
) -> SegmentationDataset:
    """The real dataset at ``data_path`` (same reader), or the built-in one generated on first use.

    The built-in dataset is always generated at its default size (``recipes`` regenerates a folder
    whose size changes); ``--num-images`` takes the first records instead (:func:`prepare`).
    """
    if data_path is None:
        return recipes.load(task.recipe, seed=seed, split=split)
    if not Path(data_path).exists():
        raise UserError("dataset folder not found", path=data_path, fix="check --data-path")
    return recipes.get(task.recipe).read(Path(data_path), split)


def prepare(
    dataset: SegmentationDataset,
    *,
    image_size: tuple[int, int] | None = None,
    cache: bool = False,
    num_images: int | None = None,
) -> SegmentationDataset:
    """The same records (the first ``num_images``), loaded resized to ``image_size`` and memoised.

    Resizing happens once per pair, before any augmentation: the image bilinear (area when
    shrinking), the mask nearest-neighbour, so labels are never blended. With ``cache`` the decoded
    uint8 pairs stay in memory (street at 128 x 128: about 65 kB per pair).
    """
    records = dataset.records if num_images is None else dataset.records[:num_images]
    memo: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def load(root: Path, record: Any) -> tuple[np.ndarray, np.ndarray]:
        if record.file_name in memo:
            image, mask = memo[record.file_name]
            return image, mask.astype(np.int64)
        image, mask = dataset.loader(root, record)
        if image_size is not None and image.shape[:2] != tuple(image_size):
            image, target = resize(image, {"semantic_mask": mask}, *image_size)
            mask = target["semantic_mask"]
        if cache:
            memo[record.file_name] = (image, np.asarray(mask, dtype=np.uint8))
        return image, np.asarray(mask, dtype=np.int64)

    return replace(dataset, records=list(records), loader=load)


class EpochSubset(Subset):
    """A ``Subset`` that passes ``set_epoch`` on, so augmentations differ from epoch to epoch."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def output_channels(task: Task, dataset: SegmentationDataset) -> int:
    """Logit channels: 1 for a binary task (sigmoid), else one per class (softmax)."""
    return 1 if task.binary else dataset.num_classes


def make_datasets(
    task: Task,
    *,
    data_path: Path | None = None,
    num_images: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    image_size: tuple[int, int] | None = None,
) -> tuple[Dataset, Dataset, SegmentationDataset]:
    """Train and validation torch datasets (flip augmentation on train) and the train records.

    Args:
        task: from :data:`TASKS`.
        data_path: a real dataset in its own layout, or None for the built-in one.
        num_images: use the first ``num_images`` training pairs (None: all).
        seed: data seed (built-in generation, split, augmentation).
        val_fraction: held-out fraction when the layout has no validation split.
        image_size: (height, width) to resize to; None: the task's default.
    Returns:
        ``(train, val, train_records)``; items are ``(image float32 [3, H, W] normalised with the
        ImageNet statistics, mask int64 [H, W])``.
    """
    size = image_size or task.image_size
    train_aug = Compose([HorizontalFlip(0.5)])
    normalize = Normalize()
    source = read_dataset(task, "train", data_path=data_path, seed=seed)
    source = prepare(source, image_size=size, cache=task.cache, num_images=num_images)
    if len(source) == 0:
        raise UserError("the dataset has no images", path=source.root, fix="check --data-path")
    if task.val_split is None:
        train_idx, val_idx = split_indices(len(source), val_fraction=val_fraction, seed=seed)
        train = EpochSubset(
            SegmentationTorchDataset(source, train_aug, normalize, seed=seed), train_idx
        )
        val = Subset(SegmentationTorchDataset(source, None, normalize, seed=seed), val_idx)
        return train, val, source
    val_source = read_dataset(task, task.val_split, data_path=data_path, seed=seed)
    val_source = prepare(val_source, image_size=size, cache=task.cache)
    train = SegmentationTorchDataset(source, train_aug, normalize, seed=seed)
    return train, SegmentationTorchDataset(val_source, None, normalize, seed=seed), source


def soft_dice_loss(
    logits: Tensor, target: Tensor, valid: Tensor | None = None, eps: float = 1.0
) -> Tensor:
    """1 - soft Dice of sigmoid(logits) [N, 1, H, W] against a {0, 1} target [N, H, W].

    ``valid`` (bool [N, H, W]) leaves ignored pixels out of both sums.
    The sums run over the whole batch ("batch Dice"). Per image, an empty mask (40 % of the salt
    images) would give ``1 - eps / (sum(p) + eps)``: 0 for an empty prediction, but already 0.5
    for one pixel's worth of probability and 0.98 for fifty (eps = 1), as much as missing a whole
    salt body. Summed over the batch, an empty image only adds its false positives to the
    denominator (lesson 1 shows both with numbers).
    """
    probs = torch.sigmoid(logits[:, 0])
    target = target.float()
    if valid is not None:
        probs, target = probs * valid, target * valid
    intersection = (probs * target).sum()
    return 1 - (2 * intersection + eps) / (probs.sum() + target.sum() + eps)


def segmentation_loss(
    output: Tensor | dict[str, Tensor], target: Tensor, *, binary: bool
) -> dict[str, Tensor]:
    """Losses for one batch: ``{"bce", "dice"}`` (binary) or ``{"ce"[, "aux"]}`` (multi-class)."""
    logits = logits_of(output)
    if binary:
        valid = target != IGNORE_INDEX
        target_float = (target == 1).float()
        bce = F.binary_cross_entropy_with_logits(logits[:, 0][valid], target_float[valid])
        return {"bce": bce, "dice": soft_dice_loss(logits, target_float, valid)}
    losses = {"ce": F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)}
    if isinstance(output, dict) and "aux" in output:
        losses["aux"] = 0.4 * F.cross_entropy(output["aux"], target, ignore_index=IGNORE_INDEX)
    return losses


def make_step(binary: bool) -> Callable[[nn.Module, Any, torch.device], dict[str, Tensor]]:
    """Engine step function: ``(model, (images [N, 3, H, W], masks [N, H, W]), device) -> losses``."""

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


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    *,
    task: Task,
    classes: list[str],
    device: torch.device,
    epochs: int,
    batch_size: int,
    lr: float,
    output_dir: str | Path,
    seed: int = 0,
    workers: int = 0,
    threshold: float = 0.5,
    time_budget_min: float | None = None,
    config: dict[str, Any] | None = None,
    **engine_kwargs: Any,
) -> dict[str, Any]:
    """Train with the core engine: AdamW, one-cycle learning rate (15 % warm-up, cosine down),
    evaluation after every epoch, checkpoints in ``output_dir``.

    Args:
        model: any model of :data:`segmentation_models.MODELS`.
        train_set, val_set: from :func:`make_datasets`.
        task, classes: what the loss and the metrics need (``classes`` names the ``iou_*`` keys).
        time_budget_min: stop before an epoch that, at the mean epoch time so far, would end past
            this many minutes (wall clock, training + evaluation); None trains every epoch.
        config: plain dict stored in checkpoints (what ``predict.py`` rebuilds the model from).
        engine_kwargs: passed to :func:`detseg.engine.train` (``resume``, ``tracker``, ``amp``,
            ``max_steps_per_epoch``, ``progress``).
    Returns:
        The engine's result (``history`` with ``eval`` metrics per epoch, incl. ``minutes`` and
        ``cpu_minutes`` since the start); ``stopped_early`` when the budget cut it short.
    """
    loader = make_loader(
        train_set, batch_size, True, seed, workers, drop_last=len(train_set) > batch_size
    )
    val_loader = make_loader(val_set, batch_size, False, seed, workers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = engine_kwargs.get("max_steps_per_epoch") or len(loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * min(steps, len(loader)), pct_start=0.15
    )
    clock = (time.perf_counter(), time.process_time())

    def evaluate_fn(model: nn.Module, epoch: int) -> dict[str, float]:
        metrics = evaluate(
            model, val_loader, device, class_names=classes, binary=task.binary, threshold=threshold
        )
        metrics["minutes"] = (time.perf_counter() - clock[0]) / 60
        metrics["cpu_minutes"] = (time.process_time() - clock[1]) / 60
        return metrics

    kwargs = {
        "optimizer": optimizer,
        "device": device,
        "lr_scheduler": scheduler,
        "lr_scheduler_interval": "step",
        "step_fn": make_step(task.binary),
        "evaluate_fn": evaluate_fn,
        "best_metric": task.main_metric,
        "output_dir": output_dir,
        "config": config or {},
        **engine_kwargs,
    }
    if time_budget_min is None:
        return engine.train(model, loader, epochs=epochs, **kwargs)
    return train_within_budget(
        model, loader, epochs=epochs, budget_s=time_budget_min * 60, **kwargs
    )
