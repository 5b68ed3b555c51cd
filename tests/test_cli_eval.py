"""``detseg eval``: table and JSON output, one-line errors with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detseg.cli import main
from detseg.metrics import STAT_NAMES

SRC = Path(__file__).resolve().parents[1] / "src"

GT = {
    "images": [{"id": 1, "width": 100, "height": 100}],
    "annotations": [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": [0, 0, 10, 10],
            "area": 100,
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 1,
            "bbox": [50, 50, 40, 40],
            "area": 1600,
            "iscrowd": 0,
        },
    ],
    "categories": [{"id": 1, "name": "thing"}],
}
DETS = [
    {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
    {"image_id": 1, "category_id": 1, "bbox": [60, 60, 40, 40], "score": 0.8},  # IoU 900/2300
]


@pytest.fixture
def files(tmp_path):
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text(json.dumps(GT))
    pred.write_text(json.dumps(DETS))
    return gt, pred


def _run(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def test_table_output(files, capsys):
    gt, pred = files
    assert _run(["eval", "--gt", str(gt), "--pred", str(pred)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 12
    # small object found, medium one missed (IoU 0.39): precision 1 up to recall 0.5, 51 / 101
    assert lines[0] == (
        " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.505"
    )
    assert lines[3].endswith("area= small | maxDets=100 ] = 1.000")
    assert lines[5].endswith("area= large | maxDets=100 ] = -1.000")


def test_json_output(files, capsys):
    gt, pred = files
    assert _run(["eval", "--gt", str(gt), "--pred", str(pred), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert list(stats) == list(STAT_NAMES)
    assert stats["AP"] == pytest.approx(51 / 101)
    assert stats["APm"] == 0.0 and stats["APl"] == -1


@pytest.mark.parametrize(
    ("which", "content", "problem"),
    [
        ("gt", None, "file not found"),
        ("gt", "[1, 2", "not valid JSON"),
        ("gt", json.dumps({"images": [], "categories": []}), "missing key 'annotations'"),
        (
            "pred",
            json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]),
            "no 'score'",
        ),
        ("pred", json.dumps([{**DETS[0], "bbox": [0, 0, 1]}]), "'bbox' is not 4 numbers"),
        ("pred", json.dumps([{**DETS[0], "image_id": 7}]), "unknown image_id 7"),
    ],
)
def test_bad_file_exits_2_with_one_line(files, capsys, which, content, problem):
    gt, pred = files
    bad = gt if which == "gt" else pred
    if content is None:
        bad.unlink()
    else:
        bad.write_text(content)
    assert _run(["eval", "--gt", str(gt), "--pred", str(pred)]) == 2
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 1
    assert err_lines[0].startswith(f"error: {bad}")
    assert problem in err_lines[0]
    assert captured.out == ""


def test_subprocess_module_entry_point(files):
    gt, pred = files
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    ok = subprocess.run(
        [sys.executable, "-m", "detseg", "eval", "--gt", str(gt), "--pred", str(pred), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["AR100"] == pytest.approx(0.5, abs=1e-6)
    pred.write_text("oops")
    bad = subprocess.run(
        [sys.executable, "-m", "detseg", "eval", "--gt", str(gt), "--pred", str(pred)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert bad.stderr.startswith(f"error: {pred}:1: not valid JSON")
    assert len(bad.stderr.strip().splitlines()) == 1
