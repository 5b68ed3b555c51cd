"""Augmentations that move boxes and masks with the image (numpy only, no framework).

Every transform is called as ``image, target = transform(image, target, rng)`` with

- ``image``: RGB uint8 [H, W, 3] (``Normalize`` turns it into float32 and comes last);
- ``target``: a dict with any of ``boxes`` float32 [N, 4] xyxy absolute pixels, ``labels`` int64 [N],
  ``iscrowd`` [N], ``masks`` uint8 [N, H, W] (instance masks) and ``semantic_mask`` int [H, W]
  (class index per pixel); other keys pass through unchanged;
- ``rng``: a ``numpy.random.Generator``: the only source of randomness, so a seed fixes the output.

Geometric transforms keep boxes and instance masks consistent: a box stays the extent of its mask
(within 1 px). Crops recompute the box of a cut object from what is left of its mask, and drop objects
of which less than ``min_visibility`` remains (box, label, mask together). Masks are always resized with
nearest-neighbour interpolation (pixel-centre aligned), so label values are never blended.
Output sizes of :class:`Resize` follow torchvision's rule, so boxes match ``torchvision.transforms.v2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import cv2
import numpy as np

Target = dict[str, Any]
INSTANCE_KEYS = ("boxes", "labels", "iscrowd", "masks")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Transform(Protocol):
    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator
    ) -> tuple[np.ndarray, Target]: ...


# ---------------------------------------------------------------------------------------------------
# functional core (deterministic)


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Tight boxes around binary masks.

    Args:
        masks: [N, H, W], non-zero = object.
    Returns:
        float32 [N, 4] xyxy in pixel-edge coordinates (a mask covering columns 2..4 gives x1=2, x2=5);
        all zeros for an empty mask.
    """
    masks = np.asarray(masks)
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for i, mask in enumerate(masks):
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        if rows.size:
            boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def select_instances(target: Target, keep: np.ndarray) -> Target:
    """Keep the objects where ``keep`` (bool [N] or indices) holds, in every per-object array."""
    out = dict(target)
    for key in INSTANCE_KEYS:
        if key in out and out[key] is not None:
            out[key] = np.asarray(out[key])[keep]
    return out


