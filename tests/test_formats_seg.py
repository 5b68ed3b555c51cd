"""Segmentation formats (mask PNGs, TGS, Cityscapes pairs, KITTI road) and the mask helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from pycocotools import mask as mask_utils

from detseg.data.formats import cityscapes, kitti_road, maskpng, tgs
from detseg.data.formats.maskpng import (
    instance_map_to_masks,
    mask_to_rle,
    masks_to_boxes,
    masks_to_instance_map,
    rle_to_mask,
    segmentation_area,
    segmentation_to_mask,
)
from detseg.data.imageio import write_image
from detseg.errors import UserError


def _blocky_labels(rng, height, width, values, block=16):
    coarse = rng.choice(values, (height // block, width // block))
    return np.kron(coarse, np.ones((block, block), dtype=np.int64))


def test_instance_maps_and_boxes_by_hand():
    id_map = np.array([[0, 2, 2], [0, 0, 5], [1, 0, 5]])
    ids, masks = instance_map_to_masks(id_map)
    assert ids.tolist() == [1, 2, 5]
    np.testing.assert_array_equal(masks_to_boxes(masks), [[0, 2, 0, 2], [1, 0, 2, 0], [2, 1, 2, 2]])
    np.testing.assert_array_equal(masks_to_instance_map(masks), [[0, 2, 2], [0, 0, 3], [1, 0, 3]])


def test_masks_to_boxes_matches_torchvision():
    masks = np.random.default_rng(6).random((20, 37, 51)) < 0.002
    masks[:, 3, 4] = True
    expected = torchvision.ops.masks_to_boxes(torch.from_numpy(masks)).numpy()
    np.testing.assert_array_equal(masks_to_boxes(masks), expected)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_rle_and_polygon_helpers_match_pycocotools():
    mask = np.random.default_rng(7).random((23, 31)) < 0.4
    rle = mask_to_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [23, 31]
    np.testing.assert_array_equal(rle_to_mask(rle), mask)
    assert segmentation_area(rle, 23, 31) == mask.sum()
    polygon = [[2.0, 2.0, 12.0, 2.0, 12.0, 8.0, 2.0, 8.0]]
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, 23, 31)))
    np.testing.assert_array_equal(segmentation_to_mask(polygon, 23, 31), expected.astype(bool))
    assert segmentation_area(polygon, 23, 31) == expected.sum() == 60


def test_maskpng_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    samples = [
        (f"s{i}", rng.integers(0, 256, (32, 48, 3), dtype=np.uint8), rng.integers(0, 4, (32, 48)))
        for i in range(3)
    ]
    samples[0][2][0, :5] = 255  # ignore
    maskpng.write(tmp_path, samples, ["bg", "a", "b", "c"])
    dataset = maskpng.read(tmp_path)
    assert dataset.classes == ["bg", "a", "b", "c"] and len(dataset) == 3
    for (_, image, mask), record in zip(samples, dataset.records):
        loaded_image, loaded_mask = dataset.load(record)
        np.testing.assert_array_equal(loaded_image, image)
        np.testing.assert_array_equal(loaded_mask, mask)
        assert loaded_mask.dtype == np.int64
    (tmp_path / "classes.txt").unlink()
    assert maskpng.read(tmp_path).classes == ["class_0", "class_1", "class_2", "class_3"]


def test_tgs_rle_by_hand():
    # Kaggle: "1 3 10 5" = pixels 1-3 and 10-14, numbered top to bottom then left to right
    mask = tgs.rle_decode("1 3 10 5", (5, 3))
    expected = np.zeros((5, 3), dtype=bool)
    expected[0:3, 0] = True  # pixels 1-3: column 0
    expected[4, 1] = True  # pixel 10: column 1, last row
    expected[0:4, 2] = True  # pixels 11-14: column 2
    np.testing.assert_array_equal(mask, expected)
    assert tgs.rle_encode(expected) == "1 3 10 5"
    assert tgs.rle_encode(np.zeros((4, 4))) == ""
    with pytest.raises(ValueError):
        tgs.rle_decode("14 5", (5, 3))


def test_tgs_round_trip_png_and_csv(tmp_path):
    rng = np.random.default_rng(9)
    samples = [
        (
            f"{i:010x}",
            rng.integers(0, 256, (101, 101), dtype=np.uint8),
            rng.random((101, 101)) < 0.3,
        )
        for i in range(3)
    ]
    tgs.write(tmp_path, samples, depths={s[0]: 100.0 * (i + 1) for i, s in enumerate(samples)})
    tgs.write(tmp_path, [("test0", samples[0][1], None)], split="test", depths={"test0": 5.0})
    dataset = tgs.read(tmp_path)
    assert dataset.classes == ["sediment", "salt"]
    assert [r.extra["depth"] for r in dataset.records] == [100.0, 200.0, 300.0]
    for (_, image, mask), record in zip(samples, dataset.records):
        loaded_image, loaded_mask = dataset.load(record)
        assert loaded_image.shape == (101, 101, 3)
        np.testing.assert_array_equal(loaded_image[..., 0], image)
        np.testing.assert_array_equal(loaded_mask, mask.astype(np.int64))
    # without the PNG masks the train.csv RLE is used
    for path in (tmp_path / "train" / "masks").iterdir():
        path.unlink()
    from_csv = tgs.read(tmp_path)
    for (_, _, mask), record in zip(samples, from_csv.records):
        np.testing.assert_array_equal(from_csv.load(record)[1], mask.astype(np.int64))
    test = tgs.read(tmp_path, "test")
    assert test.records[0].extra["depth"] == 5.0
    assert (test.load(test.records[0])[1] == 255).all()


def test_cityscapes_nearest_colour_survives_jpeg(tmp_path):
    rng = np.random.default_rng(10)
    samples = [
        (
            str(i),
            rng.integers(0, 256, (64, 128, 3), dtype=np.uint8),
            _blocky_labels(rng, 64, 128, [0, 1, 2, 3, 4, 5, 6, 255]),
        )
        for i in (1, 2, 10)
    ]
    cityscapes.write(tmp_path, samples, split="val")
    assert (tmp_path / "cityscapes_data" / "val" / "10.jpg").is_file()
    dataset = cityscapes.read(tmp_path, "val")
    assert [r.file_name for r in dataset.records] == ["val/1.jpg", "val/2.jpg", "val/10.jpg"]
    assert (dataset.records[0].height, dataset.records[0].width) == (64, 128)
    for (_, _, labels), record in zip(samples, dataset.records):
        _, loaded = dataset.load(record)
        interior = np.zeros_like(labels, dtype=bool)  # pixels >= 2 px away from a block edge
        interior[np.ix_(np.arange(64) % 16 >= 2, np.arange(128) % 16 >= 2)] = True
        interior &= (np.arange(64) % 16 < 14)[:, None] & (np.arange(128) % 16 < 14)[None, :]
        assert (loaded[interior] == labels[interior]).mean() > 0.99


def test_cityscapes_other_classes_are_ignored():
    colours = np.array(
        [[[0, 0, 142], [0, 0, 70], [255, 255, 255], [130, 66, 125], [107, 142, 35]]], dtype=np.uint8
    )
    # car, truck (not car!), white (far from everything), noisy road, vegetation
    np.testing.assert_array_equal(cityscapes.colors_to_labels(colours), [[5, 255, 255, 0, 4]])
    np.testing.assert_array_equal(
        cityscapes.labels_to_colors(np.array([[0, 255]])), [[[128, 64, 128], [0, 0, 0]]]
    )
    with pytest.raises(ValueError):
        cityscapes.labels_to_colors(np.array([[7]]))


def test_kitti_road_colours_and_round_trip(tmp_path):
    gt = np.array([[[255, 0, 255], [255, 0, 0], [0, 0, 0]]], dtype=np.uint8)
    np.testing.assert_array_equal(kitti_road.colors_to_labels(gt), [[1, 0, 255]])
    rng = np.random.default_rng(11)
    samples = [
        (
            f"{c}_{i:06d}",
            rng.integers(0, 256, (30, 90, 3), dtype=np.uint8),
            rng.choice([0, 1, 255], (30, 90)),
        )
        for c in ("um", "uu")
        for i in range(2)
    ]
    kitti_road.write(tmp_path, samples)
    assert (tmp_path / "data_road" / "training" / "gt_image_2" / "uu_road_000001.png").is_file()
    dataset = kitti_road.read(tmp_path)
    assert [r.extra["category"] for r in dataset.records] == ["um", "um", "uu", "uu"]
    for (_, image, labels), record in zip(samples, dataset.records):
        loaded_image, loaded = dataset.load(record)
        np.testing.assert_array_equal(loaded_image, image)
        np.testing.assert_array_equal(loaded, labels)
    assert len(kitti_road.read(tmp_path, categories=["uu"])) == 2
    (tmp_path / "data_road" / "training" / "gt_image_2" / "um_road_000000.png").unlink()
    with pytest.raises(UserError, match="training image has no ground truth"):
        kitti_road.read(tmp_path)


def test_maskpng_missing_mask_is_a_user_error(tmp_path):
    write_image(tmp_path / "images" / "a.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "masks").mkdir()
    with pytest.raises(UserError, match="image has no mask"):
        maskpng.read(tmp_path)
