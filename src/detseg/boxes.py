"""Box formats and box operations, for numpy arrays and torch tensors alike.

Formats (ARCHITECTURE.md): inside the code boxes are float ``xyxy`` in absolute pixels.
``xywh`` (COCO: top-left corner + size) and ``cxcywh`` (YOLO: centre + size) appear at file boundaries.
Any format may be normalised (divided by image width / height); see :func:`normalize_boxes`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _stack(columns: list[Any], like: Any) -> Any:
    if _is_torch(like):
        import torch

        return torch.stack(columns, dim=-1)
    return np.stack(columns, axis=-1)


def box_convert(boxes: Any, in_fmt: str, out_fmt: str) -> Any:
    """Convert boxes between ``xyxy``, ``xywh`` and ``cxcywh``.

    Args:
        boxes: array or tensor [..., 4].
        in_fmt, out_fmt: one of :data:`BOX_FORMATS`.
    Returns:
        Same type, shape and dtype as ``boxes``, in ``out_fmt``.
    """
    for fmt in (in_fmt, out_fmt):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"unknown box format {fmt!r}; use one of {BOX_FORMATS}")
    if in_fmt == out_fmt:
        return boxes.clone() if _is_torch(boxes) else np.array(boxes, copy=True)
    a, b, c, d = (boxes[..., i] for i in range(4))
    if in_fmt == "xywh":
        x1, y1, x2, y2 = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        x1, y1, x2, y2 = a - c / 2, b - d / 2, a + c / 2, b + d / 2
    else:
        x1, y1, x2, y2 = a, b, c, d
    if out_fmt == "xyxy":
        cols = [x1, y1, x2, y2]
    elif out_fmt == "xywh":
        cols = [x1, y1, x2 - x1, y2 - y1]
    else:
        cols = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    return _stack(cols, boxes)
