"""Benchmark cases of this folder (``detseg bench``; registered in :data:`detseg.bench.CASES`).

"07-keras-onnx": Case("07_bbox_regression_tensorflow/bench_cases.py:case_ort_vs_keras", ...)
"07-summary":    Case("07_bbox_regression_tensorflow/bench_cases.py:case_summary", ...)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent


def case_ort_vs_keras() -> dict[str, Any]:
    """The 07b model (small backbone + both heads; random weights: speed does not depend on them) on
    one [1, 128, 128, 3] image: a Keras call vs ONNX Runtime on Keras' own ONNX export, after a
    parity check.

    Returns:
        ``{"keras_ms", "onnxruntime_ms", "speedup" (Keras / ORT), "max_abs_diff", "main"}``.
    """
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    import bbox_models
    import numpy as np
    from bbox_models import keras

    from detseg import settings
    from detseg.bench import time_it
    from detseg.export import ort_session

    keras.utils.set_random_seed(0)
    model = bbox_models.build_for("small", bbox_models.build_small_backbone(128), num_classes=3)
    images = np.random.default_rng(0).random((1, 128, 128, 3), np.float32)
    reference = model(images, training=False)
    repeats = 3 if settings.smoke_mode() else 50
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "regressor.onnx"
        model.export(str(path), format="onnx", verbose=False)
        session = ort_session(path)
        name = session.get_inputs()[0].name
        outputs = dict(
            zip([o.name for o in session.get_outputs()], session.run(None, {name: images}))
        )
        max_abs_diff = max(
            float(np.abs(np.asarray(reference[key]) - outputs[key]).max())
            for key in ("bbox", "class")
        )
        keras_time = time_it(lambda: model(images, training=False), warmup=3, repeats=repeats)
        onnx_time = time_it(lambda: session.run(None, {name: images}), warmup=3, repeats=repeats)
    return {
        "keras_ms": keras_time["median_s"] * 1e3,
        "onnxruntime_ms": onnx_time["median_s"] * 1e3,
        "speedup": keras_time["median_s"] / onnx_time["median_s"],
        "max_abs_diff": max_abs_diff,
        "main": "speedup",
    }


def case_summary() -> dict[str, Any]:
    """The 07b bar end to end: ``train_multiclass.py --backbone small`` (defaults), then ``export.py``
    on its best checkpoint. Smoke mode runs ``--dry-run``: the numbers then mean nothing.

    Returns:
        the :mod:`detseg.bench_summary` keys: ``parameters`` (trainable), ``train_s`` (the features
        and heads; ``heads_train_s`` the same), ``pretrain_s`` (the small backbone's pretraining,
        apart, as measured when it ran; ``pretrain_cached``), ``quality`` (test mean IoU),
        ``quality_metric``, ``quality_bar``, ``eager_ms`` (the Keras call), ``onnxruntime_ms``,
        ``max_abs_diff``.
    """
    from detseg import settings
    from detseg.scripts import load_script

    smoke = settings.smoke_mode()
    train, export = (load_script(FOLDER, name) for name in ("train_multiclass", "export"))
    with tempfile.TemporaryDirectory() as folder:
        argv = ["--backbone", "small", "--output-dir", folder] + (["--dry-run"] if smoke else [])
        result = train.main(argv)
        run = Path(folder) / ("dry-run" if smoke else "")
        exported = export.main(
            ["--weights", str(run / "best.keras"), "--output-dir", str(Path(folder) / "export")]
            + (["--dry-run"] if smoke else [])
        )
    pretrain = result["pretrain"]
    onnx = exported["onnx"]
    return {
        "parameters": result["trainable_parameters"],
        # the backbone's pretraining (once, on other images; read from its cache file when it
        # was done before) + the features and the heads of this run
        "train_s": result["train_seconds"],  # the pretraining stands apart (pretrain_s)
        "pretrain_s": pretrain["seconds"],
        "pretrain_cached": bool(pretrain.get("cached")),
        "heads_train_s": result["train_seconds"],
        "quality": result["test"]["mean_iou"],
        "quality_metric": "test mean box IoU (07b)",
        "quality_bar": 0.80,
        "class_accuracy": result["test"]["class_accuracy"],
        "eager_ms": exported["keras_ms"],
        "onnxruntime_ms": exported["onnxruntime_ms"],
        "max_abs_diff": max(onnx["max_abs_diff_bbox"], onnx["max_abs_diff_class"]),
        "main": "quality",
    }