def hflip(image: np.ndarray, target: Target) -> tuple[np.ndarray, Target]:
    """Mirror left-right: ``x1' = W - x2``, ``x2' = W - x1``."""
    width = image.shape[1]
    out = dict(target)
    if "boxes" in out:
        boxes = np.asarray(out["boxes"], dtype=np.float32).reshape(-1, 4)
        out["boxes"] = np.stack(
            [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1
        )
    if out.get("masks") is not None:
        out["masks"] = np.ascontiguousarray(out["masks"][:, :, ::-1])
    if out.get("semantic_mask") is not None:
        out["semantic_mask"] = np.ascontiguousarray(out["semantic_mask"][:, ::-1])
    return np.ascontiguousarray(image[:, ::-1]), out


def resized_size(
    height: int, width: int, size: int | Sequence[int] | None, max_size: int | None = None
) -> tuple[int, int]:
    """Output (height, width) by torchvision's rule.

    ``size=(h, w)``: exactly that. ``size=int``: the shorter side becomes ``size`` (the longer one
    ``int(size * long / short)``), then both shrink so that the longer is at most ``max_size``.
    ``size=None``: the longer side becomes ``max_size``, aspect kept.
    """
    if size is not None and not isinstance(size, int):
        new_h, new_w = (int(s) for s in size)
        return new_h, new_w
    short, long = min(height, width), max(height, width)
    if size is None:
        if max_size is None:
            raise ValueError("Resize needs size or max_size")
        new_short, new_long = int(max_size * short / long), max_size
    else:
        new_short, new_long = size, int(size * long / short)
        if max_size is not None and new_long > max_size:
            new_short, new_long = int(max_size * new_short / new_long), max_size
    new_short = max(new_short, 1)
    return (new_long, new_short) if height > width else (new_short, new_long)


def _resize_nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of [H, W] or [N, H, W] label arrays, pixel-centre aligned."""
    if array.ndim == 2:
        return cv2.resize(array, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    out = np.empty((len(array), height, width), dtype=array.dtype)
    for start in range(0, len(array), 256):  # OpenCV handles at most 512 channels
        chunk = np.ascontiguousarray(array[start : start + 256].transpose(1, 2, 0))
        resized = cv2.resize(chunk, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
        out[start : start + 256] = resized.reshape(height, width, -1).transpose(2, 0, 1)
    return out


def resize(image: np.ndarray, target: Target, height: int, width: int) -> tuple[np.ndarray, Target]:
    """Resize to (height, width): image bilinear (area when shrinking), masks nearest, boxes scaled."""
    old_h, old_w = image.shape[:2]
    shrink = height < old_h and width < old_w
    mode = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    resized = cv2.resize(image, (width, height), interpolation=mode)
    if image.ndim == 3 and resized.ndim == 2:
        resized = resized[:, :, None]
    out = dict(target)
    if "boxes" in out:
        scale = np.array([width / old_w, height / old_h] * 2, dtype=np.float32)
        out["boxes"] = np.asarray(out["boxes"], dtype=np.float32).reshape(-1, 4) * scale
    if out.get("masks") is not None:
        out["masks"] = _resize_nearest(np.asarray(out["masks"]), height, width)
    if out.get("semantic_mask") is not None:
        out["semantic_mask"] = _resize_nearest(np.asarray(out["semantic_mask"]), height, width)
    return resized, out


def crop(
    image: np.ndarray,
    target: Target,
    top: int,
    left: int,
    height: int,
    width: int,
    *,
    min_visibility: float = 0.0,
) -> tuple[np.ndarray, Target]:
    """Cut the window ``[top, top + height) x [left, left + width)``.

    Boxes are shifted and clipped to the window. With instance masks, a box becomes the extent of what
    is left of its mask (never larger than the clipped box) and visibility is the fraction of mask
    pixels kept; without masks it is the fraction of box area kept. Objects with visibility 0 or below
    ``min_visibility`` are dropped with their label and mask.
    """
    out = dict(target)
    window = (slice(top, top + height), slice(left, left + width))
    if out.get("semantic_mask") is not None:
        out["semantic_mask"] = np.ascontiguousarray(out["semantic_mask"][window])
    if "boxes" not in out:
        return np.ascontiguousarray(image[window]), out
    boxes = np.asarray(out["boxes"], dtype=np.float32).reshape(-1, 4)
    shifted = boxes - np.array([left, top, left, top], dtype=np.float32)
    clipped = shifted.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)

    def box_area(b: np.ndarray) -> np.ndarray:
        return (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)

    masks = out.get("masks")
    if masks is not None:
        masks = np.asarray(masks)
        before = masks.sum(axis=(1, 2), dtype=np.float64)
        masks = np.ascontiguousarray(masks[(slice(None), *window)])
        after = masks.sum(axis=(1, 2), dtype=np.float64)
        extent = boxes_from_masks(masks)
        tight = np.concatenate(
            [np.maximum(clipped[:, :2], extent[:, :2]), np.minimum(clipped[:, 2:], extent[:, 2:])],
            axis=1,
        )
        clipped = np.where((after > 0)[:, None], tight, clipped)
        visibility = np.where(before > 0, after / np.maximum(before, 1), 0.0)
        out["masks"] = masks
    else:
        visibility = box_area(clipped) / np.maximum(box_area(boxes), 1e-9)
    out["boxes"] = clipped.astype(np.float32)
    keep = (visibility > 0) & (visibility >= min_visibility) & (box_area(clipped) > 0)
    return np.ascontiguousarray(image[window]), select_instances(out, keep)


# ---------------------------------------------------------------------------------------------------
# transforms


class Compose:
    """Apply transforms in order, passing the same ``rng`` along."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator
    ) -> tuple[np.ndarray, Target]:
        for transform in self.transforms:
            image, target = transform(image, target, rng)
        return image, target


class HorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator
    ) -> tuple[np.ndarray, Target]:
        if rng.random() < self.p:
            return hflip(image, target)
        return image, target


class Resize:
    """Resize to ``size=(h, w)``; or shorter side ``size=int`` capped by ``max_size``; or longer
    side = ``max_size`` when ``size`` is None (see :func:`resized_size`)."""

    def __init__(self, size: int | Sequence[int] | None = None, *, max_size: int | None = None):
        if size is None and max_size is None:
            raise ValueError("Resize needs size or max_size")
        self.size, self.max_size = size, max_size

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, Target]:
        height, width = resized_size(*image.shape[:2], self.size, self.max_size)
        return resize(image, target, height, width)


