"""Anchor boxes for a dataset: k-means on box widths / heights with the distance ``1 - IoU``.

YOLOv2 (Redmon & Farhadi 2017, section "Dimension Clusters") picks its anchors by clustering the
training boxes, with the distance ``d(box, centroid) = 1 - IoU(box, centroid)`` of two boxes placed
on the same centre, so that large boxes do not dominate as they would with Euclidean distance.
YOLOv3's nine anchors (10x13 ... 373x326) were found this way on COCO. Sorted by area, the first
three go to the finest scale (stride 8), the last three to the coarsest (stride 32).
"""

from __future__ import annotations

import numpy as np


def wh_iou(wh: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """IoU of same-centre boxes: [N, 2] x [K, 2] -> [N, K]."""
    inter = np.minimum(wh[:, None, 0], centroids[None, :, 0]) * np.minimum(
        wh[:, None, 1], centroids[None, :, 1]
    )
    union = wh[:, 0:1] * wh[:, 1:2] + (centroids[:, 0] * centroids[:, 1])[None, :] - inter
    return inter / np.maximum(union, 1e-12)


def kmeans_anchors(
    wh: np.ndarray, k: int, *, seed: int = 0, max_iter: int = 300
) -> tuple[np.ndarray, float]:
    """Cluster box sizes into ``k`` anchors with the 1 - IoU distance.

    Args:
        wh: [N, 2] box widths and heights in pixels (at the network's input size), N >= k.
        k: number of anchors (9 for YOLOv3, 6 for YOLOv3-tiny).
        seed: initial centroids are k distinct boxes drawn with this seed.
        max_iter: stop after this many assignment / update rounds (or when nothing changes).
    Returns:
        ``(anchors [k, 2] sorted by area, mean IoU of each box with its best anchor)``. Each
        centroid is the median of its cluster (robust to outliers; an empty cluster keeps its place).
    """
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    wh = wh[(wh > 0).all(axis=1)]
    if len(wh) < k:
        raise ValueError(f"k-means needs at least k={k} boxes, got {len(wh)}")
    rng = np.random.default_rng(seed)
    unique = np.unique(wh, axis=0)
    if len(unique) < k:
        raise ValueError(f"only {len(unique)} distinct box sizes for k={k} anchors")
    centroids = unique[rng.choice(len(unique), k, replace=False)]
    assignment = np.full(len(wh), -1)
    for _ in range(max_iter):
        new_assignment = np.argmax(wh_iou(wh, centroids), axis=1)  # min distance = max IoU
        if np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        for cluster in range(k):
            members = wh[assignment == cluster]
            if len(members):
                centroids[cluster] = np.median(members, axis=0)
    order = np.argsort(centroids.prod(axis=1))
    centroids = centroids[order]
    mean_iou = float(wh_iou(wh, centroids).max(axis=1).mean())
    return centroids, mean_iou
