"""07's rows of the bad-input suite (``tests/test_bad_input.py``; row format in ``detseg.bad_input``).

Every training row passes ``--backbone small``: ``auto`` would first try to download VGG16's weights.
"""

from __future__ import annotations

from detseg.bad_input import Case

S = "07_bbox_regression_tensorflow"
A, B = f"{S}/train_bbox.py", f"{S}/train_multiclass.py"
PREDICT, EXPORT, COMPARE = f"{S}/predict.py", f"{S}/export.py", f"{S}/compare_pytorch.py"
SMALL = ["--backbone", "small", "--dry-run"]
W = ["--weights", "{tmp}/w.keras"]
BAD_ROW = b"image_0001.jpg,10,20,30\n"  # 4 columns instead of 6

CASES = [
    # train_bbox.py (07a) and train_multiclass.py (07b): flags
    Case("07a-train-negative-epochs", A, [*SMALL, "--epochs", "-1"], "--epochs"),
    Case("07a-train-zero-batch", A, [*SMALL, "--batch-size", "0"], "--batch-size"),
    Case("07a-train-zero-lr", A, [*SMALL, "--lr", "0"], "--lr"),
    Case("07a-train-epochs-not-a-number", A, [*SMALL, "--epochs", "ten"], "--epochs"),
    Case("07a-train-unknown-backbone", A, ["--backbone", "resnet9000"], "--backbone"),
    Case("07a-train-val-fraction-1", A, [*SMALL, "--val-fraction", "1"], "--val-fraction"),
    Case(
        "07a-train-fractions-leave-nothing",
        A,
        [*SMALL, "--val-fraction", "0.5", "--test-fraction", "0.45"],
        "--test-fraction",
    ),
    Case(
        "07a-train-zero-pretrain-epochs", A, [*SMALL, "--pretrain-epochs", "0"], "--pretrain-epochs"
    ),
    Case(
        "07a-train-too-few-pretrain-images",
        A,
        [*SMALL, "--pretrain-images", "3"],
        "--pretrain-images",
    ),
    Case(
        "07b-train-zero-pretrain-batch",
        B,
        [*SMALL, "--pretrain-batch-size", "0"],
        "--pretrain-batch-size",
    ),
    Case("07a-train-unknown-class", A, [*SMALL, "--classes", "zebra"], "zebra"),
    Case("07b-train-negative-class-weight", B, [*SMALL, "--class-weight", "-1"], "--class-weight"),
    Case("07b-train-unknown-tracker", B, [*SMALL, "--tracker", "mlflow"], "--tracker"),
    Case("07b-train-mps", B, [*SMALL, "--device", "mps"], "--device"),
    Case("07b-train-flip-uncached", B, [*SMALL, "--flip", "--no-cached-features"], "--flip"),
    Case("07b-train-unknown-box-loss", B, [*SMALL, "--box-loss", "iou"], "--box-loss"),
    # data
    Case("07b-train-missing-data-path", B, [*SMALL, "--data-path", "{tmp}/nope"], "{tmp}/nope"),
    Case(
        "07b-train-data-path-without-annotations",
        B,
        [*SMALL, "--data-path", "{tmp}/d"],
        "{tmp}/d/annotations",
        {"d": "empty folder"},
    ),
    Case(
        "07b-train-csv-row-with-4-columns",
        B,
        [*SMALL, "--data-path", "{tmp}/d"],
        ["{tmp}/d/annotations/airplane.csv:1", "columns"],
        {"d/annotations/airplane.csv": BAD_ROW, "d/images/airplane": "empty folder"},
    ),
    # --resume and --weights
    Case(
        "07a-train-resume-nothing", A, [*SMALL, "--resume", "--output-dir", "{tmp}/run"], "--resume"
    ),
    Case(
        "07a-train-resume-text",
        A,
        [*SMALL, "--resume", "{tmp}/w.keras"],
        ["--resume", "{tmp}/w.keras"],
        {"w.keras": "text"},
    ),
    Case("07b-train-weights-missing", B, [*SMALL, *W], ["--weights", "{tmp}/w.keras"]),
    Case("07b-train-weights-text", B, [*SMALL, *W], "{tmp}/w.keras", {"w.keras": "text"}),
    Case("07b-train-weights-binary", B, [*SMALL, *W], "{tmp}/w.keras", {"w.keras": "binary"}),
    Case(
        "07b-train-weights-torch-checkpoint",
        B,
        [*SMALL, "--weights", "{tmp}/w.pt"],
        ["{tmp}/w.pt", ".keras"],
        {"w.pt": "foreign checkpoint"},
    ),
    # predict.py, export.py, compare_pytorch.py
    Case("07-predict-weights-missing", PREDICT, W, "{tmp}/w.keras"),
    Case("07-predict-weights-text", PREDICT, W, "{tmp}/w.keras", {"w.keras": "text"}),
    Case("07-predict-zero-images", PREDICT, [*W, "--num-images", "0"], "--num-images"),
    Case("07-export-weights-missing", EXPORT, W, "{tmp}/w.keras"),
    Case("07-export-weights-empty", EXPORT, W, "{tmp}/w.keras", {"w.keras": "empty"}),
    Case("07-export-zero-repeats", EXPORT, [*W, "--repeats", "0"], "--repeats"),
    Case("07-export-zero-tolerance", EXPORT, [*W, "--tolerance", "0"], "--tolerance"),
    Case("07-compare-zero-epochs", COMPARE, ["--epochs", "0"], "--epochs"),
]
