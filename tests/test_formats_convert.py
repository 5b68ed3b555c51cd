"""Conversion between detection formats: a chain of conversions keeps boxes, classes and masks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detseg.data.convert import convert, output_names
from detseg.data.formats import FORMATS, coco, csvboxes, pennfudan
from detseg.data.formats.maskpng import mask_to_rle, segmentation_to_mask
from detseg.data.types import DetectionRecord
from detseg.errors import UserError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _samples(count=3, masks=False):
    rng = np.random.default_rng(14)
    samples = []
    for index in range(count):
        boxes = np.array([[2, 3, 20, 25], [25, 5, 45, 30]], dtype=np.float32)[: 1 + index % 2]
        segmentations = None
        if masks:
            segmentations = []
            for x1, y1, x2, y2 in boxes.astype(int):
                mask = np.zeros((32, 48), dtype=bool)
                mask[y1:y2, x1:x2] = rng.random((y2 - y1, x2 - x1)) < 0.8
                mask[y1, x1] = mask[y2 - 1, x2 - 1] = True
                segmentations.append(mask_to_rle(mask))
        labels = [(index + k) % 2 for k in range(len(boxes))]
        record = DetectionRecord(
            index + 1, f"img{index}.png", 32, 48, boxes, labels, segmentations=segmentations
        )
        samples.append((record, rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)))
    return samples


def _by_name(dataset):
    """``{base name: (boxes, class names)}``, order of objects ignored."""
    out = {}
    for record in dataset.records:
        names = [dataset.classes[int(v)] for v in record.labels]
        order = np.lexsort(record.boxes.T[::-1])
        out[record.file_name.rsplit("/", 1)[-1]] = (record.boxes[order], [names[i] for i in order])
    return out


def test_chain_coco_yolo_voc_csv_coco_keeps_everything(tmp_path):
    source = coco.write(tmp_path / "src" / "a.json", _samples(), ["cat", "dog"])
    expected = _by_name(coco.read(source))
    path, fmt = source, "coco"
    for step, target in enumerate(["yolo", "voc", "csv", "coco"]):
        path = convert(path, fmt, tmp_path / f"step{step}_{target}", target)
        fmt = target
        dataset = FORMATS[fmt].read(path)
        counts = {
            c: sum(int((r.labels == i).sum()) for r in dataset.records)
            for i, c in enumerate(dataset.classes)
        }
        assert counts == {"cat": 3, "dog": 1}, target
        if step >= 2:  # from csv on, images with two classes are stored once per class
            continue
        got = _by_name(dataset)
        assert got.keys() == expected.keys(), target
        for name, (boxes, names) in expected.items():
            np.testing.assert_allclose(got[name][0], boxes, atol=1e-3, err_msg=target)
            assert got[name][1] == names, target
    final = json.loads(path.read_text())
    assert [c["id"] for c in final["categories"]] == [1, 2]


def test_coco_to_coco_keeps_category_ids(tmp_path):
    source = coco.write(tmp_path / "a.json", _samples(), ["cat", "dog"], category_ids=[17, 18])
    out = convert(source, "coco", tmp_path / "out", "coco")
    assert out.name == "_annotations.coco.json"
    assert [c["id"] for c in json.loads(out.read_text())["categories"]] == [17, 18]
    assert (out.parent / "img0.png").is_file()


def test_pennfudan_to_coco_keeps_masks(tmp_path):
    from pycocotools.coco import COCO

    samples = _samples(masks=True)
    pennfudan.write(tmp_path / "PennFudanPed", samples)
    out = convert(tmp_path, "pennfudan", tmp_path / "coco" / "train.json", "coco")
    api = COCO(str(out))
    assert [c["name"] for c in api.loadCats(api.getCatIds())] == ["person"]
    for (record, _), image_id in zip(samples, sorted(api.getImgIds())):
        anns = api.loadAnns(api.getAnnIds(imgIds=image_id))
        masks = [segmentation_to_mask(s, 32, 48) for s in record.segmentations]
        assert len(anns) == len(masks)
        for ann, mask in zip(anns, masks):
            np.testing.assert_array_equal(api.annToMask(ann).astype(bool), mask)
            # masks_to_boxes convention: max corner = last pixel index
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]


def test_colliding_names_keep_their_folder(tmp_path):
    samples = _samples(2)
    for record, _ in samples:
        record.file_name = "image_0001.png"
        record.labels[:] = record.labels[0]  # one class per image
    csvboxes.write(tmp_path / "csv", samples, ["cat", "dog"])
    dataset = csvboxes.read(tmp_path / "csv")
    assert output_names(dataset.records) == ["cat_image_0001.png", "dog_image_0001.png"]
    out = convert(tmp_path / "csv", "csv", tmp_path / "yolo", "yolo")
    assert sorted(p.name for p in (out.parent / "train" / "images").iterdir()) == [
        "cat_image_0001.png",
        "dog_image_0001.png",
    ]


def test_refusals_are_user_errors(tmp_path):
    source = coco.write(tmp_path / "a.json", _samples(), ["cat", "dog"])
    with pytest.raises(UserError, match="PennFudan needs instance masks"):
        convert(source, "coco", tmp_path / "pf", "pennfudan")
    with pytest.raises(UserError, match="cannot convert format 'tgs'"):
        convert(source, "coco", tmp_path / "x", "tgs")
