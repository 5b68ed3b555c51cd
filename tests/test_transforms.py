"""Transforms: hand-computed cases, box/mask consistency, and agreement with torchvision.transforms.v2."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from detseg.data import transforms as T


def scene(rng: np.random.Generator, num_objects: int = 4):
    """Random image with ellipse / rectangle instances; boxes are the exact mask extents."""
    height, width = int(rng.integers(48, 96)), int(rng.integers(48, 96))
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    masks = np.zeros((num_objects, height, width), dtype=np.uint8)
    semantic = np.zeros((height, width), dtype=np.int64)
    for i in range(num_objects):
        cx, cy = int(rng.integers(8, width - 8)), int(rng.integers(8, height - 8))
        ax, ay = int(rng.integers(5, 20)), int(rng.integers(5, 20))
        if i % 2:
            cv2.ellipse(masks[i], (cx, cy), (ax, ay), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            masks[i, max(cy - ay, 0) : cy + ay, max(cx - ax, 0) : cx + ax] = 1
        semantic[masks[i] > 0] = i + 1
    target = {
        "boxes": T.boxes_from_masks(masks),
        "labels": np.arange(num_objects, dtype=np.int64),
        "iscrowd": np.zeros(num_objects, dtype=bool),
        "masks": masks,
        "semantic_mask": semantic,
    }
    return image, target


def assert_consistent(image: np.ndarray, target: dict) -> None:
    n = len(target["boxes"])
    assert len(target["labels"]) == len(target["iscrowd"]) == len(target["masks"]) == n
    assert target["masks"].shape[1:] == image.shape[:2] == target["semantic_mask"].shape
    extents = T.boxes_from_masks(target["masks"])
    assert (target["masks"].sum(axis=(1, 2)) > 0).all(), "an empty mask was kept"
    np.testing.assert_allclose(target["boxes"], extents, atol=1.0)


def test_boxes_from_masks_hand_case():
    mask = np.zeros((1, 6, 8), np.uint8)
    mask[0, 1:4, 2:5] = 1  # rows 1..3, columns 2..4
    np.testing.assert_array_equal(T.boxes_from_masks(mask), [[2, 1, 5, 4]])


def test_hflip_hand_case():
    image = np.zeros((8, 10, 3), np.uint8)
    image[0, 0] = 255
    masks = np.zeros((1, 8, 10), np.uint8)
    masks[0, 2:6, 1:4] = 1
    target = {
        "boxes": np.array([[1, 2, 4, 6]], np.float32),
        "labels": np.array([0]),
        "masks": masks,
    }
    out_image, out = T.HorizontalFlip(p=1.0)(image, target, np.random.default_rng(0))
    np.testing.assert_array_equal(out["boxes"], [[6, 2, 9, 6]])
    np.testing.assert_array_equal(T.boxes_from_masks(out["masks"]), [[6, 2, 9, 6]])
    assert out_image[0, 9, 0] == 255 and out_image[0, 0, 0] == 0
    same_image, same = T.HorizontalFlip(p=0.0)(image, target, np.random.default_rng(0))
    assert same_image is image and same is target


def test_resize_hand_cases():
    image = np.zeros((10, 20, 3), np.uint8)
    target = {"boxes": np.array([[2, 3, 6, 7]], np.float32)}
    out_image, out = T.Resize((20, 40))(image, target)
    assert out_image.shape == (20, 40, 3)
    np.testing.assert_allclose(out["boxes"], [[4, 6, 12, 14]])
    assert T.Resize(max_size=10)(image, target)[0].shape == (5, 10, 3)
    assert T.Resize(8)(image, target)[0].shape == (8, 16, 3)
    assert T.Resize(8, max_size=12)(image, target)[0].shape == (6, 12, 3)


def test_semantic_masks_use_nearest():
    labels = np.array([[0, 1], [2, 3]], dtype=np.int64)
    image = np.zeros((2, 2, 3), np.uint8)
    _, out = T.Resize((4, 4))(image, {"semantic_mask": labels})
    np.testing.assert_array_equal(out["semantic_mask"], np.kron(labels, np.ones((2, 2), int)))
    rng = np.random.default_rng(1)
    big = rng.choice([0, 3, 7, 255], size=(37, 53)).astype(np.uint8)
    for size in [(11, 17), (80, 90)]:
        _, out = T.Resize(size)(np.zeros((37, 53, 3), np.uint8), {"semantic_mask": big})
        assert set(np.unique(out["semantic_mask"])) <= {0, 3, 7, 255}
        assert out["semantic_mask"].dtype == np.uint8


def test_crop_hand_case_without_masks():
    image = np.arange(50 * 50 * 3, dtype=np.uint8).reshape(50, 50, 3)
    target = {"boxes": np.array([[10, 10, 30, 30], [40, 40, 45, 45]], np.float32), "labels": [1, 2]}
    out_image, out = T.crop(image, target, top=20, left=0, height=20, width=40, min_visibility=0.3)
    np.testing.assert_array_equal(out_image, image[20:40, 0:40])
    np.testing.assert_array_equal(out["boxes"], [[10, 0, 30, 10]])  # half of it is left
    np.testing.assert_array_equal(out["labels"], [1])  # the second one is outside
    _, none_left = T.crop(image, target, top=20, left=0, height=20, width=40, min_visibility=0.6)
    assert none_left["boxes"].shape == (0, 4) and none_left["labels"].shape == (0,)


def test_crop_recomputes_box_from_remaining_mask():
    masks = np.zeros((1, 40, 40), np.uint8)
    cv2.circle(masks[0], (20, 20), 10, 1, -1)  # box [10, 10, 31, 31]
    target = {"boxes": T.boxes_from_masks(masks), "labels": np.array([0]), "masks": masks}
    _, out = T.crop(np.zeros((40, 40, 3), np.uint8), target, 25, 0, 15, 40)
    # the cap below y=25 is narrower than the circle: box = its extent, not the clipped box
    np.testing.assert_array_equal(out["boxes"], T.boxes_from_masks(out["masks"]))
    assert out["boxes"][0, 0] > 10 and out["boxes"][0, 2] < 31 and out["boxes"][0, 1] == 0


TRANSFORMS = {
    "flip": T.HorizontalFlip(p=1.0),
    "resize_exact": T.Resize((61, 37)),
    "resize_short": T.Resize(40, max_size=70),
    "resize_long": T.Resize(max_size=120),
    "crop": T.RandomCrop((40, 50), min_visibility=0.3),
    "resized_crop": T.RandomResizedCrop((64, 64), min_visibility=0.3),
    "jitter": T.ColorJitter(0.4, 0.4, 0.4, 0.1),
    "compose": T.Compose(
        [T.RandomResizedCrop((72, 72)), T.HorizontalFlip(), T.ColorJitter(0.2, 0.2, 0.2, 0.05)]
    ),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_boxes_stay_consistent_with_masks(name):
    for seed in range(15):
        rng = np.random.default_rng(seed)
        image, target = scene(rng)
        out_image, out = TRANSFORMS[name](image, target, rng)
        assert out_image.dtype == np.uint8 and out_image.ndim == 3
        assert_consistent(out_image, out)


def test_same_seed_same_output():
    transform = TRANSFORMS["compose"]
    image, target = scene(np.random.default_rng(3))
    a_image, a = transform(image, target, np.random.default_rng(7))
    b_image, b = transform(image, target, np.random.default_rng(7))
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a["boxes"], b["boxes"])
    c_image, _ = transform(image, target, np.random.default_rng(8))
    assert a_image.shape != c_image.shape or not np.array_equal(a_image, c_image)


def random_boxes(rng, height, width, n=20):
    xy = rng.uniform(0, [width, height], size=(n, 2))
    wh = rng.uniform(1, [width / 2, height / 2], size=(n, 2))
    return np.concatenate([xy, np.minimum(xy + wh, [width, height])], 1).astype(np.float32)


def tv_boxes(boxes, height, width):
    return tv_tensors.BoundingBoxes(
        torch.from_numpy(boxes), format="XYXY", canvas_size=(height, width)
    )


def test_flip_and_resize_match_torchvision():
    rng = np.random.default_rng(0)
    for _ in range(30):
        height, width = int(rng.integers(20, 300)), int(rng.integers(20, 300))
        boxes = random_boxes(rng, height, width)
        image = np.zeros((height, width, 3), np.uint8)
        _, mine = T.hflip(image, {"boxes": boxes})
        theirs = TF.horizontal_flip(tv_boxes(boxes, height, width))
        np.testing.assert_allclose(mine["boxes"], theirs.numpy(), atol=1e-4)
        size_choice = [
            ([int(rng.integers(10, 400)), int(rng.integers(10, 400))], None),
            ([int(rng.integers(10, 200))], None),
            ([int(rng.integers(10, 100))], int(rng.integers(101, 300))),
            (None, int(rng.integers(10, 400))),
        ][int(rng.integers(0, 4))]
        size, max_size = size_choice
        my_size = size[0] if size is not None and len(size) == 1 else size
        out_image, mine = T.Resize(my_size, max_size=max_size)(image, {"boxes": boxes})
        theirs = TF.resize(tv_boxes(boxes, height, width), size=size, max_size=max_size)
        assert tuple(out_image.shape[:2]) == tuple(theirs.canvas_size)
        np.testing.assert_allclose(mine["boxes"], theirs.numpy(), rtol=1e-5, atol=1e-3)


def test_color_adjustments_match_torchvision():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    chw = torch.from_numpy(image).permute(2, 0, 1)
    cases = [
        (T.adjust_brightness, TF.adjust_brightness, 1.3),
        (T.adjust_brightness, TF.adjust_brightness, 0.6),
        (T.adjust_contrast, TF.adjust_contrast, 0.5),
        (T.adjust_contrast, TF.adjust_contrast, 1.4),
        (T.adjust_saturation, TF.adjust_saturation, 0.3),
        (T.adjust_saturation, TF.adjust_saturation, 1.7),
        (T.adjust_hue, TF.adjust_hue, 0.2),
        (T.adjust_hue, TF.adjust_hue, -0.35),
    ]
    for mine, theirs, factor in cases:
        expected = theirs(chw, factor).permute(1, 2, 0).numpy().astype(int)
        got = mine(image, factor).astype(int)
        assert np.abs(got - expected).max() <= 2, (mine.__name__, factor)


def test_color_jitter_zero_is_identity_and_leaves_target():
    image, target = scene(np.random.default_rng(0))
    out_image, out = T.ColorJitter()(image, target, np.random.default_rng(0))
    np.testing.assert_array_equal(out_image, image)
    assert out is target
    with pytest.raises(ValueError):
        T.ColorJitter(hue=0.7)


def test_normalize():
    image = np.full((2, 3, 3), 255, np.uint8)
    out, _ = T.Normalize(mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))(image, {})
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [2.0, 1.0, 0.5])


def test_resized_crop_output_size_and_fallback():
    transform = T.RandomResizedCrop((30, 20), scale=(0.5, 0.5), ratio=(10.0, 10.0))
    # aspect 10 never fits a 50 x 60 image: centre crop of full width and height 60 / 10
    assert transform.window(50, 60, np.random.default_rng(0)) == (22, 0, 6, 60)
    image, target = scene(np.random.default_rng(1))
    out_image, _ = transform(image, target, np.random.default_rng(0))
    assert out_image.shape == (30, 20, 3)
