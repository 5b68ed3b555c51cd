"""The scene generator: determinism, exact masks and boxes, occlusion, and scenes that are not trivial."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from detseg.data.synthetic import (
    SHAPE_CLASSES,
    Compositor,
    Sprite,
    masks_to_boxes,
    scene_rng,
    shape_mask,
    shapes_scene,
)
from detseg.data.synthetic_scenes import (
    SINGLE_OBJECT_CLASSES,
    moving_objects,
    pedestrian_scene,
    raccoon_scene,
    single_object_scene,
)
from detseg.data.synthetic_semantic import (
    ROAD_CLASSES,
    STREET_CLASSES,
    road_scene,
    salt_section,
    street_scene,
)

SCENES = {
    "shapes": lambda rng: shapes_scene(rng),
    "pedestrians": lambda rng: pedestrian_scene(rng),
    "single_object": lambda rng: single_object_scene(rng, int(rng.integers(3))),
    "racoon": lambda rng: raccoon_scene(rng),
}


def test_masks_to_boxes_hand_computed() -> None:
    masks = np.zeros((2, 8, 10), bool)
    masks[0, 2:5, 3:6] = True  # rows 2..4, columns 3..5
    masks[1, 7, 9] = True  # the bottom-right pixel
    expected = np.array([[3, 2, 6, 5], [9, 7, 10, 8]], np.float32)
    np.testing.assert_array_equal(masks_to_boxes(masks), expected)
    with pytest.raises(ValueError, match="empty"):
        masks_to_boxes(np.zeros((1, 4, 4), bool))


def test_masks_to_boxes_equals_pycocotools_to_bbox() -> None:
    rng = np.random.default_rng(0)
    masks = np.stack([shape_mask(SHAPE_CLASSES[i % 5], rng, 40) for i in range(10)])
    masks = np.pad(masks, ((0, 0), (3, 7), (11, 2)))
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    xywh = mask_utils.toBbox(rles)
    np.testing.assert_array_equal(
        masks_to_boxes(masks), np.c_[xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]
    )


@pytest.mark.parametrize("name", sorted(SCENES))
def test_scene_is_deterministic_by_seed(name: str) -> None:
    first = SCENES[name](scene_rng(3, name, 5))
    again = SCENES[name](scene_rng(3, name, 5))
    other = SCENES[name](scene_rng(4, name, 5))
    assert first.image.tobytes() == again.image.tobytes()
    np.testing.assert_array_equal(first.masks, again.masks)
    np.testing.assert_array_equal(first.boxes, again.boxes)
    assert first.image.tobytes() != other.image.tobytes()


@pytest.mark.parametrize("name", sorted(SCENES))
def test_scene_masks_boxes_labels_are_consistent(name: str) -> None:
    for index in range(6):
        scene = SCENES[name](scene_rng(0, name, index))
        height, width = scene.image.shape[:2]
        assert scene.image.dtype == np.uint8 and scene.image.shape == (height, width, 3)
        assert scene.masks.shape == (len(scene.labels), height, width) and len(scene.labels) >= 1
        assert scene.masks.sum(axis=0).max() <= 1, "visible masks must not overlap"
        assert scene.masks.sum(axis=(1, 2)).min() >= 12
        np.testing.assert_array_equal(scene.boxes, masks_to_boxes(scene.masks))
        assert scene.labels.min() >= 0 and scene.labels.max() < len(scene.classes)


def test_compositor_occlusion_reduces_and_refuses() -> None:
    image = np.zeros((20, 20, 3), np.float32)
    square = Sprite(np.ones((10, 10), bool), np.full((10, 10, 3), 100.0, np.float32))
    comp = Compositor(image, min_visible=0.4, min_pixels=1)
    assert comp.place(square, 0, 0, label=0)
    assert comp.place(square, 5, 0, label=1)  # hides half of the first: 50 of 100 pixels left
    assert comp.visible_count == [50, 100]
    before = image.copy()
    assert not comp.place(square, 3, 0, label=2)  # would leave the first 30% visible: refused
    np.testing.assert_array_equal(image, before)
    assert comp.visible_count == [50, 100]
    assert comp.place(square, 10, 10, label=None)  # an occluder, not an instance
    assert comp.visible_count == [50, 100] and len(comp.labels) == 2
    scene = comp.scene(image.astype(np.uint8), ("a", "b"))
    np.testing.assert_array_equal(scene.boxes, [[0, 0, 5, 10], [5, 0, 15, 10]])


def test_shapes_sizes_counts_and_occlusion_statistics() -> None:
    scenes = [shapes_scene(scene_rng(0, "stats", i)) for i in range(40)]
    sides = np.concatenate(
        [np.maximum(s.boxes[:, 2] - s.boxes[:, 0], s.boxes[:, 3] - s.boxes[:, 1]) for s in scenes]
    )
    area_fraction = np.concatenate([s.masks.mean(axis=(1, 2)) for s in scenes])
    labels = np.concatenate([s.labels for s in scenes])
    assert 2.5 < len(labels) / len(scenes) < 7
    assert sides.min() >= 4 and sides.max() <= 0.62 * 256
    assert np.percentile(sides, 10) < 0.1 * 256 and np.percentile(sides, 90) > 0.3 * 256
    assert 0.005 < area_fraction.mean() < 0.1, "objects are visible but do not fill the image"
    assert set(labels.tolist()) == set(range(len(SHAPE_CLASSES)))

    def touching(
        masks: np.ndarray,
    ) -> bool:  # two instances share a border (one occludes the other)
        grown = [cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0 for m in masks]
        return any(
            (grown[i] & masks[j]).any()
            for i in range(len(masks))
            for j in range(len(masks))
            if i != j
        )

    assert sum(touching(s.masks) for s in scenes) >= 5, "some objects should occlude others"


def test_colour_alone_does_not_tell_the_shape() -> None:
    colours, labels = [], []
    for i in range(60):
        scene = shapes_scene(scene_rng(0, "colour", i))
        for mask, label in zip(scene.masks, scene.labels):
            colours.append(scene.image[mask].mean(axis=0))
            labels.append(label)
    colours, labels = np.array(colours), np.array(labels)
    half = len(labels) // 2
    means = np.stack([colours[:half][labels[:half] == c].mean(axis=0) for c in range(5)])
    guess = np.argmin(((colours[half:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (guess == labels[half:]).mean() < 0.35  # chance is 0.2


def test_pedestrians_are_painted_far_to_near(monkeypatch: pytest.MonkeyPatch) -> None:
    """A nearer person (feet lower in the image) may hide a farther one, never the reverse."""
    from detseg.data import synthetic_scenes

    feet_in_paint_order: list[list[int]] = []
    occlusions = 0

    class Recording(synthetic_scenes.Compositor):
        def place(self, sprite, x0, y0, label):  # type: ignore[no-untyped-def]
            before = list(self.visible_count)
            placed = super().place(sprite, x0, y0, label)
            if placed and label is not None:
                nonlocal occlusions
                occlusions += sum(a < b for a, b in zip(self.visible_count, before))
                feet_in_paint_order[-1].append(y0 + sprite.shape[0])
            return placed

    monkeypatch.setattr(synthetic_scenes, "Compositor", Recording)
    counts = []
    for index in range(40):
        feet_in_paint_order.append([])
        scene = pedestrian_scene(scene_rng(0, "pedestrians", index))
        counts.append(len(scene.labels))
        assert feet_in_paint_order[-1] == sorted(feet_in_paint_order[-1])
    assert occlusions >= 10  # people do overlap: the order matters
    assert min(counts) >= 1 and 1.8 <= np.mean(counts) <= 2.6  # Penn-Fudan: 345 / 170 = 2.0


def test_single_object_scene_has_one_large_object_of_the_asked_class() -> None:
    for label in range(len(SINGLE_OBJECT_CLASSES)):
        scene = single_object_scene(scene_rng(0, "single", label), label)
        assert scene.labels.tolist() == [label]
        x1, y1, x2, y2 = scene.boxes[0]
        height, width = scene.image.shape[:2]
        assert max((x2 - x1) / width, (y2 - y1) / height) > 0.35


def test_salt_empty_fraction_and_brightness_does_not_find_salt() -> None:
    sections = [salt_section(scene_rng(0, "salt", i)) for i in range(200)]
    assert all(im.shape == (101, 101) and im.dtype == np.uint8 for im, _, _ in sections)
    assert all(51 <= depth <= 959 for _, _, depth in sections)
    empty = np.mean([not mask.any() for _, mask, _ in sections])
    assert 0.32 < empty < 0.48
    salty = [(im.astype(np.float32), mask > 0) for im, mask, _ in sections if mask.any()]

    def iou(predictions: list[np.ndarray]) -> float:
        pairs = list(zip(predictions, (m for _, m in salty)))
        return sum((p & m).sum() for p, m in pairs) / sum((p | m).sum() for p, m in pairs)

    by_brightness = max(
        max(iou([im > t for im, _ in salty]), iou([im < t for im, _ in salty]))
        for t in range(0, 256, 8)
    )
    predict_all = iou([np.ones_like(m) for _, m in salty])
    assert by_brightness < predict_all + 0.05, "a brightness threshold must not beat 'all salt'"

    def layering(im: np.ndarray) -> np.ndarray:  # vertical over horizontal gradient energy
        gy, gx = (np.abs(cv2.Sobel(im, cv2.CV_32F, dx, dy)) for dx, dy in ((0, 1), (1, 0)))
        return cv2.blur(gy, (9, 9)) / (cv2.blur(gx, (9, 9)) + 1)

    by_texture = max(iou([layering(im) < t for im, _ in salty]) for t in np.linspace(0.5, 5, 19))
    assert by_texture > by_brightness + 0.1, (
        "the texture (layered vs chaotic) must carry the signal"
    )


def test_street_and_road_labels() -> None:
    seen: set[int] = set()
    for i in range(6):
        image, labels = street_scene(scene_rng(0, "street", i))
        assert image.shape == (256, 256, 3) and labels.shape == (256, 256)
        seen |= set(np.unique(labels).tolist())
        assert labels[-1, 128] in (0, 1, 5)  # bottom centre: road, sidewalk, or a car on it
    assert seen == set(range(len(STREET_CLASSES)))
    for marked in (0, 1, 2):
        image, labels = road_scene(scene_rng(0, "road", marked), marked=marked)
        assert image.shape == (160, 480, 3) and set(np.unique(labels)) <= {0, 1}
        assert 0.1 < (labels == ROAD_CLASSES.index("road")).mean() < 0.6
        assert labels[:40].max() == 0, "no road above the horizon"


def test_moving_objects_move_at_constant_velocity_and_stay_inside() -> None:
    frames = list(moving_objects(scene_rng(0, "video", 0), num_frames=40, num_objects=1))
    centres = np.array([(b[0, :2] + b[0, 2:]) / 2 for _, b, _, _ in frames])
    steps = np.diff(centres, axis=0)
    assert all(f.shape == (240, 320, 3) for f, _, _, _ in frames)
    assert all(
        (b[:, :2] >= 0).all() and (b[:, 2] <= 320).all() and (b[:, 3] <= 240).all()
        for _, b, _, _ in frames
    )
    # away from a bounce every step is the same (up to integer positions: 1 px)
    speed = np.abs(steps).max(axis=0)
    assert np.all(np.abs(np.abs(steps) - speed) <= 1.0)
