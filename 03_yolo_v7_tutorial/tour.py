"""``detseg tour`` step of this folder: YOLOv7-tiny on the built-in table-top set, end to end.

Counts the parameters against the authors' (training form and fused), trains YOLOv7-tiny for 4
epochs at 192 px on 200 table-top images (140 train, 40 valid) through ``train.py``, draws its
detections on the test images, exports the fused model to ONNX and checks ONNX Runtime against
PyTorch before NMS. A quick path, not the quality run: see the README for that. Seconds in smoke
mode.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent


def run(out_dir: Path) -> dict[str, Any]:
    """Run the quick path into ``out_dir``.

    Returns:
        ``{"parameters", "parameters_fused", "authors_parameters_fused", "map50", "map",
        "train_minutes", "onnx_max_abs_diff", "onnxruntime_ms", "eager_ms", "pictures"}``.
    """
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    from yolov7 import AUTHORS_PARAMETERS_FUSED, build_model, count_parameters
    from yolov7_checkpoint import load_trained
    from yolov7_data import read_split
    from yolov7_training import predict

    from detseg import settings
    from detseg.data.imageio import read_image
    from detseg.data.letterbox import letterbox, unletterbox_boxes
    from detseg.data.torch_datasets import image_to_tensor
    from detseg.scripts import load_script
    from detseg.viz import draw_detections, save_grid

    smoke = settings.smoke_mode()
    num_images, size, epochs = (16, 64, 1) if smoke else (200, 192, 4)
    model80 = build_model("tiny", 80)
    counts = {
        "parameters": count_parameters(model80),
        "parameters_fused": count_parameters(model80.fuse()),
    }
    run_dir = out_dir / "run"
    train = load_script(FOLDER, "train")
    result = train.main([
        "--num-images", str(num_images), "--image-size", str(size), "--epochs", str(epochs),
        "--batch-size", "8", "--optimizer", "adamw", "--lr", "0.002", "--workers", "0",
        "--output-dir", str(run_dir),
    ])  # fmt: skip
    history = result["history"]
    export = load_script(FOLDER, "export").main(
        [
            "--weights",
            str(run_dir / "best.pt"),
            "--repeats",
            "3" if smoke else "10",
            "--image-size",
            "320",
        ]
    )
    model, config = load_trained(run_dir / "best.pt")
    test = read_split(None, "test", num_images=num_images)
    shown = []
    for record in test.records[:6]:
        image = read_image(test.image_path(record))
        boxed, scale, pad = letterbox(image, config["image_size"])
        det = predict(model, image_to_tensor(boxed)[None], score_threshold=0.25)[0]
        boxes = unletterbox_boxes(det["boxes"].numpy(), scale, pad, image.shape[:2])
        shown.append(draw_detections(image, boxes, det["labels"].numpy(), det["scores"].numpy(),
                                     class_names=config["classes"]))  # fmt: skip
    grid = save_grid(shown, out_dir / "detections.png", ncols=3)
    return {
        **counts,
        "authors_parameters_fused": AUTHORS_PARAMETERS_FUSED["tiny"],
        "map50": history[-1]["eval"]["map50"],
        "map": history[-1]["eval"]["map"],
        "train_minutes": sum(h["time"]["epoch_s"] for h in history) / 60,
        "onnx_max_abs_diff": export["max_abs_diff"],
        "eager_ms": export["eager_ms"],
        "onnxruntime_ms": export["onnxruntime_ms"],
        "pictures": [grid, run_dir / "training_curves.png"],
    }
