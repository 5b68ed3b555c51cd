"""Mask files: generic ``images/`` + ``masks/`` index-PNG datasets, and mask <-> RLE / polygon helpers.

Layout read and written by :func:`read` / :func:`write`::

    root/images/<stem>.png|.jpg     RGB (or grey) photos
    root/masks/<stem>.png           single-channel class-index map: 0..C-1, ignore_index (255) = unlabelled
    root/classes.txt                optional, one class name per line (index = line number - 1)

Instance masks travel as COCO RLE (``{"size": [h, w], "counts": str}``, column-major, via
pycocotools) inside :class:`~detseg.data.types.DetectionRecord`; instance-id PNGs (0 = background,
1..N = instances, as in PennFudan's ``PedMasks``) convert to and from stacks of binary masks here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from detseg.data.formats._common import Problems, checked_size, collector, list_images, require_dir
from detseg.data.imageio import read_image, read_label_png, write_image
from detseg.data.types import SegmentationDataset, SegmentationRecord
from detseg.errors import UserError

# --------------------------------------------------------------------------- RLE / polygons


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Binary mask [H, W] -> compressed COCO RLE with ``counts`` as str (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": rle["counts"].decode("ascii"),
    }


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """COCO polygons / uncompressed RLE / compressed RLE -> compressed RLE (pycocotools object)."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons [[x0, y0, x1, y1, ...], ...]
        polygons = [list(map(float, p)) for p in segmentation if len(p) >= 6]
        if not polygons:
            return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation, dict):
        counts = segmentation["counts"]
        h, w = segmentation["size"]
        if isinstance(counts, list):  # uncompressed RLE (iscrowd annotations)
            return mask_utils.frPyObjects(segmentation, h, w)
        if isinstance(counts, str):
            return {"size": [h, w], "counts": counts.encode("ascii")}
        return segmentation
    raise ValueError(f"not a COCO segmentation: {type(segmentation).__name__}")


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Any COCO segmentation -> bool [H, W]."""
    from pycocotools import mask as mask_utils

    return mask_utils.decode(segmentation_to_rle(segmentation, height, width)).astype(bool)


def segmentation_area(segmentation: Any, height: int, width: int) -> float:
    """Pixel area of a COCO segmentation (what COCO's ``area`` field holds for masks)."""
    from pycocotools import mask as mask_utils

    return float(mask_utils.area(segmentation_to_rle(segmentation, height, width)))


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed or not) -> bool [H, W]."""
    h, w = rle["size"]
    return segmentation_to_mask(rle, int(h), int(w))


# --------------------------------------------------------------------------- instance-id maps


def instance_map_to_masks(id_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Instance-id map (0 = background, 1..N) -> ``(ids int64 [N], masks bool [N, H, W])``, ids sorted."""
    id_map = np.asarray(id_map)
    if id_map.ndim != 2:
        raise ValueError(f"instance map must be [H, W], got shape {id_map.shape}")
    ids = np.unique(id_map)
    ids = ids[ids != 0].astype(np.int64)
    masks = id_map[None, :, :] == ids[:, None, None]  # [N, H, W]
    return ids, masks


