"""R-CNN's training set: region proposals labelled by their IoU with the ground truth.

For every training image (the seed notebook's positives and negatives, R-CNN's part negatives and
regression set):

- **positive** (label 1): a proposal with IoU >= ``positive_iou`` (0.7) with some raccoon, at most
  ``max_positive`` per image; the ground-truth boxes themselves are added as positives;
- **negative** (label 0): a proposal whose IoU with every raccoon is < ``negative_iou`` (0.05), at
  most ``max_negative`` per image;
- **part negative** (label 0, R-CNN's rule, not the seed's): ``negative_iou`` <= IoU <
  ``part_negative_iou`` (0.3), at most ``max_part_negative`` per image (default 10; 0 gives the
  seed's rules, :data:`SEED_RULES`): parts of a raccoon and boxes much larger than it, which a
  classifier trained only on IoU < 0.05 negatives scores as raccoons (mAP@0.5 with either rule
  in the folder README);
- **regression only** (label -1): ``regression_iou`` (0.6) <= IoU < ``positive_iou``, at most
  ``max_regression``; the classifier never sees them, the box-regression head trains on them
  together with the positives (R-CNN trains its regressor on proposals with IoU >= 0.6).

Every sample keeps its proposal box, the ground-truth box it overlaps most and that IoU, so that
box-regression targets can be computed later. Crops are resized to ``crop_size`` squares (warped,
as R-CNN does) and stored as uint8.

The file written by ``build_dataset.py`` is one ``.npz``: ``crops`` uint8 [N, S, S, 3], ``labels``
int64 [N], ``boxes`` / ``gt_boxes`` float32 [N, 4], ``ious`` float32 [N], ``image_index`` int64 [N],
``split`` (0 train, 1 val) int64 [N].
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detseg.boxes import box_iou


@dataclass(frozen=True)
class LabelRules:
    """IoU thresholds and per-image caps (defaults: the seed notebook plus R-CNN's part negatives
    and regression set; :data:`SEED_RULES` drops the part negatives)."""

    positive_iou: float = 0.7
    negative_iou: float = 0.05
    regression_iou: float = 0.6
    max_positive: int = 30
    max_negative: int = 10
    max_regression: int = 10
    part_negative_iou: float = 0.3
    max_part_negative: int = 10
    include_gt: bool = True


SEED_RULES = LabelRules(max_part_negative=0)  # the seed notebook's: no part negatives


def crop_boxes(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Warp each box of ``image`` to a ``size`` x ``size`` crop (area interpolation).

    Args:
        image: RGB uint8 [H, W, 3]. boxes: float [N, 4] xyxy pixels (clipped to the image here).
    Returns:
        uint8 [N, size, size, 3].
    """
    import cv2

    height, width = image.shape[:2]
    out = np.empty((len(boxes), size, size, 3), np.uint8)
    for n, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float64)):
        left, top = (
            int(np.clip(np.floor(x1), 0, width - 1)),
            int(np.clip(np.floor(y1), 0, height - 1)),
        )
        right = int(np.clip(np.ceil(x2), left + 1, width))
        bottom = int(np.clip(np.ceil(y2), top + 1, height))
        out[n] = cv2.resize(
            image[top:bottom, left:right], (size, size), interpolation=cv2.INTER_AREA
        )
    return out


