"""YOLOv7's label assignment and loss, written from the paper and the authors' description.

Assignment of the **lead head** (the P5 models ``tiny`` and ``base`` have only this head):

1. **Candidates** (YOLOv5's rule, three cells per object and level): at each level, an anchor is a
   candidate for an object when their width and height ratios are within ``anchor_t`` (4); the
   object's centre cell and the two neighbouring cells nearest to the centre (the box centre can
   reach them, since ``xy = 2 sigmoid - 0.5`` spans -0.5..1.5 cells) predict it.
2. **SimOTA** (YOLOX, used by YOLOv7): per image, every candidate prediction gets a cost for every
   object, ``cost = BCE(sqrt(obj * cls), one-hot) + 3 * -log(IoU)``; object ``g`` takes its
   ``k_g`` cheapest candidates, ``k_g = max(1, floor(sum of its 10 best IoUs))`` ("dynamic k");
   a prediction claimed by several objects keeps the cheapest one.

**Coarse-to-fine, lead guided** (the authors' ``ComputeLossAuxOTA``, used when the model has an
auxiliary head: ``--aux-head``, base variant only; YOLOv7-tiny and the authors' P5 models have none):

3. The same SimOTA runs a second time on a **wider candidate set**, the object's centre cell and
   all four neighbours (``aux_offset`` 1.0) with dynamic k from the **20** best IoUs: these are the
   "coarse" labels. Both assignments are computed from the **lead head's** predictions ("lead
   guided"): the auxiliary head's own outputs never choose its labels.
4. The lead head learns from the fine labels, the auxiliary head from the coarse ones, its three
   terms weighted 0.25: more positives for the earlier layers (higher recall), while the lead
   head's precise labels stay in charge of what the deployed model outputs.

Loss (the authors' ``ComputeLossOTA``): ``box = 1 - CIoU`` of the matched predictions; objectness is
BCE against the (detached) IoU on matched cells and 0 elsewhere, weighted (4, 1, 0.4) over P3..P5;
class BCE on matched predictions. Gains follow ``hyp.scratch.tiny`` / ``hyp.scratch.p5``, scaled
like the authors' ``train.py`` by classes / 80 and (image size / 640) ** 2; the total is multiplied
by the batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from detseg.boxes import box_convert, box_iou, neighbour_cells

# hyp.scratch.tiny.yaml / hyp.scratch.p5.yaml gains (before the scaling in ``LossConfig.scaled``)
GAINS = {
    "tiny": {"box": 0.05, "cls": 0.5, "obj": 1.0},
    "base": {"box": 0.05, "cls": 0.3, "obj": 0.7},
}
LEVEL_BALANCE = (4.0, 1.0, 0.4)


@dataclass
class LossConfig:
    """Loss weights and assignment settings (defaults: the authors' P5 hyper-parameters)."""

    box: float = 0.05
    cls: float = 0.5
    obj: float = 1.0
    anchor_t: float = 4.0
    top_k: int = 10
    iou_cost: float = 3.0
    offset: float = 0.5  # lead (fine): centre cell + the 2 nearest neighbours
    aux_offset: float = 1.0  # auxiliary (coarse): centre cell + all 4 neighbours
    aux_top_k: int = 20
    aux_weight: float = 0.25

    @classmethod
    def scaled(cls, variant: str, num_classes: int, image_size: int) -> LossConfig:
        """The authors' scaling: ``cls * C / 80``, ``obj * (size / 640) ** 2`` (3 levels)."""
        gains = GAINS[variant]
        return cls(
            box=gains["box"],
            cls=gains["cls"] * num_classes / 80,
            obj=gains["obj"] * (image_size / 640) ** 2,
        )


def complete_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Element-wise CIoU (Zheng et al. 2020) of xyxy boxes: IoU - centre distance^2 / enclosing
    diagonal^2 - alpha * v, with v the aspect-ratio term. Shapes [N, 4], [N, 4] -> [N]."""
    x1 = torch.maximum(boxes1[:, 0], boxes2[:, 0])
    y1 = torch.maximum(boxes1[:, 1], boxes2[:, 1])
    x2 = torch.minimum(boxes1[:, 2], boxes2[:, 2])
    y2 = torch.minimum(boxes1[:, 3], boxes2[:, 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    w1, h1 = boxes1[:, 2] - boxes1[:, 0], boxes1[:, 3] - boxes1[:, 1] + eps
    w2, h2 = boxes2[:, 2] - boxes2[:, 0], boxes2[:, 3] - boxes2[:, 1] + eps
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.maximum(boxes1[:, 2], boxes2[:, 2]) - torch.minimum(boxes1[:, 0], boxes2[:, 0])
    ch = torch.maximum(boxes1[:, 3], boxes2[:, 3]) - torch.minimum(boxes1[:, 1], boxes2[:, 1])
    diagonal = cw**2 + ch**2 + eps
    centre = ((boxes2[:, 0] + boxes2[:, 2] - boxes1[:, 0] - boxes1[:, 2]) ** 2
              + (boxes2[:, 1] + boxes2[:, 3] - boxes1[:, 1] - boxes1[:, 3]) ** 2) / 4  # fmt: skip
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre / diagonal + v * alpha)


def split_levels(raw: list[Tensor], num_anchors: int) -> list[Tensor]:
    """[N, A * (5 + C), H, W] -> [N, A, H, W, 5 + C] per level (a view, values unchanged)."""
    out = []
    for x in raw:
        n, channels, h, w = x.shape
        out.append(x.view(n, num_anchors, channels // num_anchors, h, w).permute(0, 1, 3, 4, 2))
    return out


@dataclass
class Candidates:
    """Candidate predictions of one level: index tensors [K] and the anchor (grid units) [K, 2]."""

    image: Tensor
    anchor: Tensor
    row: Tensor
    col: Tensor
    target: Tensor
    anchor_wh: Tensor


def find_candidates(
    targets: Tensor,
    anchors: Tensor,
    stride: float,
    grid_size: tuple[int, int],
    anchor_t: float = 4.0,
    offset: float = 0.5,
) -> Candidates:
    """Step 1 of the assignment on one level.

    Args:
        targets: [M, 6] ``(image index, class, cx, cy, w, h)`` in input pixels.
        anchors: [A, 2] anchor (w, h) in input pixels.
        stride: input pixels per cell.
        grid_size: (H, W) of the level's map.
        anchor_t: max ratio between object and anchor sides.
        offset: 0.5 gives the centre cell + the 2 nearest neighbours.
    Returns:
        :class:`Candidates`; ``target`` indexes rows of ``targets``.
    """
    height, width = grid_size
    anchor_grid = anchors / stride  # [A, 2]
    device = targets.device
    empty = torch.zeros(0, dtype=torch.long, device=device)
    if len(targets) == 0:
        return Candidates(empty, empty, empty, empty, empty, torch.zeros(0, 2, device=device))
    centres = targets[:, 2:4] / stride  # [M, 2] (x, y) in cells
    sizes = targets[:, 4:6] / stride
    ratio = sizes[None] / anchor_grid[:, None]  # [A, M, 2]
    fits = torch.maximum(ratio, 1 / ratio).max(dim=2).values < anchor_t  # [A, M]
    anchor_index, target_index = fits.nonzero(as_tuple=True)
    k_index, col, row = neighbour_cells(centres[target_index], (height, width), offset)
    a = anchor_index[k_index]
    t = target_index[k_index]
    return Candidates(targets[t, 0].long(), a, row, col, t, anchor_grid[a])


def decode_candidates(pred: Tensor, cand: Candidates, stride: float) -> Tensor:
    """Predicted boxes (xyxy, input pixels) of candidate cells; ``pred`` [N, A, H, W, 5 + C]."""
    p = pred[cand.image, cand.anchor, cand.row, cand.col]  # [K, 5 + C]
    xy = (p[:, :2].sigmoid() * 2 - 0.5 + torch.stack((cand.col, cand.row), 1)) * stride
    wh = (p[:, 2:4].sigmoid() * 2) ** 2 * cand.anchor_wh * stride
    return box_convert(torch.cat((xy, wh), 1), "cxcywh", "xyxy")


def simota_assign(
    preds: list[Tensor],
    targets: Tensor,
    anchors: Tensor,
    strides: tuple[int, ...],
    num_classes: int,
    config: LossConfig,
    *,
    coarse: bool = False,
) -> list[Candidates]:
    """Steps 1 and 2: the matched predictions per level (``target`` = the matched object).

    Args:
        preds: per level [N, A, H, W, 5 + C] raw outputs of the **lead** head (they price the
            candidates in both modes).
        targets: [M, 6] ``(image index, class, cx, cy, w, h)`` in input pixels.
        anchors: [L, A, 2] in input pixels.
        coarse: the auxiliary head's labels (step 3): ``config.aux_offset`` candidates and dynamic
            k from the ``config.aux_top_k`` best IoUs, instead of ``offset`` / ``top_k``.
    """
    offset = config.aux_offset if coarse else config.offset
    top_k = config.aux_top_k if coarse else config.top_k
    per_level = [
        find_candidates(
            targets, anchors[level], strides[level], tuple(p.shape[2:4]), config.anchor_t, offset
        )
        for level, p in enumerate(preds)
    ]
    matched: list[list[Candidates]] = [[] for _ in preds]
    for image in targets[:, 0].unique().long().tolist():
        gt_index = (targets[:, 0] == image).nonzero(as_tuple=True)[0]  # rows of targets
        pieces, boxes, scores = [], [], []
        for level, (pred, cand) in enumerate(zip(preds, per_level)):
            keep = cand.image == image
            sub = Candidates(*(getattr(cand, f)[keep] for f in Candidates.__dataclass_fields__))
            pieces.append(sub)
            with torch.no_grad():
                boxes.append(decode_candidates(pred, sub, strides[level]))
                p = pred[sub.image, sub.anchor, sub.row, sub.col]
                scores.append((p[:, 5:].sigmoid() * p[:, 4:5].sigmoid()).sqrt())
        pred_boxes = torch.cat(boxes)  # [K, 4]
        if len(pred_boxes) == 0:
            continue
        with torch.no_grad():
            gt_boxes = box_convert(targets[gt_index, 2:6], "cxcywh", "xyxy")
            iou = box_iou(gt_boxes, pred_boxes)  # [G, K]
            top = iou.topk(min(top_k, iou.shape[1]), dim=1).values
            dynamic_k = top.sum(1).int().clamp(min=1)  # [G]
            cls_scores = torch.cat(scores).clamp(1e-6, 1 - 1e-6)  # [K, C]
            one_hot = F.one_hot(targets[gt_index, 1].long(), num_classes).float()  # [G, C]
            cls_cost = F.binary_cross_entropy(
                cls_scores[None].expand(len(gt_index), -1, -1),
                one_hot[:, None].expand(-1, len(pred_boxes), -1),
                reduction="none",
            ).sum(-1)  # [G, K]
            cost = cls_cost + config.iou_cost * -torch.log(iou + 1e-8)
            matching = torch.zeros_like(cost, dtype=torch.bool)
            for g in range(len(gt_index)):
                k = min(int(dynamic_k[g]), cost.shape[1])
                matching[g, cost[g].topk(k, largest=False).indices] = True
            claimed = matching.sum(0) > 1
            if claimed.any():  # a prediction claimed twice keeps its cheapest object
                best = cost[:, claimed].argmin(0)
                matching[:, claimed] = False
                matching[best, claimed.nonzero(as_tuple=True)[0]] = True
            chosen = matching.any(0)
            owner = gt_index[matching[:, chosen].float().argmax(0)]  # [K_matched] target rows
        start = 0
        owner_start = 0
        for level, sub in enumerate(pieces):
            size = len(sub.image)
            sel = chosen[start : start + size]
            count = int(sel.sum())
            if count:
                fields = [getattr(sub, f)[sel] for f in Candidates.__dataclass_fields__]
                fields[4] = owner[owner_start : owner_start + count]
                matched[level].append(Candidates(*fields))
            owner_start += count
            start += size
    out = []
    for level, parts in enumerate(matched):
        if parts:
            out.append(
                Candidates(
                    *(
                        torch.cat([getattr(p, f) for p in parts])
                        for f in Candidates.__dataclass_fields__
                    )
                )
            )
        else:
            out.append(
                Candidates(
                    *(getattr(per_level[level], f)[:0] for f in Candidates.__dataclass_fields__)
                )
            )
    return out


class YOLOv7Loss:
    """``loss(raw_outputs, targets) -> {"box", "obj", "cls"}`` (each already weighted).

    With 2 L raw maps (lead head, then auxiliary head: a model built with ``aux_head=True``) the
    auxiliary maps learn from the coarse lead-guided labels, weighted ``config.aux_weight``.

    Args:
        anchors: [L, A, 2] anchors in input pixels (``model.head.anchors``).
        strides: (8, 16, 32).
        num_classes: C.
        config: :class:`LossConfig`.
    """

    def __init__(
        self, anchors: Tensor, strides: tuple[int, ...], num_classes: int, config: LossConfig
    ):
        self.anchors = anchors
        self.strides = strides
        self.num_classes = num_classes
        self.config = config

    def level_terms(
        self, pred: Tensor, m: Candidates, level: int, targets: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Unweighted (box, obj, cls) of one level's map [N, A, H, W, 5 + C] given its matches."""
        zero = pred.sum() * 0
        box_loss, cls_loss = zero, zero
        target_obj = torch.zeros_like(pred[..., 4])
        if len(m.image):
            stride = self.strides[level]
            p = pred[m.image, m.anchor, m.row, m.col]  # [K, 5 + C]
            xy = p[:, :2].sigmoid() * 2 - 0.5
            wh = (p[:, 2:4].sigmoid() * 2) ** 2 * m.anchor_wh
            pred_box = box_convert(torch.cat((xy, wh), 1), "cxcywh", "xyxy")
            cell = torch.stack((m.col, m.row), 1).to(p.dtype)
            gt = targets[m.target]
            gt_box = box_convert(
                torch.cat((gt[:, 2:4] / stride - cell, gt[:, 4:6] / stride), 1), "cxcywh", "xyxy"
            )
            ciou = complete_iou(pred_box, gt_box)
            box_loss = (1.0 - ciou).mean()
            target_obj[m.image, m.anchor, m.row, m.col] = (
                ciou.detach().clamp(0).to(target_obj.dtype)
            )
            if self.num_classes > 1:
                one_hot = F.one_hot(gt[:, 1].long(), self.num_classes).to(p.dtype)
                cls_loss = F.binary_cross_entropy_with_logits(p[:, 5:], one_hot)
        obj_loss = LEVEL_BALANCE[level] * F.binary_cross_entropy_with_logits(
            pred[..., 4], target_obj
        )
        return box_loss, obj_loss, cls_loss

    def __call__(self, raw: list[Tensor], targets: Tensor) -> dict[str, Tensor]:
        """raw: per level [N, A * (5 + C), H, W] (L maps, or 2 L with the auxiliary head's);
        targets [M, 6] ``(image, class, cx, cy, w, h)``."""
        levels = len(self.strides)
        if len(raw) not in (levels, 2 * levels):
            raise ValueError(f"expected {levels} or {2 * levels} raw maps, got {len(raw)}")
        anchors = self.anchors.to(raw[0].device)
        preds = split_levels(raw, anchors.shape[1])
        lead, aux = preds[:levels], preds[levels:]
        batch = lead[0].shape[0]
        args = (lead, targets, anchors, self.strides, self.num_classes, self.config)
        heads = [(lead, simota_assign(*args), 1.0)]
        if aux:  # coarse labels, chosen from the lead head's predictions
            heads.append((aux, simota_assign(*args, coarse=True), self.config.aux_weight))
        totals = [lead[0].sum() * 0] * 3
        for maps, matched, weight in heads:
            for level, (pred, m) in enumerate(zip(maps, matched)):
                terms = self.level_terms(pred, m, level, targets)
                totals = [total + weight * term for total, term in zip(totals, terms)]
        box_loss, obj_loss, cls_loss = totals
        return {
            "box": box_loss * self.config.box * batch,
            "obj": obj_loss * self.config.obj * batch,
            "cls": cls_loss * self.config.cls * batch,
        }
