"""Records -> numpy training samples, shared by the torch and the tf.data adapters (no framework here).

A detection sample is ``(image, target)``: RGB uint8 [H, W, 3] and a dict with ``boxes`` float32
[N, 4] xyxy, ``labels`` int64 [N] (contiguous ``0..C-1``), ``iscrowd`` bool [N], ``image_id`` int and,
when the record has segmentations, ``masks`` uint8 [N, H, W] decoded with pycocotools. A segmentation
sample is ``(image, {"semantic_mask": int64 [H, W]})``. This is the format :mod:`detseg.data.transforms`
takes, so both adapters apply the same transforms to the same arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from detseg.data.imageio import read_image
from detseg.data.types import DetectionDataset, SegmentationDataset
from detseg.errors import UserError

Target = dict[str, Any]
SampleTransform = Callable[[np.ndarray, Target, np.random.Generator], tuple[np.ndarray, Target]]


def _to_rle(segmentation: Any, height: int, width: int) -> Any:
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, dict):
        if isinstance(segmentation.get("counts"), list):  # uncompressed RLE
            return mask_utils.frPyObjects(segmentation, height, width)
        return segmentation
    polygons = [[float(v) for v in p] for p in segmentation if len(p) >= 6]
    if not polygons:  # nothing drawable: an empty mask
        return mask_utils.encode(np.zeros((height, width, 1), dtype=np.uint8, order="F"))[0]
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))


def decode_segmentations(segmentations: list[Any], height: int, width: int) -> np.ndarray:
    """COCO segmentations -> binary masks, decoded by pycocotools in one call.

    Args:
        segmentations: per object a polygon list ``[[x0, y0, x1, y1, ...], ...]``, or an RLE dict
            ``{"size": [h, w], "counts": ...}`` with compressed (str / bytes) or uncompressed (list)
            counts.
        height, width: image size.
    Returns:
        uint8 [N, H, W] with 1 inside each object.
    """
    from pycocotools import mask as mask_utils

    if not segmentations:
        return np.zeros((0, height, width), dtype=np.uint8)
    rles = [_to_rle(s, height, width) for s in segmentations]
    masks = mask_utils.decode(rles)  # [H, W, N]
    return np.ascontiguousarray(masks.transpose(2, 0, 1), dtype=np.uint8)


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """One COCO segmentation (see :func:`decode_segmentations`) -> uint8 [H, W]."""
    return decode_segmentations([segmentation], height, width)[0]


def detection_sample(dataset: DetectionDataset, index: int) -> tuple[np.ndarray, Target]:
    """Read image ``index`` of ``dataset`` and build its target (see the module docstring).

    Raises:
        UserError: the image file is missing / unreadable, or its size differs from the record's.
    """
    record = dataset.records[index]
    path = dataset.image_path(record)
    image = read_image(path)
    if image.shape[:2] != (record.height, record.width):
        raise UserError(
            f"image is {image.shape[0]}x{image.shape[1]} (HxW) but its annotation says "
            f"{record.height}x{record.width}",
            path=path,
            fix="fix height / width in the annotation file ('detseg data validate' lists them all)",
        )
    target: Target = {
        "boxes": record.boxes.copy(),
        "labels": record.labels.copy(),
        "iscrowd": np.asarray(record.iscrowd, dtype=bool).copy(),
        "image_id": int(record.image_id),
    }
    if record.segmentations is not None:
        target["masks"] = decode_segmentations(record.segmentations, record.height, record.width)
    return image, target


def segmentation_sample(dataset: SegmentationDataset, index: int) -> tuple[np.ndarray, Target]:
    """Load pair ``index``: RGB uint8 [H, W, 3] and ``{"semantic_mask": int64 [H, W]}``."""
    record = dataset.records[index]
    image, mask = dataset.load(record)
    if image.shape[:2] != mask.shape[:2]:
        raise UserError(
            f"image is {image.shape[0]}x{image.shape[1]} but its mask is "
            f"{mask.shape[0]}x{mask.shape[1]}",
            path=dataset.root / record.file_name,
            fix="image and mask must have the same size",
        )
    return image, {"semantic_mask": np.asarray(mask, dtype=np.int64)}


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator that transforms use for sample ``index`` in ``epoch``: the same in any worker."""
    return np.random.default_rng([seed, epoch, index])


def apply_transforms(
    transforms: SampleTransform | None, image: np.ndarray, target: Target, rng: np.random.Generator
) -> tuple[np.ndarray, Target]:
    """``transforms(image, target, rng)``, or the sample unchanged when ``transforms`` is None."""
    if transforms is None:
        return image, target
    return transforms(image, target, rng)


def instance_areas(target: Target) -> np.ndarray:
    """float32 [N]: mask pixel counts when there are masks, else box areas."""
    if target.get("masks") is not None:
        return np.asarray(target["masks"]).sum(axis=(1, 2), dtype=np.float64).astype(np.float32)
    boxes = np.asarray(target["boxes"], dtype=np.float32).reshape(-1, 4)
    return ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).astype(np.float32)
