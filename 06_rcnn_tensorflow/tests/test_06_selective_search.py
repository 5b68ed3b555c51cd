"""Selective search from scratch: features and grouping by hand, then both implementations on
pictures whose objects are known, and the recall curves."""

from __future__ import annotations

import numpy as np
import pytest
from proposal_recall import PHOTO_BOXES, best_iou_curve, photo_set, recall_curves
from selective_search import (
    MODES,
    convert_colour,
    gaussian_derivatives,
    hierarchical_grouping,
    opencv_selective_search,
    region_features,
    selective_search,
)

from detseg.boxes import box_iou


def test_region_features_by_hand():
    labels = np.array([[0, 0, 1], [0, 0, 1], [2, 2, 2]])
    colour = np.zeros((3, 3, 1), np.float32)
    colour[:, 2] = 0.99  # region 1 (column 2, rows 0-1) and pixel (2, 2) are bright
    texture = np.zeros((3, 3, 1, 8), np.float32)
    features = region_features(labels, colour, texture)
    assert features["size"].tolist() == [4, 2, 3]
    assert features["box"].tolist() == [[0, 0, 2, 2], [2, 0, 3, 2], [0, 2, 3, 3]]
    assert features["pairs"].tolist() == [[0, 1], [0, 2], [1, 2]]
    # 25 bins: value 0 -> bin 0, 0.99 -> bin 24; region 2 has 2 dark and 1 bright pixel
    assert features["colour"][0, 0] == 1 and features["colour"][1, 24] == 1
    np.testing.assert_allclose(features["colour"][2, [0, 24]], [2 / 3, 1 / 3], rtol=1e-6)
    assert features["texture"].shape == (3, 80) and np.allclose(features["texture"].sum(1), 1)


def test_grouping_by_size_merges_the_smallest_neighbours_first():
    # four strips of sizes 1, 2, 3, 4 pixels in a row: 0-1, 1-2, 2-3 are neighbours
    labels = np.repeat(np.arange(4), [1, 2, 3, 4])[None, :]
    features = region_features(labels, np.zeros((1, 10, 1), np.float32), np.zeros((1, 10, 1, 8)))
    boxes = hierarchical_grouping(features, (0, 0, 1, 0), image_size=10.0)
    assert len(boxes) == 2 * 4 - 1
    # size similarity 1 - (a + b) / 10: {0,1} (3 px) first, then {01, 2} (6 px), then everything
    assert boxes[4].tolist() == [0, 0, 3, 1]
    assert boxes[5].tolist() == [0, 0, 6, 1]
    assert boxes[6].tolist() == [0, 0, 10, 1]


def test_grouping_by_colour_merges_alike_regions_first():
    # regions 0 and 2 are both neighbours of 1; 1 and 2 share a colour, 0 does not
    labels = np.repeat(np.arange(3), 4)[None, :]
    colour = np.array([0.1] * 4 + [0.7] * 8, np.float32).reshape(1, 12, 1)
    features = region_features(labels, colour, np.zeros((1, 12, 1, 8)))
    boxes = hierarchical_grouping(features, (1, 0, 0, 0), image_size=12.0)
    assert boxes[3].tolist() == [4, 0, 12, 1] and boxes[4].tolist() == [0, 0, 12, 1]


def test_colour_spaces_and_texture_are_in_range():
    image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    for space, channels in (("rgb", 3), ("hsv", 3), ("lab", 3), ("rgi", 3), ("h", 1), ("i", 1)):
        converted = convert_colour(image, space)
        assert converted.shape == (20, 24, channels)
        assert converted.min() >= 0 and converted.max() <= 1
    texture = gaussian_derivatives(convert_colour(image, "hsv"))
    assert texture.shape == (20, 24, 3, 8) and texture.min() >= 0 and texture.max() == 1
    with pytest.raises(ValueError, match="colour space"):
        convert_colour(image, "cmyk")


def _two_squares() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    image = np.full((72, 96, 3), 200, np.uint8) + rng.integers(0, 8, (72, 96, 3), dtype=np.uint8)
    image[10:40, 8:38] = (200, 30, 30)
    image[30:66, 52:90] = (20, 60, 180)
    return image, np.array([[8, 10, 38, 40], [52, 30, 90, 66]], np.float32)


@pytest.mark.parametrize("method", ["ours", "opencv"])
def test_both_methods_find_two_squares(method):
    image, gt = _two_squares()
    if method == "ours":
        boxes = selective_search(image, "single")
    else:
        boxes = opencv_selective_search(image, "single")
    assert boxes.shape[1] == 4 and len(boxes) >= 3
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 96).all() and (boxes[:, 3] <= 72).all()
    assert box_iou(boxes, gt).max(axis=0).min() >= 0.9
    if method == "ours":  # no duplicates, same boxes for the same seed, others for another seed
        assert len(np.unique(boxes, axis=0)) == len(boxes)
        np.testing.assert_array_equal(boxes, selective_search(image, "single"))


def test_modes_are_the_papers():
    assert MODES["fast"].num_strategies == 8 and MODES["quality"].num_strategies == 80


def test_recall_curves_by_hand():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    proposals = np.array([[0, 0, 10, 20], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    best = best_iou_curve(proposals, gt, 5)
    np.testing.assert_allclose(best[:, 0], [0.5, 0.5, 1, 1, 1])
    np.testing.assert_allclose(best[:, 1], [0, 1, 1, 1, 1])
    curves = recall_curves([proposals], [gt], max_proposals=3, thresholds=(0.5, 0.7))
    np.testing.assert_allclose(curves[0.5], [0.5, 1, 1])
    np.testing.assert_allclose(curves[0.7], [0, 0.5, 1])


def test_photo_boxes_lie_inside_their_photos():
    photos = photo_set()
    assert [name for name, _, _ in photos] == list(PHOTO_BOXES)
    for _, image, boxes in photos:
        height, width = image.shape[:2]
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
