"""Benchmark cases of this folder (``detseg bench``; registered in :data:`detseg.bench.CASES`).

"02-yolov3-tiny-onnx": Case("02_yolo_v3_darknet/bench_cases.py:case_ort_vs_eager",
                            "02_yolo_v3_darknet", "YOLOv3-tiny 416: ONNX Runtime / OpenCV DNN vs eager")
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent


def case_ort_vs_eager() -> dict[str, Any]:
    """YOLOv3-tiny (80 classes, random weights: speed does not depend on them) on one [1, 3, 416,
    416] image (64 in smoke mode): eager PyTorch vs ONNX Runtime vs OpenCV DNN reading the darknet
    files, same threads, after a parity check on two other inputs.

    Returns:
        ``{"eager_ms", "onnxruntime_ms", "opencv_ms", "speedup" (eager / ORT), "max_abs_diff",
        "opencv_max_abs_diff", "main"}``.
    """
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    import cv2
    import torch
    from darknet import build_model, randomize
    from darknet_cfg import OFFICIAL_CFGS
    from yolo_export import export_and_check

    from detseg import settings

    smoke = settings.smoke_mode()
    size = 64 if smoke else 416
    cv2.setNumThreads(torch.get_num_threads())
    model = randomize(build_model("yolov3-tiny", size=size), seed=0).eval()
    generator = torch.Generator().manual_seed(1)
    check = [torch.rand(1, 3, size, size, generator=generator) for _ in range(2)]
    with tempfile.TemporaryDirectory() as folder:
        result = export_and_check(
            model, Path(folder) / "yolov3-tiny.onnx", check,
            cfg_text=OFFICIAL_CFGS["yolov3-tiny"].read_text(), repeats=3 if smoke else 30,
        )  # fmt: skip
    return {
        "eager_ms": result["eager_ms"],
        "onnxruntime_ms": result["onnxruntime_ms"],
        "opencv_ms": result["opencv_ms"],
        "speedup": result["speedup"],
        "max_abs_diff": result["max_abs_diff"],
        "opencv_max_abs_diff": result["opencv_max_abs_diff"],
        "main": "speedup",
    }
