"""VOC AP50: hand-computed cases, then a comparison with a plain loop written like the devkit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detseg.metrics.voc import evaluate_voc, voc_ap


def _image(boxes, labels, difficult=None):
    target = {"boxes": np.array(boxes, dtype=float).reshape(-1, 4), "labels": np.array(labels)}
    if difficult is not None:
        target["difficult"] = np.array(difficult, dtype=bool)
    return target


def _dets(boxes, scores, labels):
    return {
        "boxes": np.array(boxes, dtype=float).reshape(-1, 4),
        "scores": np.array(scores, dtype=float),
        "labels": np.array(labels),
    }


def test_voc_ap_all_point_and_eleven_point_by_hand():
    recall = np.array([0.5, 0.5, 1.0])
    precision = np.array([1.0, 0.5, 2 / 3])
    # envelope: precision 1 up to recall 0.5, then 2/3 up to recall 1
    assert voc_ap(recall, precision) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # recall levels 0.0 .. 0.5 (6 of them) reach precision 1, 0.6 .. 1.0 (5) reach 2/3
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert voc_ap(np.array([]), np.array([])) == 0.0


def test_difficult_objects_and_duplicates():
    ground_truth = [
        _image([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], [1, 1, 1], [0, 0, 1]),
    ]
    detections = [
        _dets(
            [
                [0, 0, 10, 10],
                [0, 0, 10, 10.5],
                [50, 50, 60, 60],
                [20, 20, 30, 30],
                [80, 80, 90, 90],
            ],
            [0.9, 0.8, 0.7, 0.6, 0.5],
            [1, 1, 1, 1, 1],
        )
    ]
    result = evaluate_voc(ground_truth, detections)
    # TP, FP (duplicate), ignored (difficult), TP, FP -> recall .5 .5 1 1, precision 1 .5 2/3 .5
    assert result.num_positives[1] == 2
    np.testing.assert_allclose(result.recall[1], [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(result.precision[1], [1.0, 0.5, 2 / 3, 0.5])
    assert result.ap[1] == pytest.approx(0.5 + 0.5 * 2 / 3)
    result07 = evaluate_voc(ground_truth, detections, use_07_metric=True)
    assert result07.ap[1] == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_iou_must_be_strictly_above_threshold_and_plus_one_convention():
    ground_truth = [_image([[0, 0, 10, 10]], [3])]
    half = [_dets([[0, 0, 10, 5]], [0.9], [3])]  # IoU exactly 0.5
    assert evaluate_voc(ground_truth, half).ap[3] == 0.0
    # with inclusive pixels the boxes are 11x11 and 11x6: IoU 66/121 > 0.5
    assert evaluate_voc(ground_truth, half, plus_one=True).ap[3] == pytest.approx(1.0)


def test_mean_skips_classes_without_objects():
    ground_truth = [_image([[0, 0, 10, 10]], [1]), _image([], [])]
    detections = [_dets([[0, 0, 10, 10]], [0.9], [1]), _dets([[5, 5, 9, 9]], [0.4], [2])]
    result = evaluate_voc(ground_truth, detections)
    assert result.ap[1] == pytest.approx(1.0)
    assert math.isnan(result.ap[2])
    assert result.mean_ap == pytest.approx(1.0)
    # a class with objects and no detections scores 0 and does count in the mean
    result = evaluate_voc(ground_truth, detections, classes=[1, 2, 4])
    assert result.mean_ap == pytest.approx(1.0)
    ground_truth[1] = _image([[0, 0, 5, 5]], [4])
    assert evaluate_voc(ground_truth, detections, classes=[1, 4]).mean_ap == pytest.approx(0.5)


def _devkit_style_ap(ground_truth, detections, label, use_07):
    """voc_eval written as loops, independent of evaluate_voc."""
    records = []
    npos = 0
    for target in ground_truth:
        mask = target["labels"] == label
        difficult = target.get("difficult", np.zeros(len(mask), bool))[mask]
        npos += int((~difficult).sum())
        records.append((target["boxes"][mask], difficult, [False] * int(mask.sum())))
    flat = [
        (float(score), image, box)
        for image, output in enumerate(detections)
        for box, score, lab in zip(output["boxes"], output["scores"], output["labels"])
        if lab == label
    ]
    flat.sort(key=lambda item: -item[0])  # sort is stable
    tp, fp = [], []
    for _, image, box in flat:
        boxes, difficult, seen = records[image]
        best, best_iou = -1, -1.0
        for j, gt in enumerate(boxes):
            iw = max(min(box[2], gt[2]) - max(box[0], gt[0]), 0.0)
            ih = max(min(box[3], gt[3]) - max(box[1], gt[1]), 0.0)
            inter = iw * ih
            union = (
                (box[2] - box[0]) * (box[3] - box[1]) + (gt[2] - gt[0]) * (gt[3] - gt[1]) - inter
            )
            iou = inter / union
            if iou > best_iou:
                best, best_iou = j, iou
        if best_iou > 0.5 and difficult[best]:
            continue
        hit = best_iou > 0.5 and not seen[best]
        if hit:
            seen[best] = True
        tp.append(1.0 if hit else 0.0)
        fp.append(0.0 if hit else 1.0)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / npos
    precision = tp / np.maximum(tp + fp, np.finfo(float).eps)
    if use_07:
        return sum(
            (precision[recall >= t].max() if (recall >= t).any() else 0.0) / 11
            for t in np.arange(0.0, 1.1, 0.1)
        )
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _random_case(rng, num_images=12, num_classes=3):
    ground_truth, detections = [], []
    for _ in range(num_images):
        count = int(rng.integers(0, 6))
        xy = rng.uniform(0, 80, (count, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (count, 2))], axis=1)
        labels = rng.integers(0, num_classes, count)
        ground_truth.append(
            {"boxes": boxes, "labels": labels, "difficult": rng.random(count) < 0.2}
        )
        picks = rng.integers(0, max(count, 1), int(rng.integers(0, 9))) if count else []
        det_boxes = [boxes[p] + rng.normal(0, 1.5, 4) for p in picks]
        det_labels = [
            labels[p] if rng.random() < 0.8 else rng.integers(0, num_classes) for p in picks
        ]
        for _ in range(int(rng.integers(0, 3))):
            corner = rng.uniform(0, 80, 2)
            det_boxes.append(np.concatenate([corner, corner + rng.uniform(5, 40, 2)]))
            det_labels.append(rng.integers(0, num_classes))
        detections.append(
            {
                "boxes": np.array(det_boxes, dtype=float).reshape(-1, 4),
                "scores": np.round(rng.random(len(det_boxes)), 1),  # ties
                "labels": np.array(det_labels, dtype=int),
            }
        )
    return ground_truth, detections


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("use_07", [False, True])
def test_random_cases_match_devkit_style_loop(seed, use_07):
    ground_truth, detections = _random_case(np.random.default_rng(seed))
    result = evaluate_voc(ground_truth, detections, use_07_metric=use_07, classes=[0, 1, 2])
    for label in (0, 1, 2):
        if result.num_positives[label] == 0:
            assert math.isnan(result.ap[label])
            continue
        expected = _devkit_style_ap(ground_truth, detections, label, use_07)
        assert result.ap[label] == pytest.approx(expected, abs=1e-12)
