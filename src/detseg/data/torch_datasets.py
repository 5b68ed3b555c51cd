"""PyTorch ``Dataset`` adapters for detection / instance segmentation and semantic segmentation.

``DetectionTorchDataset`` yields what torchvision's detection models take::

    image:  float32 [3, H, W] in [0, 1]
    target: {"boxes": float32 [N, 4] xyxy pixels, "labels": int64 [N] in 1..C (0 = background),
             "masks": uint8 [N, H, W] (only when the records have segmentations),
             "image_id": int, "area": float32 [N], "iscrowd": int64 [N]}

Transforms (:mod:`detseg.data.transforms`) run on numpy before the conversion, with a generator seeded
from ``(seed, epoch, index)``: a run is reproducible whatever the number of DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from detseg.data.samples import (
    SampleTransform,
    apply_transforms,
    detection_sample,
    instance_areas,
    sample_rng,
    segmentation_sample,
)
from detseg.data.transforms import Normalize
from detseg.data.types import DetectionDataset, SegmentationDataset, to_torchvision_labels


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """[H, W, 3] -> float32 [3, H, W]: uint8 is scaled to [0, 1], float is kept as it is."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if tensor.dtype == torch.uint8:
        return tensor.float().div_(255.0)
    return tensor.float().contiguous()


class DetectionTorchDataset(Dataset):
    """Detection records as torchvision detection samples (see the module docstring).

    Args:
        dataset: a :class:`~detseg.data.types.DetectionDataset` from any reader.
        transforms: ``transforms(image, target, rng) -> (image, target)`` on numpy, or None.
        seed: base seed of the per-sample generators; call :meth:`set_epoch` each epoch.
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        transforms: SampleTransform | None = None,
        *,
        seed: int = 0,
    ) -> None:
        self.dataset = dataset
        self.transforms = transforms
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw different augmentations each epoch (the same ones again for the same epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, target = detection_sample(self.dataset, index)
        rng = sample_rng(self.seed, self.epoch, index)
        image, target = apply_transforms(self.transforms, image, target, rng)
        boxes = np.asarray(target["boxes"], dtype=np.float32).reshape(-1, 4)
        out: dict[str, Any] = {
            "boxes": torch.from_numpy(boxes.copy()),
            "labels": torch.from_numpy(to_torchvision_labels(target["labels"])),
            "image_id": int(target["image_id"]),
            "area": torch.from_numpy(instance_areas(target)),
            "iscrowd": torch.from_numpy(np.asarray(target["iscrowd"], dtype=np.int64)),
        }
        if target.get("masks") is not None:
            out["masks"] = torch.from_numpy(np.ascontiguousarray(target["masks"], dtype=np.uint8))
        return image_to_tensor(image), out


def detection_collate(
    batch: Sequence[tuple[torch.Tensor, dict[str, Any]]],
) -> tuple[tuple[torch.Tensor, ...], tuple[dict[str, Any], ...]]:
    """``[(image, target), ...]`` -> ``((images...), (targets...))``: images may differ in size."""
    images, targets = zip(*batch) if batch else ((), ())
    return tuple(images), tuple(targets)


class SegmentationTorchDataset(Dataset):
    """Semantic segmentation pairs as ``(image float32 [3, H, W], mask int64 [H, W])``.

    Args:
        dataset: a :class:`~detseg.data.types.SegmentationDataset`.
        transforms: numpy transforms on ``(image, {"semantic_mask": ...}, rng)``, or None.
        normalize: applied after ``transforms`` (e.g. ``Normalize()`` for ImageNet statistics);
            without it the image is scaled to [0, 1].
        seed: base seed of the per-sample generators.
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        transforms: SampleTransform | None = None,
        normalize: Normalize | None = None,
        *,
        seed: int = 0,
    ) -> None:
        self.dataset = dataset
        self.transforms = transforms
        self.normalize = normalize
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = segmentation_sample(self.dataset, index)
        rng = sample_rng(self.seed, self.epoch, index)
        image, target = apply_transforms(self.transforms, image, target, rng)
        if self.normalize is not None:
            image, target = self.normalize(image, target, rng)
        mask = np.ascontiguousarray(target["semantic_mask"], dtype=np.int64)
        return image_to_tensor(image), torch.from_numpy(mask)


def split_indices(
    num_items: int, *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Shuffle ``range(num_items)`` with ``seed`` and cut it into (train, val) index lists.

    The validation part has ``round(num_items * val_fraction)`` items (at least 1 when
    ``val_fraction > 0`` and ``num_items > 1``); both lists are sorted.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(num_items)
    num_val = round(num_items * val_fraction)
    if val_fraction > 0 and num_items > 1:
        num_val = max(num_val, 1)
    return sorted(order[num_val:].tolist()), sorted(order[:num_val].tolist())


def subset(dataset: Dataset, split: str, *, val_fraction: float = 0.2, seed: int = 0) -> Subset:
    """The ``"train"`` or ``"val"`` part of ``dataset`` by :func:`split_indices`.

    Wrap the records twice (train transforms / eval transforms) and take ``subset(..., "train")`` of
    one and ``subset(..., "val")`` of the other with the same seed: the two never overlap.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    train, val = split_indices(len(dataset), val_fraction=val_fraction, seed=seed)  # type: ignore[arg-type]
    return Subset(dataset, train if split == "train" else val)
