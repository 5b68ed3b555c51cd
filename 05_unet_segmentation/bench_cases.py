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
