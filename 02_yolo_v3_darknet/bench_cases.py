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


def case_summary() -> dict[str, Any]:
    """The README's training bar end to end: ``train.py`` with its defaults (YOLOv3-tiny on built-in
    ``shapes`` from the pretrained ``yolov3-tiny.conv.15``, bar mAP@0.5 >= 0.80), then what ``export.py`` runs on its best checkpoint
    (:func:`yolo_export.export_and_check`: ONNX parity and eager vs ONNX Runtime per image) on the
    first 3 validation images of the same data. Smoke mode runs ``train.py --dry-run``: the numbers
    then mean nothing, only the plumbing is exercised.

    Returns:
        the :mod:`detseg.bench_summary` keys: ``parameters``, ``train_s``, ``quality`` (mAP@0.5 of
        the best epoch), ``quality_metric``, ``quality_bar``, ``eager_ms``, ``onnxruntime_ms``,
        plus ``max_abs_diff``, ``opencv_ms`` and ``pretrain_s`` (the partial file's pretraining,
        not in ``train_s``).
    """
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    import torch
    from yolo_export import export_and_check
    from yolo_inference import load_trained
    from yolo_training import load_splits

    from detseg import settings
    from detseg.data.yolo_dataset import YoloDataset
    from detseg.scripts import load_script

    smoke = settings.smoke_mode()
    train = load_script(FOLDER, "train")
    with tempfile.TemporaryDirectory() as folder:
        tiny = ["--dry-run", "--image-size", "64", "--num-images", "8"] if smoke else []
        result = train.main(["--output-dir", folder, *tiny])
        run = Path(result["output_dir"])
        weights = run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt"
        model, config = load_trained(weights, torch.device("cpu"))
        size = model.spec.height
        val = YoloDataset(load_splits(None, num_images=8 if smoke else None).val, size)
        images = [val[i][0][None] for i in range(min(3, len(val)))]
        exported = export_and_check(
            model, Path(folder) / "model.onnx", images, cfg_text=config["cfg_text"],
            repeats=3 if smoke else 20,
        )  # fmt: skip
    history = [entry["eval"] for entry in result["history"] if entry.get("eval")]
    return {
        "parameters": int(result["parameters"]),
        "train_s": float(result["train_time_s"]),
        "quality": max(entry["mAP50"] for entry in history),
        "quality_metric": "shapes bbox mAP@0.5 (YOLOv3-tiny)",
        "quality_bar": 0.80,
        "eager_ms": exported["eager_ms"],
        "onnxruntime_ms": exported["onnxruntime_ms"],
        "opencv_ms": exported["opencv_ms"],
        "max_abs_diff": exported["max_abs_diff"],
        # the first 15 layers' pretraining (cached yolov3-tiny.conv.15): the stand-in for
        # downloaded ImageNet weights, not part of train_s
        "pretrain_s": float(result.get("pretrain_s", 0.0)),
        "main": "quality",
    }
