"""Letterbox: resize keeping the aspect ratio, then pad to a fixed size (the YOLO input convention).

An image of ``h x w`` pixels is scaled by ``scale = min(H / h, W / w)`` (never above 1 when
``scaleup=False``), resized to ``round(w * scale) x round(h * scale)`` and placed in an ``H x W``
canvas filled with ``color``, with the padding split between both sides (left / top get the smaller
half). A box moves with the image as ``x' = x * scale + pad_x``, ``y' = y * scale + pad_y``; predictions
on the letterboxed image go back to the original pixels with :func:`unletterbox_boxes`.

Sizes given as a tuple are ``(height, width)``, like ``image.shape[:2]``.
Boxes are xyxy in absolute pixels (numpy arrays or torch tensors, [N, 4] or [..., 4]).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


def letterbox_params(
    image_size: tuple[int, int], size: int | tuple[int, int], *, scaleup: bool = True
) -> tuple[float, tuple[float, float], tuple[int, int]]:
    """Scale, padding and resized size of a letterbox, without touching pixels.

    Args:
        image_size: (height, width) of the original image.
        size: output size, an int for a square or (height, width).
        scaleup: when False an image smaller than ``size`` keeps its size (scale <= 1).
    Returns:
        ``(scale, (pad_x, pad_y), (new_height, new_width))``; pad_x / pad_y are the whole-pixel
        offsets of the resized image inside the canvas (left, top).
    """
    height, width = _hw(image_size)
    out_height, out_width = _hw(size)
    if height <= 0 or width <= 0:
        raise ValueError(f"letterbox: empty image of size {height}x{width}")
    scale = min(out_height / height, out_width / width)
    if not scaleup:
        scale = min(scale, 1.0)
    new_height = min(out_height, max(1, int(round(height * scale))))
    new_width = min(out_width, max(1, int(round(width * scale))))
    pad_x = (out_width - new_width) // 2
    pad_y = (out_height - new_height) // 2
    return float(scale), (float(pad_x), float(pad_y)), (new_height, new_width)


def letterbox(
    image: np.ndarray,
    size: int | tuple[int, int],
    *,
    color: tuple[int, int, int] = (114, 114, 114),
    scaleup: bool = True,
    interpolation: int = cv2.INTER_LINEAR,
) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize with the aspect ratio kept and pad to ``size``.

    Args:
        image: uint8 [h, w, C] (or [h, w]).
        size: output size, an int for a square or (height, width).
        color: fill value of the padding (one value per channel).
        scaleup: when False a small image is padded but not enlarged.
        interpolation: OpenCV interpolation flag of the resize.
    Returns:
        ``(canvas, scale, (pad_x, pad_y))``: canvas [H, W, C] of the input dtype, the scale factor
        applied to the image, and the left / top offset of the resized image in the canvas.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(
            f"letterbox: expected an [h, w] or [h, w, C] image, got shape {image.shape}"
        )
    out_height, out_width = _hw(size)
    scale, (pad_x, pad_y), (new_height, new_width) = letterbox_params(
        image.shape[:2], (out_height, out_width), scaleup=scaleup
    )
    if (new_height, new_width) != image.shape[:2]:
        resized = cv2.resize(image, (new_width, new_height), interpolation=interpolation)
        if image.ndim == 3 and resized.ndim == 2:  # cv2 drops a single channel axis
            resized = resized[:, :, None]
    else:
        resized = image
    canvas_shape = (out_height, out_width) + image.shape[2:]
    canvas = np.empty(canvas_shape, dtype=image.dtype)
    fill = np.resize(np.asarray(color).reshape(-1), image.shape[2] if image.ndim == 3 else 1)
    canvas[...] = fill.astype(image.dtype) if image.ndim == 3 else fill[0]
    left, top = int(pad_x), int(pad_y)
    canvas[top : top + new_height, left : left + new_width] = resized
    return canvas, scale, (pad_x, pad_y)


def letterbox_boxes(boxes_xyxy: Any, scale: float, pad: tuple[float, float]) -> Any:
    """Move boxes of the original image onto the letterboxed one.

    Args:
        boxes_xyxy: [..., 4] xyxy in original pixels (numpy array or torch tensor).
        scale, pad: as returned by :func:`letterbox`.
    Returns:
        Same type and shape, xyxy in letterboxed pixels: ``x * scale + pad_x``, ``y * scale + pad_y``.
    """
    pad_x, pad_y = pad
    if isinstance(boxes_xyxy, np.ndarray) or not hasattr(boxes_xyxy, "new_tensor"):
        boxes = np.asarray(boxes_xyxy, dtype=np.float32)
        offset = np.asarray([pad_x, pad_y, pad_x, pad_y], dtype=np.float32)
        return (boxes * np.float32(scale) + offset).astype(np.float32)
    offset = boxes_xyxy.new_tensor([pad_x, pad_y, pad_x, pad_y])
    return boxes_xyxy * scale + offset


def unletterbox_boxes(
    boxes_xyxy: Any, scale: float, pad: tuple[float, float], image_size: tuple[int, int]
) -> Any:
    """Map boxes predicted on a letterboxed image back to the original image, clipped to it.

    Args:
        boxes_xyxy: [..., 4] xyxy in letterboxed pixels (numpy array or torch tensor).
        scale, pad: as returned by :func:`letterbox`.
        image_size: (height, width) of the original image; boxes are clipped to [0, width] x [0, height].
    Returns:
        Same type and shape, xyxy in original pixels: ``(x - pad_x) / scale``, ``(y - pad_y) / scale``.
    """
    pad_x, pad_y = pad
    height, width = _hw(image_size)
    if isinstance(boxes_xyxy, np.ndarray) or not hasattr(boxes_xyxy, "new_tensor"):
        boxes = np.asarray(boxes_xyxy, dtype=np.float32)
        offset = np.asarray([pad_x, pad_y, pad_x, pad_y], dtype=np.float32)
        out = (boxes - offset) / np.float32(scale)
        out[..., 0::2] = np.clip(out[..., 0::2], 0, width)
        out[..., 1::2] = np.clip(out[..., 1::2], 0, height)
        return out.astype(np.float32)
    offset = boxes_xyxy.new_tensor([pad_x, pad_y, pad_x, pad_y])
    out = (boxes_xyxy - offset) / scale
    out[..., 0::2] = out[..., 0::2].clamp(0, width)
    out[..., 1::2] = out[..., 1::2].clamp(0, height)
    return out
