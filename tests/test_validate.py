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


def test_coco_dataset_folder_validates_every_split(isolated_dirs):
    from detseg.data import recipes

    folder = recipes.ensure("shapes", num_images=6)
    report = validate(folder, "coco")
    assert report.ok, [str(p) for p in report.problems]
    # both splits (annotations/instances_train.json and instances_val.json) were read
    assert report.summary().splitlines()[0].endswith(": 6 images")


# --- the checks validate.py makes itself, each planted in every format where it can happen ---


def build_twice_size_empty_coco(root):
    """An image annotated twice, an image of another size than annotated, an empty mask; a crowd
    annotation whose mask does not match its box is not checked (crowd regions are not objects)."""
    out = coco.write(root / "ann.json", _samples(3, masks=True), ["cat", "dog"])
    data = json.loads(out.read_text())
    data["images"][1]["height"] = H + 2  # annotated 48x34, the file is 48x32
    data["images"].append(dict(data["images"][0], id=9))  # img0.jpg a second time
    empty = mask_to_rle(np.zeros((H, W), dtype=bool))
    data["annotations"][4]["segmentation"] = empty  # image img2.jpg, annotation id=5
    data["annotations"][5].update(iscrowd=1, bbox=[30, 20, 10, 5])  # mask elsewhere, but crowd
    out.write_text(json.dumps(data))
    return out, [
        (("error", "ann.json", None), "image img0.jpg: annotated twice (also in"),
        (("error", "ann.json", None), "image img1.jpg: annotated as 48x34 but the image is 48x32"),
        (("error", "ann.json", None), "annotation id=5 (image img2.jpg): mask is empty"),
    ]


def build_twice_size_voc(root):
    voc.write(root, _samples(4), ["cat", "dog"])
    ann = root / "Annotations"
    for stem, old, new in [
        ("img1", "<height>32</height>", "<height>31</height>"),
        ("img3", "<filename>img3.jpg</filename>", "<filename>img0.jpg</filename>"),
    ]:
        text = (ann / f"{stem}.xml").read_text()
        assert old in text
        (ann / f"{stem}.xml").write_text(text.replace(old, new))
    return root, [
        (("error", "Annotations/img1.xml", None), "annotated as 48x31 but the image is 48x32"),
        (("error", "Annotations/img3.xml", None), "image img0.jpg: annotated twice (also in"),
        (("warning", "JPEGImages/img3.jpg", None), "image without annotation"),
    ]


def build_shared_stem_yolo(root):
    data_yaml = yolo.write(root, _samples(2), ["cat", "dog"])
    images = root / "train" / "images"
    write_image(images / "img0.png", np.zeros((H, W, 3), np.uint8))
    return data_yaml, [
        (("error", "train/images", None), "2 images share the stem 'img0' (and so one label file)"),
    ]


def build_count_differs_pennfudan(root):
    pennfudan.write(root, _samples(2, masks=True))
    text_path = root / "Annotation" / "img0.txt"
    lines = text_path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if "object 2 " not in line]
    assert len(kept) < len(lines)
    text_path.write_text("".join(kept))
    return root, [
        (("warning", "Annotation/img0.txt", None), "1 objects in the text, 2 in the mask")
    ]


VALIDATE_CHECKS = {
    "coco": build_twice_size_empty_coco,
    "voc": build_twice_size_voc,
    "yolo": build_shared_stem_yolo,
    "pennfudan": build_count_differs_pennfudan,
}


@pytest.mark.parametrize("format_name", list(VALIDATE_CHECKS))
def test_validator_own_checks_are_planted_and_found(tmp_path, format_name):
    path, planted = VALIDATE_CHECKS[format_name](tmp_path)
    report = validate(path, format_name)
    _assert_exactly(report, tmp_path, planted)
    assert report.ok == all(key[0] == "warning" for key, _ in planted)


def test_validate_without_image_checks_skips_only_the_image_checks(tmp_path):
    path, planted = build_twice_size_empty_coco(tmp_path)
    report = validate(path, "coco", check_images=False)
    _assert_exactly(report, tmp_path, [p for p in planted if "annotated as" not in p[1]])


