"""The YOLOv3 loss: anchor assignment across the scales, then box, objectness and class terms.

Assignment (Redmon & Farhadi 2018, "YOLOv3: An Incremental Improvement"): every ground-truth box
goes to the anchor, among *all* anchors of all scales, whose shape matches it best (IoU of the two
boxes placed on the same centre), at the grid cell that holds the box centre. Optionally also to
every other anchor whose shape IoU is above ``assign_threshold`` (more positives: faster learning on
small datasets). That cell / anchor predicts the box:

- box: ``tx, ty`` = the centre's offset inside the cell (target in [0, 1), BCE on the sigmoid);
  ``tw, th`` = ``log(w / anchor_w)`` (squared error), weighted by ``2 - w h / S^2`` so that small
  boxes count more, as darknet does; or the GIoU of decoded boxes (``box_loss="giou"``);
- objectness: BCE, target 1 there, 0 elsewhere, except predictions that already overlap some
  ground-truth box with IoU > ``ignore_threshold`` (0.7 in darknet): they get no objectness loss;
- classes: independent BCE per class (multi-label capable), at the assigned cells only; two boxes
  sharing a cell and anchor make a multi-label target there, as in darknet (:func:`class_targets`).

Each term is summed over the batch and divided by the batch size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from detseg.boxes import box_convert, box_iou
from detseg.yolo_decode import decode_output, split_raw


@dataclass(frozen=True)
class LossConfig:
    """Weights and thresholds of :func:`yolo_loss`."""

    box: float = 1.0
    obj: float = 1.0
    noobj: float = 1.0
    cls: float = 1.0
    ignore_threshold: float = 0.7
    assign_threshold: float = 1.0  # > 1 never: only the best anchor (darknet's default)
    box_loss: str = "mse"  # "mse" (darknet) or "giou"


def shape_iou(wh1: Tensor, wh2: Tensor) -> Tensor:
    """IoU of boxes placed on the same centre: [N, 2] x [M, 2] widths / heights -> [N, M]."""
    inter = torch.min(wh1[:, None, :], wh2[None, :, :]).prod(dim=2)
    union = wh1.prod(dim=1)[:, None] + wh2.prod(dim=1)[None, :] - inter
    return inter / union.clamp(min=1e-12)


def assign_targets(
    targets: Sequence[dict[str, Any]],
    anchors: Sequence[Sequence[tuple[float, float]]],
    strides: Sequence[int],
    grid_sizes: Sequence[tuple[int, int]],
    assign_threshold: float = 1.0,
) -> list[dict[str, Tensor]]:
    """Which (image, anchor, row, col) of which scale predicts which ground-truth box.

    Args:
        targets: per image ``{"boxes": [N, 4] xyxy input pixels, "labels": [N]}``.
        anchors: per scale, its anchors (w, h) in pixels.
        strides: per scale, pixels per cell. grid_sizes: per scale (H, W).
        assign_threshold: also assign anchors whose shape IoU with the box exceeds this.
    Returns:
        Per scale ``{"image", "anchor", "row", "col", "label": int64 [P], "box": float [P, 4] xyxy}``
        (when two boxes claim the same cell and anchor, both pull on that prediction).
    """
    flat = [(s, a, wh) for s, scale in enumerate(anchors) for a, wh in enumerate(scale)]
    all_wh = torch.tensor([wh for _, _, wh in flat], dtype=torch.float32)  # [K, 2]
    per_scale: list[dict[str, list[Tensor]]] = [
        {k: [] for k in ("image", "anchor", "row", "col", "label", "box")} for _ in anchors
    ]
    for image_index, target in enumerate(targets):
        boxes = target["boxes"].float().reshape(-1, 4).cpu()
        if not len(boxes):
            continue
        labels = target["labels"].reshape(-1).cpu()
        cxcywh = box_convert(boxes, "xyxy", "cxcywh")
        ious = shape_iou(cxcywh[:, 2:].clamp(min=1e-6), all_wh)  # [N, K]
        chosen = ious >= assign_threshold
        chosen[torch.arange(len(boxes)), ious.argmax(dim=1)] = True
        for box_index, k in chosen.nonzero().tolist():
            scale, anchor, _ = flat[k]
            height, width = grid_sizes[scale]
            col = int((cxcywh[box_index, 0] / strides[scale]).clamp(0, width - 1))
            row = int((cxcywh[box_index, 1] / strides[scale]).clamp(0, height - 1))
            bucket = per_scale[scale]
            bucket["image"].append(torch.tensor(image_index))
            bucket["anchor"].append(torch.tensor(anchor))
            bucket["row"].append(torch.tensor(row))
            bucket["col"].append(torch.tensor(col))
            bucket["label"].append(labels[box_index])
            bucket["box"].append(boxes[box_index])
    out = []
    for bucket in per_scale:
        if bucket["image"]:
            out.append({k: torch.stack(v) for k, v in bucket.items()})
        else:
            out.append({
                **{k: torch.zeros(0, dtype=torch.int64) for k in ("image", "anchor", "row", "col", "label")},
                "box": torch.zeros(0, 4),
            })  # fmt: skip
    return out


def class_targets(pred: Tensor, idx: Sequence[Tensor], labels: Tensor) -> tuple[Tensor, Tensor]:
    """Class logits and multi-hot targets, one row per distinct assigned prediction.

    Two boxes whose centres fall in the same cell and that pick the same anchor share one
    prediction. Darknet (``delta_yolo_class``) then sets the second box's class to 1 as well, a
    multi-label target; one-hot rows per box would instead pull the shared logits to 1 and to 0 at
    once (a loss that cannot go below 2 ln 2 per clash, and contradictory gradients).

    Args:
        pred: [B, H, W, A, 5 + C] (:func:`detseg.yolo_decode.split_raw`).
        idx: (image, row, col, anchor) int64 [P] each, the assigned predictions.
        labels: int64 [P] 0..C-1, the class of each assigned box.
    Returns:
        ``(logits [U, C], targets [U, C])`` for the U distinct predictions among the P.
    """
    _, height, width, num_anchors, channels = pred.shape
    image, row, col, anchor = idx
    slot = ((image * height + row) * width + col) * num_anchors + anchor  # [P]
    slots, inverse = torch.unique(slot, return_inverse=True)  # [U], [P]
    targets = pred.new_zeros(len(slots), channels - 5)
    targets[inverse, labels] = 1.0
    first = torch.full_like(slots, len(slot)).scatter_reduce(
        0, inverse, torch.arange(len(slot), device=slot.device), reduce="amin"
    )  # [U]: one box index per distinct prediction
    logits = pred[image[first], row[first], col[first], anchor[first], 5:]
    return logits, targets


def _giou_pairs(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Elementwise GIoU of two [P, 4] xyxy sets."""
    lt = torch.max(boxes1[:, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, 2:], boxes2[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).prod(dim=1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).prod(dim=1)
    union = area1 + area2 - inter
    hull = (torch.max(boxes1[:, 2:], boxes2[:, 2:]) - torch.min(boxes1[:, :2], boxes2[:, :2])).prod(
        dim=1
    )
    iou = inter / union.clamp(min=1e-9)
    return iou - (hull - union) / hull.clamp(min=1e-9)


def yolo_loss(
    raws: Sequence[Tensor],
    targets: Sequence[dict[str, Any]],
    anchors: Sequence[Sequence[tuple[float, float]]],
    strides: Sequence[int],
    image_size: int,
    config: LossConfig | None = None,
) -> dict[str, Tensor]:
    """YOLOv3 loss of one batch.

    Args:
        raws: the model's raw outputs, per scale [B, A * (5 + C), H, W].
        targets: per image ``{"boxes": [N, 4] xyxy input pixels, "labels": [N] 0..C-1}``.
        anchors, strides: per scale, as :class:`darknet.Darknet` holds them.
        image_size: S (input side), for darknet's ``2 - w h`` box weight.
    Returns:
        ``{"loss_box", "loss_obj", "loss_cls"}`` scalars (the engine sums them).
    """
    config = config or LossConfig()
    batch = raws[0].shape[0]
    device = raws[0].device
    grids = [(r.shape[2], r.shape[3]) for r in raws]
    assigned = assign_targets(targets, anchors, strides, grids, config.assign_threshold)
    gt_boxes = [t["boxes"].float().reshape(-1, 4).to(device) for t in targets]
    loss_box = raws[0].new_zeros(())
    loss_obj = raws[0].new_zeros(())
    loss_cls = raws[0].new_zeros(())
    for raw, scale_anchors, stride, assign in zip(raws, anchors, strides, assigned):
        pred = split_raw(raw, len(scale_anchors))  # [B, H, W, A, 5 + C]
        # ignore mask: predictions already overlapping a ground-truth box well
        with torch.no_grad():
            decoded = decode_output(raw.detach(), scale_anchors, stride)  # [B, H*W*A, 5 + C]
            ignore = torch.zeros(pred.shape[:4], dtype=torch.bool, device=device)
            for b in range(batch):
                if len(gt_boxes[b]):
                    boxes = box_convert(decoded[b, :, :4], "cxcywh", "xyxy")
                    best = box_iou(boxes, gt_boxes[b]).max(dim=1).values
                    ignore[b] = (best > config.ignore_threshold).view(pred.shape[1:4])
        obj_target = torch.zeros(pred.shape[:4], device=device)
        idx = [assign[k].to(device) for k in ("image", "row", "col", "anchor")]
        obj_weight = torch.where(ignore, 0.0, config.noobj)
        if len(idx[0]):
            obj_target[tuple(idx)] = 1.0
            obj_weight[tuple(idx)] = config.obj
            selected = pred[tuple(idx)]  # [P, 5 + C]
            box = assign["box"].to(device)
            cxcywh = box_convert(box, "xyxy", "cxcywh")
            anchor_wh = torch.as_tensor(scale_anchors, dtype=raw.dtype, device=device)[idx[3]]
            if config.box_loss == "giou":
                cols, rows = idx[2].float(), idx[1].float()
                xy = (selected[:, :2].sigmoid() + torch.stack([cols, rows], 1)) * stride
                wh = selected[:, 2:4].clamp(max=8).exp() * anchor_wh
                pbox = box_convert(torch.cat([xy, wh], 1), "cxcywh", "xyxy")
                loss_box = loss_box + (1 - _giou_pairs(pbox, box)).sum()
            else:
                weight = 2 - cxcywh[:, 2] * cxcywh[:, 3] / image_size**2
                cell = torch.stack([idx[2], idx[1]], 1).float()
                txy = cxcywh[:, :2] / stride - cell
                twh = torch.log(cxcywh[:, 2:].clamp(min=1e-6) / anchor_wh)
                xy_loss = F.binary_cross_entropy_with_logits(
                    selected[:, :2], txy.clamp(0, 1), reduction="none"
                ).sum(1)
                wh_loss = (selected[:, 2:4] - twh).pow(2).sum(1)
                loss_box = loss_box + (weight * (xy_loss + wh_loss)).sum()
            logits, cls_target = class_targets(pred, idx, assign["label"].to(device))
            loss_cls = loss_cls + F.binary_cross_entropy_with_logits(
                logits, cls_target, reduction="sum"
            )
        loss_obj = (
            loss_obj
            + (
                obj_weight
                * F.binary_cross_entropy_with_logits(pred[..., 4], obj_target, reduction="none")
            ).sum()
        )
    return {
        "loss_box": config.box * loss_box / batch,
        "loss_obj": loss_obj / batch,
        "loss_cls": config.cls * loss_cls / batch,
    }
