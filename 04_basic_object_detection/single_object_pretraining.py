"""Pretraining the small backbone of the single-object detector on built-in data (no ImageNet).

The stand-in for "pretrained on ImageNet": the backbone learns a task on *other* images than the
detector's, then is frozen (:mod:`single_object_detector`). Tasks (:data:`PRETRAIN_TASKS`):

- ``shape_crops``: classify the shapes cut out of the built-in ``shapes`` scenes (5 classes);
- ``other_images``: classify other built-in ``single_object`` images (data seed 1, never the
  detector's images; 3 classes);
- ``other_images_boxes`` (the default): classify *and locate* them: a small locating head on the
  backbone's map regresses the object's box (L1 + (1 - GIoU)), then is dropped, so that the frozen
  features keep where the object is, as a detection-pretrained backbone's do.

Recipe: Adam with a one-cycle learning rate (up to 3e-3 over the first 30 % of the steps, then
down along a cosine), each training image mirrored left-right with probability 1/2 (its box with
it), batches of 64. The locating head reads the 8 x 8 map before the last pooling through a 1 x 1
convolution, as the detector's box head does.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from single_object_detector import BACKBONES, SmallBackbone, letterless_resize, ordered, paired_iou
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from detseg.data.imageio import read_image
from detseg.data.pretraining import ShapeCrops, train_steps
from detseg.data.types import DetectionDataset

PRETRAIN_TASKS = {
    "shape_crops": "classify shapes cut out of the built-in shapes scenes (5 classes)",
    "other_images": "classify other built-in single_object images (data seed 1; 3 classes)",
    "other_images_boxes": "classify and locate (the object's box, from the backbone's map) other "
    "built-in single_object images (data seed 1; 3 classes)",
}


def _normalise(images: Tensor) -> Tensor:
    """uint8 ``[3, S, S]`` -> the small backbone's normalised float input."""
    spec = BACKBONES["small"]
    mean, std = torch.tensor(spec["mean"]).view(3, 1, 1), torch.tensor(spec["std"]).view(3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def mirror_box(box: Tensor) -> Tensor:
    """``[4]`` xyxy normalised -> the box of the image mirrored left-right."""
    return torch.stack([1 - box[2], box[1], 1 - box[0], box[3]])


class WholeImages(Dataset):
    """Whole images of a single-object dataset with their class: plain image classification.

    Every image is read and resized once at construction (uint8, ``side`` x ``side``). With
    ``boxes``, items are ``(image, (label, box xyxy normalised))`` for the locating task. ``flip``:
    each item mirrored left-right with probability 1/2 (torch's global generator), its box with it.
    """

    def __init__(
        self, dataset: DetectionDataset, side: int = 128, *, boxes: bool = False, flip: bool = False
    ) -> None:
        self.images = np.stack(
            [letterless_resize(read_image(dataset.image_path(r)), side) for r in dataset.records]
        )
        self.labels = torch.tensor([int(r.labels[0]) for r in dataset.records])
        sizes = np.float32([[r.width, r.height, r.width, r.height] for r in dataset.records])
        corners = np.stack([np.asarray(r.boxes[0], np.float32) for r in dataset.records])
        self.boxes = torch.from_numpy(corners / sizes) if boxes else None  # [N, 4]
        self.flip = flip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1)
        flipped = self.flip and bool(torch.rand(()) < 0.5)
        image = _normalise(image.flip(-1) if flipped else image)
        if self.boxes is None:
            return image, self.labels[index]
        box = mirror_box(self.boxes[index]) if flipped else self.boxes[index]
        return image, (self.labels[index], box)


