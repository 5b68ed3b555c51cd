"""Copy-paste: hand-computed pastes in both depth orders, refusals, and invariants on random scenes."""

from __future__ import annotations

import numpy as np
import pytest

from detseg.data.copy_paste import CopyPaste, paste_instance, shift_columns
from detseg.data.transforms import boxes_from_masks


def one_object(height: int, width: int, rows: slice, cols: slice, value: int):
    """An image of zeros with one rectangle of grey ``value`` and its target."""
    image = np.zeros((height, width, 3), np.uint8)
    mask = np.zeros((1, height, width), np.uint8)
    mask[0, rows, cols] = 1
    image[mask[0] > 0] = value
    target = {
        "boxes": boxes_from_masks(mask),
        "labels": np.array([0], np.int64),
        "iscrowd": np.zeros(1, bool),
        "masks": mask,
    }
    return image, target


def test_shift_columns_hand_case():
    row = np.arange(1, 6)[None]  # [[1 2 3 4 5]]
    np.testing.assert_array_equal(shift_columns(row, 2, 5), [[0, 0, 1, 2, 3]])
    np.testing.assert_array_equal(shift_columns(row, -3, 4), [[4, 5, 0, 0]])
    np.testing.assert_array_equal(shift_columns(row, 9, 5), [[0, 0, 0, 0, 0]])
    column = np.arange(1, 4)[:, None]  # 3 rows
    np.testing.assert_array_equal(shift_columns(column, 1, 2, height=2), [[0, 1], [0, 2]])
    np.testing.assert_array_equal(shift_columns(column, 0, 1, height=4), [[1], [2], [3], [0]])


def test_paste_from_a_taller_source_keeps_rows_and_cuts_the_rest():
    image, target = one_object(8, 10, slice(0, 3), slice(0, 4), 100)
    src_image, src = one_object(12, 6, slice(4, 12), slice(1, 4), 200)  # rows 4..11: 8 px tall
    image, out = paste_instance(image, target, src_image, src["masks"][0], 0, dx=5)
    np.testing.assert_array_equal(out["boxes"][1], [6, 4, 9, 8])  # rows 4..7 fit in 8 rows
    assert out["masks"][1].sum() == 12 and (image[4:8, 6:9] == 200).all()


def test_paste_on_top_hides_the_old_object():
    # old object: rows 2..7, columns 2..5 (24 px); pasted: rows 4..9, columns 0..3 moved 2 right
    image, target = one_object(10, 10, slice(2, 8), slice(2, 6), 100)
    src_image, src = one_object(10, 8, slice(4, 10), slice(0, 4), 200)
    image, out = paste_instance(image, target, src_image, src["masks"][0], 3, dx=2, depth="top")
    pasted = np.zeros((10, 10), bool)
    pasted[4:10, 2:6] = True
    np.testing.assert_array_equal(out["masks"][1], pasted)
    np.testing.assert_array_equal(out["masks"][0], np.pad(np.ones((2, 4)), ((2, 6), (2, 4))))
    np.testing.assert_array_equal(out["boxes"], [[2, 2, 6, 4], [2, 4, 6, 10]])
    np.testing.assert_array_equal(out["labels"], [0, 3])
    np.testing.assert_array_equal(out["iscrowd"], [False, False])
    assert (image[pasted] == 200).all() and (image[2:4, 2:6] == 100).all()
    assert image.sum() == 3 * (200 * 24 + 100 * 8)


def test_box_bottom_order_keeps_the_nearer_object_in_front():
    # old object ends at row 9 (nearer); the pasted one ends at row 8 and goes behind it
    image, target = one_object(10, 10, slice(3, 9), slice(3, 7), 100)
    src_image, src = one_object(10, 10, slice(0, 8), slice(5, 9), 200)
    image, out = paste_instance(image, target, src_image, src["masks"][0], 0, depth="box_bottom")
    np.testing.assert_array_equal(out["masks"][0], target["masks"][0])  # untouched
    behind = np.zeros((10, 10), bool)
    behind[0:8, 5:9] = True
    behind[3:8, 5:7] = False  # the part the old object covers
    np.testing.assert_array_equal(out["masks"][1], behind)
    np.testing.assert_array_equal(out["boxes"][1], [5, 0, 9, 8])
    assert (image[3:9, 3:7] == 100).all() and (image[behind] == 200).all()
    # the same paste on top would cut the old object instead
    _, on_top = paste_instance(
        *one_object(10, 10, slice(3, 9), slice(3, 7), 100), src_image, src["masks"][0], 0
    )
    assert on_top["masks"][0].sum() == 24 - 10 and on_top["masks"][1].sum() == 32


