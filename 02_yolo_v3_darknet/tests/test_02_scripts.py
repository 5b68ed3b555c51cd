"""detect.py, export.py, bench case and the tour quick path, each end to end on tiny inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detseg.data.imageio import write_image


@pytest.fixture
def checkpoint(trained_run: dict) -> Path:
    return Path(trained_run["output_dir"]) / "last.pt"


def test_detect_folder_and_stream(script, checkpoint: Path, tmp_path: Path):
    folder = tmp_path / "images"
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(90, 120), (64, 64)]):
        write_image(folder / f"{i}.png", rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    out = tmp_path / "detect"
    result = script("detect").main(["--weights", str(checkpoint), "--source", str(folder),
                                    "--output-dir", str(out), "--score-threshold", "0.0"])  # fmt: skip
    assert result["images"] == 2 and (out / "0_detections.png").is_file()
    records = json.loads((out / "detections.json").read_text())
    assert len(records) == 2 and result["detections"] == sum(len(r["boxes"]) for r in records) > 0
    boxes = np.array(records[0]["boxes"])  # in the 90 x 120 image's pixels
    assert (boxes[:, [0, 2]] <= 120).all() and (boxes[:, [1, 3]] <= 90).all() and (boxes >= 0).all()
    stream = script("detect").main(["--weights", str(checkpoint), "--source", "synthetic",
                                    "--max-frames", "2", "--output-dir", str(out)])  # fmt: skip
    assert stream["frames"] == 2 and Path(stream["outputs"][0]).stat().st_size > 0


def test_export_parity_and_timing(script, checkpoint: Path, tmp_path: Path):
    result = script("export").main(["--weights", str(checkpoint), "--repeats", "2",
                                    "--output-dir", str(tmp_path / "export")])  # fmt: skip
    assert result["max_abs_diff"] < 1e-4
    assert result["matched"] == result["detections"]
    assert result["opencv_max_abs_diff"] < 1e-4
    assert result["eager_ms"] > 0 and result["onnxruntime_ms"] > 0 and result["opencv_ms"] > 0


def test_bench_case(script):
    result = script("bench_cases").case_ort_vs_eager()
    assert result["max_abs_diff"] < 1e-4 and result["opencv_max_abs_diff"] < 1e-4
    assert result["speedup"] > 0


def test_tour_quick_path(script, tmp_path: Path):
    result = script("tour").run(tmp_path)
    assert result["yolov3_parameters"] == 62_001_757
    assert result["yolov3_weights_bytes"] == 248_007_048
    assert result["opencv_max_abs_diff"] < 1e-4
    assert result["onnx_max_abs_diff"] < 1e-4
    for picture in result["pictures"]:
        assert Path(picture).is_file()
