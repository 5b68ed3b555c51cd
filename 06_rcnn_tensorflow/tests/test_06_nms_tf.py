"""The core's NMS (used by every detector of this folder) equals TensorFlow's, on random boxes:
``detseg.boxes.nms`` vs ``tf.image.non_max_suppression`` and ``detseg.boxes.batched_nms`` (class-wise)
vs ``tf.image.combined_non_max_suppression``."""

from __future__ import annotations

import numpy as np
import pytest

from detseg.boxes import batched_nms, nms
from detseg.tf_import import import_tensorflow


def _random_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    """Normalised xyxy boxes in [0, 1], many overlapping."""
    centre = rng.uniform(0.2, 0.8, (count, 2))
    size = rng.uniform(0.05, 0.4, (count, 2))
    return np.clip(np.concatenate([centre - size / 2, centre + size / 2], 1), 0, 1).astype(
        np.float32
    )


@pytest.mark.parametrize("seed", range(5))
def test_nms_equals_tf_image_non_max_suppression(seed):
    tf = import_tensorflow()
    rng = np.random.default_rng(seed)
    boxes = _random_boxes(rng, 200)
    scores = rng.random(200).astype(np.float32)
    for threshold in (0.3, 0.5, 0.7):
        ours = nms(boxes, scores, threshold)
        theirs = tf.image.non_max_suppression(boxes[:, [1, 0, 3, 2]], scores, 200, threshold)
        np.testing.assert_array_equal(ours, theirs.numpy())
        assert 0 < len(ours) < 200


@pytest.mark.parametrize("seed", range(5))
def test_batched_nms_equals_tf_image_combined_non_max_suppression(seed):
    tf = import_tensorflow()
    rng = np.random.default_rng(seed)
    num_boxes, num_classes, threshold = 120, 3, 0.45
    boxes = _random_boxes(rng, num_boxes)
    scores = rng.random((num_boxes, num_classes)).astype(np.float32)
    result = tf.image.combined_non_max_suppression(
        boxes[None, :, None, [1, 0, 3, 2]],  # [batch, boxes, q = 1 (shared by classes), 4] yxyx
        scores[None],
        max_output_size_per_class=num_boxes,
        max_total_size=num_boxes * num_classes,
        iou_threshold=threshold,
        score_threshold=0.0,
        clip_boxes=False,
    )
    count = int(result.valid_detections[0])
    tf_boxes = result.nmsed_boxes[0, :count].numpy()[:, [1, 0, 3, 2]]
    tf_scores = result.nmsed_scores[0, :count].numpy()
    tf_classes = result.nmsed_classes[0, :count].numpy().astype(np.int64)

    # ours: every (box, class) pair is a candidate, classes never suppress each other
    all_boxes = np.repeat(boxes, num_classes, axis=0)
    all_scores = scores.reshape(-1)
    all_classes = np.tile(np.arange(num_classes), num_boxes)
    keep = batched_nms(all_boxes, all_scores, all_classes, threshold)
    assert len(keep) == count
    np.testing.assert_array_equal(all_classes[keep], tf_classes)
    np.testing.assert_array_equal(all_scores[keep], tf_scores)
    np.testing.assert_allclose(all_boxes[keep], tf_boxes, atol=1e-6)
    # and class-wise really differs from class-agnostic NMS on the same candidates
    assert len(nms(all_boxes, all_scores, threshold)) < count
