"""01's rows of the bad-input suite (``tests/test_bad_input.py``; row format in ``detseg.bad_input``)."""

from __future__ import annotations

from detseg.bad_input import Case

F = "01_mask_r_cnn_fine_tuning"
TRAIN, PREDICT = f"{F}/train.py", f"{F}/predict.py"
EXPORT, EVALUATE = f"{F}/export.py", f"{F}/evaluate.py"
W = ["--weights", "{tmp}/w.pt"]
PNG = {"a.png": "png"}
IMG = ["--source", "{tmp}/a.png"]

CASES = [
    # train.py
    Case("01-train-zero-epochs", TRAIN, ["--epochs", "0", "--dry-run"], "--epochs"),
    Case("01-train-negative-batch", TRAIN, ["--batch-size", "-2", "--dry-run"], "--batch-size"),
    Case("01-train-unknown-model", TRAIN, ["--model", "yolo", "--dry-run"], "--model"),
    Case("01-train-unknown-data", TRAIN, ["--data", "coco2077", "--dry-run"], "--data"),
    Case("01-train-val-fraction", TRAIN, ["--val-fraction", "1.5", "--dry-run"], "--val-fraction"),
    Case("01-train-missing-data-path", TRAIN, ["--data-path", "{tmp}/x", "--dry-run"], "{tmp}/x"),
    Case(
        "01-train-resume-nothing",
        TRAIN,
        ["--resume", "--output-dir", "{tmp}/run", "--dry-run"],
        "--resume",
    ),
    Case("01-train-weights-text", TRAIN, [*W, "--dry-run"], "{tmp}/w.pt", {"w.pt": "text"}),
    # predict.py
    Case("01-predict-weights-missing", PREDICT, [*W, *IMG], "{tmp}/w.pt", PNG),
    Case("01-predict-weights-text", PREDICT, [*W, *IMG], "{tmp}/w.pt", {**PNG, "w.pt": "text"}),
    Case(
        "01-predict-weights-truncated",
        PREDICT,
        [*W, *IMG],
        "{tmp}/w.pt",
        {**PNG, "w.pt": "truncated checkpoint"},
    ),
    Case(
        "01-predict-weights-foreign",
        PREDICT,
        [*W, *IMG],
        "{tmp}/w.pt",
        {**PNG, "w.pt": "foreign checkpoint"},
    ),
    Case(
        "01-predict-score-threshold",
        PREDICT,
        [*W, *IMG, "--score-threshold", "1.5"],
        "--score-threshold",
        PNG,
    ),
    # export.py
    Case("01-export-weights-empty", EXPORT, W, "{tmp}/w.pt", {"w.pt": "empty"}),
    Case("01-export-zero-images", EXPORT, [*W, "--num-images", "0"], "--num-images"),
    # evaluate.py
    Case("01-evaluate-weights-missing", EVALUATE, W, "{tmp}/w.pt"),
    Case("01-evaluate-weights-unsafe", EVALUATE, W, "{tmp}/w.pt", {"w.pt": "unsafe checkpoint"}),
    Case("01-evaluate-one-image", EVALUATE, [*W, "--num-images", "1"], "--num-images"),
    Case("01-evaluate-unknown-split", EVALUATE, [*W, "--split", "test"], "--split"),
]
