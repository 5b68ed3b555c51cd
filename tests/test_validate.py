"""The validator on a deliberately broken copy of each format: every planted problem is reported,
with the right severity, file and line, and nothing else is."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detseg.data.formats import (
    cityscapes,
    coco,
    csvboxes,
    kitti_road,
    maskpng,
    pennfudan,
    tgs,
    voc,
    yolo,
)
from detseg.data.formats.maskpng import mask_to_rle
from detseg.data.imageio import write_image
from detseg.data.types import DetectionRecord
from detseg.data.validate import mask_box_iou, validate

H, W = 32, 48


def _samples(count=3, *, masks=False):
    rng = np.random.default_rng(12)
    samples = []
    for index in range(count):
        boxes = np.array([[2, 3, 20, 25], [25, 5, 45, 30]], dtype=np.float32)
        segmentations = None
        if masks:
            segmentations = []
            for x1, y1, x2, y2 in boxes.astype(int):
                mask = np.zeros((H, W), dtype=bool)
                mask[y1:y2, x1:x2] = True
                segmentations.append(mask_to_rle(mask))
        record = DetectionRecord(
            index + 1, f"img{index}.jpg", H, W, boxes, [0, 1], segmentations=segmentations
        )
        samples.append((record, rng.integers(0, 256, (H, W, 3), dtype=np.uint8)))
    return samples


def _assert_exactly(report, root, planted):
    """Each planted ``((severity, path relative to root, line), text)`` matches exactly one
    reported problem (same severity, file and line, ``text`` in its message), and vice versa."""
    found = [
        ((p.severity, p.path.replace(f"{root}/", ""), p.line), p.what) for p in report.problems
    ]
    listing = "\n".join(map(str, report.problems))
    for key, text in planted:
        matches = [item for item in found if item[0] == key and text in item[1]]
        assert matches, f"not reported: {key} {text!r}; reported:\n{listing}"
        found.remove(matches[0])
    assert not found, f"reported but not planted: {found}"


def _break_image(path):
    path.write_bytes(b"this is not a JPEG")


def build_broken_coco(root):
    out = coco.write(root / "ann.json", _samples(3, masks=True), ["cat", "dog"])
    data = json.loads(out.read_text())
    anns = data["annotations"]
    anns[0]["bbox"] = [30, 20, 10, 5]  # mask (box 2,3,20,25) elsewhere -> mask/box mismatch
    anns[1]["bbox"][2] = 0  # zero width
    anns[2]["bbox"] = [40, 3, 30, 10]  # sticks out on the right (x2 = 70 > 48)
    anns[2]["segmentation"] = []
    anns[3]["category_id"] = 9  # unknown category
    anns[4]["id"] = anns[5]["id"]  # duplicate annotation id
    data["images"].append(dict(data["images"][0], id=1, file_name="dup.jpg"))  # duplicate id
    data["images"].append({"id": 50, "file_name": "ghost.jpg", "height": H, "width": W})
    out.write_text(json.dumps(data))
    _break_image(root / "img2.jpg")
    write_image(root / "extra.jpg", np.zeros((H, W, 3), np.uint8))
    return out, [
        (
            ("error", "ann.json", None),
            "annotation id=1 (image img0.jpg): mask extent does not match",
        ),
        (
            ("error", "ann.json", None),
            "annotation id=2 (image img0.jpg): box [25, 5, 25, 30] has zero",
        ),
        (
            ("error", "ann.json", None),
            "annotation id=3 (image img1.jpg): box [40, 3, 70, 13] outside",
        ),
        (("error", "ann.json", None), "annotation id=4: category_id 9 not in categories [1, 2]"),
        (("error", "ann.json", None), "annotation id=6: duplicate annotation id"),
        (("error", "ann.json", None), "duplicate image id 1"),
        (("error", "ann.json", None), "image ghost.jpg: image file missing"),
        (("error", "img2.jpg", None), "not a readable image"),
        (("warning", "extra.jpg", None), "image without annotation"),
    ]


def build_broken_yolo(root):
    data_yaml = yolo.write(root, _samples(4), ["cat", "dog"])
    labels = root / "train" / "labels"
    (labels / "img0.txt").write_text("0 0.2 0.4 0.3 0.5\n1 0.5 0.5 0.2\n")
    (labels / "img1.txt").write_text("5 0.5 0.5 0.2 0.2\n")
    (labels / "img2.txt").write_text("0 1.2 0.5 0.2 0.2\n1 0.5 0.5 0 0.2\n")
    (labels / "orphan.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (labels / "img3.txt").unlink()
    write_image(root / "train" / "images" / "bad.jpg", np.zeros((H, W, 3), np.uint8))
    (labels / "bad.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    _break_image(root / "train" / "images" / "bad.jpg")
    return data_yaml, [
        (("error", "train/labels/img0.txt", 2), "4 numbers; expected 'class cx cy w h'"),
        (("error", "train/labels/img1.txt", 1), "class id 5 out of range 0..1"),
        (("error", "train/labels/img2.txt", 1), "outside the 48x32 image"),
        (("error", "train/labels/img2.txt", 2), "has zero or negative size"),
        (("error", "train/labels/orphan.txt", None), "label file without an image"),
        (("error", "train/images/bad.jpg", None), "not a readable image"),
        (("warning", "train/images", None), "image img3 has no label file"),
    ]


def build_broken_voc(root):
    voc.write(root, _samples(4), ["cat", "dog"])
    ann = root / "Annotations"
    for stem, old, new in [
        ("img0", "<xmax>20</xmax>", "<xmax>1</xmax>"),
        ("img1", "<ymax>30</ymax>", "<ymax>99</ymax>"),
        ("img2", "</size>", "</sise>"),
    ]:
        (ann / f"{stem}.xml").write_text((ann / f"{stem}.xml").read_text().replace(old, new))
    (root / "JPEGImages" / "img3.jpg").rename(root / "JPEGImages" / "stray.jpg")
    return root, [
        (("error", "Annotations/img0.xml", 10), "box [2, 3, 1, 25] has zero or negative size"),
        (("error", "Annotations/img1.xml", 22), "box [25, 5, 45, 99] outside the 48x32 image"),
        (("error", "Annotations/img2.xml", 8), "malformed XML: mismatched tag"),
        (("error", "Annotations/img3.xml", None), "image file missing"),
        (("warning", "JPEGImages/stray.jpg", None), "image without annotation"),
        (("warning", "JPEGImages/img2.jpg", None), "image without annotation"),  # XML unusable
    ]


def build_broken_csv(root):
    csvboxes.write(root, _samples(3), ["cat", "dog"])
    csv_path = root / "annotations" / "cat.csv"
    lines = csv_path.read_text().splitlines()
    lines[0] = lines[0].replace(",20,25,", ",20,250,")  # outside
    lines[1] = "img1.jpg,2,3,20"  # 4 columns
    lines.append("missing.jpg,1,1,5,5,cat")  # no such image
    csv_path.write_text("\n".join(lines) + "\n")
    return root, [
        (("error", "annotations/cat.csv", 1), "box [2, 3, 20, 250] outside the 48x32 image"),
        (("error", "annotations/cat.csv", 2), "4 columns; expected filename,startX"),
        (("error", "annotations/cat.csv", 4), "image file not found"),
        (("warning", "images/cat/img1.jpg", None), "image without annotation"),  # its row broke
    ]


def build_broken_pennfudan(root):
    pennfudan.write(root, _samples(4, masks=True))
    text_path = root / "Annotation" / "img0.txt"
    text = text_path.read_text()
    text_path.write_text(text.replace("(3, 4) - (20, 25)", "(3, 4) - (20)"))
    text_path = root / "Annotation" / "img1.txt"
    text_path.write_text(text.replace("(26, 6) - (45, 30)", "(6, 6) - (10, 10)"))
    (root / "PNGImages" / "img2.png").unlink()
    (root / "PedMasks" / "img3_mask.png").unlink()
    return root, [
        (("error", "Annotation/img0.txt", 11), "malformed bounding box line"),
        (("warning", "Annotation/img1.txt", 16), "text box (6, 6, 10, 10) differs from the mask"),
        (("error", "PedMasks/img2_mask.png", None), "mask without an image"),
        (("error", "PNGImages/img3.png", None), "image has no mask img3_mask.png"),
    ]


BUILDERS = {
    "coco": build_broken_coco,
    "yolo": build_broken_yolo,
    "voc": build_broken_voc,
    "csv": build_broken_csv,
    "pennfudan": build_broken_pennfudan,
}


@pytest.mark.parametrize("format_name", list(BUILDERS))
def test_every_planted_problem_is_found(tmp_path, format_name):
    path, planted = BUILDERS[format_name](tmp_path)
    report = validate(path, format_name)
    _assert_exactly(report, tmp_path, planted)
    assert not report.ok


@pytest.mark.parametrize("format_name", list(BUILDERS))
def test_clean_copy_has_no_problems(tmp_path, format_name):
    samples = _samples(3, masks=format_name in ("coco", "pennfudan"))
    fmt = {"coco": coco, "yolo": yolo, "voc": voc, "csv": csvboxes}
    if format_name == "pennfudan":
        path = pennfudan.write(tmp_path, samples)
    else:
        written = fmt[format_name].write(
            tmp_path / "d.json" if format_name == "coco" else tmp_path, samples, ["cat", "dog"]
        )
        path = written
    report = validate(path, format_name)
    assert report.problems == [] and report.ok
    assert report.num_images == (6 if format_name == "csv" else 3)
    if format_name != "pennfudan":
        assert report.instances_per_class == {"cat": 3, "dog": 3}
    assert report.box_sizes == {"small": 6, "medium": 0, "large": 0}  # 18 x 22 and 20 x 25 px


def test_segmentation_problems(tmp_path):
    rng = np.random.default_rng(13)
    samples = [
        (f"s{i}", rng.integers(0, 256, (H, W, 3), dtype=np.uint8), rng.integers(0, 3, (H, W)))
        for i in range(3)
    ]
    maskpng.write(tmp_path / "mp", samples, ["a", "b", "c"])
    write_image(tmp_path / "mp" / "masks" / "s0.png", np.full((H, W), 7, np.uint8))  # value 7
    write_image(tmp_path / "mp" / "masks" / "s1.png", np.zeros((H, W + 1), np.uint8))  # size
    (tmp_path / "mp" / "masks" / "s2.png").unlink()
    report = validate(tmp_path / "mp", "maskpng")
    _assert_exactly(
        report,
        tmp_path / "mp",
        [
            (("error", "masks/s0.png", None), f"{H * W} pixels with values [7] outside 0..2"),
            (("error", "masks/s1.png", None), "mask size (32, 49) differs from image size"),
            (("error", "images/s2.png", None), "image has no mask"),
        ],
    )
    tgs.write(tmp_path / "tgs", [("a", samples[0][1], None)], write_csv=False)
    report = validate(tmp_path / "tgs", "tgs")
    _assert_exactly(
        report, tmp_path / "tgs", [(("error", "train/images/a.png", None), "neither a mask PNG")]
    )
    kitti_road.write(tmp_path / "kr", [("um_000000", samples[0][1], None)])
    report = validate(tmp_path / "kr", "kitti_road")
    _assert_exactly(
        report,
        tmp_path / "kr",
        [(("error", "data_road/training/image_2/um_000000.png", None), "no ground truth")],
    )


def test_mask_box_iou_accepts_both_extent_conventions():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:6, 3:8] = True  # rows 2..5, columns 3..7
    assert mask_box_iou(mask, np.array([3, 2, 7, 5])) == 1.0  # torchvision: last pixel
    assert mask_box_iou(mask, np.array([3, 2, 8, 6])) == 1.0  # COCO: one past
    assert mask_box_iou(mask, np.array([10, 10, 15, 15])) == 0.0


def test_cityscapes_pair_with_odd_width(tmp_path):
    rng = np.random.default_rng(16)
    labels = np.zeros((H, W), dtype=np.int64)
    cityscapes.write(tmp_path, [("1", rng.integers(0, 256, (H, W, 3), dtype=np.uint8), labels)])
    write_image(
        tmp_path / "cityscapes_data" / "train" / "2.jpg", np.zeros((H, 2 * W + 1, 3), np.uint8)
    )
    report = validate(tmp_path, "cityscapes")
    _assert_exactly(
        report, tmp_path, [(("error", "cityscapes_data/train/2.jpg", None), "width 97 is odd")]
    )
    assert report.num_images == 1 and report.instances_per_class["road"] == H * W