def label_proposals(
    proposals: np.ndarray,
    gt_boxes: np.ndarray,
    rules: LabelRules,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Pick and label the samples of one image (see the module docstring).

    Args:
        proposals: float [P, 4] xyxy. gt_boxes: float [G, 4] (G >= 1).
    Returns:
        ``{"boxes" [N, 4], "labels" [N], "gt_boxes" [N, 4], "ious" [N]}``, positives first.
    """
    proposals = np.asarray(proposals, np.float32).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    iou = box_iou(proposals, gt_boxes) if len(proposals) else np.zeros((0, len(gt_boxes)))
    best = iou.max(axis=1) if len(gt_boxes) else np.zeros(len(proposals))
    match = iou.argmax(axis=1) if len(gt_boxes) else np.zeros(len(proposals), np.int64)

    def pick(mask: np.ndarray, cap: int) -> np.ndarray:
        index = np.flatnonzero(mask)
        return rng.permutation(index)[:cap] if len(index) > cap else index

    groups = [
        (pick(best >= rules.positive_iou, rules.max_positive), 1),
        (pick(best < rules.negative_iou, rules.max_negative), 0),
        (
            pick(
                (best >= rules.negative_iou) & (best < rules.part_negative_iou),
                rules.max_part_negative,
            ),
            0,
        ),
        (
            pick(
                (best >= rules.regression_iou) & (best < rules.positive_iou), rules.max_regression
            ),
            -1,
        ),
    ]
    boxes, labels, matched, ious = [], [], [], []
    if rules.include_gt and len(gt_boxes):
        boxes.append(gt_boxes)
        labels.append(np.ones(len(gt_boxes), np.int64))
        matched.append(gt_boxes)
        ious.append(np.ones(len(gt_boxes), np.float32))
    for index, label in groups:
        boxes.append(proposals[index])
        labels.append(np.full(len(index), label, np.int64))
        matched.append(gt_boxes[match[index]] if len(gt_boxes) else proposals[index])
        ious.append(best[index].astype(np.float32))
    return {
        "boxes": np.concatenate(boxes).reshape(-1, 4).astype(np.float32),
        "labels": np.concatenate(labels),
        "gt_boxes": np.concatenate(matched).reshape(-1, 4).astype(np.float32),
        "ious": np.concatenate(ious).astype(np.float32),
    }


def samples_of_image(
    image: np.ndarray,
    proposals: np.ndarray,
    gt_boxes: np.ndarray,
    rules: LabelRules,
    crop_size: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """:func:`label_proposals` plus the crops (``"crops"`` uint8 [N, S, S, 3])."""
    samples = label_proposals(proposals, gt_boxes, rules, np.random.default_rng(seed))
    samples["crops"] = crop_boxes(image, samples["boxes"], crop_size)
    return samples


def jittered_boxes(
    gt_boxes: np.ndarray, image_size: tuple[int, int], rng: np.random.Generator, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random boxes for a patch classifier without proposals: ``count`` shifted / scaled copies of
    the ground truth (label 1 when IoU >= 0.7) and ``count`` random boxes (label 0 when IoU < 0.3);
    boxes in between are dropped. Returns ``(boxes float32 [N, 4], labels int64 [N])``."""
    height, width = image_size
    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    source = gt[rng.integers(len(gt), size=count)]
    centre = (source[:, :2] + source[:, 2:]) / 2
    size = source[:, 2:] - source[:, :2]
    centre = centre + rng.normal(0, 0.06, (count, 2)) * size
    size = size * np.exp(rng.normal(0, 0.1, (count, 2)))
    shifted = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    side = (
        rng.uniform(0.15, 0.8, (count, 1))
        * min(height, width)
        * np.exp(rng.normal(0, 0.3, (count, 2)))
    )
    corner = rng.uniform(0, 1, (count, 2)) * np.maximum([width, height] - side, 1)
    random = np.concatenate([corner, corner + side], axis=1)
    boxes = np.concatenate([shifted, random])
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    boxes = boxes[(boxes[:, 2] - boxes[:, 0] >= 8) & (boxes[:, 3] - boxes[:, 1] >= 8)]
    best = box_iou(boxes, gt).max(axis=1)
    labels = np.where(best >= 0.7, 1, np.where(best < 0.3, 0, -1))
    keep = labels >= 0
    return boxes[keep].astype(np.float32), labels[keep].astype(np.int64)


def save_npz(path: str | Path, arrays: dict[str, Any]) -> Path:
    """``np.savez_compressed`` into ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
    np.savez_compressed(temp, **arrays)
    os.replace(temp, path)
    return path


def rules_dict(rules: LabelRules) -> dict[str, Any]:
    return asdict(rules)
