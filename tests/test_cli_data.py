"""``detseg data ...``: exit codes, one-line errors, and each action end to end on tiny data."""

from __future__ import annotations

import numpy as np
import pytest

from detseg.cli import main
from detseg.data.formats import coco, yolo
from detseg.data.imageio import read_image
from detseg.data.types import DetectionRecord


def run(argv, capsys):
    """``(exit code, stdout, stderr)`` of ``detseg argv``."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def _samples(count=2):
    rng = np.random.default_rng(15)
    return [
        (
            DetectionRecord(i + 1, f"img{i}.jpg", 32, 48, [[2, 3, 20, 25]], [i % 2]),
            rng.integers(0, 256, (32, 48, 3), dtype=np.uint8),
        )
        for i in range(count)
    ]


def test_validate_clean_warnings_and_errors(tmp_path, capsys):
    data_yaml = yolo.write(tmp_path, _samples(), ["cat", "dog"])
    code, out, _ = run(["data", "validate", str(data_yaml), "--format", "yolo"], capsys)
    assert code == 0 and "2 images" in out and "0 errors, 0 warnings" in out

    (tmp_path / "train" / "labels" / "img1.txt").unlink()  # background image: a warning only
    code, out, _ = run(["data", "validate", str(data_yaml), "--format", "yolo"], capsys)
    assert code == 0 and "0 errors, 1 warnings" in out and "warning: image img1 has no label" in out

    label = tmp_path / "train" / "labels" / "img0.txt"
    label.write_text("0 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.1 0.1\n")
    code, out, _ = run(["data", "validate", str(data_yaml), "--format", "yolo"], capsys)
    assert code == 2
    assert f"{label}:2: error: class id 7 out of range 0..1" in out.splitlines()


def test_corrupt_file_gives_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "images": [],\n  "categories": [}\n')
    code, out, err = run(
        ["data", "convert", "--from", "coco", "--to", "yolo", str(bad), str(tmp_path / "o")], capsys
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: {bad}:3: malformed JSON")
    code, out, _ = run(["data", "validate", str(bad), "--format", "coco"], capsys)
    assert code == 2 and f"{bad}:3: error: malformed JSON" in out


def test_unknown_format_is_one_line(tmp_path, capsys):
    code, _, err = run(["data", "validate", str(tmp_path), "--format", "kitti"], capsys)
    assert code == 2 and err.count("\n") == 1 and "unknown format 'kitti'; use one of: coco" in err


def test_convert_then_read(tmp_path, capsys):
    source = coco.write(tmp_path / "src" / "ann.json", _samples(), ["cat", "dog"])
    code, out, _ = run(
        ["data", "convert", "--from", "coco", "--to", "voc", str(source), str(tmp_path / "voc")],
        capsys,
    )
    assert code == 0 and out.startswith("wrote ")
    code, out, _ = run(["data", "validate", str(tmp_path / "voc"), "--format", "voc"], capsys)
    assert code == 0 and "cat=1, dog=1" in out


def test_make_validate_show(tmp_path, capsys):
    pytest.importorskip("detseg.data.recipes")
    pytest.importorskip("detseg.viz")
    out_dir = tmp_path / "racoon"
    argv = [
        "data",
        "make",
        "--recipe",
        "racoon",
        "--out",
        str(out_dir),
        "--num-images",
        "4",
        "--seed",
        "3",
    ]
    code, out, _ = run(argv, capsys)
    assert code == 0 and (out_dir / "Annotations").is_dir()
    code, out, _ = run(["data", "validate", str(out_dir), "--format", "voc"], capsys)
    assert code == 0 and "4 images" in out and "0 errors" in out
    grid = tmp_path / "grid.png"
    code, out, _ = run(
        ["data", "show", str(out_dir), "--format", "voc", "--out", str(grid), "--num", "3"], capsys
    )
    assert code == 0 and "(3 images)" in out
    picture = read_image(grid)
    assert picture.ndim == 3 and picture.shape[1] > 3 * 200  # three images side by side
    code, _, err = run(["data", "make", "--recipe", "nope", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and err.startswith("error: ")
