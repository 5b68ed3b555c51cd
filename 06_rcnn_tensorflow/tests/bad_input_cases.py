"""06's rows of the bad-input suite (``tests/test_bad_input.py``; row format in ``detseg.bad_input``)."""

from __future__ import annotations

from detseg.bad_input import Case

S = "06_rcnn_tensorflow"
TRAIN, BUILD, DETECT, SEARCH = (
    f"{S}/train_rcnn.py",
    f"{S}/build_dataset.py",
    f"{S}/detect.py",
    f"{S}/selective_search.py",
)

CASES = [
    # train_rcnn.py
    Case("06-train-negative-epochs", TRAIN, ["--epochs", "-1", "--dry-run"], "--epochs"),
    Case("06-train-zero-batch", TRAIN, ["--batch-size", "0", "--dry-run"], "--batch-size"),
    Case(
        "06-train-score-above-1",
        TRAIN,
        ["--score-threshold", "2", "--dry-run"],
        "--score-threshold",
    ),
    Case("06-train-nms-negative", TRAIN, ["--nms-iou", "-0.1", "--dry-run"], "--nms-iou"),
    Case("06-train-unknown-backbone", TRAIN, ["--backbone", "vgg", "--dry-run"], "--backbone"),
    Case(
        "06-train-resume-nothing",
        TRAIN,
        ["--resume", "--output-dir", "{tmp}/run", "--dry-run"],
        "--resume",
    ),
    Case(
        "06-train-missing-data-path",
        TRAIN,
        ["--data-path", "{tmp}/nope", "--dry-run"],
        "{tmp}/nope",
    ),
    Case(
        "06-train-negative-part-negatives",
        TRAIN,
        ["--max-part-negative", "-1", "--dry-run"],
        "--max-part-negative",
    ),
    # build_dataset.py
    Case("06-build-zero-crop-size", BUILD, ["--crop-size", "0"], "--crop-size"),
    Case("06-build-one-image", BUILD, ["--num-images", "1"], "--num-images"),
    Case("06-build-unknown-proposals", BUILD, ["--proposals", "edgeboxes"], "--proposals"),
    Case(
        "06-build-empty-data-path",
        BUILD,
        ["--data-path", "{tmp}/d", "--dry-run"],
        "{tmp}/d",
        {"d": "empty folder"},
    ),
    Case(
        "06-build-data-path-and-download",
        BUILD,
        ["--data-path", "{tmp}/d", "--download"],
        "--download",
        {"d": "empty folder"},
    ),
    # detect.py
    Case("06-detect-missing-source", DETECT, ["--source", "{tmp}/none.jpg"], "{tmp}/none.jpg"),
    Case(
        "06-detect-empty-folder", DETECT, ["--source", "{tmp}/d"], "{tmp}/d", {"d": "empty folder"}
    ),
    Case(
        "06-detect-no-weights", DETECT, ["--source", "{tmp}/a.png"], "best.keras", {"a.png": "png"}
    ),
    Case(
        "06-detect-text-weights",
        DETECT,
        ["--source", "{tmp}/a.png", "--weights", "{tmp}/w.keras"],
        "{tmp}/w.keras",
        {"a.png": "png", "w.keras": "text"},
    ),
    Case(
        "06-detect-threshold-above-1",
        DETECT,
        ["--source", "{tmp}/a.png", "--score-threshold", "1.5"],
        "--score-threshold",
        {"a.png": "png"},
    ),
    # selective_search.py
    Case("06-search-unknown-mode", SEARCH, ["--mode", "slow"], "--mode"),
    Case("06-search-zero-images", SEARCH, ["--num-images", "0"], "--num-images"),
    Case("06-search-missing-data-path", SEARCH, ["--data-path", "{tmp}/nope"], "{tmp}/nope"),
]
