"""Export a trained model three ways, reload each and check it predicts what Keras predicts.

    python 07_bbox_regression_tensorflow/export.py          # the 07a run (bbox-small/best.keras)
    python 07_bbox_regression_tensorflow/export.py --weights runs/07_bbox_regression_tensorflow/multiclass-small/best.keras

Writes into ``--output-dir`` (default ``export/`` beside the checkpoint):

- ``model.keras``: the Keras format (architecture, weights, custom layers by name), reloaded with
  ``keras.models.load_model``;
- ``saved_model/``: a TensorFlow SavedModel (``model.export(..., format="tf_saved_model")``), reloaded with
  ``tf.saved_model.load`` and called through its ``serve`` signature: what TF Serving / TFLite take;
- ``model.onnx``: Keras' own ONNX export (``model.export(..., format="onnx")``, which uses tf2onnx),
  run in ONNX Runtime.

Each is compared with the in-memory Keras model on random batches and on real test images (largest
absolute difference per output, and the same predicted class), then the Keras call, the SavedModel
and ONNX Runtime are timed on one image (``speed_ratio`` = Keras ms / ONNX Runtime ms).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bbox_data
import bbox_training
import numpy as np
from bbox_models import keras, tf

from detseg import settings
from detseg.cli.common import HelpFormatter, positive_int
from detseg.engine.checkpoint import atomic_write_text
from detseg.errors import UserError, run_cli
from detseg.export import ort_session, time_inference

EXAMPLE = bbox_training.EXAMPLE


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export a 07 model to .keras, SavedModel and ONNX; check and time each",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=settings.runs_root() / EXAMPLE / "bbox-small" / "best.keras",
        help="a .keras checkpoint written by train_bbox.py / train_multiclass.py",
    )
    parser.add_argument("--output-dir", type=Path, default=None, help="default: export/ beside it")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed difference")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls of each runtime")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")
    parser.add_argument("--dry-run", action="store_true", help="time 2 calls only")
    parser.add_argument(
        "--debug", action="store_true", help="tracebacks instead of one-line errors"
    )
    return parser


def as_dict(outputs: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Model outputs (a dict, or a list in ``names`` order) as ``{name: float32 array}``."""
    if isinstance(outputs, dict):
        return {name: np.asarray(outputs[name], np.float32) for name in names}
    return {name: np.asarray(value, np.float32) for name, value in zip(names, outputs)}


def compare(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, Any]:
    """Largest |difference| per output, and whether the predicted classes agree."""
    result: dict[str, Any] = {
        f"max_abs_diff_{name}": float(np.abs(reference[name] - other[name]).max())
        for name in reference
    }
    if "class" in reference:
        result["same_class"] = bool(
            (reference["class"].argmax(axis=1) == other["class"].argmax(axis=1)).all()
        )
    return result


