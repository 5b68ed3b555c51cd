"""YOLO-style training augmentation: mosaic, HSV jitter, horizontal flip.

Every function takes and returns RGB uint8 images [H, W, 3] with float xyxy boxes in absolute
pixels [N, 4] (float32) and integer labels [N]; boxes move with the pixels. Randomness comes from a
``numpy.random.Generator`` passed in (or from explicit arguments), so a run is reproducible.

- :func:`mosaic` pastes four images around a centre point into one canvas (Bochkovskiy et al.,
  YOLOv4; the default of YOLOv5 / YOLOv7 training): four scenes per sample, objects cut at the seams.
- :func:`hsv_jitter` scales hue, saturation and value by random gains (YOLOv5's ``hsv_h/s/v``).
- :func:`hflip` mirrors image and boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

FILL = 114  # the grey YOLO pads with


def _boxes(boxes: np.ndarray | Sequence) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: column ``x`` goes to ``W - 1 - x``, box ``x1, x2`` to ``W - x2, W - x1``.

    Args:
        image: uint8 [H, W, 3].
        boxes: float [N, 4] xyxy, pixel-edge convention (x2 is one past the last column).
    Returns:
        ``(flipped image, flipped boxes float32 [N, 4])``.
    """
    width = image.shape[1]
    boxes = _boxes(boxes)
    flipped = boxes.copy()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return np.ascontiguousarray(image[:, ::-1]), flipped


def hsv_gains(
    rng: np.random.Generator, hue: float = 0.015, saturation: float = 0.7, value: float = 0.4
) -> np.ndarray:
    """Random gains ``1 + U(-1, 1) * (hue, saturation, value)`` (YOLOv7's defaults). Returns [3]."""
    return 1.0 + rng.uniform(-1, 1, 3) * np.array([hue, saturation, value])


def hsv_jitter(image: np.ndarray, gains: Sequence[float]) -> np.ndarray:
    """Multiply hue, saturation and value by ``gains`` (OpenCV HSV: hue 0..179, wraps around).

    Args:
        image: uint8 [H, W, 3] RGB.
        gains: ``(hue_gain, saturation_gain, value_gain)``, e.g. from :func:`hsv_gains`.
    Returns:
        uint8 [H, W, 3] RGB; boxes are unchanged. Gains of exactly 1 return a copy of the input.
    """
    gains = np.asarray(gains, dtype=np.float64)
    if np.all(gains == 1.0):
        return image.copy()
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
    x = np.arange(256, dtype=np.float64)
    lut_hue = (np.round(x * gains[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(np.round(x * gains[1]), 0, 255).astype(np.uint8)
    lut_val = np.clip(np.round(x * gains[2]), 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def mosaic(
    images: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    size: tuple[int, int],
    center: tuple[int, int],
    min_visible: float = 0.25,
    min_side: float = 2.0,
    fill: int = FILL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste four images around ``center`` into one ``size`` canvas.

    Image 0 goes top-left of the centre (its bottom-right corner on the centre), 1 top-right
    (bottom-left corner on it), 2 bottom-left (top-right corner), 3 bottom-right (top-left corner).
    What falls outside the canvas is cut; a box moves by its image's offset, is clipped to the part
    of its image that is shown, and is dropped when less than ``min_visible`` of its area, or less
    than ``min_side`` pixels of width or height, remains.

    Args:
        images: four uint8 [h_i, w_i, 3] (resize them first for scale jitter).
        boxes: four float [n_i, 4] xyxy in their image's pixels.
        labels: four int [n_i].
        size: ``(height, width)`` of the canvas.
        center: ``(x, y)`` of the meeting point, inside the canvas.
    Returns:
        ``(canvas uint8 [height, width, 3], boxes float32 [M, 4], labels int64 [M])``.
    """
    if not len(images) == len(boxes) == len(labels) == 4:
        raise ValueError("mosaic needs exactly four images, box arrays and label arrays")
    height, width = size
    xc, yc = center
    if not (0 <= xc <= width and 0 <= yc <= height):
        raise ValueError(f"mosaic centre {center} outside the {width}x{height} canvas")
    canvas = np.full((height, width, 3), fill, dtype=np.uint8)
    out_boxes, out_labels = [], []
    for index, (image, image_boxes, image_labels) in enumerate(zip(images, boxes, labels)):
        h, w = image.shape[:2]
        left = xc - w if index in (0, 2) else xc  # where the image's (0, 0) lands in the canvas
        top = yc - h if index in (0, 1) else yc
        x1, y1 = max(left, 0), max(top, 0)  # the canvas window it fills
        x2, y2 = min(left + w, width), min(top + h, height)
        if x2 <= x1 or y2 <= y1:
            continue
        canvas[y1:y2, x1:x2] = image[y1 - top : y2 - top, x1 - left : x2 - left]
        moved = _boxes(image_boxes) + np.array([left, top, left, top], dtype=np.float32)
        clipped = moved.copy()
        clipped[:, 0::2] = np.clip(moved[:, 0::2], x1, x2)
        clipped[:, 1::2] = np.clip(moved[:, 1::2], y1, y2)
        area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
        sides = clipped[:, 2:] - clipped[:, :2]
        kept = (sides.min(axis=1) >= min_side) & (
            sides.prod(axis=1) >= min_visible * np.maximum(area, 1e-9)
        )
        out_boxes.append(clipped[kept])
        out_labels.append(np.asarray(image_labels, dtype=np.int64).reshape(-1)[kept])
    if not out_boxes:
        return canvas, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    return canvas, np.concatenate(out_boxes).astype(np.float32), np.concatenate(out_labels)


def random_mosaic(
    rng: np.random.Generator,
    images: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    size: int,
    scale: tuple[float, float] = (0.5, 1.0),
    min_visible: float = 0.25,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` mosaic with random centre and per-image random scale.

    Each image is resized so that its longer side is ``size * U(scale)``; the centre is drawn
    uniformly in the middle half of the canvas. Returns what :func:`mosaic` returns.
    """
    scaled_images, scaled_boxes = [], []
    for image, image_boxes in zip(images, boxes):
        h, w = image.shape[:2]
        factor = size * rng.uniform(*scale) / max(h, w)
        new_w, new_h = max(1, round(w * factor)), max(1, round(h * factor))
        scaled_images.append(cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR))
        ratio = np.array([new_w / w, new_h / h, new_w / w, new_h / h], dtype=np.float32)
        scaled_boxes.append(_boxes(image_boxes) * ratio)
    center = (
        int(rng.integers(size // 4, 3 * size // 4 + 1)),
        int(rng.integers(size // 4, 3 * size // 4 + 1)),
    )
    return mosaic(
        scaled_images, scaled_boxes, labels, size=(size, size), center=center,
        min_visible=min_visible,
    )  # fmt: skip
