"""PennFudan: the real annotation text format, masks -> boxes as in torchvision's tutorial."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from detseg.data.formats import pennfudan
from detseg.data.formats.maskpng import mask_to_rle, rle_to_mask
from detseg.data.types import DetectionRecord
from detseg.errors import UserError

# Annotation/FudanPed00001.txt of the released dataset
FUDANPED00001 = """# Compatible with PASCAL Annotation Version 1.00
Image filename : "PennFudanPed/PNGImages/FudanPed00001.png"
Image size (X x Y x C) : 559 x 536 x 3
Database : "The Penn-Fudan-Pedestrian Database"
Objects with ground truth : 2 { "PASpersonWalking" "PASpersonWalking" }
# Note there may be some objects not included in the ground truth list for they are severe-occluded
# or have very small size.
# Top left pixel co-ordinates : (1, 1)
# Details for pedestrian 1 ("PASpersonWalking")
Original label for object 1 "PASpersonWalking" : "PennFudanPed"
Bounding box for object 1 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : (160, 182) - (302, 431)
Pixel mask for object 1 "PASpersonWalking" : "PennFudanPed/PedMasks/FudanPed00001_mask.png"

# Details for pedestrian 2 ("PASpersonWalking")
Original label for object 2 "PASpersonWalking" : "PennFudanPed"
Bounding box for object 2 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : (420, 171) - (535, 486)
Pixel mask for object 2 "PASpersonWalking" : "PennFudanPed/PedMasks/FudanPed00001_mask.png"
"""


def test_parse_real_annotation(tmp_path):
    path = tmp_path / "FudanPed00001.txt"
    path.write_text(FUDANPED00001.replace("\n", "\r\n"))  # the originals may carry CRLF
    parsed = pennfudan.parse_annotation(path)
    assert parsed["filename"] == "PennFudanPed/PNGImages/FudanPed00001.png"
    assert (parsed["width"], parsed["height"], parsed["channels"]) == (559, 536, 3)
    assert [o["box"] for o in parsed["objects"]] == [(160, 182, 302, 431), (420, 171, 535, 486)]
    assert [o["line"] for o in parsed["objects"]] == [11, 16]
    assert parsed["objects"][1]["mask"] == "PennFudanPed/PedMasks/FudanPed00001_mask.png"
    assert {o["name"] for o in parsed["objects"]} == {"PASpersonWalking"}


def test_writer_reproduces_the_real_text():
    boxes = np.array([[160, 182, 302, 431], [420, 171, 535, 486]])
    text = pennfudan.format_annotation("FudanPed00001", 536, 559, boxes, ["PASpersonWalking"] * 2)
    assert text.splitlines() == FUDANPED00001.splitlines() + [""]


def test_bad_box_line_names_file_and_line(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text(FUDANPED00001.replace("(420, 171) - (535, 486)", "(420, 171) - (535)"))
    with pytest.raises(UserError, match="malformed bounding box line") as info:
        pennfudan.parse_annotation(path)
    assert info.value.line == 16


def test_round_trip_masks_boxes_and_text(tmp_path):
    rng = np.random.default_rng(4)
    samples, all_masks = [], []
    for index in range(3):
        masks = np.zeros((index + 1, 60, 80), dtype=bool)
        for k in range(index + 1):
            x, y = 5 + 25 * k, int(rng.integers(0, 20))
            masks[k, y : y + 30, x : x + 12] = rng.random((30, 12)) < 0.8
        all_masks.append(masks)
        record = DetectionRecord(
            index,
            f"FudanPed{index:05d}.png",
            60,
            80,
            np.zeros((len(masks), 4)),  # ignored: the writer derives boxes from the masks
            np.zeros(len(masks)),
            segmentations=[mask_to_rle(m) for m in masks],
        )
        samples.append((record, rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)))
    pennfudan.write(tmp_path / "PennFudanPed", samples)
    with Image.open(tmp_path / "PennFudanPed" / "PedMasks" / "FudanPed00002_mask.png") as img:
        assert img.mode == "P" and sorted(np.unique(np.asarray(img))) == [0, 1, 2, 3]

    dataset = pennfudan.read(tmp_path)  # finds PennFudanPed/ inside
    assert dataset.classes == ["person"] and len(dataset) == 3
    for record, masks in zip(dataset.records, all_masks):
        expected = torchvision.ops.masks_to_boxes(torch.from_numpy(masks)).numpy()
        np.testing.assert_array_equal(record.boxes, expected)
        np.testing.assert_array_equal(
            np.stack([rle_to_mask(s) for s in record.segmentations]), masks
        )
        text_boxes = np.array([o["box"] for o in record.extra["annotation"]["objects"]])
        np.testing.assert_array_equal(text_boxes - 1, expected)  # 1-based inclusive in the text
        assert record.extra["instance_ids"] == list(range(1, len(masks) + 1))
