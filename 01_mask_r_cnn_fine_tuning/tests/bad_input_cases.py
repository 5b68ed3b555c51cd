"""01's rows of the bad-input suite (``tests/test_bad_input.py``; row format in ``detseg.bad_input``)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from detseg.bad_input import Case

F = "01_mask_r_cnn_fine_tuning"
FOLDER = Path(__file__).resolve().parents[1]
TRAIN, PREDICT = f"{F}/train.py", f"{F}/predict.py"
EXPORT, EVALUATE = f"{F}/export.py", f"{F}/evaluate.py"
W = ["--weights", "{tmp}/w.pt"]
PNG = {"a.png": "png"}
IMG = ["--source", "{tmp}/a.png"]
_SAVED: dict[str, bytes] = {}


def slim_checkpoint(path: Path) -> None:
    """A checkpoint as ``train.py`` writes it (an untrained maskrcnn_slim, one class), so that a
    case gets past the weights to the flag or file it is about. Built once per session."""
    if "slim" not in _SAVED:
        import torch

        if str(FOLDER) not in sys.path:
            sys.path.insert(0, str(FOLDER))
        from models_maskrcnn import build_model, checkpoint_slim_fields

        torch.manual_seed(0)
        slim = checkpoint_slim_fields({})
        model = build_model("maskrcnn_slim", num_classes=2, weights="none", slim=slim)
        config = {
            "model": "maskrcnn_slim",
            "num_classes": 2,
            "classes": ["person"],
            "slim": slim,
            "data": "pedestrians",
        }
        buffer = io.BytesIO()
        torch.save({"model": model.state_dict(), "config": config, "epoch": 1}, buffer)
        _SAVED["slim"] = buffer.getvalue()
    path.write_bytes(_SAVED["slim"])


def unet_checkpoint(path: Path) -> None:
    """05's U-Net checkpoint: a checkpoint of another example's model."""
    import importlib.util

    other = FOLDER.parent / "05_unet_segmentation" / "tests" / "bad_input_cases.py"
    spec = importlib.util.spec_from_file_location("ex05_bad_input_cases", other)
    assert spec is not None and spec.loader is not None
    cases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cases)
    cases.unet_checkpoint(path)


GOOD = {"w.pt": slim_checkpoint}

CASES = [
    # train.py
    Case("01-train-zero-epochs", TRAIN, ["--epochs", "0", "--dry-run"], "--epochs"),
    Case("01-train-negative-batch", TRAIN, ["--batch-size", "-2", "--dry-run"], "--batch-size"),
    Case("01-train-negative-lr", TRAIN, ["--lr", "-0.1", "--dry-run"], "--lr"),
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
    Case("01-train-one-image", TRAIN, ["--num-images", "1", "--dry-run"], "--num-images"),
    Case("01-train-image-size-8", TRAIN, ["--image-size", "8", "16", "--dry-run"], "--image-size"),
    Case("01-train-copy-paste-2", TRAIN, ["--copy-paste", "2", "--dry-run"], "--copy-paste"),
    Case(
        "01-train-mask-weight-0",
        TRAIN,
        ["--mask-loss-weight", "0", "--dry-run"],
        "--mask-loss-weight",
    ),
    Case("01-train-slim-unknown", TRAIN, ["--slim", "wings=2", "--dry-run"], "wings"),
    Case(
        "01-train-data-path-text-file",
        TRAIN,
        ["--data-path", "{tmp}/f.txt", "--dry-run"],
        "{tmp}/f.txt",
        {"f.txt": "text"},
    ),
    # predict.py: checkpoints
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
        "01-predict-weights-of-05",
        PREDICT,
        [*W, *IMG],
        "{tmp}/w.pt",
        {**PNG, "w.pt": unet_checkpoint},
    ),
    # predict.py: --source and numbers
    Case(
        "01-predict-score-threshold",
        PREDICT,
        [*W, *IMG, "--score-threshold", "1.5"],
        "--score-threshold",
        PNG,
    ),
    Case("01-predict-source-missing", PREDICT, [*W, *IMG], "{tmp}/a.png", GOOD),
    Case(
        "01-predict-source-empty-folder",
        PREDICT,
        [*W, "--source", "{tmp}/d"],
        "{tmp}/d",
        {**GOOD, "d": "empty folder"},
    ),
    Case(
        "01-predict-source-truncated-png",
        PREDICT,
        [*W, *IMG],
        "{tmp}/a.png",
        {**GOOD, "a.png": "truncated png"},
    ),
    # export.py
    Case("01-export-weights-empty", EXPORT, W, "{tmp}/w.pt", {"w.pt": "empty"}),
    Case("01-export-zero-images", EXPORT, [*W, "--num-images", "0"], "--num-images"),
    Case(
        "01-export-source-empty-folder",
        EXPORT,
        [*W, "--source", "{tmp}/d"],
        "{tmp}/d",
        {**GOOD, "d": "empty folder"},
    ),
    # evaluate.py
    Case("01-evaluate-weights-missing", EVALUATE, W, "{tmp}/w.pt"),
    Case("01-evaluate-weights-unsafe", EVALUATE, W, "{tmp}/w.pt", {"w.pt": "unsafe checkpoint"}),
    Case("01-evaluate-one-image", EVALUATE, [*W, "--num-images", "1"], "--num-images"),
    Case("01-evaluate-unknown-split", EVALUATE, [*W, "--split", "test"], "--split"),
    Case(
        "01-evaluate-data-path-missing",
        EVALUATE,
        [*W, "--data-path", "{tmp}/x.json"],
        "{tmp}/x.json",
        GOOD,
    ),
    Case(
        "01-evaluate-data-path-truncated-json",
        EVALUATE,
        [*W, "--data-path", "{tmp}/x.json"],
        "{tmp}/x.json",
        {**GOOD, "x.json": b'{"images": [{"id": 1, '},
    ),
    Case(
        "01-evaluate-data-path-json-list",
        EVALUATE,
        [*W, "--data-path", "{tmp}/x.json"],
        "{tmp}/x.json",
        {**GOOD, "x.json": b"[]"},
    ),
    Case(
        "01-evaluate-data-path-empty-folder",
        EVALUATE,
        [*W, "--data-path", "{tmp}/d"],
        "{tmp}/d",
        {**GOOD, "d": "empty folder"},
    ),
]
