"""Benchmark cases of this folder (``detseg bench``; registered in :data:`detseg.bench.CASES`).

"03-yolov7-tiny-onnx": Case("03_yolo_v7_tutorial/bench_cases.py:case_ort_vs_eager",
                            "03_yolo_v7_tutorial", "YOLOv7-tiny 320 px (fused): ONNX Runtime vs eager")
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent


def case_ort_vs_eager() -> dict[str, Any]:
    """Fused YOLOv7-tiny (3 classes, random weights: speed does not depend on them) on one
    [1, 3, 320, 320] image (64 in smoke mode), decoded predictions before NMS: eager PyTorch vs ONNX
    Runtime with the same threads, after a parity check on two inputs other than the traced one.

    Returns:
        ``{"eager_ms", "onnxruntime_ms", "onnxruntime_fps", "speedup" (eager / ORT),
        "max_abs_diff", "main"}``.
    """
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    import torch
    from yolov7 import build_model

    from detseg import settings
    from detseg.bench import time_it
    from detseg.export import check_parity, export_onnx, ort_run, ort_session

    smoke = settings.smoke_mode()
    size = 64 if smoke else 320
    torch.manual_seed(0)
    model = build_model("tiny", 3).fuse().eval()
    generator = torch.Generator().manual_seed(1)
    traced, *checks = (torch.rand(1, 3, size, size, generator=generator) for _ in range(3))
    repeats = 3 if smoke else 50
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(model, traced, Path(folder) / "yolov7-tiny.onnx", input_names=["images"],
                           output_names=["predictions"])  # fmt: skip
        session = ort_session(path, threads=torch.get_num_threads())
        max_abs_diff = max(check_parity(model, session, x) for x in checks)
        with torch.no_grad():
            eager = time_it(lambda: model(checks[0]), warmup=3, repeats=repeats)
        onnx = time_it(lambda: ort_run(session, checks[0]), warmup=3, repeats=repeats)
    return {
        "eager_ms": eager["median_s"] * 1e3,
        "onnxruntime_ms": onnx["median_s"] * 1e3,
        "onnxruntime_fps": 1.0 / onnx["median_s"],
        "speedup": eager["median_s"] / onnx["median_s"],
        "max_abs_diff": max_abs_diff,
        "main": "onnxruntime_fps",
    }
