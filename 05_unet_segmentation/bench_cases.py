"""Benchmark cases of this folder (``detseg bench``; registered in :data:`detseg.bench.CASES`).

"05-unet-onnx": Case("05_unet_segmentation/bench_cases.py:case_ort_vs_eager",
                     "05_unet_segmentation", "U-Net (salt) inference: ONNX Runtime vs eager")
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent


def case_ort_vs_eager() -> dict[str, Any]:
    """The salt U-Net (width 8, depth 4; random weights: speed does not depend on them) on one
    [1, 3, 101, 101] image: eager PyTorch vs ONNX Runtime, same threads, after a parity check.

    Returns:
        ``{"eager_ms", "onnxruntime_ms", "speedup" (eager / ORT), "max_abs_diff", "main"}``.
    """
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    import torch
    from segmentation_models import LogitsOnly, build_model

    from detseg import settings
    from detseg.bench import time_it
    from detseg.export import check_parity, export_onnx, ort_run, ort_session

    torch.manual_seed(0)
    model = LogitsOnly(build_model("unet", num_classes=1, width=0.5)).eval()
    images = torch.randn(1, 3, 101, 101)
    repeats = 3 if settings.smoke_mode() else 50
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(
            model,
            images,
            Path(folder) / "unet.onnx",
            input_names=["images"],
            output_names=["logits"],
        )
        session = ort_session(path, threads=torch.get_num_threads())
        max_abs_diff = check_parity(model, session, images)
        with torch.no_grad():
            eager = time_it(lambda: model(images), warmup=3, repeats=repeats)
        onnx = time_it(lambda: ort_run(session, images), warmup=3, repeats=repeats)
    return {
        "eager_ms": eager["median_s"] * 1e3,
        "onnxruntime_ms": onnx["median_s"] * 1e3,
        "speedup": eager["median_s"] / onnx["median_s"],
        "max_abs_diff": max_abs_diff,
        "main": "speedup",
    }


def case_summary() -> dict[str, Any]:
    """The README's first bar, measured end to end: ``train.py --dataset salt`` (U-Net, defaults),
    then ``export.py`` on its best checkpoint (ONNX parity, eager vs ONNX Runtime per image).
    Smoke mode runs ``--dry-run`` instead: the numbers are then meaningless, only the plumbing is
    exercised.

    Returns:
        the :mod:`detseg.bench_summary` keys: ``parameters``, ``train_s`` (the engine's time for all
        epochs, evaluation included), ``quality`` (salt IoU of the best epoch), ``quality_metric``,
        ``quality_bar``, ``eager_ms``, ``onnxruntime_ms``, ``max_abs_diff``.
    """
    from detseg import settings
    from detseg.scripts import load_script

    train, export = (load_script(FOLDER, name) for name in ("train", "export"))
    smoke = settings.smoke_mode()
    with tempfile.TemporaryDirectory() as folder:
        argv = ["--dataset", "salt", "--output-dir", folder] + (["--dry-run"] if smoke else [])
        result = train.main(argv)
        run = Path(folder) / ("dry-run" if smoke else "")
        weights = run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt"
        exported = export.main(
            ["--weights", str(weights), "--output", str(Path(folder) / "unet.onnx")]
            + (["--dry-run"] if smoke else [])
        )
    metric = result["main_metric"]
    history = [entry["eval"] for entry in result["history"]]
    return {
        "parameters": result["parameters"],
        "train_s": history[-1]["minutes"] * 60,
        "quality": max(entry[metric] for entry in history),
        "quality_metric": f"salt {metric.replace('_salt', '').replace('iou', 'IoU')}",
        "quality_bar": 0.85,
        "eager_ms": exported["eager_ms"],
        "onnxruntime_ms": exported["onnxruntime_ms"],
        "max_abs_diff": exported["max_abs_diff"],
        "main": "quality",
    }
