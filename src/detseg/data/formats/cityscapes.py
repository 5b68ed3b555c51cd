"""Cityscapes image pairs (Kaggle "cityscapes-image-pairs", from the pix2pix paper)::

    root/cityscapes_data/train/1.jpg ... 2975.jpg     256 x 512 JPEG: photo left, colour label right
    root/cityscapes_data/val/1.jpg ... 500.jpg

The labels are Cityscapes colours saved as JPEG, so they are noisy. Each label pixel is mapped to the
nearest colour of the *full* Cityscapes palette (:data:`CITYSCAPES_COLORS`), which keeps e.g. a truck
(0, 0, 70) from becoming a car (0, 0, 142); if that colour is one of :data:`CLASSES` and lies within
``max_distance`` (Euclidean, RGB), the pixel gets that class, otherwise ``ignore_index``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from detseg.data.formats._common import Problems, checked_size, collector, list_images, require_dir
from detseg.data.imageio import read_image, write_image
from detseg.data.types import SegmentationDataset, SegmentationRecord

CLASSES = ["road", "sidewalk", "building", "sky", "vegetation", "car", "person"]
IGNORE_INDEX = 255
MAX_DISTANCE = 50.0

# Official Cityscapes label colours (cityscapesScripts labels.py); the first 7 are our classes.
CITYSCAPES_COLORS: dict[str, tuple[int, int, int]] = {
    "road": (128, 64, 128),
    "sidewalk": (244, 35, 232),
    "building": (70, 70, 70),
    "sky": (70, 130, 180),
    "vegetation": (107, 142, 35),
    "car": (0, 0, 142),
    "person": (220, 20, 60),
    "wall": (102, 102, 156),
    "fence": (190, 153, 153),
    "pole": (153, 153, 153),
    "traffic light": (250, 170, 30),
    "traffic sign": (220, 220, 0),
    "terrain": (152, 251, 152),
    "rider": (255, 0, 0),
    "truck": (0, 0, 70),
    "bus": (0, 60, 100),
    "train": (0, 80, 100),
    "motorcycle": (0, 0, 230),
    "bicycle": (119, 11, 32),
    "ground": (81, 0, 81),
    "parking": (250, 170, 160),
    "rail track": (230, 150, 140),
    "guard rail": (180, 165, 180),
    "bridge": (150, 100, 100),
    "tunnel": (150, 120, 90),
    "caravan": (0, 0, 90),
    "trailer": (0, 0, 110),
    "dynamic": (111, 74, 0),
    "void": (0, 0, 0),
}
PALETTE = [CITYSCAPES_COLORS[name] for name in CLASSES]


def colors_to_labels(
    label_rgb: np.ndarray, max_distance: float = MAX_DISTANCE, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Colour label uint8 [H, W, 3] -> int64 [H, W] class indices (nearest palette colour)."""
    colors = np.array(list(CITYSCAPES_COLORS.values()), dtype=np.int32)  # [K, 3]
    class_of_color = np.full(len(colors), ignore_index, dtype=np.int64)
    class_of_color[: len(CLASSES)] = np.arange(len(CLASSES))
    pixels = label_rgb.reshape(-1, 1, 3).astype(np.int32)  # [P, 1, 3]
    dist2 = ((pixels - colors[None]) ** 2).sum(axis=-1)  # [P, K]
    nearest = dist2.argmin(axis=1)
    labels = class_of_color[nearest]
    labels[dist2[np.arange(len(nearest)), nearest] > max_distance**2] = ignore_index
    return labels.reshape(label_rgb.shape[:2])


def labels_to_colors(labels: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Class indices [H, W] -> uint8 [H, W, 3] Cityscapes colours (``ignore_index`` -> void black)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(PALETTE)] = PALETTE
    labels = np.asarray(labels)
    valid = ((labels >= 0) & (labels < len(CLASSES))) | (labels == ignore_index)
    if not valid.all():
        raise ValueError(f"labels must be 0..{len(CLASSES) - 1} or {ignore_index}")
    return lut[np.where(labels == ignore_index, 255, labels).astype(np.int64)]


def dataset_dir(root: str | Path) -> Path:
    """``root/cityscapes_data`` if it exists, else ``root``."""
    root = Path(root)
    return root / "cityscapes_data" if (root / "cityscapes_data").is_dir() else root


def read(
    root: str | Path,
    split: str = "train",
    *,
    max_distance: float = MAX_DISTANCE,
    problems: Problems | None = None,
) -> SegmentationDataset:
    """Read ``train`` or ``val`` pairs (numeric file order: 1, 2, ..., 10, ...).

    Returns:
        :class:`SegmentationDataset` (``format="cityscapes"``, ``mask_name=None``: the label is the
        right half of each file); ``width`` is half the file's width.
    """
    base = dataset_dir(root)
    report = collector(problems)
    split_dir = require_dir(base / split, f"{split} folder", "expected cityscapes_data/train|val/")
    paths = sorted(
        list_images(split_dir),
        key=lambda p: (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.stem),
    )
    records = []
    for path in paths:
        size = checked_size(path, report)
        if size is None:
            continue
        height, width = size
        if width % 2:
            report.error(
                f"pair image width {width} is odd", path, fix="expected photo | label side by side"
            )
            continue
        records.append(
            SegmentationRecord(
                image_id=len(records),
                file_name=f"{split}/{path.name}",
                mask_name=None,
                height=height,
                width=width // 2,
                extra={"max_distance": max_distance},
            )
        )
    return SegmentationDataset(
        root=base,
        classes=list(CLASSES),
        records=records,
        loader=load_pair,
        palette=list(PALETTE),
        ignore_index=IGNORE_INDEX,
        format="cityscapes",
    )


def load_pair(root: Path, record: SegmentationRecord) -> tuple[np.ndarray, np.ndarray]:
    """Split a pair file: ``(photo uint8 [H, W, 3], labels int64 [H, W])``."""
    pair = read_image(root / record.file_name)
    width = pair.shape[1] // 2
    max_distance = float(record.extra.get("max_distance", MAX_DISTANCE))
    return pair[:, :width].copy(), colors_to_labels(pair[:, width:], max_distance)


def write(
    root: str | Path,
    samples: Iterable[tuple[str, np.ndarray, np.ndarray]],
    *,
    split: str = "train",
    jpeg_quality: int = 90,
) -> Path:
    """Write ``(stem, photo uint8 [H, W, 3], labels [H, W])`` as ``cityscapes_data/<split>/<stem>.jpg``
    pairs (photo | colour label). Returns ``root``."""
    root = Path(root)
    for stem, image, labels in samples:
        pair = np.concatenate([image, labels_to_colors(labels)], axis=1)  # [H, 2W, 3]
        write_image(
            root / "cityscapes_data" / split / f"{stem}.jpg", pair, jpeg_quality=jpeg_quality
        )
    return root
