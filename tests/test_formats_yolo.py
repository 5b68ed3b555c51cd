"""YOLO txt + data.yaml (Roboflow layout): hand cases, exact normalisation, polygons, errors."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from detseg.data.formats import yolo
from detseg.data.imageio import write_image
from detseg.data.types import DetectionRecord
from detseg.errors import UserError


def _dataset(tmp_path, label_text: str, *, names=("cat", "dog")):
    yolo.write_data_yaml(tmp_path, list(names))
    write_image(tmp_path / "train" / "images" / "a.jpg", np.zeros((100, 200, 3), np.uint8))
    write_image(tmp_path / "train" / "images" / "b.jpg", np.zeros((100, 200, 3), np.uint8))
    (tmp_path / "train" / "labels").mkdir(parents=True)
    (tmp_path / "train" / "labels" / "a.txt").write_text(label_text)
    return tmp_path / "data.yaml"


def test_roboflow_data_yaml_layout(tmp_path):
    yolo.write(tmp_path, [], ["cat", "dog"], split="val")
    config = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert config == {
        "train": "../train/images",
        "val": "../valid/images",
        "test": "../test/images",
        "nc": 2,
        "names": ["cat", "dog"],
    }
    assert (tmp_path / "valid" / "images").is_dir() and (tmp_path / "valid" / "labels").is_dir()


def test_read_boxes_and_polygons_by_hand(tmp_path):
    data_yaml = _dataset(tmp_path, "1 0.5 0.5 0.2 0.4\n\n0 0.1 0.1 0.3 0.1 0.3 0.5\n")
    dataset = yolo.read(data_yaml)
    a, b = dataset.records
    assert (a.height, a.width) == (100, 200) and dataset.classes == ["cat", "dog"]
    # cx = 0.5 * 200 = 100, w = 0.2 * 200 = 40; cy = 50, h = 0.4 * 100 = 40
    np.testing.assert_allclose(a.boxes, [[80, 30, 120, 70], [20, 10, 60, 50]], atol=1e-4)
    np.testing.assert_array_equal(a.labels, [1, 0])
    assert a.segmentations[0] == []
    np.testing.assert_allclose(a.segmentations[1][0], [20, 10, 60, 10, 60, 50], atol=1e-9)
    assert a.extra["lines"] == [1, 3]
    assert len(b.labels) == 0  # no label file: background image
    assert dataset.image_root == tmp_path / "train" / "images"


def test_written_values_are_exact_to_1e6(tmp_path):
    record = DetectionRecord(0, "x.jpg", 200, 100, [[10, 20, 50, 60]], [1])
    assert yolo.label_lines(record) == ["1 0.300000 0.200000 0.400000 0.200000"]
    rng = np.random.default_rng(1)
    for _ in range(50):
        height, width = (int(v) for v in rng.integers(50, 2000, 2))
        xy = np.sort(rng.uniform(0, 1, (2, 2)), axis=0) * [width, height]
        box = np.concatenate([xy[0], xy[1]])
        record = DetectionRecord(0, "x.jpg", height, width, [box], [0])
        (line,) = yolo.label_lines(record)
        written = np.array(line.split()[1:], dtype=np.float64)
        box32 = record.boxes[0].astype(np.float64)  # what the record holds (float32)
        exact = [
            (box32[0] + box32[2]) / 2 / width,
            (box32[1] + box32[3]) / 2 / height,
            (box32[2] - box32[0]) / width,
            (box32[3] - box32[1]) / height,
        ]
        np.testing.assert_allclose(written, exact, rtol=0, atol=1e-6)


def test_round_trip_all_splits(tmp_path):
    rng = np.random.default_rng(2)
    for split in ("train", "val", "test"):
        samples = []
        for index in range(3):
            boxes = np.array([[5, 6, 40, 30], [0, 0, 64, 48]], dtype=np.float32)[: index + 1]
            record = DetectionRecord(
                index, f"{split}_{index}.png", 48, 64, boxes, rng.integers(0, 3, len(boxes))
            )
            samples.append((record, rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)))
        data_yaml = yolo.write(tmp_path, samples, ["a", "b", "c"], split=split)
        dataset = yolo.read(data_yaml, split=split)
        assert [r.file_name for r in dataset.records] == [r.file_name for r, _ in samples]
        for (original, _), read_back in zip(samples, dataset.records):
            np.testing.assert_allclose(read_back.boxes, original.boxes, atol=64e-6)
            np.testing.assert_array_equal(read_back.labels, original.labels)


def test_polygons_round_trip(tmp_path):
    polygon = [10.0, 10.0, 50.0, 12.0, 30.0, 40.0]
    record = DetectionRecord(0, "p.png", 48, 64, [[10, 10, 50, 40]], [0], segmentations=[[polygon]])
    image = np.zeros((48, 64, 3), np.uint8)
    dataset = yolo.read(yolo.write(tmp_path, [(record, image)], ["a"], polygons=True))
    np.testing.assert_allclose(dataset.records[0].segmentations[0][0], polygon, atol=1e-4)
    np.testing.assert_allclose(dataset.records[0].boxes, [[10, 10, 50, 40]], atol=1e-4)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1\n", 2, "4 numbers"),
        (
            "0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.1\n2 0.5 0.5 0.1 0.1\n",
            3,
            "class id 2 out of range 0..1",
        ),
        ("0 0.5 zero 0.1 0.1\n", 1, "not a number"),
        ("0 0.5 nan 0.1 0.1\n", 1, "non-finite"),
    ],
)
def test_bad_lines_raise_with_file_and_line(tmp_path, text, line, message):
    data_yaml = _dataset(tmp_path, text)
    with pytest.raises(UserError, match=message) as info:
        yolo.read(data_yaml)
    assert info.value.path == str(tmp_path / "train" / "labels" / "a.txt")
    assert info.value.line == line


def test_nc_must_match_names(tmp_path):
    (tmp_path / "data.yaml").write_text("nc: 3\nnames: [a, b]\n")
    with pytest.raises(UserError, match="nc=3 but 2 names"):
        yolo.read(tmp_path / "data.yaml")