class RandomCrop:
    """Cut a random ``size=(h, w)`` window (the whole image where it is smaller); see :func:`crop`."""

    def __init__(self, size: Sequence[int], *, min_visibility: float = 0.3) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.min_visibility = min_visibility

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator
    ) -> tuple[np.ndarray, Target]:
        img_h, img_w = image.shape[:2]
        height, width = min(self.size[0], img_h), min(self.size[1], img_w)
        top = int(rng.integers(0, img_h - height + 1))
        left = int(rng.integers(0, img_w - width + 1))
        return crop(image, target, top, left, height, width, min_visibility=self.min_visibility)


class RandomResizedCrop:
    """Cut a window of random area fraction ``scale`` and aspect ``ratio``, then resize to ``size``.

    Window sampling follows torchvision (10 tries, then a centre crop); objects keep the
    ``min_visibility`` rule of :func:`crop`.
    """

    def __init__(
        self,
        size: Sequence[int],
        *,
        scale: tuple[float, float] = (0.25, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        min_visibility: float = 0.3,
    ) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.scale, self.ratio, self.min_visibility = scale, ratio, min_visibility

    def window(
        self, height: int, width: int, rng: np.random.Generator
    ) -> tuple[int, int, int, int]:
        """Return (top, left, crop_height, crop_width)."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            crop_w = round(math.sqrt(target_area * aspect))
            crop_h = round(math.sqrt(target_area / aspect))
            if 0 < crop_w <= width and 0 < crop_h <= height:
                top = int(rng.integers(0, height - crop_h + 1))
                left = int(rng.integers(0, width - crop_w + 1))
                return top, left, crop_h, crop_w
        aspect = width / height  # fallback: centre crop with the aspect clamped into range
        if aspect < self.ratio[0]:
            crop_w, crop_h = width, round(width / self.ratio[0])
        elif aspect > self.ratio[1]:
            crop_h, crop_w = height, round(height * self.ratio[1])
        else:
            crop_h, crop_w = height, width
        return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator
    ) -> tuple[np.ndarray, Target]:
        top, left, height, width = self.window(*image.shape[:2], rng)
        image, target = crop(
            image, target, top, left, height, width, min_visibility=self.min_visibility
        )
        return resize(image, target, *self.size)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _grey(image: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma (the weights torchvision uses), float32 [H, W, 1]."""
    weights = np.array([0.2989, 0.587, 0.114], dtype=np.float32)
    return (image.astype(np.float32) @ weights)[:, :, None]


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """Scale intensities by ``factor`` (0 = black, 1 = unchanged). uint8 in and out."""
    return _to_uint8(image.astype(np.float32) * factor)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the mean grey level (0 = flat grey, 1 = unchanged). uint8 in and out."""
    mean = float(_grey(image).mean())
    return _to_uint8(image.astype(np.float32) * factor + mean * (1 - factor))


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the grey image (0 = grey, 1 = unchanged). uint8 in and out."""
    return _to_uint8(image.astype(np.float32) * factor + _grey(image) * (1 - factor))


def adjust_hue(image: np.ndarray, factor: float) -> np.ndarray:
    """Rotate hue by ``factor`` turns (in [-0.5, 0.5]). uint8 in and out."""
    hsv = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)  # H in [0, 360)
    hsv[:, :, 0] = np.mod(hsv[:, :, 0] + factor * 360.0, 360.0)
    return _to_uint8(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0)


class ColorJitter:
    """Random brightness, contrast, saturation (factors in ``[max(0, 1 - x), 1 + x]``) and hue
    (shift in ``[-hue, hue]`` turns), applied in that order. Only the image changes."""

    def __init__(
        self,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        hue: float = 0.0,
    ) -> None:
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = (
            brightness,
            contrast,
            saturation,
            hue,
        )

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator
    ) -> tuple[np.ndarray, Target]:
        for amount, adjust in (
            (self.brightness, adjust_brightness),
            (self.contrast, adjust_contrast),
            (self.saturation, adjust_saturation),
        ):
            if amount > 0:
                image = adjust(image, rng.uniform(max(0.0, 1 - amount), 1 + amount))
        if self.hue > 0:
            image = adjust_hue(image, rng.uniform(-self.hue, self.hue))
        return image, target


class Normalize:
    """uint8 [H, W, 3] -> float32 ``(image / 255 - mean) / std``; put it last. Targets unchanged."""

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __call__(
        self, image: np.ndarray, target: Target, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, Target]:
        scaled = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image
        return (scaled - self.mean) / self.std, target
