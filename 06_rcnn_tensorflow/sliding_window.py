"""From a classifier to a detector: image pyramid, sliding windows, batched classification, NMS.

The oldest way to detect with an image classifier: look at every window of a fixed size at every
position (``step`` pixels apart) of every level of an image pyramid (the image shrunk by ``scale``
until it is smaller than the window), classify each window, keep the confident ones, map them back
to the original image and remove duplicates with class-wise non-maximum suppression. Its limits:
the number of windows (slow), one box shape (the window's aspect ratio), boxes only as accurate as
the step and the scale, and nothing about the boxes is learned.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from detseg.boxes import batched_nms


def image_pyramid(
    image: np.ndarray, scale: float = 1.5, min_size: tuple[int, int] = (64, 64)
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(factor, resized image)``: the image, then shrunk by ``scale`` each level, while
    both sides stay at least ``min_size`` (width, height). ``factor`` = original / level size."""
    import cv2

    factor = 1.0
    level = image
    while level.shape[1] >= min_size[0] and level.shape[0] >= min_size[1]:
        yield factor, level
        factor *= scale
        size = (int(round(image.shape[1] / factor)), int(round(image.shape[0] / factor)))
        level = cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def sliding_windows(
    image: np.ndarray, step: int, window: tuple[int, int]
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(x, y, crop)`` for every window (width, height) whose top-left corner is on the
    ``step`` grid and which lies fully inside ``image``."""
    width, height = window
    for y in range(0, image.shape[0] - height + 1, step):
        for x in range(0, image.shape[1] - width + 1, step):
            yield x, y, image[y : y + height, x : x + width]


def windows_of(
    image: np.ndarray, *, scale: float, step: int, window: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """All windows of all pyramid levels.

    Returns:
        ``(crops uint8 [N, wh, ww, 3], boxes float32 [N, 4] xyxy in the original image,
        windows per level)``.
    """
    crops, boxes, per_level = [], [], []
    for factor, level in image_pyramid(image, scale, window):
        count = 0
        for x, y, crop in sliding_windows(level, step, window):
            crops.append(crop)
            boxes.append(
                [x * factor, y * factor, (x + window[0]) * factor, (y + window[1]) * factor]
            )
            count += 1
        per_level.append(count)
    if not crops:
        return np.zeros((0, window[1], window[0], 3), np.uint8), np.zeros((0, 4), np.float32), []
    return np.stack(crops), np.asarray(boxes, np.float32), per_level


def detect_sliding(
    image: np.ndarray,
    classifier: Any,
    *,
    scale: float = 1.5,
    step: int = 16,
    score_threshold: float = 0.9,
    nms_iou: float = 0.3,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Sliding-window detection with a softmax classifier (class 0 = background).

    Windows are the classifier's input size. Returns ``{"boxes" [D, 4], "scores" [D], "labels" [D]
    (class - 1), "windows", "seconds", "per_level"}``.
    """
    size = int(classifier.input.shape[1])
    began = time.perf_counter()
    crops, boxes, per_level = windows_of(image, scale=scale, step=step, window=(size, size))
    probabilities = (
        np.concatenate(
            [
                np.asarray(classifier(crops[i : i + batch_size].astype(np.float32), training=False))
                for i in range(0, len(crops), batch_size)
            ]
        )
        if len(crops)
        else np.zeros((0, 2), np.float32)
    )
    labels = probabilities[:, 1:].argmax(axis=1) if len(crops) else np.zeros(0, np.int64)
    scores = probabilities[np.arange(len(labels)), labels + 1] if len(crops) else np.zeros(0)
    keep = scores >= score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    kept = batched_nms(boxes, scores, labels, nms_iou)
    return {
        "boxes": boxes[kept],
        "scores": scores[kept].astype(np.float32),
        "labels": labels[kept].astype(np.int64),
        "windows": len(crops),
        "seconds": time.perf_counter() - began,
        "per_level": per_level,
    }


def patch_dataset(
    dataset: Any, crop_size: int, per_image: int = 24, seed: int = 0, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Patches for a classifier without any proposals: jittered ground-truth boxes (label 1) and
    random boxes (label 0) of every image, warped to ``crop_size``; ``(crops, labels)``."""
    from racoon_data import load_image
    from rcnn_dataset import crop_boxes, jittered_boxes

    crops, labels = [], []
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(count):
        image, gt = load_image(dataset, i)
        rng = np.random.default_rng((seed, i))
        boxes, box_labels = jittered_boxes(gt, image.shape[:2], rng, per_image)
        crops.append(crop_boxes(image, boxes, crop_size))
        labels.append(box_labels)
    return np.concatenate(crops), np.concatenate(labels)
