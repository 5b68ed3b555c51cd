"""Readers and writers of the dataset layouts the examples use, chosen by name in :data:`FORMATS`.

Every reader returns the in-memory records of :mod:`detseg.data.types` (boxes float32 xyxy in
absolute pixels, labels ``0..C-1``); file conventions stay inside each module. Detection readers
also take ``problems=`` (a :class:`~detseg.data.formats._common.Problems`) to collect every problem
instead of raising on the first, which is how :mod:`detseg.data.validate` uses them.

=============  ============  ===========================================================  ============
name           kind          read(path, ...)  -- path is                                  module
=============  ============  ===========================================================  ============
coco           detection     the instances JSON                                           coco
yolo           detection     data.yaml (Roboflow YOLOv5/v7 export)                        yolo
voc            detection     the VOC folder (Annotations/, JPEGImages/)                   voc
csv            detection     the folder with images/<class>/ and annotations/<class>.csv  csvboxes
pennfudan      detection     PennFudanPed/ (or its parent)                                pennfudan
maskpng        segmentation  the folder with images/ and masks/                           maskpng
tgs            segmentation  the folder with train/ and depths.csv                        tgs
cityscapes     segmentation  the folder with cityscapes_data/                             cityscapes
kitti_road     segmentation  the folder with data_road/                                   kitti_road
=============  ============  ===========================================================  ============
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from detseg.data.formats._common import Problem, Problems


@dataclass(frozen=True)
class Format:
    """A dataset format: its reader, writer and kind (``"detection"`` or ``"segmentation"``)."""

    name: str
    kind: str
    read: Callable[..., Any]
    write: Callable[..., Any]
    description: str


FORMATS: dict[str, Format] = {
    "coco": Format("coco", "detection", coco.read, coco.write, "COCO instances JSON"),
    "yolo": Format("yolo", "detection", yolo.read, yolo.write, "YOLO txt + data.yaml (Roboflow)"),
    "voc": Format("voc", "detection", voc.read, voc.write, "Pascal VOC XML"),
    "csv": Format("csv", "detection", csvboxes.read, csvboxes.write, "PyImageSearch CSV boxes"),
    "pennfudan": Format(
        "pennfudan", "detection", pennfudan.read, pennfudan.write, "Penn-Fudan pedestrians"
    ),
    "maskpng": Format("maskpng", "segmentation", maskpng.read, maskpng.write, "images/ + masks/"),
    "tgs": Format("tgs", "segmentation", tgs.read, tgs.write, "TGS salt (Kaggle)"),
    "cityscapes": Format(
        "cityscapes", "segmentation", cityscapes.read, cityscapes.write, "Cityscapes pairs (Kaggle)"
    ),
    "kitti_road": Format(
        "kitti_road", "segmentation", kitti_road.read, kitti_road.write, "KITTI road"
    ),
}

__all__ = ["FORMATS", "Format", "Problem", "Problems"]
