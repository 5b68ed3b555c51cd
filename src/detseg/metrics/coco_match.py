"""The numeric core of COCO evaluation: IoU, greedy matching and the precision / recall tables.

Same rules as pycocotools ``COCOeval.evaluate`` / ``accumulate``, computed with numpy over many
(image, category) groups at once instead of one Python loop per detection and ground truth:

- Per (image, category), detections are sorted by score (stable, ties keep file order) and the
  first ``max(max_dets)`` are kept.
- Greedy matching, per IoU threshold and area range, in score order: a detection takes the
  still-free ground truth with the highest IoU >= threshold, preferring objects that are not ignored
  (ties go to the later object in file order, as in pycocotools). Crowd objects stay free (they can
  absorb any number of detections) and their IoU is intersection over the *detection* area.
- An object is ignored in an area range when it is a crowd or its ``area`` lies outside the range;
  an unmatched detection is ignored when its own area lies outside the range. Ignored detections are
  neither true nor false positives.
- Precision at 101 recall points uses the running maximum from the right (interpolated precision);
  -1 marks settings without any non-ignored ground truth, as in COCO.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# pycocotools never lets an IoU threshold reach 1 (``min(t, 1 - 1e-10)``).
_MAX_IOU_THRESHOLD = 1 - 1e-10


def box_iou_xywh(dt_boxes: np.ndarray, gt_boxes: np.ndarray, gt_crowd: np.ndarray) -> np.ndarray:
    """COCO box IoU with crowd handling, bit-identical to ``pycocotools.mask.iou`` on boxes.

    Args:
        dt_boxes: float64 [..., D, 4], xywh.
        gt_boxes: float64 [..., G, 4], xywh (same leading shape).
        gt_crowd: bool [..., G]; for a crowd object the union is the detection's area.
    Returns:
        float64 [..., D, G] IoU in [0, 1].
    """
    dt = dt_boxes[..., :, None, :]  # [..., D, 1, 4]
    gt = gt_boxes[..., None, :, :]  # [..., 1, G, 4]
    # Same operation order as maskApi.c bbIou, so that the doubles are identical.
    width = np.minimum(dt[..., 2] + dt[..., 0], gt[..., 2] + gt[..., 0]) - np.maximum(
        dt[..., 0], gt[..., 0]
    )
    height = np.minimum(dt[..., 3] + dt[..., 1], gt[..., 3] + gt[..., 1]) - np.maximum(
        dt[..., 1], gt[..., 1]
    )
    overlap = (width > 0) & (height > 0)
    inter = np.where(overlap, width * height, 0.0)
    dt_area = dt[..., 2] * dt[..., 3]
    gt_area = gt[..., 2] * gt[..., 3]
    union = np.where(gt_crowd[..., None, :], dt_area, dt_area + gt_area - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


def match_groups(
    ious: np.ndarray,
    num_dets: np.ndarray,
    gt_valid: np.ndarray,
    gt_ignore: np.ndarray,
    gt_crowd: np.ndarray,
    gt_id_nonzero: np.ndarray,
    iou_thresholds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy COCO matching for B (image, category) groups at once.

    Args:
        ious: float64 [B, D, G]; detections in score order, objects in file order (padded).
        num_dets: int [B], valid detections per group, sorted in *decreasing* order.
        gt_valid: bool [B, G], False on padding.
        gt_ignore: bool [B, A, G], ignored per area range.
        gt_crowd: bool [B, G].
        gt_id_nonzero: bool [B, G]; a match to an object with id 0 is not counted (pycocotools).
        iou_thresholds: float64 [T].
    Returns:
        ``(matched, matched_ignored)``, both bool [B, A, T, D]: the detection matched an object whose
        id is non-zero / the detection matched an ignored object.
    """
    num_groups, max_dets, max_gts = ious.shape
    num_areas = gt_ignore.shape[1]
    thresholds = np.minimum(np.asarray(iou_thresholds, dtype=np.float64), _MAX_IOU_THRESHOLD)
    num_thr = len(thresholds)
    free = np.broadcast_to(gt_valid[:, None, None, :], (num_groups, num_areas, num_thr, max_gts))
    free = free.copy()  # [B, A, T, G]; crowd objects never stop being free
    ignore4 = gt_ignore[:, :, None, :]  # [B, A, 1, G]
    matched = np.zeros((num_groups, num_areas, num_thr, max_dets), dtype=bool)
    matched_ignored = np.zeros_like(matched)
    group_idx = np.arange(num_groups)[:, None, None]
    area_idx = np.arange(num_areas)[None, :, None]
    thr_idx = np.arange(num_thr)[None, None, :]
    active_counts = np.searchsorted(-np.asarray(num_dets), -np.arange(max_dets), side="left")
    for det in range(max_dets):
        n = int(active_counts[det])  # groups with more than `det` detections come first
        if n == 0:
            break
        iou = ious[:n, det][:, None, None, :]  # [n, 1, 1, G]
        candidate = free[:n] & (iou >= thresholds[None, None, :, None])  # [n, A, T, G]
        preferred = candidate & ~ignore4[:n]
        has_preferred = preferred.any(axis=-1, keepdims=True)
        pool = np.where(has_preferred, preferred, candidate)
        found = pool.any(axis=-1)  # [n, A, T]
        best = np.where(pool, iou, -np.inf)
        gt_pick = max_gts - 1 - np.argmax(best[..., ::-1], axis=-1)  # last of the ties
        g, a, t = group_idx[:n], area_idx, thr_idx
        matched[:n, :, :, det] = found & gt_id_nonzero[g, gt_pick]
        matched_ignored[:n, :, :, det] = found & gt_ignore[g, a, gt_pick]
        taken = found & ~gt_crowd[g, gt_pick]
        free[g, a, t, gt_pick] &= ~taken
    return matched, matched_ignored


