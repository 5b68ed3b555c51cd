"""Pascal VOC detection AP (AP50), per class and mean, as the VOC devkit computes it.

Rules (VOC devkit ``VOCevaldet`` / the widely used ``voc_eval.py``):

- Per class, all detections of all images are sorted by score, highest first (stable: ties keep
  their input order).
- A detection is matched to the object of its class in its image with the highest IoU; it is a true
  positive when that IoU is *strictly greater* than the threshold (0.5) and the object was not
  matched before, a false positive otherwise (a second detection of the same object is a false
  positive). Objects marked ``difficult`` are left out: matching one makes the detection neither a
  true nor a false positive, and they do not count in the recall denominator.
- AP is the area under the precision-recall curve made monotone from the right
  (``use_07_metric=False``, VOC2010 and later), or the mean of the best precision at recall
  >= 0, 0.1, ..., 1.0 (``use_07_metric=True``, the 11-point VOC2007 metric).
- A class without any non-difficult object has AP NaN and is left out of the mean.

Boxes are xyxy floats in absolute pixels (ARCHITECTURE.md). The devkit treats coordinates as
inclusive integer pixels and adds 1 to widths and heights; ``plus_one=True`` does the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class VocResult:
    """What :func:`evaluate_voc` returns.

    Attributes:
        ap: class label -> AP (NaN when the class has no non-difficult object).
        mean_ap: mean of the non-NaN APs (NaN when there is none).
        recall, precision: class label -> float64 [D] curve over the class's detections in score
            order (before interpolation).
        num_positives: class label -> number of non-difficult objects.
    """

    ap: dict[int, float]
    mean_ap: float
    recall: dict[int, np.ndarray] = field(default_factory=dict)
    precision: dict[int, np.ndarray] = field(default_factory=dict)
    num_positives: dict[int, int] = field(default_factory=dict)


def voc_ap(recall: np.ndarray, precision: np.ndarray, *, use_07_metric: bool = False) -> float:
    """Average precision from a precision-recall curve.

    Args:
        recall: float [D], non-decreasing (detections in score order).
        precision: float [D].
        use_07_metric: 11-point interpolation (VOC2007) instead of all points (VOC2010+).
    Returns:
        AP in [0, 1].
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        points = []
        for level in np.linspace(0.0, 1.0, 11):
            reached = precision[recall >= level]
            points.append(reached.max() if reached.size else 0.0)
        return float(np.mean(points))
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope, monotone from the right
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])  # where recall changes
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _iou_xyxy(box: np.ndarray, boxes: np.ndarray, plus_one: bool) -> np.ndarray:
    """IoU of one box [4] with boxes [G, 4] (xyxy)."""
    offset = 1.0 if plus_one else 0.0
    width = np.maximum(
        np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]) + offset, 0
    )
    height = np.maximum(
        np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]) + offset, 0
    )
    inter = width * height
    area = (box[2] - box[0] + offset) * (box[3] - box[1] + offset)
    areas = (boxes[:, 2] - boxes[:, 0] + offset) * (boxes[:, 3] - boxes[:, 1] + offset)
    union = area + areas - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _as_array(value: Any, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype).reshape(shape)


