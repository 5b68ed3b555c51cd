"""The ``tabletop`` recipe: Roboflow's YOLOv7 export layout, exact boxes, occlusion, blur, split."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from detseg.data import recipes
from detseg.data.imageio import read_image
from detseg.data.synthetic import masks_to_boxes, scene_rng
from detseg.data.synthetic_tabletop import (
    TABLETOP_CLASSES,
    motion_blurred,
    split_counts,
    tabletop_scene,
)

ROBOFLOW_NAME = re.compile(r"^webcam_\d{4}_jpg\.rf\.[0-9a-f]{32}\.jpg$")


def test_split_counts_follow_roboflow_70_20_10():
    assert split_counts(600) == {"train": 420, "valid": 120, "test": 60}
    assert split_counts(10) == {"train": 7, "valid": 2, "test": 1}
    assert split_counts(3) == {"train": 1, "valid": 1, "test": 1}
    assert split_counts(2) == {"train": 2, "valid": 0, "test": 0}


def test_layout_is_the_roboflow_yolov7_export(tmp_path: Path):
    root = recipes.make("tabletop", tmp_path / "tt", num_images=10, seed=3)
    config = yaml.safe_load((root / "data.yaml").read_text())
    assert config == {
        "train": "../train/images",
        "val": "../valid/images",
        "test": "../test/images",
        "nc": 3,
        "names": ["ball", "cup", "lotion"],
    }
    assert (root / "README.dataset.txt").is_file()
    for split, count in {"train": 7, "valid": 2, "test": 1}.items():
        images = sorted((root / split / "images").iterdir())
        labels = sorted((root / split / "labels").iterdir())
        assert len(images) == len(labels) == count
        assert all(ROBOFLOW_NAME.match(p.name) for p in images)
        assert [p.stem for p in images] == [p.stem for p in labels]
        for label_file in labels:
            for line in label_file.read_text().splitlines():
                values = line.split()
                assert len(values) == 5 and values[0] in ("0", "1", "2")
                assert all(0.0 <= float(v) <= 1.0 for v in values[1:])


def test_reads_back_through_the_yolo_reader(isolated_dirs):
    total = 0
    for split in ("train", "val", "test"):
        dataset = recipes.load("tabletop", num_images=12, split=split)
        assert dataset.classes == list(TABLETOP_CLASSES)
        total += len(dataset)
        for record in dataset.records:
            assert (record.height, record.width) == (240, 320)
            assert len(record.labels) >= 1 and set(record.labels.tolist()) <= {0, 1, 2}
            assert (record.boxes[:, 2:] > record.boxes[:, :2]).all()
            image = read_image(dataset.image_root / record.file_name)
            assert image.shape == (240, 320, 3)
    assert total == 12


@pytest.mark.parametrize("index", range(6))
def test_boxes_are_the_visible_mask_extents(index: int):
    scene = tabletop_scene(scene_rng(0, "tabletop", index))
    assert len(scene.labels) >= 1
    np.testing.assert_array_equal(scene.boxes, masks_to_boxes(scene.masks))
    # the compositor keeps visible masks disjoint: a nearer object hides the farther one
    assert scene.masks.sum(axis=0).max() == 1


def test_scenes_vary_classes_occlusion_and_blur():
    classes, occluded, counts = set(), 0, []
    for index in range(40):
        scene = tabletop_scene(scene_rng(1, "tabletop", index))
        classes |= set(scene.labels.tolist())
        counts.append(len(scene.labels))
        areas = scene.masks.reshape(len(scene.masks), -1).sum(axis=1)
        box_areas = np.prod(scene.boxes[:, 2:] - scene.boxes[:, :2], axis=1)
        occluded += int((areas < 0.5 * box_areas).any())
    assert classes == {0, 1, 2} and min(counts) >= 1 and max(counts) >= 4
    assert occluded >= 3


def test_motion_blur_hand_computed():
    image = np.zeros((9, 9, 3), np.uint8)
    image[4, 4] = 90
    blurred = motion_blurred(image, 3, 0.0)  # horizontal line of 3: the dot spreads to 3 columns
    np.testing.assert_array_equal(blurred[4, 3:6, 0], [30, 30, 30])
    assert blurred[3].max() == 0 and blurred[5].max() == 0 and blurred[4, 2].max() == 0
