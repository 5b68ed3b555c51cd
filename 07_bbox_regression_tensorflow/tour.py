"""``detseg tour`` step of this folder: 07b (box + class heads in Keras) end to end, quickly.

Pretrains the small backbone briefly (classify and locate 200 other built-in images, 2 epochs; or
reuses the cached one), trains the two heads for 12 epochs (on cached features) on 450 built-in
images (150 per class), evaluates the held-out 90, draws the predicted vs true boxes, exports to
.keras / SavedModel / ONNX and checks each against Keras. Seconds in smoke mode.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent


def run(out_dir: Path) -> dict[str, Any]:
    """Run the quick path into ``out_dir``.

    Returns:
        ``{"mean_iou", "iou_above_0.5", "class_accuracy", "train_seconds", "pretrain_seconds",
        "onnx_max_abs_diff", "keras_ms", "onnxruntime_ms", "pictures": [...]}``.
    """
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    import bbox_cli

    from detseg import settings
    from detseg.scripts import load_script

    smoke = settings.smoke_mode()
    argv = ["--backbone", "small", "--output-dir", str(out_dir / "run"), "--seed", "0"]
    argv += ["--epochs", "1" if smoke else "12", "--pretrain-epochs", "1" if smoke else "2"]
    if not smoke:  # small batches: more steps on these few images
        argv += ["--num-images", "450", "--pretrain-images", "200", "--batch-size", "32"]
        argv += ["--pretrain-batch-size", "16"]  # 20 pretraining steps instead of 6
    result = bbox_cli.main("multi", argv)
    weights = out_dir / "run" / "best.keras"
    shown = load_script(FOLDER, "predict").main(
        ["--weights", str(weights), "--output", str(out_dir / "predictions.png")]
    )
    exported = load_script(FOLDER, "export").main(
        ["--weights", str(weights), "--output-dir", str(out_dir / "export"), "--repeats", "10"]
    )
    onnx = exported["onnx"]
    return {
        "mean_iou": result["test"]["mean_iou"],
        "iou_above_0.5": result["test"]["iou_above_0.5"],
        "class_accuracy": result["test"]["class_accuracy"],
        "train_seconds": result["train_seconds"],
        "pretrain_seconds": result["pretrain"].get("seconds", 0.0),
        "onnx_max_abs_diff": max(onnx["max_abs_diff_bbox"], onnx["max_abs_diff_class"]),
        "keras_ms": exported["keras_ms"],
        "onnxruntime_ms": exported["onnxruntime_ms"],
        "pictures": [shown["output"], *result["pictures"]],
    }
