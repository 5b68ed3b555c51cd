"""Letterbox: hand-computed sizes and offsets, agreement with cv2.resize + copyMakeBorder, box round trips."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from detseg.data.letterbox import letterbox, letterbox_boxes, letterbox_params, unletterbox_boxes


def test_wide_image_to_square_hand_computed():
    image = np.full((100, 200, 3), 7, dtype=np.uint8)  # h=100, w=200
    canvas, scale, pad = letterbox(image, 416)
    # scale = min(416/100, 416/200) = 2.08; resized 208 x 416; pad_y = (416 - 208) // 2 = 104
    assert canvas.shape == (416, 416, 3) and canvas.dtype == np.uint8
    assert scale == pytest.approx(2.08)
    assert pad == (0.0, 104.0)
    assert (canvas[:104] == 114).all() and (canvas[312:] == 114).all()
    assert (canvas[104:312] == 7).all()
    boxes = letterbox_boxes(np.array([[0, 0, 200, 100], [50, 25, 100, 75]]), scale, pad)
    np.testing.assert_allclose(boxes, [[0, 104, 416, 312], [104, 156, 208, 260]], atol=1e-4)


def test_tall_image_rectangular_target_odd_padding():
    image = np.zeros((90, 45, 3), dtype=np.uint8)
    # target (height, width) = (60, 64): scale = min(60/90, 64/45) = 2/3, resized 60 x 30
    canvas, scale, pad = letterbox(image, (60, 64), color=(1, 2, 3))
    assert canvas.shape == (60, 64, 3)
    assert scale == pytest.approx(2 / 3)
    assert pad == (17.0, 0.0)  # (64 - 30) // 2 = 17 left, 17 right
    np.testing.assert_array_equal(canvas[0, 0], [1, 2, 3])
    np.testing.assert_array_equal(canvas[0, 63], [1, 2, 3])
    assert (canvas[:, 17:47] == 0).all() and (canvas[:, 16] == [1, 2, 3]).all()
    # odd total padding: 64 - 45 = 19 columns, 9 on the left (smaller half), 10 on the right
    _, _, pad_odd = letterbox(np.zeros((64, 45, 3), np.uint8), 64)
    assert pad_odd == (9.0, 0.0)


def test_scaleup_false_keeps_small_images():
    image = np.full((50, 40, 3), 200, dtype=np.uint8)
    canvas, scale, pad = letterbox(image, 64, scaleup=False)
    assert scale == 1.0 and pad == (12.0, 7.0)
    np.testing.assert_array_equal(canvas[7:57, 12:52], image)
    _, scale_up, _ = letterbox(image, 64)
    assert scale_up == pytest.approx(64 / 50)


def test_equals_cv2_resize_and_copymakeborder():
    rng = np.random.default_rng(0)
    for _ in range(10):
        h, w = int(rng.integers(10, 300)), int(rng.integers(10, 300))
        out_h, out_w = int(rng.integers(32, 200)), int(rng.integers(32, 200))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        canvas, scale, (pad_x, pad_y) = letterbox(image, (out_h, out_w))
        new_w, new_h = round(w * scale), round(h * scale)
        reference = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        top, left = int(pad_y), int(pad_x)
        reference = cv2.copyMakeBorder(
            reference, top, out_h - new_h - top, left, out_w - new_w - left,
            cv2.BORDER_CONSTANT, value=(114, 114, 114),
        )  # fmt: skip
        np.testing.assert_array_equal(canvas, reference)


def test_grayscale_and_single_channel():
    canvas, _, pad = letterbox(np.zeros((10, 20), np.uint8), 40)
    assert canvas.shape == (40, 40) and canvas[0, 0] == 114 and pad == (0.0, 10.0)
    canvas1, _, _ = letterbox(np.zeros((10, 20, 1), np.uint8), 40)
    assert canvas1.shape == (40, 40, 1)


def test_boxes_follow_the_pixels():
    # a white rectangle: its extent in the letterboxed image is where letterbox_boxes puts it (1 px)
    image = np.zeros((120, 300, 3), dtype=np.uint8)
    image[30:90, 60:210] = 255
    canvas, scale, pad = letterbox(image, 256, interpolation=cv2.INTER_NEAREST)
    rows = np.flatnonzero((canvas[..., 0] == 255).any(axis=1))
    cols = np.flatnonzero((canvas[..., 0] == 255).any(axis=0))
    found = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
    mapped = letterbox_boxes(np.array([[60, 30, 210, 90]], np.float32), scale, pad)[0]
    np.testing.assert_allclose(found, mapped, atol=1.0)


def test_round_trip_numpy_and_torch_and_clip():
    rng = np.random.default_rng(1)
    for _ in range(20):
        h, w = int(rng.integers(20, 500)), int(rng.integers(20, 500))
        scale, pad, _ = letterbox_params((h, w), 320)
        xy = rng.uniform(0, 1, (15, 2)) * [w, h]
        wh = rng.uniform(0, 1, (15, 2)) * [w, h]
        boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], axis=1).astype(np.float32)
        back = unletterbox_boxes(letterbox_boxes(boxes, scale, pad), scale, pad, (h, w))
        np.testing.assert_allclose(back, boxes, atol=1e-3)
        back_t = unletterbox_boxes(
            letterbox_boxes(torch.from_numpy(boxes), scale, pad), scale, pad, (h, w)
        )
        assert isinstance(back_t, torch.Tensor)
        np.testing.assert_allclose(back_t.numpy(), boxes, atol=1e-3)
    # a box reaching into the padding is clipped to the original image
    scale, pad, _ = letterbox_params((100, 200), 416)  # 2.08, (0, 104)
    out = unletterbox_boxes(np.array([[-10.0, 0.0, 500.0, 416.0]]), scale, pad, (100, 200))
    np.testing.assert_allclose(out, [[0, 0, 200, 100]], atol=1e-4)
    out_t = unletterbox_boxes(torch.tensor([[-10.0, 0.0, 500.0, 416.0]]), scale, pad, (100, 200))
    np.testing.assert_allclose(out_t.numpy(), [[0, 0, 200, 100]], atol=1e-4)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        letterbox(np.zeros((2, 3, 4, 5), np.uint8), 32)
    with pytest.raises(ValueError):
        letterbox_params((0, 10), 32)