def test_summary_counts_sizes_classes_and_empty_images(tmp_path):
    size = 100
    boxes = {  # COCO area ranges: < 32^2 small, < 96^2 medium, else large
        0: ([[0, 0, 31, 32], [0, 0, 32, 32]], [0, 1]),  # 992 px small, 1024 px medium
        1: ([[0, 0, 96, 95], [2, 2, 98, 98]], [1, 1]),  # 9120 px medium, 9216 px large
        2: (np.zeros((0, 4)), []),  # no objects
    }
    samples = [
        (
            DetectionRecord(i + 1, f"i{i}.jpg", size, size, np.array(b, np.float32), labels),
            np.zeros((size, size, 3), np.uint8),
        )
        for i, (b, labels) in boxes.items()
    ]
    report = validate(coco.write(tmp_path / "a.json", samples, ["cat", "dog"]), "coco")
    assert report.problems == [] and report.num_images == 3 and report.empty_images == 1
    assert report.box_sizes == {"small": 1, "medium": 2, "large": 1}
    assert report.instances_per_class == {"cat": 1, "dog": 3}
    lines = report.summary().splitlines()
    assert lines[1:] == [
        "  instances per class: cat=1, dog=3",
        "  box sizes (COCO areas, <32^2 / <96^2 / larger): small=1, medium=2, large=1",
        "  images without objects: 1",
        "  0 errors, 0 warnings",
    ]


def _segmentation_pairs(count, seed=20):
    rng = np.random.default_rng(seed)
    return [
        (f"p{i}", rng.integers(0, 256, (H, W, 3), dtype=np.uint8), rng.integers(0, 2, (H, W)))
        for i in range(count)
    ]


def test_tgs_every_problem(tmp_path):
    pairs = _segmentation_pairs(4)
    tgs.write(tmp_path, [(name, image, mask) for name, image, mask in pairs], write_csv=True)
    train = tmp_path / "train"
    # p0: its mask PNG has another size than the image (the validator's own size check)
    write_image(train / "masks" / "p0.png", np.zeros((H + 1, W), np.uint8))
    # p1: no mask PNG, and its train.csv run does not fit the image
    (train / "masks" / "p1.png").unlink()
    csv_text = (tmp_path / "train.csv").read_text().splitlines()
    csv_text = [f"p1,{H * W} 5" if line.startswith("p1,") else line for line in csv_text]
    (tmp_path / "train.csv").write_text("\n".join(csv_text) + "\n")
    _break_image(train / "images" / "p2.png")  # unreadable image
    # p3 is clean; 255 in a mask PNG means salt (> 127), not an out-of-range value
    report = validate(tmp_path, "tgs")
    _assert_exactly(
        report,
        tmp_path,
        [
            (("error", "train/masks/p0.png", None), f"mask ({H + 1}, {W}) and image ({H}, {W})"),
            (("error", "train.csv", None), "bad RLE for train/images/p1.png: run"),
            (("error", "train/images/p2.png", None), "not a readable image"),
        ],
    )
    assert report.num_images == 3  # p0, p1, p3 were read; p2 could not be


def test_kitti_road_every_problem(tmp_path):
    pairs = [
        (f"um_00000{i}", image, mask) for i, (_, image, mask) in enumerate(_segmentation_pairs(4))
    ]
    kitti_road.write(tmp_path, pairs)
    base = tmp_path / "data_road" / "training"
    gt = sorted((base / "gt_image_2").iterdir())
    write_image(gt[0], np.zeros((H, W + 2, 3), np.uint8))  # another size than its image
    write_image(gt[1], np.zeros((H, W), np.uint8))  # grey, not the RGB colour coding
    _break_image(base / "image_2" / "um_000002.png")
    report = validate(tmp_path, "kitti_road")
    _assert_exactly(
        report,
        tmp_path,
        [
            (("error", f"data_road/training/gt_image_2/{gt[0].name}", None), "differ in size"),
            (("error", f"data_road/training/gt_image_2/{gt[1].name}", None), "must be an RGB PNG"),
            (("error", "data_road/training/image_2/um_000002.png", None), "not a readable image"),
        ],
    )


def test_cityscapes_every_problem(tmp_path):
    labels = np.zeros((H, W), dtype=np.int64)
    rng = np.random.default_rng(21)
    cityscapes.write(
        tmp_path,
        [(str(i), rng.integers(0, 256, (H, W, 3), dtype=np.uint8), labels) for i in (1, 2, 3)],
    )
    split = tmp_path / "cityscapes_data" / "train"
    write_image(split / "2.jpg", np.zeros((H, 2 * W - 1, 3), np.uint8))  # odd width
    _break_image(split / "3.jpg")
    report = validate(tmp_path, "cityscapes")
    _assert_exactly(
        report,
        tmp_path,
        [
            (("error", "cityscapes_data/train/2.jpg", None), f"width {2 * W - 1} is odd"),
            (("error", "cityscapes_data/train/3.jpg", None), "not a readable image"),
        ],
    )
    assert report.num_images == 1


