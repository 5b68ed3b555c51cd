"""``detseg tour`` step of this folder: a small U-Net on the built-in salt data, end to end.

Trains U-Net (width 8, depth 4, 0.49 M parameters) for 3 epochs on the first 800 salt pairs
(640 train, 160 validation), sweeps the threshold, draws predictions, exports to ONNX and checks
ONNX Runtime against PyTorch. About 1 minute on 2 CPU cores; seconds in smoke mode.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent


def run(out_dir: Path) -> dict[str, Any]:
    """Run the quick path into ``out_dir``.

    Returns:
        ``{"iou_salt", "mean_dice", "pixel_accuracy", "best_threshold", "iou_at_best",
        "train_minutes", "onnx_max_abs_diff", "eager_ms", "onnxruntime_ms",
        "pictures": [predictions.png, training_curves.png]}``.
    """
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    import numpy as np
    import torch

    # only this folder's uniquely named modules: train / predict / export exist in every folder
    from seg_training import TASKS, fit, make_datasets, threshold_sweep
    from segmentation_models import LogitsOnly, build_model, predict_logits

    from detseg import settings
    from detseg.devices import seed_everything
    from detseg.engine.distributed import make_loader
    from detseg.export import check_parity, export_onnx, ort_run, ort_session, time_inference
    from detseg.viz import draw_segmentation, save_grid

    smoke = settings.smoke_mode()
    task = TASKS["salt"]
    seed_everything(0)
    train_set, val_set, source = make_datasets(task, num_images=None if smoke else 800)
    model = build_model("unet", num_classes=1, width=0.5)
    result = fit(
        model,
        train_set,
        val_set,
        task=task,
        classes=source.classes,
        device=torch.device("cpu"),
        epochs=1 if smoke else 3,
        batch_size=16,
        lr=3e-3,
        output_dir=out_dir / "run",
        progress=False,
        config={"model": "unet", "width": 0.5, "num_outputs": 1, "binary": True},
    )
    final = result["history"][-1]["eval"]
    loader = make_loader(val_set, 16, False, 0, 0)
    sweep = threshold_sweep(model, loader, torch.device("cpu"), np.linspace(0.1, 0.9, 9))
    best_threshold = max(sweep, key=lambda t: sweep[t])

    shown = []
    model.eval()
    for index in range(min(6, len(val_set))):
        images, mask = val_set[index]
        image, _ = source.load(source.records[val_set.indices[index]])
        predicted = (torch.sigmoid(predict_logits(model, images[None]))[0, 0] > 0.5).long()
        red = [(0, 0, 0), (255, 40, 40)]
        shown += [draw_segmentation(image, mask, red), draw_segmentation(image, predicted, red)]
    grid = save_grid(shown, out_dir / "predictions.png", ncols=4)

    wrapped = LogitsOnly(model).eval()
    images = torch.randn(1, 3, 101, 101, generator=torch.Generator().manual_seed(0))
    path = export_onnx(wrapped, images, out_dir / "unet_salt.onnx", input_names=["images"],
                       output_names=["logits"])  # fmt: skip
    session = ort_session(path)
    with torch.no_grad():
        eager = time_inference(wrapped, images, warmup=2, repeats=10)
    onnx = time_inference(lambda batch: ort_run(session, batch), images, warmup=2, repeats=10)
    return {
        "iou_salt": final["iou_salt"],
        "mean_dice": final["mean_dice"],
        "pixel_accuracy": final["pixel_accuracy"],
        "best_threshold": best_threshold,
        "iou_at_best": sweep[best_threshold],
        "train_minutes": final["minutes"],
        "onnx_max_abs_diff": check_parity(wrapped, session, images),
        "eager_ms": eager["median_ms"],
        "onnxruntime_ms": onnx["median_ms"],
        "pictures": [grid, out_dir / "run" / "training_curves.png"],
    }
