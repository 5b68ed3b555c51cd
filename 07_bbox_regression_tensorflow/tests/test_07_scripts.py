"""Every script's main() on the 24-image smoke data: train, resume, predict, export, compare."""

from __future__ import annotations

import csv
import json

import bbox_training
import numpy as np
import pytest
import torch
import torchvision
from bbox_models import keras

from detseg.errors import UserError


def test_train_multiclass_writes_checkpoints_logs_and_plots(trained):
    folder, result = trained
    assert result["epochs_run"] == 3 and result["epochs_trained_now"] == 3
    for name in ("last.keras", "last.json", "best.keras", "best.json", "history.csv",
                 "metrics.json", "training_curves.png", "confusion_matrix.png"):  # fmt: skip
        assert (folder / name).is_file(), name
    rows = (folder / "history.csv").read_text().splitlines()
    assert (
        len(rows) == 4
        and "val_bbox_iou" in rows[0]
        and "val_class_sparse_categorical_accuracy" in rows[0]
    )
    test = result["test"]
    assert test["num_images"] == 6 and 0 < test["mean_iou"] <= 1
    assert np.array(test["confusion"]).sum() == 6
    assert test["class_accuracy"] == pytest.approx(np.trace(test["confusion"]) / 6)
    best = json.loads((folder / "best.json").read_text())
    ious = [row["val_bbox_iou"] for row in result["history"]]
    assert best["epoch"] == int(np.argmax(ious)) + 1 == result["best_epoch"]
    pretrain = result["pretrain"]
    assert pretrain["cached"] is False and 0 <= pretrain["val_accuracy"] <= 1
    # classify-and-locate pretraining on 13 of the 16 smoke images of data seed 1 (not the lessons')
    assert pretrain["data_seed"] == 1 and pretrain["train_images"] == 13
    assert 0 <= pretrain["val_box_iou"] <= 1 and pretrain["epochs"] == 2


def test_test_metrics_recomputed_independently_from_the_predictions(script, trained):
    """predict.py's boxes of the test images, IoU by torchvision against the CSV files' boxes."""
    folder, result = trained
    out = script("predict").main(["--weights", str(folder / "best.keras"), "--num-images", "6"])
    assert out["images"] == 6 and (folder / "predictions.png").is_file()
    config = json.loads((folder / "best.json").read_text())["config"]
    test = script("predict").test_split({"config": config})
    csv_boxes = {}  # read the CSV files with the csv module, not with the reader under test
    for path in sorted((test.root / "annotations").glob("*.csv")):
        for name, *box, label in csv.reader(path.read_text().splitlines()):
            csv_boxes[f"{label}/{name}"] = [float(v) for v in box]
    truth = torch.tensor([csv_boxes[r.file_name] for r in test.records])
    predicted = torch.tensor(out["boxes"])
    ious = torch.diag(torchvision.ops.box_iou(predicted, truth)).numpy()
    np.testing.assert_allclose(ious, out["ious"], atol=1e-5)
    assert ious.mean() == pytest.approx(result["test"]["mean_iou"], abs=1e-5)
    assert ious.mean() > 0.05  # trained: boxes overlap their objects


def test_resume_trains_only_the_missing_epochs_and_ends_where_the_full_run_ended(
    script, trained, train_argv, tmp_path
):
    folder, full = trained
    argv = [*train_argv, "--output-dir", str(tmp_path / "run")]
    first = script("train_multiclass").main([*argv, "--epochs", "1"])
    assert first["epochs_trained_now"] == 1
    resumed = script("train_multiclass").main([*argv, "--epochs", "3", "--resume"])
    assert resumed["epochs_trained_now"] == 2 and resumed["epochs_run"] == 3
    assert resumed["history"][0] == first["history"][0]  # the stopped run's epoch, carried over
    for key in ("loss", "val_bbox_iou"):
        assert [r[key] for r in resumed["history"]] == pytest.approx(
            [r[key] for r in full["history"]], rel=1e-5
        )
    mine, _ = bbox_training.load_trained(tmp_path / "run" / "last.keras")
    reference, _ = bbox_training.load_trained(folder / "last.keras")
    for a, b in zip(mine.weights, reference.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    # the heads' optimizer (cached features: the heads are what model.fit trained) took 3 x 2 steps
    heads = keras.models.load_model(tmp_path / "run" / "last-heads.keras")
    assert int(heads.optimizer.iterations) == 3 * 4  # 15 images + their mirrors, batches of 8


def test_train_bbox_dry_run_single_class(script, train_argv, tmp_path, capsys):
    result = script("train_bbox").main([*train_argv, "--dry-run", "--output-dir", str(tmp_path)])
    assert result["epochs_run"] == 1 and result["class_accuracy"] is None
    assert result["test"]["num_images"] == 2  # the test airplanes only
    assert (tmp_path / "dry-run" / "best.keras").is_file()
    assert f"trainable parameters: {result['trainable_parameters']}\n" in capsys.readouterr().out


def test_export_reloads_keras_savedmodel_and_onnx_with_the_same_predictions(
    script, trained, tmp_path
):
    folder, _ = trained
    result = script("export").main(
        ["--weights", str(folder / "best.keras"), "--output-dir", str(tmp_path), "--dry-run"]
    )
    assert result["inputs"] == [[1, 128, 128, 3], [3, 128, 128, 3], [4, 128, 128, 3]]
    for kind in ("keras", "saved_model", "onnx"):
        assert (
            result[kind]["max_abs_diff_bbox"] < 1e-4 and result[kind]["max_abs_diff_class"] < 1e-4
        )
        assert result[kind]["same_class"] is True
    assert result["speed_ratio"] == pytest.approx(result["keras_ms"] / result["onnxruntime_ms"])


def test_resume_without_a_checkpoint_is_one_line(script, tmp_path):
    with pytest.raises(UserError, match="no last.keras"):
        script("train_bbox").main(
            ["--backbone", "small", "--resume", "--output-dir", str(tmp_path)]
        )


def test_resume_of_a_cosine_run_with_other_epochs_is_one_line(script, tmp_path):
    """The cosine learning rate reaches 0 at the epochs a run was started with: resuming it for
    more epochs would train at rate 0, so it is refused."""
    argv = ["--backbone", "small", "--batch-size", "8", "--pretrain-epochs", "2"]
    argv += ["--lr-schedule", "cosine", "--output-dir", str(tmp_path)]
    first = script("train_bbox").main([*argv, "--epochs", "1"])
    assert first["epochs_run"] == 1
    with pytest.raises(UserError, match="cosine learning rate ends at epoch 1"):
        script("train_bbox").main([*argv, "--epochs", "3", "--resume"])
