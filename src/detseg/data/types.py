"""The in-memory records every reader returns and every writer takes.

Conventions (ARCHITECTURE.md): boxes are float32 xyxy in absolute pixels; ``labels`` are contiguous
class indices ``0..C-1`` into ``classes``. File conventions (COCO category ids, YOLO ids, VOC names)
exist only inside the readers and writers; torchvision detectors get ``labels + 1`` via
:func:`to_torchvision_labels` (0 is background there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class DetectionRecord:
    """One image and its objects.

    Attributes:
        image_id: unique int within the dataset.
        file_name: image path relative to the dataset's ``image_root`` (or absolute).
        height, width: image size in pixels.
        boxes: float32 [N, 4], xyxy in absolute pixels.
        labels: int64 [N], class index into ``DetectionDataset.classes``.
        iscrowd: bool [N] (COCO crowd regions; False elsewhere).
        segmentations: per instance a COCO polygon list ``[[x0, y0, x1, y1, ...], ...]`` or a COCO RLE
            dict ``{"size": [h, w], "counts": ...}``; ``None`` when the format has no masks.
        extra: format-specific fields worth keeping (e.g. VOC ``difficult``), never needed to train.
    """

    image_id: int
    file_name: str
    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray | None = None
    segmentations: list[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if self.iscrowd is None:
            self.iscrowd = np.zeros(len(self.labels), dtype=bool)
        self.iscrowd = np.asarray(self.iscrowd, dtype=bool).reshape(-1)
        if not (len(self.boxes) == len(self.labels) == len(self.iscrowd)):
            raise ValueError(
                f"image {self.image_id}: {len(self.boxes)} boxes, {len(self.labels)} labels, "
                f"{len(self.iscrowd)} iscrowd flags"
            )
        if self.segmentations is not None and len(self.segmentations) != len(self.labels):
            raise ValueError(
                f"image {self.image_id}: {len(self.segmentations)} masks for {len(self.labels)} objects"
            )


@dataclass
class DetectionDataset:
    """A detection / instance segmentation dataset read from disk.

    Attributes:
        root: the dataset folder.
        classes: class names, index = label.
        records: one per image.
        image_root: folder the records' ``file_name`` is relative to (default ``root``).
        category_ids: COCO category id per class, when the source had them.
        format: name of the format it was read from (``"coco"``, ``"yolo"``, ``"voc"``, ...).
    """

    root: Path
    classes: list[str]
    records: list[DetectionRecord]
    image_root: Path | None = None
    category_ids: list[int] | None = None
    format: str = ""

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.image_root = self.root if self.image_root is None else Path(self.image_root)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def image_path(self, record: DetectionRecord) -> Path:
        return Path(self.image_root) / record.file_name


@dataclass
class SegmentationRecord:
    """One image / label-map pair of a semantic segmentation dataset.

    Attributes:
        image_id: unique int within the dataset.
        file_name: image path relative to the dataset root.
        mask_name: label path relative to the root; ``None`` when the label sits inside the image file
            (Cityscapes pairs: photo left, colour-coded label right).
        height, width: size of the image (after splitting a pair).
    """

    image_id: int
    file_name: str
    mask_name: str | None
    height: int
    width: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SegmentationDataset:
    """A semantic segmentation dataset: image + class-index map per record.

    ``load(record)`` returns ``(image, mask)``: RGB uint8 [H, W, 3] (grey images are repeated to 3
    channels) and int64 [H, W] with values in ``0..C-1`` or ``ignore_index``.
    """

    root: Path
    classes: list[str]
    records: list[SegmentationRecord]
    loader: Callable[[Path, SegmentationRecord], tuple[np.ndarray, np.ndarray]]
    palette: list[tuple[int, int, int]] | None = None
    ignore_index: int = 255
    format: str = ""

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self, record: SegmentationRecord) -> tuple[np.ndarray, np.ndarray]:
        return self.loader(self.root, record)


def to_torchvision_labels(labels: np.ndarray) -> np.ndarray:
    """Contiguous ``0..C-1`` labels -> torchvision detection labels ``1..C`` (0 is background)."""
    return np.asarray(labels, dtype=np.int64) + 1


def from_torchvision_labels(labels: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_torchvision_labels`."""
    return np.asarray(labels, dtype=np.int64) - 1
