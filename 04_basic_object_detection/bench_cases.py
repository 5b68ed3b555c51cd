"""Benchmark cases of this folder (``detseg bench``; registered in :data:`detseg.bench.CASES`).

"04-realtime-fps": Case("04_basic_object_detection/bench_cases.py:case_realtime_fps",
                        "04_basic_object_detection", "frames per second on 320 px frames: ...")
"04-single-object-cache": Case("04_basic_object_detection/bench_cases.py:case_feature_cache", ...)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent


def case_realtime_fps() -> dict[str, Any]:
    """Frames per second on 320 x 320 built-in scenes: SSDlite320 (width 0.5; random weights with
    BatchNorm statistics set on the frames, speed does not depend on the weights) as a whole torchvision model in eager PyTorch, and its exported body on
    ONNX Runtime and OpenCV DNN (each + the shared numpy decoding), the seed's Caffe MobileNet-SSD
    on OpenCV DNN (300 px, random weights), then OpenCV's HOG people detector and Haar face
    cascade; every runtime on ``torch.get_num_threads()`` threads.

    Returns:
        ``{"eager_fps", "onnxruntime_fps", "opencv_dnn_fps", "caffe_mobilenet_ssd_fps", "hog_fps",
        "haar_fps", "main"}``.
    """
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    import cv2
    import numpy as np
    import torch
    from caffe_mobilenet_ssd import caffe_predictor, random_caffemodel
    from detection_zoo import build_ssdlite320, calibrate_batchnorm
    from detector_body import DecodeConfig, SSDBody
    from detector_runtime import body_predictor, classic_predictor, time_predictors, torch_predictor

    from detseg import settings
    from detseg.data import recipes
    from detseg.data.imageio import read_image
    from detseg.export import export_onnx

    torch.manual_seed(0)
    cv2.setNumThreads(torch.get_num_threads())  # the same threads for every runtime
    model = build_ssdlite320(6, width_mult=0.5).eval()
    scenes = recipes.load("shapes", split="val", num_images=16 if settings.smoke_mode() else 100)
    count = 3 if settings.smoke_mode() else 20
    frames = [cv2.resize(read_image(scenes.image_path(r)), (320, 320))
              for r in scenes.records[:count]]  # fmt: skip
    classes = ["__background__", *scenes.classes]
    batch = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames])
    calibrate_batchnorm(model, batch)  # random weights, but activations of a realistic size
    with tempfile.TemporaryDirectory() as folder:
        body = SSDBody(model).eval()
        path = export_onnx(body.exportable(), torch.rand(1, 3, 320, 320),
                           Path(folder) / "body.onnx", input_names=["images"],
                           output_names=["regressions", "logits"])  # fmt: skip
        config = DecodeConfig.from_ssd(model)
        caffemodel = random_caffemodel(Path(folder) / "mobilenet_ssd.caffemodel")
        predictors = [
            torch_predictor(model, classes, name="eager"),
            body_predictor("onnxruntime", config, classes, onnx_path=path),
            body_predictor("opencv", config, classes, onnx_path=path),
            caffe_predictor(caffemodel),
            classic_predictor("hog_people"),
            classic_predictor("haar_face"),
        ]
        table = time_predictors(predictors, [np.ascontiguousarray(f) for f in frames])
    names = ("eager", "ssd body, onnxruntime", "ssd body, opencv", "mobilenet-ssd caffe, opencv",
             "hog_people", "haar_face")  # fmt: skip
    keys = ("eager_fps", "onnxruntime_fps", "opencv_dnn_fps", "caffe_mobilenet_ssd_fps",
            "hog_fps", "haar_fps")  # fmt: skip
    return {
        **{key: table[name]["fps"] for key, name in zip(keys, names)},
        "main": "onnxruntime_fps",
    }


def case_feature_cache() -> dict[str, Any]:
    """The single-object bars of the README, with ``train_single_object.py``'s defaults:

    1. the default run from scratch (small backbone pretrained here, in a fresh runs folder): mean
       box IoU and class accuracy on the 120 held-out images of the 600 built-in ones;
    2. seconds per epoch of the heads on the cached backbone features against the seed's loop
       (backbone on every image every epoch), 2 epochs each, same seed, same numbers: with the small
       backbone of run 1 on the same 600 images, and with the seed's own backbone (ResNet-50 at
       224 px; random weights, offline: speed does not depend on them) on 120 images and their
       mirror images (no crop copies: a shorter run).

    Returns:
        ``{"mean_iou", "class_accuracy", "train_s" (run 1, pretraining included), "pretrain_s",
        "<backbone>_cached_s_per_epoch", "<backbone>_seed_loop_s_per_epoch", "speedup_<backbone>",
        "same_numbers_<backbone>"}`` for ``small`` and ``resnet50``; main ``speedup_resnet50``.
    """
    import os
    import time

    from detseg import settings
    from detseg.scripts import load_script

    train = load_script(FOLDER, "train_single_object")
    smoke = settings.smoke_mode()
    runs = os.environ.get("DETSEG_RUNS")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        os.environ["DETSEG_RUNS"] = f"{folder}/runs"  # pretrain the backbone here, timed
        try:
            common = ["--num-images", "12" if smoke else "600", "--seed", "0"]
            start = time.perf_counter()
            full = train.main([*common, "--output-dir", f"{folder}/full"])
            results["train_s"] = time.perf_counter() - start
            results["mean_iou"] = full["mean_iou"]
            results["class_accuracy"] = full["class_accuracy"]
            results["pretrain_s"] = full["backbone_pretrain"].get("seconds")
            seed_backbone = ["--backbone", "resnet50", "--pretrained", "none", "--crop-copies",
                             "0", "--num-images", "12" if smoke else "120", "--seed", "0"]  # fmt: skip
            for name, flags in (("small", common), ("resnet50", seed_backbone)):
                short = [*flags, "--epochs", "2"]
                cached = train.main([*short, "--output-dir", f"{folder}/{name}-a"])
                seed_loop = train.main(
                    [*short, "--no-cached-features", "--output-dir", f"{folder}/{name}-b"]
                )
                results[f"{name}_cached_s_per_epoch"] = cached["seconds_per_epoch"]
                results[f"{name}_seed_loop_s_per_epoch"] = seed_loop["seconds_per_epoch"]
                results[f"speedup_{name}"] = (
                    seed_loop["seconds_per_epoch"] / cached["seconds_per_epoch"]
                )
                results[f"same_numbers_{name}"] = (
                    abs(cached["mean_iou"] - seed_loop["mean_iou"]) < 1e-4
                    and cached["class_accuracy"] == seed_loop["class_accuracy"]
                )
        finally:
            if runs is None:
                os.environ.pop("DETSEG_RUNS", None)
            else:
                os.environ["DETSEG_RUNS"] = runs
    return {**results, "main": "speedup_resnet50"}


def case_summary() -> dict[str, Any]:
    """The README's SSDlite bar end to end: ``train_detector.py`` with its defaults (SSDlite320 on
    built-in ``shapes``; bar bbox mAP@0.5 >= 0.80; its trunk pretrained in a fresh runs folder,
    timed apart, outside the 10 minutes), then ``export_detector.py`` on its best
    checkpoint (the network body on ONNX Runtime and OpenCV DNN, detections matched to PyTorch's,
    milliseconds per 320 x 320 frame with the same decoding). Smoke mode runs ``--dry-run`` on 8
    images and exports on 2: the numbers then mean nothing.

    Returns:
        the :mod:`detseg.bench_summary` keys: ``parameters``, ``train_s`` (the script's training
        time, evaluation included), ``pretrain_s`` (the trunk's pretraining, apart), ``quality`` (bbox AP50 of the best epoch), ``quality_metric``,
        ``quality_bar``, ``eager_ms`` / ``onnxruntime_ms`` / ``opencv_ms`` (body + decoding per
        frame), ``max_abs_diff`` (ORT vs eager, raw outputs).
    """
    import os

    from detseg import settings
    from detseg.scripts import load_script

    smoke = settings.smoke_mode()
    train, export = (load_script(FOLDER, name) for name in ("train_detector", "export_detector"))
    runs = os.environ.get("DETSEG_RUNS")
    with tempfile.TemporaryDirectory() as folder:
        os.environ["DETSEG_RUNS"] = f"{folder}/runs"  # the trunk is pretrained in the run, timed
        try:
            tiny = ["--dry-run", "--num-images", "8"] if smoke else []
            result = train.main(["--output-dir", folder, *tiny])
            run = Path(result["output_dir"])
            weights = run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt"
            exported = export.main(
                ["--weights", str(weights), "--output-dir", str(Path(folder) / "export")]
                + (["--images", "2"] if smoke else [])
            )
        finally:
            if runs is None:
                os.environ.pop("DETSEG_RUNS", None)
            else:
                os.environ["DETSEG_RUNS"] = runs
    ms = exported["ms_per_frame"]
    return {
        "parameters": int(result["num_parameters"]),
        "train_s": float(result["train_time_s"]),  # the pretraining stands apart (pretrain_s)
        "pretrain_s": float(result["pretrain_s"]),
        "quality": max(entry["eval"]["bbox_AP50"] for entry in result["history"]),
        "quality_metric": "shapes bbox mAP@0.5 (SSDlite320)",
        "quality_bar": 0.80,
        "eager_ms": ms["ssd body, torch"],
        "onnxruntime_ms": ms["ssd body, onnxruntime"],
        "opencv_ms": ms["ssd body, opencv"],
        "max_abs_diff": exported["max_abs_diff_onnxruntime"],
        "main": "quality",
    }
