"""KITTI road benchmark (Fritsch et al., ITSC 2013)::

    root/data_road/training/image_2/um_000000.png        375 x 1242 RGB (sizes vary slightly)
    root/data_road/training/gt_image_2/um_road_000000.png colour ground truth
    root/data_road/testing/image_2/...                    no ground truth

Categories: ``um`` (urban marked), ``umm`` (urban multiple marked lanes), ``uu`` (urban unmarked).
Ground-truth colours: magenta (255, 0, 255) = road -> 1, red (255, 0, 0) = not road -> 0, black =
outside the evaluated area -> ``ignore_index``. The ``um_lane_*`` files (ego-lane task) are not read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from detseg.data.formats._common import Problems, checked_size, collector, list_images, require_dir
from detseg.data.imageio import read_image, read_label_png, write_image
from detseg.data.types import SegmentationDataset, SegmentationRecord
from detseg.errors import UserError

CLASSES = ["not_road", "road"]
CATEGORIES = ("um", "umm", "uu")
IGNORE_INDEX = 255
ROAD_COLOR = (255, 0, 255)
NOT_ROAD_COLOR = (255, 0, 0)


def colors_to_labels(gt_rgb: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Ground-truth RGB [H, W, 3] -> int64 [H, W]: magenta 1, red 0, anything dark -> ignore."""
    red = gt_rgb[..., 0] > 127
    blue = gt_rgb[..., 2] > 127
    labels = np.full(gt_rgb.shape[:2], ignore_index, dtype=np.int64)
    labels[red & ~blue] = 0
    labels[red & blue] = 1
    return labels


def labels_to_colors(labels: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Inverse of :func:`colors_to_labels` -> uint8 [H, W, 3]."""
    labels = np.asarray(labels)
    if not np.isin(labels, (0, 1, ignore_index)).all():
        raise ValueError(f"KITTI road labels must be 0, 1 or {ignore_index}")
    colors = np.zeros((*labels.shape, 3), dtype=np.uint8)
    colors[labels == 0] = NOT_ROAD_COLOR
    colors[labels == 1] = ROAD_COLOR
    return colors


def dataset_dir(root: str | Path) -> Path:
    """``root/data_road`` if it exists, else ``root``."""
    root = Path(root)
    return root / "data_road" if (root / "data_road").is_dir() else root


def gt_name(stem: str) -> str:
    """``um_000000`` -> ``um_road_000000.png``."""
    category, _, number = stem.rpartition("_")
    return f"{category}_road_{number}.png"


def read(
    root: str | Path,
    split: str = "training",
    categories: Sequence[str] = CATEGORIES,
    *,
    problems: Problems | None = None,
) -> SegmentationDataset:
    """Read ``training`` (with ground truth) or ``testing`` images of the given categories.

    Returns:
        :class:`SegmentationDataset` (``format="kitti_road"``), ``extra["category"]`` per record.
    """
    base = dataset_dir(root)
    report = collector(problems)
    image_dir = require_dir(base / split / "image_2", "image_2 folder", "expected data_road/")
    unknown = set(categories) - set(CATEGORIES)
    if unknown:
        raise UserError(f"unknown categories {sorted(unknown)}", fix=f"use {CATEGORIES}")
    records = []
    for path in list_images(image_dir):
        category = path.stem.rpartition("_")[0]
        if category not in categories:
            continue
        mask_name = None
        if split == "training":
            gt_path = base / split / "gt_image_2" / gt_name(path.stem)
            if not gt_path.is_file():
                report.error("training image has no ground truth", path, fix=f"add {gt_path}")
                continue
            mask_name = f"{split}/gt_image_2/{gt_path.name}"
        size = checked_size(path, report)
        if size is None:
            continue
        height, width = size
        records.append(
            SegmentationRecord(
                image_id=len(records),
                file_name=f"{split}/image_2/{path.name}",
                mask_name=mask_name,
                height=height,
                width=width,
                extra={"category": category},
            )
        )
    return SegmentationDataset(
        root=base,
        classes=list(CLASSES),
        records=records,
        loader=load_pair,
        palette=[NOT_ROAD_COLOR, ROAD_COLOR],
        ignore_index=IGNORE_INDEX,
        format="kitti_road",
    )


def load_pair(root: Path, record: SegmentationRecord) -> tuple[np.ndarray, np.ndarray]:
    """``(RGB uint8 [H, W, 3], int64 [H, W])``; testing images get an all-ignore mask."""
    image = read_image(root / record.file_name)
    if record.mask_name is None:
        return image, np.full(image.shape[:2], IGNORE_INDEX, dtype=np.int64)
    gt = read_label_png(root / record.mask_name)
    if gt.ndim != 3:
        raise UserError(
            "ground truth must be an RGB PNG", path=root / record.mask_name, fix="re-extract it"
        )
    return image, colors_to_labels(gt)


def write(
    root: str | Path,
    samples: Iterable[tuple[str, np.ndarray, np.ndarray | None]],
    *,
    split: str = "training",
) -> Path:
    """Write ``(stem like "um_000000", RGB uint8 [H, W, 3], labels [H, W] or None)`` samples into
    ``root/data_road/<split>/``. Returns ``root``."""
    root = Path(root)
    base = root / "data_road" / split
    for stem, image, labels in samples:
        if stem.rpartition("_")[0] not in CATEGORIES:
            raise ValueError(f"stem {stem!r} must start with one of {CATEGORIES} and '_'")
        write_image(base / "image_2" / f"{stem}.png", image)
        if labels is not None:
            write_image(base / "gt_image_2" / gt_name(stem), labels_to_colors(labels))
    return root