def pretrain_sets(
    task: str, num_images: int | None, seed: int, *, flip: bool = True
) -> tuple[Dataset, Dataset, int]:
    """``(train, val, num_classes)`` of a pretraining task (:data:`PRETRAIN_TASKS`); ``flip``
    mirrors training items at random (never the held-out ones)."""
    from detseg.data import recipes

    if task == "shape_crops":
        shapes = {split: recipes.load("shapes", split=split, num_images=num_images)
                  for split in ("train", "val")}  # fmt: skip
        norm = {"mean": BACKBONES["small"]["mean"], "std": BACKBONES["small"]["std"]}
        train = ShapeCrops(shapes["train"], seed=seed, flip=flip, **norm)  # the core's crops
        return train, ShapeCrops(shapes["val"], seed=seed + 1, **norm), 5
    # other images of the same three classes, drawn with data seed 1: never the detector's images
    images = recipes.load("single_object", seed=1, num_images=num_images)
    indices = np.random.default_rng(seed).permutation(len(images))
    cut = max(1, len(images) // 5)
    subset = [replace(images, records=[images.records[i] for i in part]) for part in
              (indices[cut:], indices[:cut])]  # fmt: skip
    boxes = task == "other_images_boxes"
    return (WholeImages(subset[0], boxes=boxes, flip=flip), WholeImages(subset[1], boxes=boxes),
            len(images.classes))  # fmt: skip


def locate_loss(predicted: Tensor, boxes: Tensor) -> Tensor:
    """L1 + (1 - GIoU) between ``[N, 4]`` predicted and true boxes (xyxy, normalised)."""
    from torchvision.ops import generalized_box_iou_loss

    l1 = nn.functional.l1_loss(predicted, boxes)
    return l1 + generalized_box_iou_loss(ordered(predicted), boxes, reduction="mean")


def locating_head(backbone: SmallBackbone, locator_map: int = 4) -> nn.Sequential:
    """The pretraining task's box regressor: ``[B, 128, 4, 4]`` (``locator_map`` 4) -> flatten ->
    linear -> sigmoid, or ``[B, 128, 8, 8]`` (8, the map the detector's box head reads) -> 1 x 1
    convolution to 32 channels, ReLU -> flatten -> linear -> sigmoid: ``[B, 4]``."""
    channels = backbone.widths[-1]
    if locator_map == 4:
        return nn.Sequential(nn.Flatten(), nn.Linear(channels * 16, 4), nn.Sigmoid())
    return nn.Sequential(
        nn.Conv2d(channels, 32, 1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 64, 4), nn.Sigmoid()
    )


def pretrain_small_backbone(
    *,
    task: str = "other_images_boxes",
    seed: int = 0,
    num_images: int | None = None,
    epochs: int = 10,
    max_steps: int | None = None,
    flip: bool = True,
    locator_map: int = 8,
    log: Callable[[str], Any] = lambda text: print(text, file=sys.stderr),
) -> tuple[SmallBackbone, dict[str, float]]:
    """Train :class:`SmallBackbone` on a built-in task (:data:`PRETRAIN_TASKS`, module docstring).

    ``other_images_boxes`` also asks where the object is: :func:`locating_head` on the 4 x 4 grid
    or the 8 x 8 map (``locator_map``; dropped after pretraining, never part of the backbone's
    weights) regresses its box with L1 + (1 - GIoU). Returns the backbone (eval mode) and ``{"crop_accuracy" (held-out accuracy of
    the task), "seconds", "train_crops" (training items)}`` (+ ``"box_iou"``, held out, when
    locating).
    """
    if locator_map not in (4, 8):
        raise ValueError(f"locator_map must be 4 or 8, got {locator_map}")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    train_set, val_set, num_classes = pretrain_sets(task, num_images, seed, flip=flip)
    backbone = SmallBackbone(num_pretrain_classes=num_classes)
    locating = task == "other_images_boxes"
    locator = locating_head(backbone, locator_map)
    parameters = [*backbone.parameters(), *(locator.parameters() if locating else [])]
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    loader = DataLoader(train_set, batch_size=64, shuffle=True, generator=generator)
    total = epochs * len(loader) if max_steps is None else min(max_steps, epochs * len(loader))
    # warm up to 3e-3 over 30 % of the steps, then anneal (a plain cosine from 3e-3 without the
    # warm-up left the locating task at a held-out box IoU of 0.41 instead of 0.61: EXPERIMENTS.md)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=total)

    def outputs(images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Class logits and (locating) boxes from one pass of the body."""
        finer = backbone.body[:-1](images)  # [B, 128, 8, 8] at 128 px
        last = backbone.body[-1](finer)  # [B, 128, 4, 4]
        logits = backbone.classifier(last.mean(dim=(2, 3)))
        if not locating:
            return logits, None
        return logits, locator(finer if locator_map == 8 else last)

    def loss_of(batch: tuple[Tensor, Any]) -> Tensor:
        crops, targets = batch
        logits, boxes = outputs(crops)
        loss = nn.functional.cross_entropy(logits, targets[0] if locating else targets)
        return loss if boxes is None else loss + locate_loss(boxes, targets[1])

    backbone.train()
    train_steps(loader, loss_of, optimizer, scheduler, epochs=epochs, total=total, log=log,
                describe=f"pretraining the small backbone ({task})")  # fmt: skip
    backbone.eval()
    hits, ious = [], []
    with torch.no_grad():
        for crops, targets in DataLoader(val_set, batch_size=128):
            labels = targets[0] if locating else targets
            logits, boxes = outputs(crops)
            hits.append((logits.argmax(1) == labels).double())
            if boxes is not None:
                ious.append(paired_iou(ordered(boxes).double(), targets[1].double()))
    accuracy = float(torch.cat(hits).mean())
    return backbone, {
        "crop_accuracy": accuracy,
        "seconds": time.perf_counter() - start,
        "train_crops": len(train_set),
        **({"box_iou": float(torch.cat(ious).mean())} if locating else {}),
    }


def small_backbone_path(
    runs: Path, task: str, seed: int, epochs: int, smoke: bool, *, num_images: int | None = None
) -> Path:
    """Where the pretrained small backbone is cached (one per task, images, seed and epochs;
    ``flip-loc8``: the recipe of :func:`pretrain_small_backbone`'s defaults)."""
    images = "" if num_images is None else f"-n{num_images}"
    smoke_tag = "-smoke" if smoke else ""
    name = f"small-backbone-{task}{images}-seed{seed}-e{epochs}-flip-loc8{smoke_tag}.pt"
    return runs / "04_basic_object_detection" / name