def test_maskpng_channels_and_ignore_index(tmp_path):
    pairs = _segmentation_pairs(3)
    maskpng.write(tmp_path, pairs, ["a", "b"])
    write_image(tmp_path / "masks" / "p0.png", np.zeros((H, W, 3), np.uint8))  # RGB mask
    ignored = pairs[1][2].copy()
    ignored[:4] = 255  # ignore_index: legal
    write_image(tmp_path / "masks" / "p1.png", ignored.astype(np.uint8))
    ignored[-1, -1] = 2  # one pixel of a class that does not exist
    write_image(tmp_path / "masks" / "p2.png", ignored.astype(np.uint8))
    report = validate(tmp_path, "maskpng")
    _assert_exactly(
        report,
        tmp_path,
        [
            (("error", "masks/p0.png", None), "single-channel index PNG"),
            (
                ("error", "masks/p2.png", None),
                "1 pixels with values [2] outside 0..1 and ignore 255",
            ),
        ],
    )
    # the counts leave the ignored pixels out
    assert (
        report.instances_per_class["a"] + report.instances_per_class["b"]
        == 2 * H * W - 2 * 4 * W - 1
    )


def test_check_detection_names_file_and_line_of_each_object(tmp_path):
    """Record-level checks on a dataset as a reader of a line-based format hands it over: each
    problem names the source file and the object's line (what a YOLO / CSV reader records)."""
    from detseg.data.formats._common import Problems
    from detseg.data.types import DetectionDataset
    from detseg.data.validate import check_detection

    full = np.zeros((H, W), dtype=bool)
    full[5:15, 5:25] = True
    record = DetectionRecord(
        1,
        "a.jpg",
        H,
        W,
        [[5, 5, 25, 15], [5, 5, 25, 5], [5, 5, 25, 15], [5, 5, 25, 15]],
        [5, 0, 1, 0],
        segmentations=[mask_to_rle(full), [], mask_to_rle(np.zeros((H, W), bool)), []],
        extra={"source": "labels.txt", "lines": [3, 4, 7, 9]},
    )
    dataset = DetectionDataset(tmp_path, ["cat", "dog"], [record])
    report = Problems()
    check_detection(dataset, report, check_images=False)
    assert [str(p) for p in report.items] == [
        "labels.txt:3: error: class 5 out of range 0..1",
        "labels.txt:4: error: box [5, 5, 25, 5] has zero or negative size",  # zero height
        "labels.txt:7: error: mask is empty",
    ]


def test_pennfudan_small_people_match_their_text_boxes(tmp_path):
    """A 4 x 5 px person: text box - 1 is the mask box exactly (no warning); one pixel off either
    way would be IoU 0.75-0.8, under the 0.9 the check allows."""
    mask = np.zeros((H, W), dtype=bool)
    mask[10:15, 20:24] = True
    record = DetectionRecord(
        1, "img0.jpg", H, W, [[20, 10, 23, 14]], [0], segmentations=[mask_to_rle(mask)]
    )
    path = pennfudan.write(tmp_path, [(record, np.zeros((H, W, 3), np.uint8))])
    report = validate(path, "pennfudan")
    assert report.problems == [] and report.num_images == 1


def test_pixel_counts_add_up_over_splits(tmp_path):
    labels = np.zeros((H, W), dtype=np.int64)
    rng = np.random.default_rng(22)
    pair = (rng.integers(0, 256, (H, W, 3), dtype=np.uint8), labels)
    cityscapes.write(tmp_path, [("1", *pair), ("2", *pair)], split="train")
    cityscapes.write(tmp_path, [("1", *pair)], split="val")
    report = validate(tmp_path, "cityscapes")
    assert report.problems == [] and report.num_images == 3
    assert report.instances_per_class["road"] == 3 * H * W


def test_unknown_format_lists_the_known_ones(tmp_path):
    from detseg.data.formats import FORMATS
    from detseg.errors import UserError

    with pytest.raises(UserError, match="unknown format 'kitti'") as raised:
        validate(tmp_path, "kitti")
    assert raised.value.fix == "use one of " + ", ".join(FORMATS)
