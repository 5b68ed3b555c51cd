"""COCO reader / writer: hand-written file, round trip, pycocotools reads what we write."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detseg.data.formats import coco
from detseg.data.formats.maskpng import mask_to_rle, segmentation_to_mask
from detseg.data.imageio import read_image
from detseg.data.types import DetectionRecord
from detseg.errors import UserError

# pycocotools' decode triggers a numpy 2 copy-keyword deprecation inside its C extension
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

HAND = {
    "images": [
        {"id": 11, "file_name": "a.jpg", "height": 100, "width": 200},
        {"id": 12, "file_name": "b.jpg", "height": 50, "width": 60},
    ],
    "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],  # unsorted, with a gap
    "annotations": [
        {
            "id": 1,
            "image_id": 11,
            "category_id": 7,
            "bbox": [10, 20, 30, 40],
            "area": 1200,
            "iscrowd": 0,
            "segmentation": [[10, 20, 40, 20, 40, 60, 10, 60]],
        },
        {
            "id": 2,
            "image_id": 11,
            "category_id": 3,
            "bbox": [0, 0, 2, 1],
            "area": 2,
            "iscrowd": 1,
            "segmentation": {"size": [100, 200], "counts": [0, 1, 99, 1, 99, 1, 19799]},
        },
    ],
}


def test_read_hand_written_file(tmp_path):
    path = tmp_path / "instances_val2017.json"
    path.write_text(json.dumps(HAND))
    dataset = coco.read(path)
    assert dataset.classes == ["cat", "dog"] and dataset.category_ids == [3, 7]
    first, second = dataset.records
    assert first.image_id == 11 and (first.height, first.width) == (100, 200)
    np.testing.assert_array_equal(first.boxes, [[10, 20, 40, 60], [0, 0, 2, 1]])
    np.testing.assert_array_equal(first.labels, [1, 0])  # dog=7 -> 1, cat=3 -> 0
    np.testing.assert_array_equal(first.iscrowd, [False, True])
    assert first.segmentations[0] == [[10, 20, 40, 20, 40, 60, 10, 60]]
    crowd = segmentation_to_mask(first.segmentations[1], 100, 200)  # column-major runs: 3 pixels
    assert crowd.sum() == 3 and crowd[0, 0] and crowd[0, 1] and crowd[0, 2]
    assert len(second.labels) == 0 and second.segmentations is None
    assert first.extra["ann_ids"] == [1, 2]


def test_image_root_follows_coco_2017_layout(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    (tmp_path / "val2017" / "a.jpg").write_bytes(b"x")
    path = tmp_path / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps(HAND))
    assert coco.read(path).image_root == tmp_path / "val2017"
    assert coco.read(path, image_root=tmp_path).image_root == tmp_path


def _random_records(rng: np.random.Generator, count: int) -> list[DetectionRecord]:
    records = []
    for index in range(count):
        height, width = int(rng.integers(40, 80)), int(rng.integers(40, 80))
        boxes, masks = [], []
        for _ in range(int(rng.integers(0, 4))):
            x1, y1 = int(rng.integers(0, width - 10)), int(rng.integers(0, height - 10))
            x2, y2 = int(rng.integers(x1 + 2, width)), int(rng.integers(y1 + 2, height))
            mask = np.zeros((height, width), dtype=bool)
            mask[y1:y2, x1:x2] = rng.random((y2 - y1, x2 - x1)) < 0.7
            mask[y1, x1] = mask[y2 - 1, x2 - 1] = True  # extent = box
            boxes.append([x1, y1, x2, y2])
            masks.append(mask)
        records.append(
            DetectionRecord(
                image_id=index + 1,
                file_name=f"img_{index}.png",
                height=height,
                width=width,
                boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
                labels=rng.integers(0, 3, len(boxes)),
                segmentations=[mask_to_rle(m) for m in masks] if boxes else None,
                extra={"masks": masks},
            )
        )
    return records


def test_write_read_round_trip_and_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    rng = np.random.default_rng(0)
    records = _random_records(rng, 6)
    images = [rng.integers(0, 256, (r.height, r.width, 3), dtype=np.uint8) for r in records]
    classes = ["a", "b", "c"]
    out = coco.write(
        tmp_path / "ann" / "train.json",
        zip(records, images),
        classes,
        image_dir=tmp_path / "imgs",
        category_ids=[5, 9, 20],
    )
    dataset = coco.read(out, image_root=tmp_path / "imgs")
    assert dataset.category_ids == [5, 9, 20] and dataset.classes == classes
    for original, image, read_back in zip(records, images, dataset.records):
        np.testing.assert_allclose(read_back.boxes, original.boxes, atol=1e-4)
        np.testing.assert_array_equal(read_back.labels, original.labels)
        np.testing.assert_array_equal(read_image(dataset.image_path(read_back)), image)  # PNG
        for segmentation, mask in zip(read_back.segmentations or [], original.extra["masks"]):
            np.testing.assert_array_equal(segmentation_to_mask(segmentation, *mask.shape), mask)

    api = COCO(str(out))
    assert sorted(api.getCatIds()) == [5, 9, 20]
    assert len(api.getAnnIds()) == sum(len(r.labels) for r in records)
    for ann in api.loadAnns(api.getAnnIds()):
        record = records[ann["image_id"] - 1]
        index = api.getAnnIds(imgIds=ann["image_id"]).index(ann["id"])
        mask = record.extra["masks"][index]
        np.testing.assert_array_equal(api.annToMask(ann).astype(bool), mask)
        assert ann["area"] == pytest.approx(mask.sum())  # area = mask area, not box area
    assert coco.to_dict(dataset)["annotations"] == json.loads(out.read_text())["annotations"]


def test_area_without_mask_is_box_area(tmp_path):
    record = DetectionRecord(1, "x.jpg", 50, 50, [[1.5, 2, 11.5, 7]], [0])
    data = json.loads(coco.write(tmp_path / "a.json", [(record, None)], ["obj"]).read_text())
    (ann,) = data["annotations"]
    assert ann["bbox"] == [1.5, 2.0, 10.0, 5.0] and ann["area"] == 50.0
    assert ann["segmentation"] == [] and ann["category_id"] == 1


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "images": [],\n  "categories": [,]\n}\n')
    with pytest.raises(UserError) as info:
        coco.read(path)
    assert info.value.line == 3 and info.value.message().startswith(f"{path}:3: malformed JSON")


def test_unknown_category_is_a_user_error(tmp_path):
    data = json.loads(json.dumps(HAND))
    data["annotations"][0]["category_id"] = 99
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="category_id 99 not in categories"):
        coco.read(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["images"][0].pop("height"), r"images\[0\] lacks \['height'\]"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, "3", 4]), "bbox must be"),
        (lambda d: d["categories"][0].pop("id"), r"categories\[0\] needs an integer 'id'"),
    ],
)
def test_missing_or_malformed_fields(tmp_path, change, message):
    data = json.loads(json.dumps(HAND))
    change(data)
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=message) as info:
        coco.read(path)
    assert info.value.path == str(path)
