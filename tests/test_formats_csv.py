"""PyImageSearch CSV boxes: layout, round trip, bad rows."""

from __future__ import annotations

import numpy as np
import pytest

from detseg.data.formats import csvboxes
from detseg.data.imageio import write_image
from detseg.data.types import DetectionRecord
from detseg.errors import UserError


def test_read_hand_written_layout(tmp_path):
    write_image(tmp_path / "images" / "face" / "image_0001.jpg", np.zeros((30, 40, 3), np.uint8))
    write_image(
        tmp_path / "images" / "airplane" / "image_0001.jpg", np.zeros((20, 50, 3), np.uint8)
    )
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "face.csv").write_text("image_0001.jpg,1,2,30,25,face\n")
    (tmp_path / "annotations" / "airplane.csv").write_text(
        "image_0001.jpg,3,4,40,18,airplane\nimage_0001.jpg,0,0,10,10,airplane\n"
    )
    dataset = csvboxes.read(tmp_path)
    assert dataset.classes == ["airplane", "face"]
    by_name = {r.file_name: r for r in dataset.records}
    plane, face = by_name["airplane/image_0001.jpg"], by_name["face/image_0001.jpg"]
    np.testing.assert_array_equal(plane.boxes, [[3, 4, 40, 18], [0, 0, 10, 10]])
    np.testing.assert_array_equal(plane.labels, [0, 0])
    assert (plane.height, plane.width, plane.extra["lines"]) == (20, 50, [1, 2])
    np.testing.assert_array_equal(face.boxes, [[1, 2, 30, 25]])
    assert dataset.image_path(face) == tmp_path / "images" / "face" / "image_0001.jpg"


def test_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    samples = []
    for index in range(4):
        box = [[2.5, 3, 30, 20.25]] if index % 2 else [[1, 1, 9, 9], [10, 10, 20, 28]]
        record = DetectionRecord(
            index, f"image_{index:04d}.jpg", 32, 48, box, [index % 2] * len(box)
        )
        samples.append((record, rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)))
    csvboxes.write(tmp_path, samples, ["motorcycle", "face"])
    assert (tmp_path / "annotations" / "face.csv").read_text().splitlines()[0] == (
        "image_0001.jpg,2.5,3,30,20.25,face"
    )
    dataset = csvboxes.read(tmp_path, classes=["motorcycle", "face"])
    by_name = {r.file_name: r for r in dataset.records}
    for record, _ in samples:
        folder = ["motorcycle", "face"][int(record.labels[0])]
        read_back = by_name[f"{folder}/{record.file_name}"]
        np.testing.assert_array_equal(read_back.boxes, record.boxes)
        np.testing.assert_array_equal(read_back.labels, record.labels)


@pytest.mark.parametrize(
    ("row", "message"),
    [("image_0001.jpg,1,2,30,face", "5 columns"), ("image_0001.jpg,1,2,x,25,face", "non-numeric")],
)
def test_bad_row_names_file_and_line(tmp_path, row, message):
    write_image(tmp_path / "images" / "face" / "image_0001.jpg", np.zeros((30, 40, 3), np.uint8))
    (tmp_path / "annotations").mkdir()
    csv_path = tmp_path / "annotations" / "face.csv"
    csv_path.write_text(f"image_0001.jpg,1,2,30,25,face\n{row}\n")
    with pytest.raises(UserError, match=message) as info:
        csvboxes.read(tmp_path)
    assert (info.value.path, info.value.line) == (str(csv_path), 2)
