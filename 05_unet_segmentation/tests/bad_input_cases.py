"""05's rows of the bad-input suite (``tests/test_bad_input.py``; row format in ``detseg.bad_input``)."""

from __future__ import annotations

from detseg.bad_input import Case

S = "05_unet_segmentation"
TRAIN, PREDICT, EXPORT = f"{S}/train.py", f"{S}/predict.py", f"{S}/export.py"
W = ["--weights", "{tmp}/w.pt"]
PNG = {"a.png": "png"}
IMG = ["--source", "{tmp}/a.png"]

CASES = [
    # train.py
    Case("05-train-negative-epochs", TRAIN, ["--epochs", "-1", "--dry-run"], "--epochs"),
    Case("05-train-zero-batch", TRAIN, ["--batch-size", "0", "--dry-run"], "--batch-size"),
    Case("05-train-zero-lr", TRAIN, ["--lr", "0", "--dry-run"], "--lr"),
    Case("05-train-negative-workers", TRAIN, ["--workers", "-1", "--dry-run"], "--workers"),
    Case("05-train-negative-seed", TRAIN, ["--seed", "-1", "--dry-run"], "--seed"),
    Case("05-train-val-fraction-1", TRAIN, ["--val-fraction", "1", "--dry-run"], "--val-fraction"),
    Case("05-train-unknown-model", TRAIN, ["--model", "resnet9000", "--dry-run"], "--model"),
    Case("05-train-unknown-dataset", TRAIN, ["--dataset", "mars", "--dry-run"], "--dataset"),
    Case("05-train-epochs-not-a-number", TRAIN, ["--epochs", "ten"], "--epochs"),
    Case(
        "05-train-missing-data-path",
        TRAIN,
        ["--data-path", "{tmp}/nope", "--dry-run"],
        "{tmp}/nope",
    ),
    Case(
        "05-train-empty-data-path",
        TRAIN,
        ["--data-path", "{tmp}/d", "--dry-run"],
        "{tmp}/d",
        {"d": "empty folder"},
    ),
    Case(
        "05-train-resume-nothing",
        TRAIN,
        ["--resume", "--output-dir", "{tmp}/run", "--dry-run"],
        "--resume",
    ),
    Case(
        "05-train-resume-text",
        TRAIN,
        ["--resume", "{tmp}/w.pt", "--dry-run"],
        "{tmp}/w.pt",
        {"w.pt": "text checkpoint"},
    ),
    Case("05-train-weights-missing", TRAIN, [*W, "--dry-run"], "{tmp}/w.pt"),
    Case("05-train-weights-empty", TRAIN, [*W, "--dry-run"], "{tmp}/w.pt", {"w.pt": "empty"}),
    Case(
        "05-train-weights-foreign",
        TRAIN,
        [*W, "--dry-run"],
        "{tmp}/w.pt",
        {"w.pt": "foreign checkpoint"},
    ),
    # predict.py
    Case("05-predict-weights-missing", PREDICT, [*W, *IMG], "{tmp}/w.pt", PNG),
    Case("05-predict-weights-text", PREDICT, [*W, *IMG], "{tmp}/w.pt", {**PNG, "w.pt": "text"}),
    Case("05-predict-weights-empty", PREDICT, [*W, *IMG], "{tmp}/w.pt", {**PNG, "w.pt": "empty"}),
    Case(
        "05-predict-weights-truncated",
        PREDICT,
        [*W, *IMG],
        "{tmp}/w.pt",
        {**PNG, "w.pt": "truncated checkpoint"},
    ),
    Case(
        "05-predict-weights-foreign",
        PREDICT,
        [*W, *IMG],
        "{tmp}/w.pt",
        {**PNG, "w.pt": "foreign checkpoint"},
    ),
    Case(
        "05-predict-weights-unsafe",
        PREDICT,
        [*W, *IMG],
        "{tmp}/w.pt",
        {**PNG, "w.pt": "unsafe checkpoint"},
    ),
    Case("05-predict-alpha-2", PREDICT, [*W, *IMG, "--alpha", "2"], "--alpha", PNG),
    Case("05-predict-max-frames-0", PREDICT, [*W, *IMG, "--max-frames", "0"], "--max-frames", PNG),
    Case("05-predict-no-source", PREDICT, W, "--source"),
    # export.py
    Case("05-export-weights-missing", EXPORT, W, "{tmp}/w.pt"),
    Case("05-export-weights-text", EXPORT, W, "{tmp}/w.pt", {"w.pt": "text checkpoint"}),
    Case("05-export-weights-foreign", EXPORT, W, "{tmp}/w.pt", {"w.pt": "foreign checkpoint"}),
    Case("05-export-zero-repeats", EXPORT, [*W, "--repeats", "0"], "--repeats"),
    Case("05-export-negative-tolerance", EXPORT, [*W, "--tolerance", "-1"], "--tolerance"),
]
