"""05's rows of the bad-input suite (``tests/test_bad_input.py``; row format in ``detseg.bad_input``)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from detseg.bad_input import Case

S = "05_unet_segmentation"
FOLDER = Path(__file__).resolve().parents[1]
TRAIN, PREDICT, EXPORT = f"{S}/train.py", f"{S}/predict.py", f"{S}/export.py"
W = ["--weights", "{tmp}/w.pt"]
PNG = {"a.png": "png"}
IMG = ["--source", "{tmp}/a.png"]
_SAVED: dict[str, bytes] = {}


def unet_checkpoint(path: Path) -> None:
    """A checkpoint as ``train.py`` writes it (an untrained U-Net of width 0.25 on salt), so that a
    case gets past the weights to the flag or file it is about."""
    if "unet" not in _SAVED:
        import torch

        if str(FOLDER) not in sys.path:
            sys.path.insert(0, str(FOLDER))
        from segmentation_models import build_model

        torch.manual_seed(0)
        model = build_model("unet", num_classes=1, width=0.25, weights="none")
        config = {
            "model": "unet",
            "width": 0.25,
            "num_outputs": 1,
            "binary": True,
            "threshold": 0.5,
            "classes": ["sediment", "salt"],
            "palette": None,
            "image_size": [32, 32],
            "dataset": "salt",
        }
        buffer = io.BytesIO()
        torch.save({"model": model.state_dict(), "config": config, "epoch": 1}, buffer)
        _SAVED["unet"] = buffer.getvalue()
    path.write_bytes(_SAVED["unet"])


GOOD = {"w.pt": unet_checkpoint}

CASES = [
    # train.py: numbers out of range, unknown names, missing data
    Case("05-train-negative-epochs", TRAIN, ["--epochs", "-1", "--dry-run"], "--epochs"),
    Case("05-train-zero-batch", TRAIN, ["--batch-size", "0", "--dry-run"], "--batch-size"),
    Case("05-train-zero-lr", TRAIN, ["--lr", "0", "--dry-run"], "--lr"),
    Case("05-train-negative-workers", TRAIN, ["--workers", "-1", "--dry-run"], "--workers"),
    Case("05-train-negative-seed", TRAIN, ["--seed", "-1", "--dry-run"], "--seed"),
    Case("05-train-val-fraction-1", TRAIN, ["--val-fraction", "1", "--dry-run"], "--val-fraction"),
    Case("05-train-zero-width", TRAIN, ["--width", "0", "--dry-run"], "--width"),
    Case("05-train-unknown-model", TRAIN, ["--model", "resnet9000", "--dry-run"], "--model"),
    Case("05-train-unknown-dataset", TRAIN, ["--dataset", "mars", "--dry-run"], "--dataset"),
    Case("05-train-unknown-tracker", TRAIN, ["--tracker", "mlflow", "--dry-run"], "--tracker"),
    Case("05-train-epochs-not-a-number", TRAIN, ["--epochs", "ten"], "--epochs"),
    Case("05-train-zero-images", TRAIN, ["--num-images", "0", "--dry-run"], "--num-images"),
    Case("05-train-image-size-0", TRAIN, ["--image-size", "0", "32", "--dry-run"], "--image-size"),
    Case("05-train-negative-budget", TRAIN, ["--time-budget", "-1", "--dry-run"], "--time-budget"),
    Case(
        "05-train-data-path-text-file",
        TRAIN,
        ["--data-path", "{tmp}/f.txt", "--dry-run"],
        "{tmp}/f.txt",
        {"f.txt": "text"},
    ),
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
    # train.py: --resume and --weights
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
    Case(
        "05-train-resume-foreign",
        TRAIN,
        ["--resume", "{tmp}/w.pt", "--dry-run", "--output-dir", "{tmp}/run"],
        "{tmp}/w.pt",
        {"w.pt": "foreign checkpoint"},
    ),
    Case(
        "05-train-resume-other-model",
        TRAIN,
        ["--resume", "{tmp}/w.pt", "--model", "fcn8s", "--dry-run", "--output-dir", "{tmp}/run"],
        "{tmp}/w.pt",
        GOOD,
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
    Case(
        "05-train-weights-other-width",
        TRAIN,
        [*W, "--width", "0.5", "--dry-run"],
        "{tmp}/w.pt",
        GOOD,
    ),
    # predict.py: bad checkpoints
    Case("05-predict-weights-missing", PREDICT, [*W, *IMG], "{tmp}/w.pt", PNG),
    Case(
        "05-predict-weights-folder",
        PREDICT,
        [*W, *IMG],
        "{tmp}/w.pt",
        {**PNG, "w.pt": "empty folder"},
    ),
    Case("05-predict-weights-text", PREDICT, [*W, *IMG], "{tmp}/w.pt", {**PNG, "w.pt": "text"}),
    Case("05-predict-weights-empty", PREDICT, [*W, *IMG], "{tmp}/w.pt", {**PNG, "w.pt": "empty"}),
    Case("05-predict-weights-binary", PREDICT, [*W, *IMG], "{tmp}/w.pt", {**PNG, "w.pt": "binary"}),
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
        ["{tmp}/w.pt", "argparse.Namespace"],
        {**PNG, "w.pt": "unsafe checkpoint"},
    ),
    Case(
        "05-predict-weights-unreadable",
        PREDICT,
        [*W, *IMG],
        "{tmp}/w.pt",
        {**PNG, **GOOD},
        unreadable=["w.pt"],
    ),
    # predict.py: bad --source and numbers (with a good checkpoint)
    Case("05-predict-source-missing", PREDICT, [*W, *IMG], "{tmp}/a.png", GOOD),
    Case(
        "05-predict-source-empty-folder",
        PREDICT,
        [*W, "--source", "{tmp}/d"],
        "{tmp}/d",
        {**GOOD, "d": "empty folder"},
    ),
    Case(
        "05-predict-source-folder-of-text",
        PREDICT,
        [*W, "--source", "{tmp}/d"],
        "{tmp}/d",
        {**GOOD, "d/notes.txt": "text"},
    ),
    Case(
        "05-predict-source-truncated-png",
        PREDICT,
        [*W, *IMG],
        "{tmp}/a.png",
        {**GOOD, "a.png": "truncated png"},
    ),
    Case(
        "05-predict-source-text-png",
        PREDICT,
        [*W, *IMG],
        "{tmp}/a.png",
        {**GOOD, "a.png": "text"},
    ),
    Case(
        "05-predict-source-binary-video",
        PREDICT,
        [*W, "--source", "{tmp}/v.mp4"],
        "{tmp}/v.mp4",
        {**GOOD, "v.mp4": "binary"},
    ),
    Case(
        "05-predict-threshold-1.5",
        PREDICT,
        [*W, *IMG, "--threshold", "1.5"],
        "--threshold",
        {**GOOD, **PNG},
    ),
    Case(
        "05-predict-threshold-negative",
        PREDICT,
        [*W, *IMG, "--threshold", "-0.1"],
        "--threshold",
        {**GOOD, **PNG},
    ),
    Case("05-predict-alpha-2", PREDICT, [*W, *IMG, "--alpha", "2"], "--alpha", PNG),
    Case("05-predict-max-frames-0", PREDICT, [*W, *IMG, "--max-frames", "0"], "--max-frames", PNG),
    Case("05-predict-no-source", PREDICT, W, "--source"),
    # export.py
    Case("05-export-weights-missing", EXPORT, W, "{tmp}/w.pt"),
    Case("05-export-weights-text", EXPORT, W, "{tmp}/w.pt", {"w.pt": "text checkpoint"}),
    Case("05-export-weights-foreign", EXPORT, W, "{tmp}/w.pt", {"w.pt": "foreign checkpoint"}),
    Case("05-export-zero-repeats", EXPORT, [*W, "--repeats", "0"], "--repeats", GOOD),
    Case("05-export-zero-opset", EXPORT, [*W, "--opset", "0"], "--opset", GOOD),
    Case("05-export-negative-height", EXPORT, [*W, "--height", "-8"], "--height", GOOD),
    Case("05-export-negative-tolerance", EXPORT, [*W, "--tolerance", "-1"], "--tolerance", GOOD),
]
