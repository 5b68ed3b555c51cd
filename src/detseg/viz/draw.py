"""Drawing on images with OpenCV: boxes, labels, instance masks, class maps, grids.

Every function takes and returns RGB uint8 [H, W, 3] arrays (grey or float [0, 1] inputs are
converted) and never modifies its input. Colours are stable: class ``c`` always gets
``class_color(c)``, in every image and every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from detseg.data.imageio import write_image

# Distinct, saturated colours (RGB) for boxes; class c uses BOX_COLORS[c % len(BOX_COLORS)].
BOX_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
    (255, 225, 25),
    (128, 0, 0),
    (0, 0, 128),
    (128, 128, 0),
    (170, 255, 195),
)

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_color(label: int) -> tuple[int, int, int]:
    """The RGB colour of class ``label`` (the same in every call)."""
    return BOX_COLORS[int(label) % len(BOX_COLORS)]


def default_palette(num_classes: int = 256) -> np.ndarray:
    """The Pascal VOC label palette: uint8 [num_classes, 3], class 0 black, 1 dark red, 2 green ...

    Built from the bits of the class index, the way the VOC devkit builds it.
    """
    palette = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(num_classes):
        value, red, green, blue = index, 0, 0, 0
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (red, green, blue)
    return palette


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] copy of an RGB/grey image, uint8 or float in [0, 1]."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an image [H, W, 3] or [H, W], got shape {image.shape}")
    return np.ascontiguousarray(image).copy()


def _put_label(image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    """Write ``text`` on a filled box of ``color`` whose bottom-left corner is (x, y), kept inside."""
    height, width = image.shape[:2]
    scale = max(0.35, min(height, width) / 900.0)
    thickness = 1
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    box_h = text_h + baseline + 2
    top = y - box_h if y - box_h >= 0 else y  # above the box, or just inside it at the top edge
    left = int(np.clip(x, 0, max(0, width - text_w - 2)))
    cv2.rectangle(image, (left, top), (left + text_w + 2, top + box_h), color, thickness=-1)
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(
        image, text, (left + 1, top + text_h + 1), _FONT, scale, ink, thickness, cv2.LINE_AA
    )


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.0,
    *,
    mask_alpha: float = 0.45,
    thickness: int = 2,
) -> np.ndarray:
    """Draw boxes, optional instance masks, and ``name score`` labels on a copy of ``image``.

    Args:
        image: RGB uint8 [H, W, 3] (grey or float [0, 1] images are converted).
        boxes: [N, 4] xyxy in absolute pixels (numpy or torch).
        labels: int [N] class indices (index into ``class_names``; for torchvision outputs pass
            names with the background at index 0). ``None``: all class 0, no name shown.
        scores: [N] confidences; boxes with ``score < score_threshold`` are skipped.
        masks: [N, H, W] bool, or float probabilities (thresholded at 0.5), or [N, 1, H, W].
        class_names: names per class index.
        score_threshold: minimum score to draw (ignored without ``scores``).
        mask_alpha: opacity of the mask colour.
        thickness: box line width in pixels.
    Returns:
        RGB uint8 [H, W, 3], a new array; ``image`` is not modified.
    """
    canvas = _as_rgb_uint8(image)
    boxes_xyxy = _numpy(boxes).reshape(-1, 4).astype(np.float64)
    count = len(boxes_xyxy)
    labels_np = (
        np.zeros(count, dtype=np.int64) if labels is None else _numpy(labels).astype(np.int64)
    )
    scores_np = None if scores is None else _numpy(scores).astype(np.float64).reshape(-1)
    keep = np.ones(count, dtype=bool) if scores_np is None else scores_np >= score_threshold
    if masks is not None:
        masks_np = _numpy(masks)
        if masks_np.ndim == 4:
            masks_np = masks_np[:, 0]
        masks_bool = masks_np > 0.5 if masks_np.dtype != bool else masks_np
        for index in np.flatnonzero(keep):
            region = masks_bool[index]
            color = np.asarray(class_color(labels_np[index]), dtype=np.float64)
            blended = canvas[region] * (1.0 - mask_alpha) + color * mask_alpha
            canvas[region] = np.round(blended).astype(np.uint8)
    for index in np.flatnonzero(keep):
        x0, y0, x1, y1 = (int(round(v)) for v in boxes_xyxy[index])
        color = class_color(labels_np[index])
        cv2.rectangle(canvas, (x0, y0), (x1, y1), color, thickness=thickness)
        parts = []
        if class_names is not None and labels is not None:
            label = int(labels_np[index])
            parts.append(class_names[label] if 0 <= label < len(class_names) else str(label))
        elif labels is not None:
            parts.append(str(int(labels_np[index])))
        if scores_np is not None:
            parts.append(f"{scores_np[index]:.2f}")
        if parts:
            _put_label(canvas, " ".join(parts), x0, y0, color)
    return canvas


def colorize_mask(
    mask: np.ndarray, palette: np.ndarray | Sequence[Sequence[int]] | None = None
) -> np.ndarray:
    """Class-index map -> RGB picture.

    Args:
        mask: int [H, W] class indices.
        palette: [K, 3] RGB per class (default :func:`default_palette`); indices >= K (e.g. an
            ignore value 255 with a short palette) become black.
    Returns:
        RGB uint8 [H, W, 3].
    """
    mask_np = _numpy(mask).astype(np.int64)
    colors = _palette_array(palette)
    table = np.zeros((max(len(colors), int(mask_np.max(initial=0)) + 1), 3), dtype=np.uint8)
    table[: len(colors)] = colors
    return table[np.clip(mask_np, 0, None)]


def draw_segmentation(
    image: np.ndarray,
    mask: np.ndarray,
    palette: np.ndarray | Sequence[Sequence[int]] | None = None,
    alpha: float = 0.5,
    *,
    background: int | None = 0,
) -> np.ndarray:
    """Blend a class-index map over an image.

    Args:
        image: RGB uint8 [H, W, 3].
        mask: int [H, W] class indices, same H, W.
        palette: [K, 3] RGB per class (default :func:`default_palette`).
        alpha: opacity of the class colours.
        background: class left unpainted (``None``: paint every class); indices >= K are never painted.
    Returns:
        RGB uint8 [H, W, 3], a new array.
    """
    canvas = _as_rgb_uint8(image)
    mask_np = _numpy(mask).astype(np.int64)
    if mask_np.shape != canvas.shape[:2]:
        raise ValueError(f"mask {mask_np.shape} and image {canvas.shape[:2]} differ in size")
    colors = _palette_array(palette)
    painted = (mask_np >= 0) & (mask_np < len(colors))
    if background is not None:
        painted &= mask_np != background
    overlay = colorize_mask(mask_np, colors).astype(np.float64)
    blended = canvas[painted] * (1.0 - alpha) + overlay[painted] * alpha
    canvas[painted] = np.round(blended).astype(np.uint8)
    return canvas


def image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    ncols: int = 4,
    *,
    pad: int = 4,
) -> np.ndarray:
    """Tile images into one picture, each with an optional title strip above it.

    Images of different sizes are centred in cells of the largest size (white padding).

    Args:
        images: RGB or grey, uint8 or float in [0, 1].
        titles: one per image, or ``None``.
        ncols: columns (fewer when there are fewer images).
    Returns:
        RGB uint8 [rows * cell_h, cols * cell_w, 3].
    """
    if not images:
        raise ValueError("image_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    tiles = [_as_rgb_uint8(image) for image in images]
    cell_h = max(tile.shape[0] for tile in tiles)
    cell_w = max(tile.shape[1] for tile in tiles)
    title_h = 0
    if titles is not None:
        (_, text_h), baseline = cv2.getTextSize("Ag", _FONT, 0.5, 1)
        title_h = text_h + baseline + 6
    ncols = max(1, min(ncols, len(tiles)))
    nrows = -(-len(tiles) // ncols)
    step_h, step_w = cell_h + title_h + pad, cell_w + pad
    grid = np.full((nrows * step_h + pad, ncols * step_w + pad, 3), 255, dtype=np.uint8)
    for index, tile in enumerate(tiles):
        row, col = divmod(index, ncols)
        top = row * step_h + pad + title_h + (cell_h - tile.shape[0]) // 2
        left = col * step_w + pad + (cell_w - tile.shape[1]) // 2
        grid[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
        if titles is not None:
            text = str(titles[index])
            cv2.putText(
                grid, text, (col * step_w + pad, row * step_h + pad + title_h - 5),
                _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA,
            )  # fmt: skip
    return grid


def save_grid(
    images: Sequence[np.ndarray],
    path: str | Path,
    titles: Sequence[str] | None = None,
    ncols: int = 4,
) -> Path:
    """:func:`image_grid` written as an image file (PNG unless ``path`` says otherwise); returns ``path``."""
    return write_image(path, image_grid(images, titles=titles, ncols=ncols))


def _palette_array(palette: np.ndarray | Sequence[Sequence[int]] | None) -> np.ndarray:
    """uint8 [K, 3] palette; ``None`` -> :func:`default_palette`."""
    if palette is None:
        return default_palette()
    return np.asarray(palette, dtype=np.uint8).reshape(-1, 3)


def _numpy(array: object) -> np.ndarray:
    """numpy view of a numpy array, torch tensor (any device) or nested list."""
    if hasattr(array, "detach"):
        return array.detach().cpu().numpy()  # type: ignore[union-attr]
    return np.asarray(array)