def check_inputs(config: dict[str, Any], *, count: int = 4) -> list[np.ndarray]:
    """Batches to compare on: two random ones (batch 1 and 3) and ``count`` real test images."""
    size = int(config["image_size"])
    rng = np.random.default_rng(0)
    batches = [
        rng.random((1, size, size, 3), np.float32),
        rng.random((3, size, size, 3), np.float32),
    ]
    try:
        dataset = bbox_data.load_source(
            config.get("data_path"), num_images=config.get("num_images")
        )
        splits = bbox_data.split_dataset(
            dataset, val_fraction=config["val_fraction"], test_fraction=config["test_fraction"],
            seed=config["seed"],
        )  # fmt: skip
        test = bbox_data.select_classes(splits["test"], config["classes"])
        test.records = test.records[:count]
        pipeline = bbox_data.box_dataset(test, image_size=size, batch_size=count, with_class=False)
        batches.append(next(iter(pipeline))[0].numpy())
    except UserError as err:  # the training data moved: random batches only
        print(f"note: test images not available ({err.what}); random batches only")
    return batches


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Export, reload, compare, time. Returns ``{"keras", "saved_model", "onnx"}`` (each: its path
    and the comparison) and ``keras_ms``, ``saved_model_ms``, ``onnxruntime_ms``, ``speed_ratio``."""
    args = get_args_parser().parse_args(argv)
    positive_int(args.repeats, "--repeats")
    if not args.tolerance > 0:
        raise UserError(f"--tolerance must be > 0, got {args.tolerance}", fix="e.g. 1e-4")
    model, state = bbox_training.load_trained(args.weights)
    config = state["config"]
    names = ["bbox", "class"] if config["with_class"] else ["bbox"]
    out = args.output_dir or Path(args.weights).with_name("export")
    out.mkdir(parents=True, exist_ok=True)
    batches = check_inputs(config)
    reference = [as_dict(model(batch, training=False), names) for batch in batches]
    result: dict[str, Any] = {"inputs": [list(batch.shape) for batch in batches]}

    def worst(comparisons: list[dict[str, Any]]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for item in comparisons:
            for key, value in item.items():
                merged[key] = (
                    (merged.get(key, True) and value)
                    if key == "same_class"
                    else max(merged.get(key, 0.0), value)
                )
        return merged

    keras_path = out / "model.keras"
    bbox_training.save_keras_atomic(model, keras_path)
    reloaded = keras.models.load_model(keras_path)
    result["keras"] = {"path": str(keras_path), **worst(
        [compare(ref, as_dict(reloaded(b, training=False), names)) for ref, b in zip(reference, batches)]
    )}  # fmt: skip

    saved_path = out / "saved_model"
    shutil.rmtree(saved_path, ignore_errors=True)
    model.export(str(saved_path), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(saved_path))  # keep it: .serve alone loses its variables
    served = loaded.serve
    result["saved_model"] = {"path": str(saved_path), **worst(
        [compare(ref, as_dict(served(tf.constant(b)), names)) for ref, b in zip(reference, batches)]
    )}  # fmt: skip

    session = None
    if args.no_onnx:
        result["onnx"] = None
    elif importlib.util.find_spec("tf2onnx") is None:
        raise UserError(
            "ONNX export needs tf2onnx, which is not installed",
            fix="pip install tf2onnx==1.17.0 (see this folder's requirements.txt), or pass --no-onnx",
        )
    else:
        onnx_path = out / "model.onnx"
        model.export(str(onnx_path), format="onnx", verbose=False)
        session = ort_session(onnx_path)
        input_name = session.get_inputs()[0].name
        output_names = [node.name for node in session.get_outputs()]

        def run_onnx(batch: np.ndarray) -> dict[str, np.ndarray]:
            return dict(zip(output_names, session.run(None, {input_name: batch})))

        result["onnx"] = {"path": str(onnx_path), **worst(
            [compare(ref, as_dict(run_onnx(b), names)) for ref, b in zip(reference, batches)]
        )}  # fmt: skip

    repeats = 2 if args.dry_run else args.repeats
    image = batches[0]
    result["keras_ms"] = time_inference(lambda x: model(x, training=False), image, 2, repeats)[
        "median_ms"
    ]
    result["saved_model_ms"] = time_inference(served, tf.constant(image), 2, repeats)["median_ms"]
    if session is not None:
        result["onnxruntime_ms"] = time_inference(run_onnx, image, 2, repeats)["median_ms"]
        result["speed_ratio"] = result["keras_ms"] / result["onnxruntime_ms"]
    atomic_write_text(out / "export.json", json.dumps(result, indent=1) + "\n")
    for kind in ("keras", "saved_model", "onnx"):
        if result[kind] is None:
            continue
        diffs = {k: v for k, v in result[kind].items() if k.startswith("max_abs_diff")}
        print(
            f"{kind:<12} {result[kind]['path']}  "
            + "  ".join(f"{k[13:]} {v:.2e}" for k, v in diffs.items())
        )
        bad = {k: v for k, v in diffs.items() if v > args.tolerance}
        if bad or result[kind].get("same_class") is False:
            raise UserError(
                f"the {kind} export differs from Keras ({bad or 'another class predicted'})",
                path=result[kind]["path"],
                fix="report it with the model; the files are kept for inspection",
            )
    timing = f"keras {result['keras_ms']:.2f} ms, SavedModel {result['saved_model_ms']:.2f} ms"
    if session is not None:
        timing += f", ONNX Runtime {result['onnxruntime_ms']:.2f} ms (x{result['speed_ratio']:.2f})"
    print(f"one image: {timing}")
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
