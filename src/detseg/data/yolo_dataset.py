"""Detection records -> fixed-size, letterboxed YOLO training / evaluation batches (PyTorch).

Any reader's :class:`~detseg.data.types.DetectionDataset` (YOLO txt, COCO JSON, VOC ...) becomes::

    image:  float32 [3, S, S] in [0, 1], the picture letterboxed to S x S (grey 114 padding)
    target: {"boxes": float32 [N, 4] xyxy in letterboxed pixels, "labels": int64 [N] in 0..C-1,
             "image_id": int, "scale": float, "pad": (pad_x, pad_y), "orig_size": (height, width)}

``scale`` and ``pad`` take predictions back to the original image with
:func:`detseg.data.letterbox.unletterbox_boxes`. Labels stay YOLO's 0-based class indices (YOLO has
no background class). Training augmentation (random mosaic, HSV jitter, horizontal flip) comes from
:mod:`detseg.data.yolo_augment`, drawn from a generator seeded by ``(seed, epoch, index)``, so a run
is reproducible with any number of loader workers and ``--resume`` sees the same samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from detseg.data.letterbox import letterbox, letterbox_boxes
from detseg.data.samples import detection_sample, sample_rng
from detseg.data.types import DetectionDataset


@dataclass(frozen=True)
class YoloAugment:
    """Training augmentation of :class:`YoloDataset` (all off = evaluation).

    Attributes:
        mosaic: probability of a 4-image mosaic instead of the single image.
        mosaic_scale: range of the longer side of each mosaic tile, as a fraction of the size.
        hflip: probability of a left-right mirror.
        hsv: (hue, saturation, value) jitter amplitudes; (0, 0, 0) = off.
        scale: range of a random zoom of single images (1, 1) = off; the zoomed image is
            letterboxed (zoom < 1 leaves more grey border, > 1 crops).
        min_visible: drop a box of which less than this fraction stays in view.
    """

    mosaic: float = 0.0
    mosaic_scale: tuple[float, float] = (0.5, 1.0)
    hflip: float = 0.0
    hsv: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: tuple[float, float] = (1.0, 1.0)
    min_visible: float = 0.25


class YoloDataset(Dataset):
    """Letterboxed samples of ``dataset`` (see the module docstring).

    Args:
        dataset: records from any reader.
        image_size: side S of the square network input (a multiple of the model's stride).
        augment: training augmentation, or None for evaluation.
        seed: base seed of the per-sample generators; the engine calls :meth:`set_epoch`.
        cache_images: keep decoded images in memory (small datasets: avoids re-reading JPEGs).
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        image_size: int,
        *,
        augment: YoloAugment | None = None,
        seed: int = 0,
        cache_images: bool = False,
    ) -> None:
        self.dataset = dataset
        self.image_size = int(image_size)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._cache: dict[int, tuple[np.ndarray, dict[str, Any]]] | None = (
            {} if cache_images else None
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Original image RGB uint8 [H, W, 3] and its target (boxes xyxy pixels, labels 0..C-1)."""
        if self._cache is not None and index in self._cache:
            image, target = self._cache[index]
            return image, dict(target)
        image, target = detection_sample(self.dataset, index)
        if self._cache is not None:
            self._cache[index] = (image, target)
        return image, dict(target)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, target = self.load(index)
        orig_size = image.shape[:2]
        boxes = np.asarray(target["boxes"], np.float32).reshape(-1, 4)
        labels = np.asarray(target["labels"], np.int64).reshape(-1)
        aug = self.augment
        if aug is None:
            canvas, scale, pad = letterbox(image, self.image_size)
            boxes = letterbox_boxes(boxes, scale, pad)
        else:
            rng = sample_rng(self.seed, self.epoch, index)
            canvas, boxes, labels = self._augmented(image, boxes, labels, rng, aug)
            scale, pad = 1.0, (0.0, 0.0)  # augmented samples have no way back: training only
        out = {
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
            "labels": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
            "image_id": int(target["image_id"]),
            "scale": float(scale),
            "pad": (float(pad[0]), float(pad[1])),
            "orig_size": (int(orig_size[0]), int(orig_size[1])),
        }
        tensor = torch.from_numpy(np.ascontiguousarray(canvas)).permute(2, 0, 1).float() / 255.0
        return tensor, out

    def _augmented(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        rng: np.random.Generator,
        aug: YoloAugment,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from detseg.data import yolo_augment

        size = self.image_size
        if aug.mosaic > 0 and rng.random() < aug.mosaic:
            others = rng.integers(0, len(self), 3)
            parts = [(image, boxes, labels)]
            for other in others:
                other_image, other_target = self.load(int(other))
                parts.append((other_image, other_target["boxes"], other_target["labels"]))
            canvas, boxes, labels = yolo_augment.random_mosaic(
                rng, [p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts],
                size=size, scale=aug.mosaic_scale, min_visible=aug.min_visible,
            )  # fmt: skip
        else:
            zoom = float(rng.uniform(*aug.scale))
            canvas, scale, pad = letterbox(image, size)
            boxes = letterbox_boxes(boxes, scale, pad)
            if zoom != 1.0:
                canvas, boxes, labels = _zoom(canvas, boxes, labels, zoom, rng, aug.min_visible)
        if any(aug.hsv):
            canvas = yolo_augment.hsv_jitter(canvas, yolo_augment.hsv_gains(rng, *aug.hsv))
        if aug.hflip > 0 and rng.random() < aug.hflip:
            canvas, boxes = yolo_augment.hflip(canvas, boxes)
        return canvas, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


def _zoom(
    canvas: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    zoom: float,
    rng: np.random.Generator,
    min_visible: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale the square canvas by ``zoom`` about a random point, keep its size (grey fill / crop)."""
    import cv2

    size = canvas.shape[0]
    new = max(1, round(size * zoom))
    resized = cv2.resize(canvas, (new, new), interpolation=cv2.INTER_LINEAR)
    # offset of the resized image inside the output canvas (negative = cropped)
    low, high = sorted((0, size - new))
    dx, dy = int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))
    out = np.full_like(canvas, 114)
    src_x, src_y = max(0, -dx), max(0, -dy)
    dst_x, dst_y = max(0, dx), max(0, dy)
    w = min(new - src_x, size - dst_x)
    h = min(new - src_y, size - dst_y)
    out[dst_y : dst_y + h, dst_x : dst_x + w] = resized[src_y : src_y + h, src_x : src_x + w]
    ratio = new / size
    moved = boxes * ratio + np.array([dx, dy, dx, dy], np.float32)
    clipped = np.clip(moved, 0, size)
    area = np.prod(moved[:, 2:] - moved[:, :2], axis=1)
    sides = clipped[:, 2:] - clipped[:, :2]
    keep = (sides.min(axis=1) >= 2) & (
        np.prod(sides, axis=1) >= min_visible * np.maximum(area, 1e-9)
    )
    return out, clipped[keep].astype(np.float32), labels[keep]


def yolo_collate(
    batch: Sequence[tuple[torch.Tensor, dict[str, Any]]],
) -> tuple[torch.Tensor, tuple[dict[str, Any], ...]]:
    """``[(image [3, S, S], target), ...]`` -> ``(images [B, 3, S, S], (targets ...))``."""
    images, targets = zip(*batch)
    return torch.stack(images), tuple(targets)
