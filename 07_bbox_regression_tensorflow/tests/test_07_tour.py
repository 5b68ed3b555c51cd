"""The ``detseg tour`` step of this folder, end to end in smoke mode (the core's tour test runs only
the core steps: each example tests its own)."""

from __future__ import annotations

from pathlib import Path

from detseg.cli import tour_cmd


def test_tour_quick_path_in_smoke_mode(script, tmp_path: Path):
    assert (
        tour_cmd.TOUR["07_bbox_regression_tensorflow"]
        == "07_bbox_regression_tensorflow/tour.py:run"
    )
    result = script("tour").run(tmp_path)
    assert 0.0 <= result["iou_above_0.5"] <= 1.0 and 0.0 < result["mean_iou"] <= 1.0
    assert 0.0 <= result["class_accuracy"] <= 1.0
    assert result["onnx_max_abs_diff"] < 1e-4  # ONNX Runtime computes what Keras does
    assert result["train_seconds"] > 0 and result["keras_ms"] > 0 and result["onnxruntime_ms"] > 0
    assert (tmp_path / "run" / "best.keras").is_file()
    assert result["pictures"] and all(Path(p).stat().st_size > 0 for p in result["pictures"])
