"""The quick path end to end (smoke size), and an exact resume of the single-object training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def test_tour_runs_in_smoke_mode(script, tmp_path: Path) -> None:
    result = script("tour").run(tmp_path)
    assert result["haar_faces_on_astronaut"] == 1
    scale = result["output_max_abs"]
    assert scale > 1e-2  # real activations (BatchNorm calibrated), not vanishing ones
    assert result["onnx_max_abs_diff"] < 1e-5 * scale + 1e-5
    # the exported body is SSDBody.exportable(): before it, OpenCV DNN differed here by ~0.012
    assert result["opencv_max_abs_diff"] < 1e-5 * scale + 1e-5
    assert set(result["fps"]) == {"ssd body, torch", "ssd body, onnxruntime", "ssd body, opencv",
                                  "hog_people", "haar_face"}  # fmt: skip
    assert all(fps > 0 for fps in result["fps"].values())
    assert 0 <= result["single_object_mean_iou"] <= 1
    assert all(Path(p).is_file() for p in result["pictures"])


def test_single_object_resume_is_exact(script, tmp_path: Path) -> None:
    train = script("train_single_object")
    # a constant rate: a cosine one ends with the first --epochs (refused below)
    common = ["--num-images", "12", "--batch-size", "4", "--seed", "2", "--lr-schedule",
              "constant", "--crop-copies", "0"]  # fmt: skip
    straight = train.main([*common, "--epochs", "3", "--output-dir", str(tmp_path / "a")])
    train.main([*common, "--epochs", "1", "--output-dir", str(tmp_path / "b")])
    resumed = train.main(
        [*common, "--epochs", "3", "--resume", "--output-dir", str(tmp_path / "b")]
    )
    # the resumed process trained epochs 2 and 3 only: 2 x 5 steps (10 training images and their
    # mirror images, 20 items in batches of 4)
    assert resumed["train_images"] == 10
    assert [e["epoch"] for e in resumed["history"]] == [1, 2, 3]
    assert sum(e["steps"] for e in resumed["history"][1:]) == 10
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0)
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    assert resumed["mean_iou"] == straight["mean_iou"]


def test_cosine_resume_with_other_epochs_is_refused(script, tmp_path: Path) -> None:
    from detseg.errors import UserError

    train = script("train_single_object")
    common = ["--num-images", "12", "--batch-size", "4", "--output-dir", str(tmp_path)]
    train.main([*common, "--epochs", "1"])
    with pytest.raises(UserError, match="cosine learning rate ends at epoch 1"):
        train.main([*common, "--epochs", "3", "--resume"])
