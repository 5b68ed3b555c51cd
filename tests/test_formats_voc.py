"""Pascal VOC XML: the 1-based inclusive convention, round trip, errors with line numbers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from detseg.data.formats import voc
from detseg.data.types import DetectionRecord
from detseg.errors import UserError

# VOC2007 000001.xml, shortened (the dog and one person)
VOC2007_000001 = """<annotation>
	<folder>VOC2007</folder>
	<filename>000001.jpg</filename>
	<size>
		<width>353</width>
		<height>500</height>
		<depth>3</depth>
	</size>
	<segmented>0</segmented>
	<object>
		<name>dog</name>
		<pose>Left</pose>
		<truncated>1</truncated>
		<difficult>0</difficult>
		<bndbox>
			<xmin>48</xmin>
			<ymin>240</ymin>
			<xmax>195</xmax>
			<ymax>371</ymax>
		</bndbox>
	</object>
	<object>
		<name>person</name>
		<difficult>1</difficult>
		<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>1</xmax><ymax>1</ymax></bndbox>
	</object>
</annotation>
"""


def _write_xml(root, name, text):
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "Annotations" / name).write_text(text)


def test_one_based_inclusive_corners_become_continuous(tmp_path):
    _write_xml(tmp_path, "000001.xml", VOC2007_000001)
    dataset = voc.read(tmp_path)
    (record,) = dataset.records
    assert dataset.classes == ["dog", "person"]
    assert (record.file_name, record.height, record.width) == ("000001.jpg", 500, 353)
    # xmin=48 (1-based) is 0-based pixel 47 -> x1 = 47; xmax=195 inclusive -> x2 = 195
    # the single top-left pixel (1, 1)-(1, 1) spans [0, 1) x [0, 1)
    np.testing.assert_array_equal(record.boxes, [[47, 239, 195, 371], [0, 0, 1, 1]])
    np.testing.assert_array_equal(record.extra["difficult"], [False, True])
    np.testing.assert_array_equal(record.extra["truncated"], [True, False])
    assert record.extra["lines"] == [10, 22]  # the lines of the <object> tags
    assert dataset.image_root == tmp_path / "JPEGImages"


def test_writer_uses_one_based_inclusive_corners(tmp_path):
    record = DetectionRecord(0, "a.jpg", 10, 20, [[0, 0, 1, 1], [47, 239, 195, 371]], [0, 1])
    tree = ET.fromstring(voc.to_xml(record, ["dog", "person"]))
    corners = [
        [int(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")]
        for obj in tree.findall("object")
    ]
    assert corners == [[1, 1, 1, 1], [48, 240, 195, 371]]
    assert [obj.findtext("name") for obj in tree.findall("object")] == ["dog", "person"]
    assert tree.findtext("size/width") == "20" and tree.findtext("size/height") == "10"


def test_round_trip_with_split_and_difficult(tmp_path):
    rng = np.random.default_rng(3)
    samples = []
    for index in range(4):
        boxes = np.sort(rng.integers(0, 60, (3, 2, 2)), axis=1).reshape(3, 4)[:, [0, 2, 1, 3]]
        boxes[:, 2:] += 1  # at least one pixel
        record = DetectionRecord(
            index,
            f"{index:06d}.jpg",
            64,
            64,
            boxes,
            rng.integers(0, 2, 3),
            extra={"difficult": rng.random(3) < 0.5},
        )
        samples.append((record, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    voc.write(tmp_path, samples, ["cat", "dog"], split="trainval")
    assert (tmp_path / "ImageSets" / "Main" / "trainval.txt").read_text().split() == [
        f"{i:06d}" for i in range(4)
    ]
    dataset = voc.read(tmp_path, "trainval", classes=["cat", "dog"])
    for (original, _), read_back in zip(samples, dataset.records):
        np.testing.assert_array_equal(read_back.boxes, original.boxes)
        np.testing.assert_array_equal(read_back.labels, original.labels)
        np.testing.assert_array_equal(read_back.extra["difficult"], original.extra["difficult"])
        assert dataset.image_path(read_back).is_file()


def test_malformed_xml_names_the_line(tmp_path):
    _write_xml(tmp_path, "x.xml", "<annotation>\n<size><width>3</width>\n</annotation>\n")
    with pytest.raises(UserError, match="malformed XML: mismatched tag") as info:
        voc.read(tmp_path)
    assert info.value.line == 3 and info.value.path == str(tmp_path / "Annotations" / "x.xml")


def test_missing_coordinate_names_the_object_line(tmp_path):
    text = VOC2007_000001.replace("<ymax>371</ymax>", "")
    _write_xml(tmp_path, "000001.xml", text)
    with pytest.raises(UserError, match="<bndbox>: missing <ymax>") as info:
        voc.read(tmp_path)
    assert info.value.line == 10


def test_unknown_class_is_an_error(tmp_path):
    _write_xml(tmp_path, "000001.xml", VOC2007_000001)
    with pytest.raises(UserError, match="class 'person' not in"):
        voc.read(tmp_path, classes=["dog"])
