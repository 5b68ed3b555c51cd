"""Semantic segmentation metrics from a confusion matrix: IoU, mIoU, Dice, pixel accuracy.

Conventions:

- ``pred`` and ``target`` are integer class maps of the same shape (``[H, W]``, ``[N, H, W]``, ...),
  numpy arrays or torch tensors (converted to numpy; torch is never imported here).
- Pixels whose target is ``ignore_index`` (default 255, as in VOC / Cityscapes) are left out.
- The confusion matrix has ground truth in rows and prediction in columns:
  ``cm[t, p]`` = number of pixels of class ``t`` predicted as ``p``.
- A class absent from both prediction and target (no true positive, false positive or false
  negative) has IoU and Dice **NaN**, and means are taken over the other classes (``nanmean``):
  nothing was there to get right or wrong, so it neither helps nor hurts the mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _to_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor, without importing torch
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def confusion_matrix(
    pred: Any, target: Any, num_classes: int, ignore_index: int | None = 255
) -> np.ndarray:
    """Pixel confusion matrix.

    Args:
        pred: int [...], predicted class per pixel, values in ``0..num_classes-1``.
        target: int [...], same shape; values in ``0..num_classes-1`` or ``ignore_index``.
        num_classes: C.
        ignore_index: target value to leave out (None: none).
    Returns:
        int64 [C, C], rows = target class, columns = predicted class.
    Raises:
        ValueError: shapes differ or a value is out of range.
    """
    pred, target = _to_numpy(pred), _to_numpy(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {pred.shape} != target shape {target.shape}")
    pred = pred.reshape(-1).astype(np.int64)
    target = target.reshape(-1).astype(np.int64)
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, values in (("pred", pred), ("target", target)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} has values outside 0..{num_classes - 1} "
                f"(min {values.min()}, max {values.max()}); ignore_index={ignore_index}"
            )
    counts = np.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _tp_fp_fn(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cm = np.asarray(cm, dtype=np.float64)
    true_pos = np.diag(cm)
    return true_pos, cm.sum(axis=0) - true_pos, cm.sum(axis=1) - true_pos


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU = TP / (TP + FP + FN) per class, from a [C, C] confusion matrix.

    Returns:
        float64 [C]; NaN for a class absent from both prediction and target.
    """
    true_pos, false_pos, false_neg = _tp_fp_fn(cm)
    denom = true_pos + false_pos + false_neg
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, true_pos / denom, np.nan)


def mean_iou(cm: np.ndarray) -> float:
    """Mean of :func:`iou_per_class` over the classes that are not NaN (NaN if all are)."""
    return _nanmean(iou_per_class(cm))


def dice_per_class(cm: np.ndarray) -> np.ndarray:
    """Dice = 2 TP / (2 TP + FP + FN) per class (the F1 score); NaN for an absent class.

    Returns:
        float64 [C].
    """
    true_pos, false_pos, false_neg = _tp_fp_fn(cm)
    denom = 2 * true_pos + false_pos + false_neg
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, 2 * true_pos / denom, np.nan)


def pixel_accuracy(cm: np.ndarray) -> float:
    """Fraction of counted pixels predicted right (NaN when no pixel is counted)."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else float("nan")


def binary_dice(pred: Any, target: Any, *, empty: float = 1.0) -> float:
    """Dice of two binary masks: 2 |P & T| / (|P| + |T|).

    Args:
        pred, target: bool or 0/1 arrays (or tensors) of the same shape; non-zero = foreground.
        empty: value when both masks are empty (default 1.0: nothing to find, nothing found).
    """
    pred, target = _to_numpy(pred).astype(bool), _to_numpy(target).astype(bool)
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {pred.shape} != target shape {target.shape}")
    total = int(pred.sum()) + int(target.sum())
    return float(empty) if total == 0 else 2.0 * int((pred & target).sum()) / total


def _nanmean(values: np.ndarray) -> float:
    valid = values[~np.isnan(values)]
    return float(valid.mean()) if valid.size else float("nan")


class SegmentationMeter:
    """Accumulates a confusion matrix over batches; :meth:`compute` gives every metric.

    Example::

        meter = SegmentationMeter(num_classes=21)
        for images, masks in loader:
            meter.update(model(images).argmax(1), masks)
        meter.compute()["mean_iou"]
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.confusion[:] = 0

    def update(self, pred: Any, target: Any) -> None:
        """Add a batch: ``pred`` and ``target`` int class maps of the same shape."""
        self.confusion += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def compute(self) -> dict[str, Any]:
        """Metrics so far.

        Returns:
            ``{"pixel_accuracy", "mean_iou", "mean_dice": float, "iou", "dice": list[float] (C,
            NaN for absent classes), "confusion_matrix": list[list[int]] (rows = target)}``.
        """
        iou = iou_per_class(self.confusion)
        dice = dice_per_class(self.confusion)
        return {
            "pixel_accuracy": pixel_accuracy(self.confusion),
            "mean_iou": _nanmean(iou),
            "mean_dice": _nanmean(dice),
            "iou": iou.tolist(),
            "dice": dice.tolist(),
            "confusion_matrix": self.confusion.tolist(),
        }