def masks_to_instance_map(masks: np.ndarray) -> np.ndarray:
    """Binary masks [N, H, W] -> uint8 id map (instance i gets i + 1; later ones win overlaps)."""
    masks = np.asarray(masks, dtype=bool)
    if len(masks) > 255:
        raise ValueError("an uint8 instance map holds at most 255 instances")
    id_map = np.zeros(masks.shape[1:], dtype=np.uint8)
    for index, mask in enumerate(masks):
        id_map[mask] = index + 1
    return id_map


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Binary masks [N, H, W] -> float32 [N, 4] ``[x_min, y_min, x_max, y_max]``.

    Same convention as ``torchvision.ops.masks_to_boxes`` (and its PennFudan tutorial): the max
    corner is the index of the last mask pixel, not one past it. Empty masks give all zeros.
    """
    masks = np.asarray(masks, dtype=bool)
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for index, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        if len(xs):
            boxes[index] = (xs.min(), ys.min(), xs.max(), ys.max())
    return boxes


# --------------------------------------------------------------------------- images/ + masks/ datasets


def read(
    root: str | Path,
    classes: list[str] | None = None,
    *,
    images: str = "images",
    masks: str = "masks",
    ignore_index: int = 255,
    problems: Problems | None = None,
) -> SegmentationDataset:
    """Read ``root/images`` + ``root/masks`` (index PNGs named like the images, suffix ``.png``).

    Args:
        classes: class names; default ``root/classes.txt``, else ``class_0..`` up to the largest id
            found in the masks.
    Returns:
        A :class:`SegmentationDataset` whose ``load`` gives RGB uint8 [H, W, 3] and int64 [H, W].
    """
    root = Path(root)
    report = collector(problems)
    image_dir = require_dir(root / images, "image folder", "expected root/images/ and root/masks/")
    mask_dir = require_dir(root / masks, "mask folder", "expected root/images/ and root/masks/")
    records = []
    for image_path in list_images(image_dir):
        mask_path = mask_dir / f"{image_path.stem}.png"
        if not mask_path.is_file():
            report.error(
                "image has no mask", image_path, fix=f"add {mask_path} or remove the image"
            )
            continue
        size = checked_size(image_path, report)
        if size is None:
            continue
        height, width = size
        records.append(
            SegmentationRecord(
                image_id=len(records),
                file_name=f"{images}/{image_path.name}",
                mask_name=f"{masks}/{mask_path.name}",
                height=height,
                width=width,
            )
        )
    if classes is None:
        classes_file = root / "classes.txt"
        if classes_file.is_file():
            classes = [c.strip() for c in classes_file.read_text().splitlines() if c.strip()]
        else:
            top = 0
            for record in records:
                values = np.unique(read_label_png(root / str(record.mask_name)))
                values = values[values != ignore_index]
                top = max(top, int(values.max()) if len(values) else 0)
            classes = [f"class_{i}" for i in range(top + 1)]
    return SegmentationDataset(
        root=root,
        classes=list(classes),
        records=records,
        loader=load_pair,
        ignore_index=ignore_index,
        format="maskpng",
    )


def load_pair(root: Path, record: SegmentationRecord) -> tuple[np.ndarray, np.ndarray]:
    """Loader of index-PNG datasets: ``(RGB uint8 [H, W, 3], int64 [H, W])``."""
    image = read_image(root / record.file_name)
    mask = read_label_png(root / str(record.mask_name))
    if mask.ndim != 2:
        raise UserError(
            f"mask must be a single-channel index PNG, got shape {mask.shape}",
            path=root / str(record.mask_name),
            fix="save class indices as an 8-bit grey or palette PNG",
        )
    if mask.shape != image.shape[:2]:
        raise UserError(
            f"mask size {mask.shape} differs from image size {image.shape[:2]}",
            path=root / str(record.mask_name),
        )
    return image, mask.astype(np.int64)


def write(
    root: str | Path,
    samples: Iterable[tuple[str, np.ndarray, np.ndarray]],
    classes: list[str] | None = None,
    *,
    image_suffix: str = ".png",
) -> Path:
    """Write ``(stem, image uint8 [H, W(, 3)], class-index mask [H, W])`` samples; returns ``root``."""
    root = Path(root)
    for stem, image, mask in samples:
        mask = np.asarray(mask)
        if mask.min() < 0 or mask.max() > 255:
            raise ValueError(f"{stem}: mask values must be in 0..255 for an 8-bit PNG")
        write_image(root / "images" / f"{stem}{image_suffix}", image)
        write_image(root / "masks" / f"{stem}.png", mask.astype(np.uint8))
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    if classes is not None:
        (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    return root