def evaluate_voc(
    ground_truth: Sequence[Mapping[str, Any]],
    detections: Sequence[Mapping[str, Any]],
    *,
    iou_threshold: float = 0.5,
    use_07_metric: bool = False,
    plus_one: bool = False,
    classes: Sequence[int] | None = None,
) -> VocResult:
    """VOC AP per class and its mean.

    Args:
        ground_truth: per image ``{"boxes": [N, 4] xyxy, "labels": [N] int, "difficult": [N]
            bool (optional)}``; numpy arrays, lists or torch tensors.
        detections: per image, same order, ``{"boxes": [M, 4], "scores": [M], "labels": [M]}``.
        iou_threshold: a match needs IoU strictly greater than this.
        use_07_metric: 11-point AP (VOC2007) instead of all-point AP (VOC2010+).
        plus_one: devkit pixel convention (width = x2 - x1 + 1).
        classes: labels to evaluate; default every label seen in ground truth or detections.
    Returns:
        :class:`VocResult`.
    """
    if len(ground_truth) != len(detections):
        raise ValueError(
            f"{len(ground_truth)} ground-truth images, {len(detections)} detection images"
        )
    gt_boxes, gt_labels, gt_difficult = [], [], []
    for target in ground_truth:
        labels = _as_array(target["labels"], np.int64, (-1,))
        gt_labels.append(labels)
        gt_boxes.append(_as_array(target["boxes"], np.float64, (-1, 4)))
        difficult = target.get("difficult")
        gt_difficult.append(
            np.zeros(len(labels), bool) if difficult is None else _as_array(difficult, bool, (-1,))
        )
    det_image, det_boxes, det_scores, det_labels = [], [], [], []
    for index, output in enumerate(detections):
        labels = _as_array(output["labels"], np.int64, (-1,))
        det_labels.append(labels)
        det_boxes.append(_as_array(output["boxes"], np.float64, (-1, 4)))
        det_scores.append(_as_array(output["scores"], np.float64, (-1,)))
        det_image.append(np.full(len(labels), index, dtype=np.int64))
    all_det_labels = np.concatenate(det_labels) if det_labels else np.zeros(0, np.int64)
    all_det_image = np.concatenate(det_image) if det_image else np.zeros(0, np.int64)
    all_det_boxes = np.concatenate(det_boxes) if det_boxes else np.zeros((0, 4))
    all_det_scores = np.concatenate(det_scores) if det_scores else np.zeros(0)
    if classes is None:
        classes = sorted(set(np.concatenate([all_det_labels, *gt_labels]).tolist()))

    result = VocResult(ap={}, mean_ap=float("nan"))
    for label in classes:
        class_boxes = [boxes[labels == label] for boxes, labels in zip(gt_boxes, gt_labels)]
        class_difficult = [d[labels == label] for d, labels in zip(gt_difficult, gt_labels)]
        taken = [np.zeros(len(boxes), dtype=bool) for boxes in class_boxes]
        num_positives = int(sum((~d).sum() for d in class_difficult))
        mine = np.flatnonzero(all_det_labels == label)
        mine = mine[np.argsort(-all_det_scores[mine], kind="stable")]
        outcome = np.zeros(len(mine), dtype=np.int8)  # 1 TP, -1 FP, 0 ignored (difficult)
        for rank, det in enumerate(mine):
            image = all_det_image[det]
            boxes = class_boxes[image]
            if len(boxes) == 0:
                outcome[rank] = -1
                continue
            ious = _iou_xyxy(all_det_boxes[det], boxes, plus_one)
            best = int(np.argmax(ious))
            if ious[best] <= iou_threshold:
                outcome[rank] = -1
            elif class_difficult[image][best]:
                outcome[rank] = 0
            elif taken[image][best]:
                outcome[rank] = -1
            else:
                taken[image][best] = True
                outcome[rank] = 1
        kept = outcome[outcome != 0]
        true_pos = np.cumsum(kept == 1).astype(np.float64)
        false_pos = np.cumsum(kept == -1).astype(np.float64)
        recall = true_pos / num_positives if num_positives else np.full(len(kept), np.nan)
        precision = true_pos / np.maximum(true_pos + false_pos, np.finfo(np.float64).eps)
        result.recall[label], result.precision[label] = recall, precision
        result.num_positives[label] = num_positives
        result.ap[label] = (
            voc_ap(recall, precision, use_07_metric=use_07_metric)
            if num_positives
            else float("nan")
        )
    valid = [ap for ap in result.ap.values() if not np.isnan(ap)]
    result.mean_ap = float(np.mean(valid)) if valid else float("nan")
    return result
