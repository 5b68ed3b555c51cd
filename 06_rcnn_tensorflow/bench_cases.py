"""Benchmark cases of this folder (``detseg bench``; registered in :data:`detseg.bench.CASES`).

"06-selective-search": Case("06_rcnn_tensorflow/bench_cases.py:case_selective_search",
                            "06_rcnn_tensorflow", "selective search (fast): ours vs OpenCV contrib")
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent


def case_selective_search() -> dict[str, Any]:
    """Both selective searches in "fast" mode (8 strategies each) on built-in racoon validation
    images (4, or 1 in smoke mode), one OpenCV thread, CPU time per image.

    Returns:
        ``{"ours_s", "opencv_s" (CPU seconds per image), "ratio" (ours / OpenCV),
        "ours_proposals", "opencv_proposals", "main": "ratio"}``.
    """
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    from proposal_recall import racoon_set, run_proposals

    from detseg import settings

    images = [image for _, image, _ in racoon_set(1 if settings.smoke_mode() else 4)]
    mode = "single" if settings.smoke_mode() else "fast"
    ours, ours_s = run_proposals(images, "ours", mode)
    theirs, theirs_s = run_proposals(images, "opencv", mode)
    return {
        "ours_s": sum(ours_s) / len(images),
        "opencv_s": sum(theirs_s) / len(images),
        "ratio": sum(ours_s) / sum(theirs_s),
        "ours_proposals": sum(map(len, ours)) / len(images),
        "opencv_proposals": sum(map(len, theirs)) / len(images),
        "main": "ratio",
    }


def case_summary() -> dict[str, Any]:
    """The README's bar end to end: ``train_rcnn.py`` with its defaults on built-in ``racoon``
    (dataset building included, into a fresh folder; bar mAP@0.5 >= 0.60 before box regression).
    Smoke mode runs ``--dry-run``: the numbers then mean nothing.

    The folder has no ONNX export, so there is no ONNX Runtime number (the key is left out rather
    than filled in). ``eager_ms`` is what the script measures per validation image: selective search,
    the Keras classifier on the proposals and NMS; ``classifier_ms`` one Keras call on one crop.

    Returns:
        ``parameters`` (the classifier's), ``train_s`` (dataset building + training + the box head,
        the script's ``total_seconds``), ``quality`` (mAP@0.5 without box regression),
        ``quality_metric``, ``quality_bar``, ``eager_ms``, ``classifier_ms``, ``map50_after``.
    """
    import tempfile
    import time

    import numpy as np

    from detseg import settings
    from detseg.scripts import load_script

    smoke = settings.smoke_mode()
    train = load_script(FOLDER, "train_rcnn")
    with tempfile.TemporaryDirectory() as folder:
        argv = ["--output-dir", folder, "--dataset-dir", str(Path(folder) / "dataset")]
        result = train.main(argv + (["--dry-run"] if smoke else []))
        run = Path(result["output_dir"])
        if str(FOLDER) not in sys.path:
            sys.path.insert(0, str(FOLDER))
        from rcnn_models import load_model

        classifier = load_model(
            run / "best.keras" if (run / "best.keras").is_file() else run / "last.keras"
        )
        crop = np.zeros((1, *classifier.input_shape[1:]), dtype=np.float32)
        classifier(crop, training=False)  # warm-up
        times = []
        for _ in range(3 if smoke else 20):
            start = time.perf_counter()
            classifier(crop, training=False)
            times.append(time.perf_counter() - start)
    return {
        "parameters": int(classifier.count_params()),
        "train_s": float(result["total_seconds"]),
        "quality": float(result["map50_before"]),
        "quality_metric": "racoon bbox mAP@0.5 (R-CNN, no box regression)",
        "quality_bar": 0.60,
        "map50_after": float(result["map50_after"]),
        "eager_ms": 1000.0 * float(result["detect_seconds_per_image"]),
        "classifier_ms": 1000.0 * float(np.median(times)),
        "main": "quality",
    }