def test_paste_is_refused_when_too_little_would_stay_visible():
    image, target = one_object(10, 10, slice(2, 8), slice(2, 6), 100)
    src_image, src = one_object(10, 10, slice(1, 9), slice(1, 7), 200)
    # on top, the old object would keep 0 of 24 pixels
    assert paste_instance(image, target, src_image, src["masks"][0], 0) is None
    # in box_bottom order too: the pasted box ends lower (row 9 vs 8), so it is the nearer one ...
    assert paste_instance(image, target, src_image, src["masks"][0], 0, depth="box_bottom") is None
    # ... and min_visibility counts: 12 of 24 pixels left is enough at 0.3, not at 0.7
    small_image, small = one_object(10, 10, slice(5, 10), slice(2, 6), 200)
    for visibility, refused in ((0.3, False), (0.7, True)):
        result = paste_instance(
            image, target, small_image, small["masks"][0], 0, min_visibility=visibility
        )
        assert (result is None) == refused
    # fewer than min_pixels shown
    tiny_image, tiny = one_object(10, 10, slice(0, 2), slice(0, 2), 200)
    assert paste_instance(image, target, tiny_image, tiny["masks"][0], 0) is None
    with pytest.raises(ValueError, match="depth"):
        paste_instance(image, target, src_image, src["masks"][0], 0, depth="random")


def random_scene(rng: np.random.Generator, height: int = 48, width: int = 64):
    """Non-overlapping rectangles (as visible masks of a scene)."""
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    masks = []
    taken = np.zeros((height, width), bool)
    for _ in range(int(rng.integers(1, 4))):
        y0, x0 = int(rng.integers(0, height - 12)), int(rng.integers(0, width - 8))
        mask = np.zeros((height, width), bool)
        mask[y0 : y0 + int(rng.integers(8, 20)), x0 : x0 + int(rng.integers(5, 14))] = True
        mask &= ~taken
        if mask.sum() >= 12:
            masks.append(mask)
            taken |= mask
    masks_u8 = np.stack(masks).astype(np.uint8)
    return image, {
        "boxes": boxes_from_masks(masks_u8),
        "labels": np.zeros(len(masks), np.int64),
        "iscrowd": np.zeros(len(masks), bool),
        "masks": masks_u8,
        "image_id": 7,
    }


@pytest.mark.parametrize("depth", ["top", "box_bottom"])
def test_copy_paste_keeps_masks_disjoint_boxes_tight_and_pixels_from_their_source(depth):
    rng = np.random.default_rng(0)
    sources = [random_scene(rng) for _ in range(5)]
    transform = CopyPaste(sources.__getitem__, len(sources), p=1.0, depth=depth)
    pasted_count = 0
    for seed in range(30):
        image, target = random_scene(np.random.default_rng(100 + seed))
        before = target["masks"].sum(axis=(1, 2))
        out_image, out = transform(image, target, np.random.default_rng(seed))
        masks = out["masks"].astype(bool)
        n_old = len(before)
        assert len(out["boxes"]) == len(out["labels"]) == len(out["iscrowd"]) == len(masks)
        assert (masks.sum(axis=0) <= 1).all(), "two objects own one pixel"
        np.testing.assert_array_equal(out["boxes"], boxes_from_masks(masks))
        assert (masks[:n_old].sum(axis=(1, 2)) >= 0.3 * before).all()
        assert (masks[n_old:].sum(axis=(1, 2)) >= 12).all()
        untouched = ~masks[n_old:].any(axis=0)
        np.testing.assert_array_equal(out_image[untouched], image[untouched])
        assert out["image_id"] == 7
        pasted_count += len(masks) - n_old
        # the same generator state gives the same output
        again_image, again = transform(image, target, np.random.default_rng(seed))
        np.testing.assert_array_equal(again_image, out_image)
        np.testing.assert_array_equal(again["masks"], out["masks"])
    assert pasted_count >= 20  # most of the 30 images got at least one object


def test_copy_paste_probability_zero_and_no_masks_leave_the_sample_alone():
    rng = np.random.default_rng(1)
    image, target = random_scene(rng)
    never = CopyPaste(lambda index: random_scene(rng), 3, p=0.0)
    assert never(image, target, np.random.default_rng(0)) == (image, target)
    boxes_only = {key: value for key, value in target.items() if key != "masks"}
    always = CopyPaste(lambda index: random_scene(rng), 3, p=1.0)
    assert always(image, boxes_only, np.random.default_rng(0)) == (image, boxes_only)
    with pytest.raises(ValueError, match="p must be"):
        CopyPaste(lambda index: random_scene(rng), 3, p=1.5)
