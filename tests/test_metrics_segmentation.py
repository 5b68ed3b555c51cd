"""Segmentation metrics: hand-computed cases, then random comparison with direct set counts and
with a torch.bincount confusion matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detseg.metrics.segmentation import (
    SegmentationMeter,
    binary_dice,
    confusion_matrix,
    dice_per_class,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)

TARGET = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [1, 1, 0]])


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(PRED, TARGET, num_classes=4)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0] = 1  # target 0 predicted 0
    expected[0, 1] = 1
    expected[1, 1] = 2
    expected[2, 1] = 1  # the 255 pixel is ignored
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64


def test_iou_dice_accuracy_by_hand():
    cm = confusion_matrix(PRED, TARGET, num_classes=4)
    iou = iou_per_class(cm)
    # class 0: TP 1, FP 0, FN 1 -> 1/2; class 1: TP 2, FP 2, FN 0 -> 2/4; class 2: 0/1; class 3 absent
    np.testing.assert_allclose(iou[:3], [0.5, 0.5, 0.0])
    assert math.isnan(iou[3])
    assert mean_iou(cm) == pytest.approx(1 / 3)  # class 3 left out of the mean
    dice = dice_per_class(cm)
    np.testing.assert_allclose(dice[:3], [2 / 3, 2 / 3, 0.0])
    assert math.isnan(dice[3])
    assert pixel_accuracy(cm) == pytest.approx(3 / 5)


def test_binary_dice_by_hand():
    pred = np.array([[1, 1, 0], [0, 0, 0]])
    target = np.array([[0, 1, 1], [0, 0, 1]])
    assert binary_dice(pred, target) == pytest.approx(2 * 1 / (2 + 3))
    assert binary_dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    assert math.isnan(binary_dice(np.zeros(3), np.zeros(3), empty=float("nan")))


def test_bad_input_raises():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(PRED, TARGET[:1], num_classes=3)
    with pytest.raises(ValueError, match="pred has values outside 0..0"):
        confusion_matrix(PRED, np.zeros_like(PRED), num_classes=1)
    with pytest.raises(ValueError, match="target"):
        confusion_matrix(PRED, TARGET, num_classes=3, ignore_index=None)


def _direct_metrics(pred, target, num_classes, ignore_index):
    """Per-class counts from pixel sets, no confusion matrix."""
    valid = target != ignore_index
    iou, dice = [], []
    for c in range(num_classes):
        in_pred = (pred == c) & valid
        in_target = (target == c) & valid
        inter = (in_pred & in_target).sum()
        union = (in_pred | in_target).sum()
        iou.append(inter / union if union else np.nan)
        size = in_pred.sum() + in_target.sum()
        dice.append(2 * inter / size if size else np.nan)
    accuracy = ((pred == target) & valid).sum() / valid.sum()
    return np.array(iou), np.array(dice), accuracy


@pytest.mark.parametrize("seed", range(8))
def test_random_maps_match_direct_set_counts_and_torch_bincount(seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(2, 9))
    shape = (int(rng.integers(1, 4)), int(rng.integers(5, 40)), int(rng.integers(5, 40)))
    # classes drawn from a subset, so some classes are absent from both maps
    present = rng.choice(num_classes, size=max(1, num_classes - 2), replace=False)
    target = rng.choice(present, size=shape)
    target[rng.random(shape) < 0.1] = 255
    pred = np.where(
        rng.random(shape) < 0.6, np.where(target == 255, 0, target), rng.choice(present, shape)
    )

    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), num_classes)
    valid = torch.from_numpy(target) != 255
    flat = torch.from_numpy(target)[valid] * num_classes + torch.from_numpy(pred)[valid]
    reference = torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)
    np.testing.assert_array_equal(cm, reference.numpy())

    iou, dice, accuracy = _direct_metrics(pred, target, num_classes, 255)
    np.testing.assert_allclose(iou_per_class(cm), iou, equal_nan=True)
    np.testing.assert_allclose(dice_per_class(cm), dice, equal_nan=True)
    assert pixel_accuracy(cm) == pytest.approx(accuracy)
    assert mean_iou(cm) == pytest.approx(np.nanmean(iou))
    if num_classes > len(present):
        assert np.isnan(iou).any()


def test_meter_accumulates_like_one_big_batch():
    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 3, (4, 9)) for _ in range(5)]
    targets = [rng.integers(0, 3, (4, 9)) for _ in range(5)]
    meter = SegmentationMeter(num_classes=3)
    for pred, target in zip(preds, targets):
        meter.update(pred, target)
    result = meter.compute()
    cm = confusion_matrix(np.stack(preds), np.stack(targets), 3)
    assert result["confusion_matrix"] == cm.tolist()
    assert result["mean_iou"] == pytest.approx(mean_iou(cm))
    assert result["pixel_accuracy"] == pytest.approx(pixel_accuracy(cm))
    assert result["dice"] == pytest.approx(dice_per_class(cm).tolist())
    meter.reset()
    assert math.isnan(meter.compute()["pixel_accuracy"])
