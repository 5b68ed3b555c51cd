"""``data.convert`` into a new folder is all or nothing (issue 20): a corrupt image half-way through
leaves no partial dataset, no hidden work folder and no parent folder made for it."""

from __future__ import annotations

import numpy as np
import pytest

from detseg.data.convert import convert
from detseg.data.formats import coco, yolo
from detseg.data.types import DetectionRecord
from detseg.errors import UserError


def _coco_source(folder, count=3):
    image = np.full((24, 32, 3), 120, np.uint8)
    samples = [
        (DetectionRecord(i + 1, f"img{i}.png", 24, 32, [[2, 2, 20, 12]], [0]), image)
        for i in range(count)
    ]
    return coco.write(folder / "ann.json", samples, ["cat"])


def test_corrupt_image_leaves_nothing(tmp_path):
    source = _coco_source(tmp_path / "src")
    (tmp_path / "src" / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    target = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(UserError, match="img1.png"):
        convert(source, "coco", target, "yolo")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # not even new/ or new/deeper/


def test_success_renames_the_work_folder(tmp_path):
    source = _coco_source(tmp_path / "src")
    target = tmp_path / "new" / "out"
    data_yaml = convert(source, "coco", target, "yolo")
    assert data_yaml == target / "data.yaml"
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["out"]  # no .out.partial left
    assert len(yolo.read(data_yaml).records) == 3
    json_path = convert(source, "coco", tmp_path / "c" / "ann.json", "coco")
    assert json_path == tmp_path / "c" / "ann.json" and len(coco.read(json_path).records) == 3


def test_existing_folder_is_written_in_place(tmp_path):
    source = _coco_source(tmp_path / "src")
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    convert(source, "coco", target, "yolo")
    assert (target / "keep.txt").read_text() == "mine" and (target / "data.yaml").is_file()
