"""03's rows of the bad-input suite (``tests/test_bad_input.py``; row format in ``detseg.bad_input``)."""

from __future__ import annotations

from detseg.bad_input import Case

S = "03_yolo_v7_tutorial"
TRAIN, EXPORT, DETECT = f"{S}/train.py", f"{S}/export.py", f"{S}/detect.py"
RECORD, MODEL = f"{S}/record_images.py", f"{S}/yolov7.py"
BAD_YAML = "train: ../train/images\nnames: [ball, cup\n"

CASES = [
    # train.py: flags out of range
    Case("03-train-negative-epochs", TRAIN, ["--epochs", "-1", "--dry-run"], "--epochs"),
    Case("03-train-image-size-100", TRAIN, ["--image-size", "100", "--dry-run"], "--image-size"),
    Case("03-train-mosaic-2", TRAIN, ["--mosaic", "2", "--dry-run"], "--mosaic"),
    Case(
        "03-train-negative-close-mosaic",
        TRAIN,
        ["--close-mosaic", "-1", "--dry-run"],
        "--close-mosaic",
    ),
    Case("03-train-hsv-1", TRAIN, ["--hsv", "1", "0.5", "0.5", "--dry-run"], "--hsv"),
    Case("03-train-ema-1", TRAIN, ["--ema-decay", "1", "--dry-run"], "--ema-decay"),
    Case("03-train-unknown-variant", TRAIN, ["--variant", "e6e", "--dry-run"], "--variant"),
    Case("03-train-aux-head-tiny", TRAIN, ["--aux-head", "--dry-run"], "--aux-head"),
    Case("03-train-negative-budget", TRAIN, ["--time-budget", "-1", "--dry-run"], "--time-budget"),
    Case("03-train-zero-clip-grad", TRAIN, ["--clip-grad", "0", "--dry-run"], "--clip-grad"),
    Case("03-train-mosaic-scale-0", TRAIN, ["--mosaic-scale", "0", "--dry-run"], "--mosaic-scale"),
    # train.py: datasets that are not a YOLO export
    Case(
        "03-train-missing-data-path",
        TRAIN,
        ["--data-path", "{tmp}/nope", "--dry-run"],
        "{tmp}/nope",
    ),
    Case(
        "03-train-folder-without-data-yaml",
        TRAIN,
        ["--data-path", "{tmp}/d", "--dry-run"],
        ["{tmp}/d/data.yaml", "no data.yaml"],
        {"d": "empty folder"},
    ),
    Case(
        "03-train-malformed-data-yaml",
        TRAIN,
        ["--data-path", "{tmp}/data.yaml", "--dry-run"],
        ["{tmp}/data.yaml", "malformed YAML"],
        {"data.yaml": BAD_YAML.encode()},
    ),
    Case(
        "03-train-weights-text",
        TRAIN,
        ["--weights", "{tmp}/w.pt", "--dry-run"],
        "{tmp}/w.pt",
        {"w.pt": "text checkpoint"},
    ),
    # export.py / detect.py: flags and checkpoints
    Case("03-export-nms-and-dynamic", EXPORT, ["--nms", "--dynamic-batch"], "--dynamic-batch"),
    Case("03-export-score-2", EXPORT, ["--score-threshold", "2"], "--score-threshold"),
    Case("03-export-size-33", EXPORT, ["--image-size", "33"], "--image-size"),
    Case("03-export-missing-weights", EXPORT, ["--weights", "{tmp}/no.pt"], "{tmp}/no.pt"),
    Case(
        "03-export-truncated-weights",
        EXPORT,
        ["--weights", "{tmp}/w.pt"],
        "{tmp}/w.pt",
        {"w.pt": "truncated checkpoint"},
    ),
    Case(
        "03-detect-missing-source",
        DETECT,
        ["--source", "{tmp}/clip.mp4", "--no-show"],
        "{tmp}/clip.mp4",
    ),
    Case(
        "03-detect-foreign-weights",
        DETECT,
        ["--weights", "{tmp}/w.pt", "--source", "synthetic", "--no-show"],
        "{tmp}/w.pt",
        {"w.pt": "foreign checkpoint"},
    ),
    Case(
        "03-detect-iou-minus", DETECT, ["--iou-threshold", "-0.1", "--no-show"], "--iou-threshold"
    ),
    # record_images.py and yolov7.py
    Case("03-record-every-0", RECORD, ["--every", "0", "--no-show"], "--every"),
    Case("03-record-no-show-no-every", RECORD, ["--no-show", "--source", "synthetic"], "--no-show"),
    Case(
        "03-record-missing-source",
        RECORD,
        ["--source", "{tmp}/v.mp4", "--every", "2"],
        "{tmp}/v.mp4",
    ),
    Case("03-model-zero-classes", MODEL, ["--num-classes", "0"], "--num-classes"),
]
