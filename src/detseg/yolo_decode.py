"""Decode raw YOLO head outputs into boxes, and keep the best ones with class-wise NMS.

A YOLO head predicts, per grid cell and anchor, ``5 + C`` numbers: ``tx, ty, tw, th`` (the box),
``to`` (objectness: is there an object here?) and one logit per class. The raw output of one scale
is a tensor [B, A * (5 + C), H, W] (anchor-major channels, as darknet and YOLOv5 / v7 lay them out).

Two box parametrisations (``style``):

- ``"v3"`` (YOLOv2 / v3, darknet): ``cx = (sigmoid(tx) + col) * stride``,
  ``w = anchor_w * exp(tw)``.
- ``"v5"`` (YOLOv4-scaled / v5 / v7): ``cx = (2 sigmoid(tx) - 0.5 + col) * stride``,
  ``w = anchor_w * (2 sigmoid(tw))^2`` (bounded, so a bad logit cannot explode a box).

Objectness and class scores are independent sigmoids in both; a detection's score is
``objectness x class probability``. Rows are ordered by (row, column, anchor), as OpenCV's DNN
module orders its YOLO-layer output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from detseg.boxes import batched_nms, box_convert

STYLES = ("v3", "v5")


def make_grid(height: int, width: int, device: Any = None) -> tuple[Tensor, Tensor]:
    """Column and row index of every cell: two float tensors [H, W]."""
    rows, cols = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return cols, rows


def split_raw(raw: Tensor, num_anchors: int) -> Tensor:
    """[B, A * (5 + C), H, W] -> [B, H, W, A, 5 + C] (a view reordered; values unchanged)."""
    batch, channels, height, width = raw.shape
    if channels % num_anchors:
        raise ValueError(f"{channels} channels do not split into {num_anchors} anchors")
    return raw.view(batch, num_anchors, channels // num_anchors, height, width).permute(
        0, 3, 4, 1, 2
    )


def decode_output(
    raw: Tensor,
    anchors: Sequence[tuple[float, float]],
    stride: int | float | tuple[float, float],
    *,
    style: str = "v3",
) -> Tensor:
    """One scale's raw output -> boxes and scores.

    Args:
        raw: [B, A * (5 + C), H, W] logits.
        anchors: A (width, height) pairs in input pixels.
        stride: input pixels per cell, a number or (stride_y, stride_x).
        style: ``"v3"`` or ``"v5"`` (see the module docstring).
    Returns:
        float [B, H * W * A, 5 + C]: ``cx, cy, w, h`` in input pixels, objectness in [0, 1], then
        C class probabilities in [0, 1] (not multiplied by objectness).
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    stride_y, stride_x = stride if isinstance(stride, tuple) else (stride, stride)
    num_anchors = len(anchors)
    pred = split_raw(raw, num_anchors)  # [B, H, W, A, 5 + C]
    _, height, width, _, _ = pred.shape
    cols, rows = make_grid(height, width, raw.device)
    cols, rows = cols[None, :, :, None], rows[None, :, :, None]  # [1, H, W, 1]
    anchor = torch.as_tensor(anchors, dtype=raw.dtype, device=raw.device)  # [A, 2]
    sig = pred.sigmoid()
    if style == "v3":
        cx = (sig[..., 0] + cols) * stride_x
        cy = (sig[..., 1] + rows) * stride_y
        w = pred[..., 2].exp() * anchor[:, 0]
        h = pred[..., 3].exp() * anchor[:, 1]
    else:
        cx = (sig[..., 0] * 2 - 0.5 + cols) * stride_x
        cy = (sig[..., 1] * 2 - 0.5 + rows) * stride_y
        w = (sig[..., 2] * 2) ** 2 * anchor[:, 0]
        h = (sig[..., 3] * 2) ** 2 * anchor[:, 1]
    out = torch.cat([torch.stack([cx, cy, w, h], dim=-1), sig[..., 4:]], dim=-1)
    return out.reshape(out.shape[0], -1, out.shape[-1])


def decode_outputs(
    raws: Sequence[Tensor],
    anchors: Sequence[Sequence[tuple[float, float]]],
    strides: Sequence[int | float],
    *,
    style: str = "v3",
) -> Tensor:
    """:func:`decode_output` of every scale, concatenated: [B, sum(H * W * A), 5 + C]."""
    return torch.cat(
        [decode_output(r, a, s, style=style) for r, a, s in zip(raws, anchors, strides)], dim=1
    )


def postprocess(
    decoded: Tensor,
    *,
    score_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    max_detections: int = 300,
    multi_label: bool = False,
) -> list[dict[str, Tensor]]:
    """Keep confident boxes and remove duplicates with class-wise NMS, per image.

    Args:
        decoded: [B, N, 5 + C] from :func:`decode_outputs`.
        score_threshold: keep ``objectness x class probability`` above this.
        iou_threshold: NMS threshold within a class (:func:`detseg.boxes.batched_nms`).
        max_detections: at most this many per image, best first.
        multi_label: a box may be kept for several classes (each above the threshold); otherwise
            only for its best class.
    Returns:
        Per image ``{"boxes": float [K, 4] xyxy input pixels, "scores": [K], "labels": int64 [K]}``
        (labels are class indices ``0..C-1``), sorted by decreasing score.
    """
    results = []
    for pred in decoded:
        scores_all = pred[:, 4:5] * pred[:, 5:]  # [N, C]
        if multi_label:
            box_index, labels = (scores_all > score_threshold).nonzero(as_tuple=True)
            scores = scores_all[box_index, labels]
        else:
            scores, labels = scores_all.max(dim=1)
            box_index = (scores > score_threshold).nonzero(as_tuple=True)[0]
            scores, labels = scores[box_index], labels[box_index]
        boxes = box_convert(pred[box_index, :4], "cxcywh", "xyxy")
        keep = batched_nms(boxes, scores, labels, iou_threshold)[:max_detections]
        results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return results
