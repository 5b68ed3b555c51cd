"""COCO-style detection and instance-segmentation evaluation (AP, AR, per-class AP, PR curves).

Written here from the rules of the COCO evaluation (see :mod:`detseg.metrics.coco_match`), and tested
to give the same numbers as ``pycocotools.cocoeval.COCOeval`` (difference <= 1e-9) on randomised
cases; only ``pycocotools.mask`` is used, to turn polygons into RLE and for mask IoU.

Usage::

    result = evaluate_coco("instances_val.json", "detections.json", iou_type="bbox")
    print(result.summary_table())
    result.stats["AP"], result.per_class_ap[3]["AP50"]

Inputs are a COCO ground-truth dict (``images``, ``annotations``, ``categories``) and a list of
results as ``COCO.loadRes`` takes them: ``{"image_id", "category_id", "score", "bbox": [x, y, w, h]}``
or with ``"segmentation"`` (RLE) instead of / besides the box. Either may be given as a file path.

Two pycocotools behaviours are kept on purpose, so the numbers stay identical:
a ground-truth object with ``id == 0`` can be matched but the detection then counts as a false
positive; and the size class of an object comes from its ``area`` field. One is changed: every
summary line at "maxDets=100" uses the largest of ``max_dets`` (pycocotools hard-codes 100 for AP).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detseg.metrics.coco_io import (
    CocoArrays,
    prepare_arrays,
    read_detections,
    read_ground_truth,
)
from detseg.metrics.coco_match import accumulate, box_iou_xywh, match_all

STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1, endpoint=True)
COCO_AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0**2, 1e5**2),
    "small": (0.0**2, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
# (is_ap, iou_threshold or None = mean over all, area label, index into max_dets) per stat.
_STAT_SPECS = (
    (True, None, "all", 2),
    (True, 0.5, "all", 2),
    (True, 0.75, "all", 2),
    (True, None, "small", 2),
    (True, None, "medium", 2),
    (True, None, "large", 2),
    (False, None, "all", 0),
    (False, None, "all", 1),
    (False, None, "all", 2),
    (False, None, "small", 2),
    (False, None, "medium", 2),
    (False, None, "large", 2),
)


@dataclass
class CocoResult:
    """What :func:`evaluate_coco` returns.

    Attributes:
        stats: the 12 COCO numbers by name, in pycocotools' order (:data:`STAT_NAMES`); -1 where
            there is no ground truth for that setting.
        precision: float64 [T, R, K, A, M] interpolated precision (``COCOeval.eval['precision']``),
            -1 for a category / area without ground truth.
        recall: float64 [T, K, A, M] final recall (``COCOeval.eval['recall']``).
        per_class_ap: ``{category_id: {"AP": ..., "AP50": ...}}`` at area "all" and the largest
            max_dets; -1 for a category without ground truth.
        iou_thresholds: [T]; recall_thresholds: [R]; category_ids: K ids, sorted.
        area_ranges: label -> (min, max) area, A of them, in order; max_dets: M limits, increasing.
        iou_type: "bbox" or "segm".
    """

    stats: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    per_class_ap: dict[Any, dict[str, float]]
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    category_ids: list[Any]
    area_ranges: dict[str, tuple[float, float]]
    max_dets: list[int]
    iou_type: str

    def summary_table(self) -> str:
        """The 12 lines pycocotools' ``summarize()`` prints, same format."""
        lines = []
        for name, (is_ap, iou, area, m) in zip(STAT_NAMES, _STAT_SPECS):
            title, kind = ("Average Precision", "(AP)") if is_ap else ("Average Recall", "(AR)")
            iou_text = (
                f"{self.iou_thresholds[0]:0.2f}:{self.iou_thresholds[-1]:0.2f}"
                if iou is None
                else f"{iou:0.2f}"
            )
            lines.append(
                f" {title:<18} {kind} @[ IoU={iou_text:<9} | area={area:>6s} | "
                f"maxDets={self.max_dets[m]:>3d} ] = {self.stats[name]:0.3f}"
            )
        return "\n".join(lines)

    def pr_curve(
        self,
        category_id: Any,
        iou_threshold: float = 0.5,
        area: str = "all",
        max_dets: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Interpolated precision-recall curve of one category.

        Returns:
            ``(recall [R], precision [R])``: the recall thresholds and the precision there
            (0 past the highest recall reached; all -1 when the category has no ground truth).
        """
        k = self.category_ids.index(category_id)
        t = int(np.flatnonzero(np.isclose(self.iou_thresholds, iou_threshold))[0])
        a = list(self.area_ranges).index(area)
        m = len(self.max_dets) - 1 if max_dets is None else self.max_dets.index(max_dets)
        return self.recall_thresholds.copy(), self.precision[t, :, k, a, m].copy()

    def pr_curves(self, iou_threshold: float = 0.5) -> dict[Any, tuple[np.ndarray, np.ndarray]]:
        """:meth:`pr_curve` for every category: ``{category_id: (recall [R], precision [R])}``."""
        return {cat: self.pr_curve(cat, iou_threshold) for cat in self.category_ids}

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable summary: stats, per-class AP and the parameters."""
        return {
            "iou_type": self.iou_type,
            "stats": {name: float(value) for name, value in self.stats.items()},
            "per_class": {
                str(cat): {key: float(v) for key, v in values.items()}
                for cat, values in self.per_class_ap.items()
            },
            "iou_thresholds": [float(t) for t in self.iou_thresholds],
            "area_ranges": {k: [float(lo), float(hi)] for k, (lo, hi) in self.area_ranges.items()},
            "max_dets": list(self.max_dets),
        }


def _mean_valid(values: np.ndarray) -> float:
    """COCO's mean over entries > -1, or -1 when there are none."""
    valid = values[values > -1]
    return -1.0 if len(valid) == 0 else float(np.mean(valid))


def summarize(
    precision: np.ndarray,
    recall: np.ndarray,
    iou_thresholds: np.ndarray,
    area_labels: Sequence[str],
    max_dets: Sequence[int],
) -> dict[str, float]:
    """The 12 COCO stats from the precision / recall tables (``COCOeval.summarize``)."""
    stats = {}
    for name, (is_ap, iou, area, m) in zip(STAT_NAMES, _STAT_SPECS):
        area_index = [i for i, label in enumerate(area_labels) if label == area]
        max_index = [i for i, limit in enumerate(max_dets) if limit == max_dets[m]]
        values = precision if is_ap else recall
        if iou is not None:
            values = values[np.where(iou == iou_thresholds)[0]]
        values = (
            values[:, :, :, area_index, max_index] if is_ap else values[:, :, area_index, max_index]
        )
        stats[name] = _mean_valid(values)
    return stats


def _group_ious_fn(arrays: CocoArrays, iou_type: str, kept: np.ndarray, gt_order: np.ndarray):
    """IoU of padded groups: ``(dt_index [B, D], gt_index [B, G], crowd [B, G]) -> [B, D, G]``."""

    def box_group_ious(dt_index, gt_index, crowd):
        dt_boxes = arrays.dt_boxes[kept[dt_index]]  # [B, D, 4]; padding reads a dummy row
        gt_boxes = arrays.gt_boxes[gt_order[gt_index]]  # [B, G, 4]
        ious = box_iou_xywh(dt_boxes, gt_boxes, crowd)
        valid = (dt_index >= 0)[:, :, None] & (gt_index >= 0)[:, None, :]
        return np.where(valid, ious, -1.0)

    def mask_group_ious(dt_index, gt_index, crowd):
        from pycocotools import mask as mask_utils

        ious = np.full(dt_index.shape + gt_index.shape[1:], -1.0)
        for b in range(len(dt_index)):
            dts = [arrays.dt_rles[kept[i]] for i in dt_index[b] if i >= 0]
            gts = [arrays.gt_rles[gt_order[i]] for i in gt_index[b] if i >= 0]
            ious[b, : len(dts), : len(gts)] = mask_utils.iou(dts, gts, list(crowd[b, : len(gts)]))
        return ious

    return box_group_ious if iou_type == "bbox" else mask_group_ious


def evaluate_arrays(
    arrays: CocoArrays,
    iou_type: str = "bbox",
    *,
    iou_thresholds: Sequence[float] | None = None,
    max_dets: Sequence[int] = (1, 10, 100),
    area_ranges: Mapping[str, tuple[float, float]] | None = None,
) -> CocoResult:
    """Evaluate already-checked :class:`~detseg.metrics.coco_io.CocoArrays` (see :func:`evaluate_coco`)."""
    thresholds = np.asarray(
        COCO_IOU_THRESHOLDS if iou_thresholds is None else iou_thresholds, dtype=np.float64
    )
    ranges = dict(COCO_AREA_RANGES if area_ranges is None else area_ranges)
    limits = sorted(int(m) for m in max_dets)
    if len(limits) != 3:
        raise ValueError(f"max_dets needs 3 limits (as COCO's 1, 10, 100), got {list(max_dets)}")
    low = np.array([lo for lo, _ in ranges.values()], dtype=np.float64)
    high = np.array([hi for _, hi in ranges.values()], dtype=np.float64)
    num_cats = len(arrays.category_ids)

    # Detections: score order inside each (image, category) group, at most max(max_dets) kept.
    dt_group = arrays.dt_image * num_cats + arrays.dt_category
    order = np.lexsort((np.arange(len(dt_group)), -arrays.dt_score, dt_group))
    sorted_group = dt_group[order]
    if len(order):
        starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
        counts = np.diff(np.r_[starts, len(order)])
        rank = np.arange(len(order)) - np.repeat(starts, counts)
    else:
        rank = np.zeros(0, dtype=np.int64)
    keep = rank < limits[-1]
    kept, kept_rank, kept_group = order[keep], rank[keep], sorted_group[keep]

    # Ground truth: file order inside each group; ignored = crowd or area outside the range.
    gt_group = arrays.gt_image * num_cats + arrays.gt_category
    gt_order = np.argsort(gt_group, kind="stable")
    area = arrays.gt_area[:, None]
    gt_ignore = arrays.gt_crowd[:, None] | (area < low) | (area > high)  # [G, A]

    matched, matched_ignored = match_all(
        kept_group,
        gt_group[gt_order],
        gt_ignore[gt_order],
        arrays.gt_crowd[gt_order],
        arrays.gt_id_nonzero[gt_order],
        thresholds,
        _group_ious_fn(arrays, iou_type, kept, gt_order),
    )
    dt_area = arrays.dt_area[kept][:, None]
    dt_outside = ((dt_area < low) | (dt_area > high))[:, :, None]  # [N, A, 1]
    ignored = matched_ignored | (~matched & dt_outside)
    true_positive = matched & ~ignored
    false_positive = ~matched & ~ignored

    num_positives = np.zeros((num_cats, len(ranges)), dtype=np.int64)
    np.add.at(num_positives, arrays.gt_category, (~gt_ignore).astype(np.int64))
    precision, recall = accumulate(
        arrays.dt_category[kept],
        arrays.dt_image[kept],
        kept_rank,
        arrays.dt_score[kept],
        true_positive,
        false_positive,
        num_positives,
        COCO_RECALL_THRESHOLDS,
        limits,
    )
    labels = list(ranges)
    stats = summarize(precision, recall, thresholds, labels, limits)
    area_all = labels.index("all") if "all" in labels else 0
    at_50 = np.where(thresholds == 0.5)[0]
    per_class = {
        cat: {
            "AP": _mean_valid(precision[:, :, k, area_all, -1]),
            "AP50": _mean_valid(precision[at_50, :, k, area_all, -1]),
        }
        for k, cat in enumerate(arrays.category_ids)
    }
    return CocoResult(
        stats=stats,
        precision=precision,
        recall=recall,
        per_class_ap=per_class,
        iou_thresholds=thresholds,
        recall_thresholds=COCO_RECALL_THRESHOLDS.copy(),
        category_ids=list(arrays.category_ids),
        area_ranges={k: (float(lo), float(hi)) for k, (lo, hi) in ranges.items()},
        max_dets=limits,
        iou_type=iou_type,
    )


def evaluate_coco(
    gt: dict | str | Path,
    detections: list[dict] | str | Path,
    iou_type: str = "bbox",
    *,
    iou_thresholds: Sequence[float] | None = None,
    max_dets: Sequence[int] = (1, 10, 100),
    area_ranges: Mapping[str, tuple[float, float]] | None = None,
) -> CocoResult:
    """COCO evaluation of detections against ground truth, same numbers as pycocotools' COCOeval.

    Args:
        gt: COCO ground-truth dict, or the path of its JSON file.
        detections: list of result dicts (``image_id``, ``category_id``, ``score`` and ``bbox``
            [x, y, w, h] and / or ``segmentation`` as RLE), or the path of a JSON file holding it.
        iou_type: ``"bbox"`` (box IoU) or ``"segm"`` (mask IoU).
        iou_thresholds: default COCO's 0.50:0.05:0.95 (T = 10).
        max_dets: three detection limits per image, default (1, 10, 100).
        area_ranges: ordered ``{label: (min_area, max_area)}``, default :data:`COCO_AREA_RANGES`;
            both ends inclusive, compared with the objects' ``area`` field.
    Returns:
        :class:`CocoResult`; nothing is printed.
    Raises:
        UserError: a missing / malformed file, or an entry that is not valid (names file and entry).
    """
    gt_dict, gt_path = read_ground_truth(gt)
    dets, dt_path = read_detections(detections)
    arrays = prepare_arrays(gt_dict, dets, iou_type, gt_path=gt_path, dt_path=dt_path)
    return evaluate_arrays(
        arrays,
        iou_type,
        iou_thresholds=iou_thresholds,
        max_dets=max_dets,
        area_ranges=area_ranges,
    )