def _group_spans(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For sorted ``keys``: unique values, start index and length of each run."""
    if len(keys) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    lengths = np.diff(np.r_[starts, len(keys)])
    return keys[starts], starts, lengths


def match_all(
    dt_group: np.ndarray,
    gt_group: np.ndarray,
    gt_ignore: np.ndarray,
    gt_crowd: np.ndarray,
    gt_id_nonzero: np.ndarray,
    iou_thresholds: np.ndarray,
    group_ious: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Match every detection in every (image, category) group.

    Args:
        dt_group: int64 [N] group key of each kept detection, sorted, score order inside a group.
        gt_group: int64 [M] group key of each object, sorted, file order inside a group.
        gt_ignore: bool [M, A]; gt_crowd, gt_id_nonzero: bool [M].
        iou_thresholds: float64 [T].
        group_ious: ``(dt_index [B, D], gt_index [B, G], gt_crowd [B, G]) -> float64 [B, D, G]``
            with -1 entries for padding; gives the IoU of the indexed detections and objects.
    Returns:
        ``(matched, matched_ignored)``, bool [N, A, T] (see :func:`match_groups`).
    """
    num_areas = gt_ignore.shape[1]
    num_thr = len(iou_thresholds)
    matched = np.zeros((len(dt_group), num_areas, num_thr), dtype=bool)
    matched_ignored = np.zeros_like(matched)
    dt_keys, dt_starts, dt_counts = _group_spans(dt_group)
    gt_keys, gt_starts, gt_counts = _group_spans(gt_group)
    _, dt_pos, gt_pos = np.intersect1d(dt_keys, gt_keys, assume_unique=True, return_indices=True)
    if len(dt_pos) == 0:
        return matched, matched_ignored
    dt_starts, dt_counts = dt_starts[dt_pos], dt_counts[dt_pos]
    gt_starts, gt_counts = gt_starts[gt_pos], gt_counts[gt_pos]
    # Buckets of similar object counts keep the padding small; the loop runs over detections.
    bucket = np.ceil(np.log2(gt_counts)).astype(np.int64)
    for bucket_id in np.unique(bucket):
        members = np.flatnonzero(bucket == bucket_id)
        members = members[np.argsort(-dt_counts[members], kind="stable")]
        num_dets = dt_counts[members]
        max_dets, max_gts = int(num_dets.max()), int(gt_counts[members].max())
        det_offsets = np.arange(max_dets)
        gt_offsets = np.arange(max_gts)
        dt_valid = det_offsets[None, :] < num_dets[:, None]  # [B, D]
        gt_valid = gt_offsets[None, :] < gt_counts[members][:, None]  # [B, G]
        dt_index = np.where(dt_valid, dt_starts[members][:, None] + det_offsets, -1)
        gt_index = np.where(gt_valid, gt_starts[members][:, None] + gt_offsets, -1)
        crowd = np.where(gt_valid, gt_crowd[gt_index], False)
        ious = group_ious(dt_index, gt_index, crowd)
        bucket_matched, bucket_ignored = match_groups(
            ious,
            num_dets,
            gt_valid,
            np.where(gt_valid[:, None, :], gt_ignore[gt_index].transpose(0, 2, 1), True),
            crowd,
            np.where(gt_valid, gt_id_nonzero[gt_index], False),
            iou_thresholds,
        )
        rows = dt_index[dt_valid]  # detection indices, row-major over [B, D]
        matched[rows] = bucket_matched.transpose(0, 3, 1, 2)[dt_valid]
        matched_ignored[rows] = bucket_ignored.transpose(0, 3, 1, 2)[dt_valid]
    return matched, matched_ignored


def accumulate(
    dt_category: np.ndarray,
    dt_image: np.ndarray,
    dt_rank: np.ndarray,
    dt_score: np.ndarray,
    true_positive: np.ndarray,
    false_positive: np.ndarray,
    num_positives: np.ndarray,
    recall_thresholds: np.ndarray,
    max_dets: list[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Precision / recall tables from per-detection outcomes (``COCOeval.accumulate``).

    Args:
        dt_category, dt_image: int64 [N] category / image index of each kept detection.
        dt_rank: int64 [N] rank of the detection by score inside its (image, category).
        dt_score: float64 [N].
        true_positive, false_positive: bool [N, A, T] (ignored detections are neither).
        num_positives: int64 [K, A] non-ignored objects per category and area range.
        recall_thresholds: float64 [R].
        max_dets: the M detection limits, increasing.
    Returns:
        ``precision`` float64 [T, R, K, A, M] and ``recall`` float64 [T, K, A, M]; -1 where a
        category has no non-ignored object in that area range.
    """
    num_cats, num_areas = num_positives.shape
    num_thr = true_positive.shape[2]
    num_rec, num_max = len(recall_thresholds), len(max_dets)
    precision = -np.ones((num_thr, num_rec, num_cats, num_areas, num_max))
    recall = -np.ones((num_thr, num_cats, num_areas, num_max))
    # pycocotools concatenates images in id order, rank order inside each, then sorts stably by
    # score: the same as sorting by (score desc, image, rank).
    order = np.lexsort((dt_rank, dt_image, -dt_score, dt_category))
    cat_keys, cat_starts, cat_counts = _group_spans(dt_category[order])
    spans = {int(k): (s, s + c) for k, s, c in zip(cat_keys, cat_starts, cat_counts)}
    for cat in range(num_cats):
        if not (num_positives[cat] > 0).any():
            continue
        start, stop = spans.get(cat, (0, 0))
        cat_order = order[start:stop]
        for m, max_det in enumerate(max_dets):
            kept = cat_order[dt_rank[cat_order] < max_det]
            num_kept = len(kept)
            tp_sum = np.cumsum(true_positive[kept], axis=0).astype(np.float64)  # [n, A, T]
            fp_sum = np.cumsum(false_positive[kept], axis=0).astype(np.float64)
            for area in range(num_areas):
                npig = num_positives[cat, area]
                if npig == 0:
                    continue
                tp = tp_sum[:, area, :].T  # [T, n]
                fp = fp_sum[:, area, :].T
                rc = tp / npig
                pr = tp / (fp + tp + np.spacing(1))
                recall[:, cat, area, m] = rc[:, -1] if num_kept else 0.0
                if num_kept == 0:
                    precision[:, :, cat, area, m] = 0.0
                    continue
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # interpolated
                for thr in range(num_thr):
                    at = np.searchsorted(rc[thr], recall_thresholds, side="left")
                    inside = at < num_kept
                    precision[thr, :, cat, area, m] = np.where(
                        inside, pr[thr, np.minimum(at, num_kept - 1)], 0.0
                    )
    return precision, recall
