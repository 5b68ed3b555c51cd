"""Box formats and box operations, for numpy arrays and torch tensors alike.

Formats (ARCHITECTURE.md): inside the code boxes are float ``xyxy`` in absolute pixels.
``xywh`` (COCO: top-left corner + size) and ``cxcywh`` (YOLO: centre + size) appear at file boundaries.
Any format may be normalised (divided by image width / height); see :func:`normalize_boxes`.

Every function takes a numpy array or a torch tensor and returns the same kind (indices are int64).
torch is imported only when a tensor comes in, so numpy users never pay for it. The results equal
``torchvision.ops`` (tests/test_boxes.py proves it), including its conventions for edge cases:

* a box with ``x2 == x1`` or ``y2 == y1`` has zero area; the IoU of two zero-area boxes is
  ``0 / 0 = nan`` (as in torchvision), the IoU of touching boxes is 0;
* NMS suppresses a box when its IoU with a kept box is strictly greater than ``iou_threshold``
  (``nan`` never suppresses); equal scores are ranked by index, lower index first.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")

# NMS work sizes (see _greedy_nms): boxes decided per greedy block, kept boxes per suppression step.
_NMS_BLOCK = 512
_NMS_ROWS = 32


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _xp(x: Any) -> Any:
    """The array module that serves ``x``: ``torch`` for a tensor, else ``numpy``."""
    if _is_torch(x):
        import torch

        return torch
    return np


def _as_array(x: Any) -> Any:
    """A tensor stays a tensor; anything else (list, tuple, array) becomes a numpy array."""
    return x if _is_torch(x) else np.asarray(x)


def _stack(columns: list[Any], like: Any) -> Any:
    if _is_torch(like):
        import torch

        return torch.stack(columns, dim=-1)
    return np.stack(columns, axis=-1)


def _as_float(boxes: Any) -> Any:
    """float32 / float64 stay as they are; float16 and integers become float32 (torch) / float64 (numpy
    integers), so that areas cannot overflow and divisions stay in floating point."""
    if _is_torch(boxes):
        import torch

        return boxes if boxes.dtype in (torch.float32, torch.float64) else boxes.float()
    if boxes.dtype in (np.float32, np.float64):
        return boxes
    return boxes.astype(np.float32 if boxes.dtype == np.float16 else np.float64)


def _clamp_min_(x: Any, low: float) -> Any:
    """``x = max(x, low)`` in place (autograd-safe for tensors)."""
    if _is_torch(x):
        return x.clamp_(min=low)
    return np.maximum(x, low, out=x)


def _quiet_division(x: Any) -> contextlib.AbstractContextManager:
    """numpy warns on ``0 / 0``; we return ``nan`` there on purpose, as torch does silently."""
    return (
        contextlib.nullcontext() if _is_torch(x) else np.errstate(invalid="ignore", divide="ignore")
    )


def box_convert(boxes: Any, in_fmt: str, out_fmt: str) -> Any:
    """Convert boxes between ``xyxy``, ``xywh`` and ``cxcywh``.

    Args:
        boxes: array or tensor [..., 4].
        in_fmt, out_fmt: one of :data:`BOX_FORMATS`.
    Returns:
        Same type, shape and dtype as ``boxes``, in ``out_fmt``.
    """
    boxes = _as_array(boxes)
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


def normalize_boxes(boxes: Any, image_size: tuple[int, int]) -> Any:
    """Divide x coordinates and widths by the image width, y and heights by the image height.

    Works for every format of :data:`BOX_FORMATS` (columns 0, 2 are x-like, 1, 3 are y-like).

    Args:
        boxes: array or tensor [..., 4] in absolute pixels.
        image_size: ``(height, width)`` in pixels.
    Returns:
        Same type and shape, in [0, 1] for boxes inside the image; float (integers become float).
    """
    boxes = _as_array(boxes)
    height, width = image_size
    scale = (width, height, width, height)
    return _stack([boxes[..., i] / scale[i] for i in range(4)], boxes)


def denormalize_boxes(boxes: Any, image_size: tuple[int, int]) -> Any:
    """Inverse of :func:`normalize_boxes`: multiply by ``(width, height, width, height)``.

    Args:
        boxes: array or tensor [..., 4], normalised to the image size.
        image_size: ``(height, width)`` in pixels.
    Returns:
        Same type, shape and dtype, in absolute pixels.
    """
    boxes = _as_array(boxes)
    height, width = image_size
    scale = (width, height, width, height)
    return _stack([boxes[..., i] * scale[i] for i in range(4)], boxes)


def clip_boxes(boxes: Any, image_size: tuple[int, int]) -> Any:
    """Clip ``xyxy`` boxes to the image: x into ``[0, width]``, y into ``[0, height]``.

    A box entirely outside the image becomes a zero-area box on its border (drop it with
    :func:`remove_small_boxes`). Same as ``torchvision.ops.clip_boxes_to_image``.

    Args:
        boxes: array or tensor [..., 4], ``xyxy`` in absolute pixels.
        image_size: ``(height, width)`` in pixels.
    Returns:
        New array / tensor, same shape and dtype.
    """
    boxes = _as_array(boxes)
    xp = _xp(boxes)
    height, width = image_size
    limits = (width, height, width, height)
    return _stack([xp.clip(boxes[..., i], 0, limits[i]) for i in range(4)], boxes)


def box_area(boxes: Any, fmt: str = "xyxy") -> Any:
    """Area of each box.

    Args:
        boxes: array or tensor [..., 4] in ``fmt``.
        fmt: one of :data:`BOX_FORMATS`.
    Returns:
        [...] areas, float: float32 / float64 as the input, float32 for float16, and for integers
        float64 (numpy) or float32 (torch).
    """
    boxes = _as_array(boxes)
    if fmt not in BOX_FORMATS:
        raise ValueError(f"unknown box format {fmt!r}; use one of {BOX_FORMATS}")
    boxes = _as_float(boxes)  # float16 would overflow above 65504 square pixels
    if fmt == "xyxy":
        return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return boxes[..., 2] * boxes[..., 3]


def _inter_union(boxes1: Any, boxes2: Any) -> tuple[Any, Any]:
    """Pairwise intersection and union areas of float ``xyxy`` boxes [N, 4] x [M, 4] -> two [N, M].

    Computed column by column with in-place updates, so that no [N, M, 2] temporary exists: time is
    dominated by memory traffic, and this takes about half of torchvision's time (bench_boxes.py).
    """
    xp = _xp(boxes1)
    inter = xp.minimum(boxes1[:, None, 2], boxes2[:, 2])  # [N, M] right edge of the overlap
    inter -= xp.maximum(boxes1[:, None, 0], boxes2[:, 0])  # minus left edge: overlap width
    _clamp_min_(inter, 0)
    height = xp.minimum(boxes1[:, None, 3], boxes2[:, 3])  # [N, M]
    height -= xp.maximum(boxes1[:, None, 1], boxes2[:, 1])
    _clamp_min_(height, 0)
    inter *= height
    union = box_area(boxes1)[:, None] + box_area(boxes2)  # [N, M]
    union -= inter
    return inter, union


def box_iou(boxes1: Any, boxes2: Any, fmt: str = "xyxy") -> Any:
    """Pairwise intersection over union.

    Args:
        boxes1: array or tensor [N, 4] in ``fmt`` (default ``xyxy``, absolute pixels).
        boxes2: same kind [M, 4], same format.
        fmt: one of :data:`BOX_FORMATS`.
    Returns:
        [N, M] IoU in [0, 1], float (float32 for float32 input); ``nan`` where both boxes have zero
        area (``0 / 0``, as torchvision).
    """
    boxes1, boxes2 = _as_float(_as_array(boxes1)), _as_float(_as_array(boxes2))
    if fmt != "xyxy":
        boxes1, boxes2 = box_convert(boxes1, fmt, "xyxy"), box_convert(boxes2, fmt, "xyxy")
    inter, union = _inter_union(boxes1, boxes2)
    with _quiet_division(inter):
        inter /= union
    return inter


def generalized_box_iou(boxes1: Any, boxes2: Any, fmt: str = "xyxy") -> Any:
    """Pairwise generalised IoU (Rezatofighi et al. 2019): ``IoU - (C - union) / C``.

    ``C`` is the area of the smallest box enclosing both. GIoU lies in [-1, 1]; unlike IoU it still
    tells how far apart two disjoint boxes are, which makes ``1 - GIoU`` a usable box loss.

    Args:
        boxes1: array or tensor [N, 4] in ``fmt`` (default ``xyxy``, absolute pixels).
        boxes2: same kind [M, 4], same format.
        fmt: one of :data:`BOX_FORMATS`.
    Returns:
        [N, M] GIoU values, float; ``nan`` where both boxes are the same point.
    """
    boxes1, boxes2 = _as_float(_as_array(boxes1)), _as_float(_as_array(boxes2))
    if fmt != "xyxy":
        boxes1, boxes2 = box_convert(boxes1, fmt, "xyxy"), box_convert(boxes2, fmt, "xyxy")
    xp = _xp(boxes1)
    inter, union = _inter_union(boxes1, boxes2)
    enclosing = xp.maximum(boxes1[:, None, 2], boxes2[:, 2])  # [N, M] width of the enclosing box
    enclosing -= xp.minimum(boxes1[:, None, 0], boxes2[:, 0])
    _clamp_min_(enclosing, 0)
    enclosing_height = xp.maximum(boxes1[:, None, 3], boxes2[:, 3])  # [N, M]
    enclosing_height -= xp.minimum(boxes1[:, None, 1], boxes2[:, 1])
    _clamp_min_(enclosing_height, 0)
    enclosing *= enclosing_height
    with _quiet_division(inter):
        return inter / union - (enclosing - union) / enclosing


def _paired_overlap(boxes1: Any, boxes2: Any, fmt: str) -> tuple[Any, Any, Any, Any]:
    """Boxes ``[..., 4]`` (broadcast against each other) -> xyxy boxes, intersection, union."""
    boxes1, boxes2 = _as_float(_as_array(boxes1)), _as_float(_as_array(boxes2))
    if fmt != "xyxy":
        boxes1, boxes2 = box_convert(boxes1, fmt, "xyxy"), box_convert(boxes2, fmt, "xyxy")
    xp = _xp(boxes1)
    width = xp.minimum(boxes1[..., 2], boxes2[..., 2]) - xp.maximum(boxes1[..., 0], boxes2[..., 0])
    height = xp.minimum(boxes1[..., 3], boxes2[..., 3]) - xp.maximum(boxes1[..., 1], boxes2[..., 1])
    inter = _clamped_area(width, height)
    union = box_area(boxes1) + box_area(boxes2) - inter
    return boxes1, boxes2, inter, union


def _clamped_area(width: Any, height: Any) -> Any:
    """``max(width, 0) * max(height, 0)``, not in place (losses differentiate through it)."""
    if _is_torch(width):
        return width.clamp(min=0) * height.clamp(min=0)
    return np.maximum(width, 0) * np.maximum(height, 0)


def _divide(numerator: Any, denominator: Any, eps: float) -> Any:
    """``numerator / max(denominator, eps)``; with ``eps = 0`` plain division (``0 / 0 = nan``)."""
    if eps > 0:
        denominator = (
            denominator.clamp(min=eps) if _is_torch(denominator) else np.maximum(denominator, eps)
        )
    with _quiet_division(numerator):
        return numerator / denominator


def paired_box_iou(boxes1: Any, boxes2: Any, fmt: str = "xyxy", eps: float = 0.0) -> Any:
    """IoU of ``boxes1[i]`` with ``boxes2[i]``: the diagonal of :func:`box_iou` without the
    [N, N] matrix. What a box-regression metric or a detector's loss needs (one prediction, one
    target); differentiable for tensors.

    Args:
        boxes1: array or tensor [..., 4] in ``fmt`` (default ``xyxy``).
        boxes2: same kind, a shape that broadcasts with ``boxes1``.
        fmt: one of :data:`BOX_FORMATS`.
        eps: with ``eps > 0`` the union is clamped to at least ``eps`` (a loss must never divide by
            zero); with ``0`` (default) two zero-area boxes give ``nan``, as :func:`box_iou`.
    Returns:
        [...] IoU values in [0, 1].
    """
    _, _, inter, union = _paired_overlap(boxes1, boxes2, fmt)
    return _divide(inter, union, eps)


def paired_generalized_box_iou(
    boxes1: Any, boxes2: Any, fmt: str = "xyxy", eps: float = 0.0
) -> Any:
    """Generalised IoU of ``boxes1[i]`` with ``boxes2[i]`` (the diagonal of
    :func:`generalized_box_iou`); ``1 - GIoU`` is the GIoU box loss. Arguments as
    :func:`paired_box_iou` (``eps`` clamps the union and the enclosing box's area)."""
    boxes1, boxes2, inter, union = _paired_overlap(boxes1, boxes2, fmt)
    xp = _xp(boxes1)
    width = xp.maximum(boxes1[..., 2], boxes2[..., 2]) - xp.minimum(boxes1[..., 0], boxes2[..., 0])
    height = xp.maximum(boxes1[..., 3], boxes2[..., 3]) - xp.minimum(boxes1[..., 1], boxes2[..., 1])
    hull = _clamped_area(width, height)
    return _divide(inter, union, eps) - _divide(hull - union, hull, eps)


def remove_small_boxes(boxes: Any, min_size: float) -> Any:
    """Indices of the ``xyxy`` boxes whose width and height are both ``>= min_size``.

    Args:
        boxes: array or tensor [N, 4], ``xyxy``.
        min_size: smallest side length to keep, in the boxes' units.
    Returns:
        int64 [K] indices into ``boxes``, ascending.
    """
    boxes = _as_array(boxes)
    keep = (boxes[:, 2] - boxes[:, 0] >= min_size) & (boxes[:, 3] - boxes[:, 1] >= min_size)
    if _is_torch(boxes):
        return keep.nonzero().flatten()
    return np.flatnonzero(keep).astype(np.int64)


def nms(boxes: Any, scores: Any, iou_threshold: float) -> Any:
    """Greedy non-maximum suppression.

    Visit boxes by decreasing score; keep a box unless a box kept before it overlaps it with
    IoU ``> iou_threshold`` (strictly). Equal scores are visited in index order, lower index first.
    Same result as ``torchvision.ops.nms``, bit for bit (IoU computed in the boxes' dtype).

    Args:
        boxes: array or tensor [N, 4], ``xyxy``; float32 / float64 (other dtypes run in float64).
        scores: array or tensor [N].
        iou_threshold: suppress above this IoU, e.g. 0.5.
    Returns:
        int64 [K] indices of the kept boxes, by decreasing score. A tensor input gives a tensor on
        the same device: the greedy loop is sequential, so it always runs on CPU in numpy.
    """
    return batched_nms(boxes, scores, None, iou_threshold)


def batched_nms(boxes: Any, scores: Any, idxs: Any, iou_threshold: float) -> Any:
    """Class-wise NMS: boxes of different ``idxs`` (class ids) never suppress each other.

    Equal to :func:`nms` on each class, the kept indices merged by decreasing score. Same kept
    boxes as ``torchvision.ops.batched_nms``, except for its own two shortcuts: below 1000 boxes it
    shifts each class by a coordinate offset, whose rounding can flip an IoU that sits exactly at
    the threshold; above, it merges the classes with an unstable sort (ties in arbitrary order).

    Args:
        boxes: array or tensor [N, 4], ``xyxy``.
        scores: array or tensor [N].
        idxs: array or tensor [N] of integer class ids, or ``None`` for one class (plain NMS).
        iou_threshold: suppress above this IoU within a class.
    Returns:
        int64 [K] indices of the kept boxes, by decreasing score (ties: lower index first); same kind
        and device as ``boxes``.
    """
    on_torch = _is_torch(boxes)
    boxes_np, scores_np, idxs_np = (
        None if a is None else _to_numpy(a) for a in (boxes, scores, idxs)
    )
    if boxes_np.ndim != 2 or boxes_np.shape[1] != 4 or scores_np.shape != boxes_np.shape[:1]:
        raise ValueError(
            f"expected boxes [N, 4] and scores [N], got {boxes_np.shape} and {scores_np.shape}"
        )
    if boxes_np.dtype not in (np.float32, np.float64):
        boxes_np = boxes_np.astype(np.float64)
    keep = _greedy_nms(boxes_np, scores_np, idxs_np, iou_threshold)
    if on_torch:
        import torch

        return torch.from_numpy(keep).to(boxes.device)
    return keep


def _to_numpy(x: Any) -> np.ndarray:
    """Arrays pass; a tensor becomes a CPU numpy array (bfloat16, unknown to numpy, as float64)."""
    if _is_torch(x):
        import torch

        x = x.detach().cpu()
        return (x.double() if x.dtype == torch.bfloat16 else x).numpy()
    return np.asarray(x)


def _threshold_in_dtype(threshold: float, dtype: np.dtype) -> np.floating:
    """The largest value ``t`` of ``dtype`` with ``t <= threshold``.

    For an IoU ``v`` of that dtype, ``v > t`` holds exactly when ``v > threshold`` holds in real
    numbers, which is what torchvision's C++ kernel tests (it compares the float IoU with a double).
    Comparing a float32 array with a Python float would instead round 0.3 up to 0.30000001 and let a
    float32 IoU of exactly 0.30000001 escape suppression.
    """
    value = np.asarray(threshold, dtype=dtype)[()]
    if float(value) > threshold:
        value = np.nextafter(value, dtype.type(-np.inf))
    return value


def _greedy_nms(
    boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray | None, iou_threshold: float
) -> np.ndarray:
    """Greedy NMS on numpy arrays: boxes [N, 4] float, scores [N], idxs [N] or None -> int64 [K].

    The textbook loop (keep the best box, drop all that overlap it, repeat) makes one vectorised
    call per kept box. Here the boxes, sorted by score, are decided ``_NMS_BLOCK`` at a time:

    1. inside a block, one IoU matrix holds every pair; a Python loop over the few rows that
       overlap anything makes the sequential greedy decisions;
    2. the block's kept boxes then suppress the later boxes, ``_NMS_ROWS`` kept boxes per
       vectorised step. Only boxes that can intersect them are compared: with the boxes also
       sorted by ``x1``, those whose ``x1`` lies in ``(min x1 - widest box, max x2)`` of the step.
       Boxes that do not intersect have IoU 0 (or nan), which never exceeds a threshold >= 0.

    Every IoU that decides something is computed with the same float arithmetic as torchvision's
    C++ kernel (by :func:`box_iou`), so the result is identical.
    """
    order = np.argsort(-scores, kind="stable")  # decreasing score; stable: ties by index
    boxes = boxes[order]
    classes = None if idxs is None else idxs[order]
    threshold = _threshold_in_dtype(iou_threshold, boxes.dtype)
    by_x1 = np.argsort(boxes[:, 0], kind="stable")  # positions sorted by left edge
    x1_sorted = boxes[by_x1, 0]
    # widest box, in float64 so that rounding cannot narrow the search window below
    widest = (boxes[:, 2] - boxes[:, 0].astype(np.float64)).max(initial=0.0)

    def may_intersect(rows: np.ndarray) -> np.ndarray:
        """Positions whose box may intersect one of ``rows`` (a superset), as a window in x1."""
        if iou_threshold < 0:  # IoU 0 > threshold: then disjoint boxes suppress each other too
            return by_x1
        low = np.searchsorted(x1_sorted, float(boxes[rows, 0].min()) - widest, side="left")
        high = np.searchsorted(x1_sorted, boxes[rows, 2].max(), side="right")
        return by_x1[low:high]

    def suppresses(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """[len(rows), len(cols)] bool: does kept box ``rows[i]`` suppress box ``cols[j]``?"""
        hit = box_iou(boxes[rows], boxes[cols]) > threshold  # nan > t is False
        if classes is not None:
            hit &= classes[rows, None] == classes[cols]
        return hit

    undecided = np.ones(len(boxes), dtype=bool)  # neither kept nor suppressed yet
    kept_blocks = []
    next_position = 0
    while True:
        block = np.flatnonzero(undecided[next_position:])[:_NMS_BLOCK] + next_position
        if block.size == 0:
            break
        next_position = block[-1] + 1
        undecided[block] = False
        hit = np.triu(suppresses(block, block), k=1)  # [B, B], only higher score -> lower
        suppressed = np.zeros(block.size, dtype=bool)
        for i in np.flatnonzero(hit.any(axis=1)):  # rows that suppress nothing cannot matter
            if not suppressed[i]:
                suppressed |= hit[i]
        kept = block[~suppressed]
        kept_blocks.append(kept)
        kept = kept[np.argsort(boxes[kept, 0], kind="stable")]  # neighbours in x share a step
        for start in range(0, kept.size, _NMS_ROWS):
            rows = kept[start : start + _NMS_ROWS]
            cols = may_intersect(rows)
            cols = cols[undecided[cols]]
            undecided[cols[suppresses(rows, cols).any(axis=0)]] = False
    if not kept_blocks:
        return np.zeros(0, dtype=np.int64)
    return order[np.concatenate(kept_blocks)].astype(np.int64)


def neighbour_cells(centres: Any, grid_size: tuple[int, int], offset: float = 0.5) -> tuple:
    """The grid cells that predict an object in YOLOv5 / YOLOv7's assignment: the cell holding its
    centre, plus, on each axis, the neighbour cell whose side the centre is within ``offset`` of
    (``offset`` 0.5: the nearer neighbour, so 3 cells in all), when that neighbour is in the grid.

    As the authors' code, a neighbour on the left / top is used when the centre is past 1 cell
    (``x > 1``), on the right / bottom when it is more than 1 cell before the far edge.

    Args:
        centres: tensor [K, 2] of object centres ``(x, y)`` in cells (pixels / stride).
        grid_size: ``(H, W)`` of the map.
        offset: how near a side must be for its neighbour to count.
    Returns:
        ``(k, col, row)``: int64 tensors [P]: which centre, and the cell; the centre cells of all
        objects first, then the left, top, right and bottom neighbours, each in the order of ``k``.
    """
    import torch

    height, width = grid_size
    far = torch.tensor([width, height], device=centres.device, dtype=centres.dtype) - centres
    low = (centres % 1 < offset) & (centres > 1)  # [K, 2]: the cell left of / above counts
    high = (far % 1 < offset) & (far > 1)  # the cell right of / below
    use = torch.stack([torch.ones_like(low[:, 0]), low[:, 0], low[:, 1], high[:, 0], high[:, 1]])
    shifts = torch.tensor(
        [[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=centres.device, dtype=centres.dtype
    )
    which, k = use.nonzero(as_tuple=True)  # by shift, then by centre
    cell = (centres[k] - shifts[which] * offset).floor().long()
    return k, cell[:, 0].clamp(0, width - 1), cell[:, 1].clamp(0, height - 1)
