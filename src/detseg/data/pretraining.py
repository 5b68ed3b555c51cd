"""Built-in pretraining data: the offline stand-in for "a backbone pretrained on ImageNet".

Examples that would start from ImageNet weights (04's SSDlite trunk and small backbone, 02's
``yolov3-tiny.conv.15``) first teach their backbone a cheap classification task on *other* images
than the detector's: the shapes cut out of built-in ``shapes`` scenes of another data seed
(:data:`PRETRAIN_DATA_SEED`; image ``i`` of a recipe depends only on ``(seed, recipe, i)``, so the
scenes differ from the detector's). :func:`check_disjoint` proves it on the files' bytes;
:func:`train_steps` is the one loop all of them train with.

A crop (:class:`ShapeCrops`) is a shape's box plus a random margin of context (5-40 % of its width
or height on each side), resized to ``side`` x ``side`` ignoring the aspect ratio (``cv2.INTER_AREA``),
cut once and kept as uint8; items are normalised ``(x / 255 - mean) / std`` per channel and, for
training, mirrored left-right with probability 1/2.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from detseg.data.download import sha256_of
from detseg.data.imageio import read_image
from detseg.data.types import DetectionDataset
from detseg.errors import UserError

PRETRAIN_DATA_SEED = (
    1  # the examples' detectors train and are scored on the built-in data of seed 0
)


def cut_shape_crops(dataset: DetectionDataset, side: int, seed: int) -> tuple[np.ndarray, Tensor]:
    """Every box of ``dataset`` with a random margin, resized to ``side`` x ``side``.

    Args:
        dataset: detection records (each image read once).
        side: output side in pixels.
        seed: seed of the margins (``numpy.random.default_rng``), four per box in record order.
    Returns:
        crops uint8 ``[N, side, side, 3]`` (RGB) and labels int64 ``[N]`` (the records' class ids).
    """
    rng = np.random.default_rng(seed)
    crops, labels = [], []
    for record in dataset.records:
        image = read_image(dataset.image_path(record))
        for (x1, y1, x2, y2), label in zip(record.boxes, record.labels):
            w, h = x2 - x1, y2 - y1
            m = rng.uniform(0.05, 0.4, size=4)
            left, top = int(max(0, x1 - m[0] * w)), int(max(0, y1 - m[1] * h))
            right = int(min(record.width, x2 + m[2] * w)) + 1
            bottom = int(min(record.height, y2 + m[3] * h)) + 1
            crop = image[top:bottom, left:right]
            crops.append(cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA))
            labels.append(int(label))
    if not crops:
        return np.zeros((0, side, side, 3), np.uint8), torch.zeros(0, dtype=torch.int64)
    return np.stack(crops), torch.tensor(labels)


class ShapeCrops(Dataset):
    """The boxes of a detection dataset as a classification set (:func:`cut_shape_crops`).

    Args:
        dataset: detection records (built-in ``shapes`` scenes: 5 classes).
        side: crop side in pixels.
        seed: seed of the margins.
        flip: mirror each item left-right with probability 1/2 (torch's global generator).
        mean, std: per-channel normalisation of ``x / 255`` (0 and 1: inputs in [0, 1]).
    Attributes:
        crops: uint8 ``[N, 3, side, side]``; labels: int64 ``[N]``; classes: the class names.
    Items:
        ``(float [3, side, side], label)``.
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        side: int = 64,
        seed: int = 0,
        *,
        flip: bool = False,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        crops, self.labels = cut_shape_crops(dataset, side, seed)
        self.crops = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()  # [N, 3, S, S]
        self.classes = list(dataset.classes)
        self.flip = flip
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        crop = self.crops[index]
        if self.flip and bool(torch.rand(()) < 0.5):
            crop = crop.flip(-1)
        return (crop.float() / 255.0 - self.mean) / self.std, self.labels[index]


def shape_crop_sets(
    num_images: int | None,
    seed: int,
    side: int,
    *,
    data_seed: int = PRETRAIN_DATA_SEED,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
) -> tuple[ShapeCrops, ShapeCrops, int]:
    """``(train, held_out, num_classes)``: crops of the train / val scenes of built-in ``shapes``
    with data seed ``data_seed`` (``num_images`` scenes in all; None: the recipe's 1000). Training
    crops are mirrored at random, held-out ones never; margins from ``seed`` and ``seed + 1``."""
    from detseg.data import recipes

    scenes = {split: recipes.load("shapes", split=split, seed=data_seed, num_images=num_images)
              for split in ("train", "val")}  # fmt: skip
    norm = {"mean": mean, "std": std}
    train = ShapeCrops(scenes["train"], side, seed, flip=True, **norm)
    held_out = ShapeCrops(scenes["val"], side, seed + 1, flip=False, **norm)
    return train, held_out, len(scenes["train"].classes)


def image_digests(dataset: DetectionDataset) -> dict[str, str]:
    """``{SHA-256 of the image file's bytes: file name}`` of every record (same bytes, same image)."""
    return {sha256_of(dataset.image_path(r)): r.file_name for r in dataset.records}


def check_disjoint(
    pretraining: Mapping[str, DetectionDataset],
    held_out: Mapping[str, DetectionDataset],
    *,
    fix: str = f"pretrain on other images (the built-in data of seed {PRETRAIN_DATA_SEED} when "
    "the detector uses seed 0)",
) -> int:
    """Refuse a pretraining set that holds one of the ``held_out`` images (the detector's own).

    Compares the files' bytes (SHA-256), not their names: the built-in folders of two data seeds
    use the same file names for different images.

    Args:
        pretraining: named datasets the backbone learns from.
        held_out: named datasets it must not have seen (the detector's train / val / test).
        fix: the hint of the error.
    Returns:
        the number of distinct pretraining images checked.
    Raises:
        UserError: naming the held-out set, how many of its images are shared, and the first.
    """
    seen: dict[str, str] = {}
    for part in pretraining.values():
        seen.update(image_digests(part))
    for name, part in held_out.items():
        shared = [file for digest, file in image_digests(part).items() if digest in seen]
        if shared:
            raise UserError(
                f"the backbone's pretraining images include {len(shared)} of the {name} images "
                f"(first: {shared[0]})",
                path=part.root,
                fix=fix,
            )
    return len(seen)


def train_steps(
    loader: DataLoader,
    loss_of: Callable[[Any], Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    *,
    epochs: int,
    total: int,
    describe: str,
    log: Callable[[str], Any],
) -> int:
    """The plain pretraining loop (02's yolov3-tiny.conv.15, 04's small backbone and SSDlite
    trunk): passes over ``loader``, one optimizer and scheduler step per batch, stopping after
    ``total`` steps; logs ``"<describe>: epoch k, loss x"`` (the epoch's last batch). Returns the
    steps taken."""
    steps = 0
    for epoch in range(epochs):
        for batch in loader:
            loss = loss_of(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            steps += 1
            if steps >= total:
                break
        log(f"{describe}: epoch {epoch + 1}, loss {loss:.3f}")
        if steps >= total:
            break
    return steps
