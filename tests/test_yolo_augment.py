"""YOLO augmentation: hand-computed cases, and boxes that follow the pixels they framed."""

from __future__ import annotations

import numpy as np
import pytest

from detseg.data import yolo_augment as A


def painted(height: int, width: int, rects: list[tuple[int, int, int, int]], first: int):
    """A black image with each rect (x1, y1, x2, y2; pixel-edge) filled with its own colour."""
    image = np.zeros((height, width, 3), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(rects):
        image[y1:y2, x1:x2] = (first + 10 * k, 200 - k, 50 + k)
    boxes = np.array(rects, np.float32).reshape(-1, 4)
    return image, boxes, np.arange(first, first + len(rects), dtype=np.int64)


def colour_extent(image: np.ndarray, colour) -> np.ndarray:
    ys, xs = np.nonzero(np.all(image == np.asarray(colour, np.uint8), axis=-1))
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_hflip_hand_computed():
    image = np.zeros((3, 6, 3), np.uint8)
    image[:, 1:3] = 255  # columns 1, 2
    flipped, boxes = A.hflip(image, np.array([[1, 0, 3, 3]], np.float32))
    np.testing.assert_array_equal(boxes, [[3, 0, 5, 3]])  # W - x2 = 3, W - x1 = 5
    assert flipped[:, 3:5].min() == 255 and flipped[:, :3].max() == 0 and flipped[:, 5].max() == 0
    back, again = A.hflip(flipped, boxes)
    np.testing.assert_array_equal(back, image)
    np.testing.assert_array_equal(again, [[1, 0, 3, 3]])


def test_hsv_value_and_hue_hand_computed():
    red = np.full((2, 2, 3), (200, 0, 0), np.uint8)
    np.testing.assert_array_equal(A.hsv_jitter(red, (1.0, 1.0, 0.5))[0, 0], (100, 0, 0))
    green = np.full((2, 2, 3), (0, 255, 0), np.uint8)  # OpenCV hue 60 -> 30 = yellow
    np.testing.assert_array_equal(A.hsv_jitter(green, (0.5, 1.0, 1.0))[0, 0], (255, 255, 0))
    grey = np.full((2, 2, 3), 90, np.uint8)  # no saturation: a saturation gain changes nothing
    np.testing.assert_array_equal(A.hsv_jitter(grey, (1.0, 1.6, 1.0)), grey)
    np.testing.assert_array_equal(A.hsv_jitter(red, (1.0, 1.0, 1.0)), red)


def test_hsv_gains_range():
    gains = np.stack([A.hsv_gains(np.random.default_rng(i), 0.1, 0.5, 0.3) for i in range(200)])
    assert np.all(np.abs(gains - 1) <= [0.1, 0.5, 0.3]) and gains.std(axis=0).min() > 0.05


def test_mosaic_hand_computed():
    # canvas 10 x 12 (h x w), centre x=5, y=4; four 4 x 6 images of one colour each
    images = [np.full((4, 6, 3), c, np.uint8) for c in (10, 20, 30, 40)]
    boxes = [
        np.array([[0, 1, 2, 3]], np.float32),  # image 0 lands at x -1: half of this box is cut
        np.array([[1, 1, 5, 3]], np.float32),
        np.array([[0, 0, 6, 4]], np.float32),
        np.array([[0, 0, 0.5, 0.5]], np.float32),  # tiny: dropped by min_side
    ]
    labels = [np.array([k]) for k in range(4)]
    canvas, out, out_labels = A.mosaic(
        images, boxes, labels, size=(10, 12), center=(5, 4), min_visible=0.25, min_side=1.0
    )
    assert canvas[0:4, 0:5].min() == canvas[0:4, 0:5].max() == 10  # image 0: x -1..5, y 0..4
    assert canvas[0:4, 5:11].min() == canvas[0:4, 5:11].max() == 20  # image 1: x 5..11, y 0..4
    assert canvas[4:8, 0:5].min() == canvas[4:8, 0:5].max() == 30  # image 2: x -1..5, y 4..8
    assert canvas[4:8, 5:11].min() == 40 and canvas[8:, :].min() == A.FILL == canvas[:, 11].min()
    np.testing.assert_array_equal(out, [[0, 1, 1, 3], [6, 1, 10, 3], [0, 4, 5, 8]])
    np.testing.assert_array_equal(out_labels, [0, 1, 2])
    # stricter visibility drops the half-cut box of image 0 (1 of its 2 columns shown = 0.5)
    _, out2, labels2 = A.mosaic(
        images, boxes, labels, size=(10, 12), center=(5, 4), min_visible=0.6, min_side=1.0
    )
    np.testing.assert_array_equal(labels2, [1, 2])


@pytest.mark.parametrize("seed", range(5))
def test_random_mosaic_boxes_follow_pixels(seed):
    """Each object has its own colour; after the mosaic every kept box is exactly the extent of
    its colour in the canvas (scale 1: no resampling blurs the edges)."""
    rng = np.random.default_rng(seed)
    images, boxes, labels = [], [], []
    for k in range(4):
        rects = []
        for cell in range(3):  # one rect per 21-pixel column band: no overlaps
            x1, y1 = cell * 21 + int(rng.integers(0, 6)), int(rng.integers(0, 50))
            rects.append((x1, y1, x1 + int(rng.integers(4, 14)), y1 + int(rng.integers(4, 14))))
        image, image_boxes, image_labels = painted(64, 64, rects, first=30 * k + 5)
        images.append(image)
        boxes.append(image_boxes)
        labels.append(image_labels)
    colours = {
        int(label): tuple(image[int(box[1]), int(box[0])])
        for image, image_boxes, image_labels in zip(images, boxes, labels)
        for box, label in zip(image_boxes, image_labels)
    }
    canvas, out, out_labels = A.random_mosaic(
        rng, images, boxes, labels, size=64, scale=(1.0, 1.0), min_visible=0.0
    )
    assert len(out) > 0
    for box, label in zip(out, out_labels):
        np.testing.assert_array_equal(colour_extent(canvas, colours[int(label)]), box)
    flipped, flipped_boxes = A.hflip(canvas, out)
    for box, label in zip(flipped_boxes, out_labels):
        np.testing.assert_array_equal(colour_extent(flipped, colours[int(label)]), box)
