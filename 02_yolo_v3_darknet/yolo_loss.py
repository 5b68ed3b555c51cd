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

``assign="yolov5"`` (:func:`assign_targets_yolov5`, what ``train.py`` uses by default) gives each
box many more predictors: every anchor within a 4x side ratio at every scale, in the centre cell
and its 2 nearest neighbours (offsets in -0.5..1.5, reachable with darknet's ``scale_x_y = 2``);
``obj_target="iou"`` makes the objectness target of a predictor its IoU with the box (detached,
clamped at 0), as YOLOv5 does, instead of 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from detseg.boxes import (
    box_convert,
    box_iou,
    neighbour_cells,
    paired_box_iou,
    paired_generalized_box_iou,
)
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
    assign: str = "yolov3"  # "yolov3" (assign_targets) or "yolov5" (assign_targets_yolov5)
    anchor_t: float = 4.0  # yolov5: max width / height ratio between a box and its anchors
    obj_target: str = (
        "one"  # objectness target at assigned cells: "one" (darknet) or "iou" (YOLOv5)
    )


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
    """YOLOv3's assignment: which (image, anchor, row, col) of which scale predicts which box.

    Args:
        targets: per image ``{"boxes": [N, 4] xyxy input pixels, "labels": [N]}``.
        anchors: per scale, its anchors (w, h) in pixels.
        strides: per scale, pixels per cell. grid_sizes: per scale (H, W).
        assign_threshold: also assign anchors whose shape IoU with the box exceeds this.
    Returns:
        Per scale ``{"image", "anchor", "row", "col", "label": int64 [P], "box": float [P, 4] xyxy,
        "offset": float [P, 2]}``, ``offset`` = the box centre in cells minus (col, row), in [0, 1]
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
    for bucket, stride in zip(per_scale, strides):
        if bucket["image"]:
            out.append(_with_offsets({k: torch.stack(v) for k, v in bucket.items()}, stride))
        else:
            out.append(_empty_assignment())
    return out


def _empty_assignment() -> dict[str, Tensor]:
    return {
        **{k: torch.zeros(0, dtype=torch.int64) for k in ("image", "anchor", "row", "col", "label")},
        "box": torch.zeros(0, 4),
        "offset": torch.zeros(0, 2),
    }  # fmt: skip


def _with_offsets(assigned: dict[str, Tensor], stride: float) -> dict[str, Tensor]:
    """Add ``offset`` [P, 2]: the box centre in cells minus the assigned (col, row)."""
    centre = box_convert(assigned["box"], "xyxy", "cxcywh")[:, :2] / stride
    cell = torch.stack([assigned["col"], assigned["row"]], dim=1).float()
    return {**assigned, "offset": centre - cell}


def assign_targets_yolov5(
    targets: Sequence[dict[str, Any]],
    anchors: Sequence[Sequence[tuple[float, float]]],
    strides: Sequence[int],
    grid_sizes: Sequence[tuple[int, int]],
    anchor_t: float = 4.0,
) -> list[dict[str, Tensor]]:
    """YOLOv5's assignment (Jocher et al., ``build_targets``): more positives per box.

    At every scale, every anchor whose width and height ratios to the box are both within
    ``anchor_t`` (``max(r, 1 / r) < 4``) predicts the box, at the cell of the box centre and at the
    two neighbouring cells nearest to the centre (left or right, above or below; none past the
    border). The offsets of the centre from those cells lie in (-0.5, 1.5), which a ``[yolo]``
    layer with ``scale_x_y = 2`` can reach (``2 sigmoid - 0.5``). A box that no anchor fits goes to
    its best-fitting anchor (smallest worst ratio; YOLOv5 would drop it), at the same cells.

    Args and Returns: as :func:`assign_targets` (``offset`` in (-0.5, 1.5) here).
    """
    images, boxes, labels = [], [], []
    for image_index, target in enumerate(targets):
        image_boxes = target["boxes"].float().reshape(-1, 4).cpu()
        images.append(torch.full((len(image_boxes),), image_index, dtype=torch.int64))
        boxes.append(image_boxes)
        labels.append(target["labels"].reshape(-1).cpu().long())
    if not targets or not sum(len(b) for b in boxes):
        return [_empty_assignment() for _ in anchors]
    image_of, box_all, label_all = torch.cat(images), torch.cat(boxes), torch.cat(labels)
    cxcywh = box_convert(box_all, "xyxy", "cxcywh")  # [M, 4]
    worst = []  # per scale [A, M]: the larger of the width and height ratios, each >= 1
    for scale_anchors in anchors:
        ratio = cxcywh[None, :, 2:].clamp(min=1e-6) / torch.tensor(scale_anchors)[:, None]
        worst.append(torch.max(ratio, 1 / ratio).amax(dim=2))
    fits = [w < anchor_t for w in worst]
    flat_worst = torch.cat(worst)  # [sum A, M]
    lonely = flat_worst.min(dim=0).values >= anchor_t  # [M]: no anchor fits
    if lonely.any():
        best = flat_worst.argmin(dim=0)  # [M] index into the concatenated anchors
        first = 0
        for scale_fits in fits:
            here = lonely & (best >= first) & (best < first + len(scale_fits))
            scale_fits[best[here] - first, here.nonzero(as_tuple=True)[0]] = True
            first += len(scale_fits)
    out = []
    for scale_fits, stride, (height, width) in zip(fits, strides, grid_sizes):
        anchor_index, box_index = scale_fits.nonzero(as_tuple=True)  # [K]
        xy = cxcywh[box_index, :2] / stride  # [K, 2] centre in cells (x, y)
        k, col, row = neighbour_cells(xy, (height, width))  # centre cell + 2 nearest neighbours
        assigned = {
            "image": image_of[box_index[k]],
            "anchor": anchor_index[k],
            "row": row,
            "col": col,
            "label": label_all[box_index[k]],
            "box": box_all[box_index[k]],
        }
        out.append(_with_offsets(assigned, stride))
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


def yolo_loss(
    raws: Sequence[Tensor],
    targets: Sequence[dict[str, Any]],
    anchors: Sequence[Sequence[tuple[float, float]]],
    strides: Sequence[int],
    image_size: int,
    config: LossConfig | None = None,
    scale_xy: Sequence[float] | None = None,
) -> dict[str, Tensor]:
    """YOLOv3 loss of one batch.

    Args:
        raws: the model's raw outputs, per scale [B, A * (5 + C), H, W].
        targets: per image ``{"boxes": [N, 4] xyxy input pixels, "labels": [N] 0..C-1}``.
        anchors, strides, scale_xy: per scale, as :class:`darknet.Darknet` holds them
            (``scale_xy`` default 1: ``cx = (col + s sigmoid(tx) - (s - 1) / 2) stride``).
        image_size: S (input side), for darknet's ``2 - w h`` box weight.
    Returns:
        ``{"loss_box", "loss_obj", "loss_cls"}`` scalars (the engine sums them).
    """
    config = config or LossConfig()
    scale_xy = list(scale_xy or [1.0] * len(raws))
    batch = raws[0].shape[0]
    device = raws[0].device
    grids = [(r.shape[2], r.shape[3]) for r in raws]
    if config.assign == "yolov5":
        if min(scale_xy) < 2:
            raise ValueError(
                f"yolov5 assignment needs scale_x_y >= 2 in every [yolo] (centre offsets in "
                f"-0.5..1.5), the model has {scale_xy}"
            )
        assigned = assign_targets_yolov5(targets, anchors, strides, grids, config.anchor_t)
    elif config.assign == "yolov3":
        assigned = assign_targets(targets, anchors, strides, grids, config.assign_threshold)
    else:
        raise ValueError(f"assign must be 'yolov3' or 'yolov5', got {config.assign!r}")
    gt_boxes = [t["boxes"].float().reshape(-1, 4).to(device) for t in targets]
    loss_box = raws[0].new_zeros(())
    loss_obj = raws[0].new_zeros(())
    loss_cls = raws[0].new_zeros(())
    for raw, scale_anchors, stride, scale, assign in zip(
        raws, anchors, strides, scale_xy, assigned
    ):
        pred = split_raw(raw, len(scale_anchors))  # [B, H, W, A, 5 + C]
        # ignore mask: predictions already overlapping a ground-truth box well
        with torch.no_grad():
            decoded = decode_output(raw.detach(), scale_anchors, stride)  # [B, H*W*A, 5 + C]
            if scale != 1:  # darknet's scale_x_y (as Darknet.decode)
                sig_xy = pred[..., :2].detach().sigmoid().reshape(batch, -1, 2)
                decoded[..., :2] += (scale - 1) * (sig_xy - 0.5) * stride
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
            obj_weight[tuple(idx)] = config.obj
            selected = pred[tuple(idx)]  # [P, 5 + C]
            box = assign["box"].to(device)
            offset = assign["offset"].to(device)  # [P, 2] centre in cells - (col, row)
            anchor_wh = torch.as_tensor(scale_anchors, dtype=raw.dtype, device=device)[idx[3]]
            cell = torch.stack([idx[2], idx[1]], 1).float()  # (col, row)
            xy = (scale * selected[:, :2].sigmoid() - (scale - 1) / 2 + cell) * stride
            wh = selected[:, 2:4].clamp(max=8).exp() * anchor_wh
            pbox = box_convert(torch.cat([xy, wh], 1), "cxcywh", "xyxy")
            iou = paired_box_iou(pbox, box, eps=1e-9)
            giou = paired_generalized_box_iou(pbox, box, eps=1e-9)
            if config.box_loss == "giou":
                loss_box = loss_box + (1 - giou).sum()
            else:
                cxcywh = box_convert(box, "xyxy", "cxcywh")
                weight = 2 - cxcywh[:, 2] * cxcywh[:, 3] / image_size**2
                sig_target = (offset + (scale - 1) / 2) / scale  # the sigmoid that hits the centre
                twh = torch.log(cxcywh[:, 2:].clamp(min=1e-6) / anchor_wh)
                xy_loss = F.binary_cross_entropy_with_logits(
                    selected[:, :2], sig_target.clamp(0, 1), reduction="none"
                ).sum(1)
                wh_loss = (selected[:, 2:4] - twh).pow(2).sum(1)
                loss_box = loss_box + (weight * (xy_loss + wh_loss)).sum()
            if config.obj_target == "iou":  # YOLOv5: how well this prediction already fits
                value = iou.detach().clamp(min=0).to(obj_target.dtype)
            else:
                value = torch.ones_like(iou, dtype=obj_target.dtype)
            # two boxes on one slot: the larger target wins (index_put would pick either)
            slot = torch.arange(obj_target.numel(), device=device).view(obj_target.shape)[
                tuple(idx)
            ]
            obj_target.view(-1).scatter_reduce_(0, slot, value, reduce="amax")
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
