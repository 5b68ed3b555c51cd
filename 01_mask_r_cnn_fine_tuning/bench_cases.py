"""Benchmark cases of this lesson for ``detseg bench`` (see :mod:`detseg.bench`).

Entries to add to ``detseg.bench.CASES``::

    "01-maskrcnn-slim-train-step": Case("01_mask_r_cnn_fine_tuning/bench_cases.py:case_train_step",
        "01_mask_r_cnn_fine_tuning", "slim Mask R-CNN: one SGD step, 4 pedestrian images at 256 px"),
    "01-maskrcnn-slim-ort": Case("01_mask_r_cnn_fine_tuning/bench_cases.py:case_ort_vs_eager",
        "01_mask_r_cnn_fine_tuning", "slim Mask R-CNN inference: ONNX Runtime vs eager PyTorch"),

Both use an untrained model on the built-in pedestrians: speed does not depend on the weights
(except through the number of detections, capped at ``box_detections_per_img``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent
if str(FOLDER) not in sys.path:
    sys.path.insert(0, str(FOLDER))


def _batch(batch_size: int) -> tuple[list[Any], list[dict[str, Any]]]:
    from maskrcnn_data import load_splits, torch_datasets

    train, _ = torch_datasets(load_splits("pedestrians"))
    items = [train[i] for i in range(batch_size)]
    return [image for image, _ in items], [target for _, target in items]


def case_train_step() -> dict[str, Any]:
    """Median seconds of one SGD step (forward, backward, update) of ``maskrcnn_slim``."""
    import torch
    from models_maskrcnn import build_model

    from detseg import bench, settings

    torch.manual_seed(0)
    images, targets = _batch(4)
    model = build_model("maskrcnn_slim", num_classes=2).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)

    def step() -> None:
        losses = model(images, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    timing = bench.time_it(step, warmup=1, repeats=2 if settings.smoke_mode() else 10)
    return {
        "step_s": timing["median_s"],
        "images_per_s": 4 / timing["median_s"],
        "threads": torch.get_num_threads(),
        "main": "step_s",
    }


def case_ort_vs_eager() -> dict[str, Any]:
    """Median ms per image, eager PyTorch vs ONNX Runtime, of the exported ``maskrcnn_slim``."""
    import torch
    from models_maskrcnn import build_model

    from detseg import bench, settings
    from detseg.export import export_onnx, ort_run, ort_session

    torch.manual_seed(0)
    images, _ = _batch(1)
    model = build_model("maskrcnn_slim", num_classes=2).eval()
    repeats = 2 if settings.smoke_mode() else 10
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(
            model,
            ([images[0]],),
            Path(folder) / "slim.onnx",
            input_names=["image"],
            output_names=["boxes", "labels", "scores", "masks"],
            dynamic_axes={"image": {1: "height", 2: "width"}},
        )
        session = ort_session(path)
        with torch.no_grad():
            eager = bench.time_it(lambda: model([images[0]]), repeats=repeats)
        ort = bench.time_it(lambda: ort_run(session, [images[0]]), repeats=repeats)
    return {
        "eager_ms": eager["median_s"] * 1e3,
        "ort_ms": ort["median_s"] * 1e3,
        "speedup": eager["median_s"] / ort["median_s"],
        "main": "speedup",
    }


def case_summary() -> dict[str, Any]:
    """The README's default run, measured end to end: ``train.py`` with its defaults (slim Mask
    R-CNN, 16 epochs), then ``export.py`` on its last checkpoint (detections matched between
    eager and ONNX Runtime, ms per image). Smoke mode runs a tiny ``--dry-run`` instead: the
    numbers are then meaningless, only the plumbing is exercised.

    Returns:
        the :mod:`detseg.bench_summary` keys: ``parameters``, ``train_s`` (the engine's time,
        evaluation included), ``quality`` (segm AP50 of the last epoch on the validation split, the
        README's bar), ``quality_metric``, ``quality_bar``, ``eager_ms``, ``onnxruntime_ms``, and
        ``bbox_AP50``, ``unmatched`` (detections the two runtimes do not share).
    """
    from detseg import settings
    from detseg.scripts import load_script

    train, export = (load_script(FOLDER, name) for name in ("train", "export"))
    smoke = settings.smoke_mode()
    tiny = [
        "--slim",
        "fpn_channels=32",
        "--slim",
        "mask_layers=[32]",
        "--slim",
        "mask_dilations=[1]",
    ]
    tiny += ["--image-size", "128", "192"]
    with tempfile.TemporaryDirectory() as folder:
        result = train.main(["--output-dir", folder] + ([*tiny, "--dry-run"] if smoke else []))
        weights = next(Path(folder).rglob("last.pt"))
        exported = export.main(
            ["--weights", str(weights), "--output-dir", str(Path(folder) / "export")]
            + (["--dry-run"] if smoke else [])
        )
    return {
        "parameters": result["num_parameters"],
        "train_s": result["train_time_s"],
        "quality": result["eval"]["segm_AP50"],
        "quality_metric": "segm AP50",
        "quality_bar": 0.85,
        "bbox_AP50": result["eval"]["bbox_AP50"],
        "eager_ms": exported["eager_ms"],
        "onnxruntime_ms": exported["ort_ms"],
        "unmatched": exported["unmatched"],
        "main": "quality",
    }
