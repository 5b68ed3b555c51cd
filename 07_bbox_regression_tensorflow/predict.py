"""Draw the boxes a trained model predicts, next to the true ones with their IoU.

    python 07_bbox_regression_tensorflow/predict.py                       # 07a run, its test images
    python 07_bbox_regression_tensorflow/predict.py --weights runs/07_bbox_regression_tensorflow/multiclass-small/best.keras
    python 07_bbox_regression_tensorflow/predict.py --images photo.jpg more/   # your own images

Without ``--images`` the model's own held-out test images are shown (the split recorded in the
checkpoint's ``.json``): the true box in green, the predicted one in red, the IoU (and, for 07b, the
predicted class and its probability) above each picture. With ``--images`` there is no ground truth:
only the predicted box is drawn. The grid goes to ``--output`` (default ``predictions.png`` beside
the checkpoint).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bbox_data
import bbox_training
import numpy as np

from detseg import settings
from detseg.cli.common import HelpFormatter, positive_int
from detseg.data.formats._common import image_size, list_images
from detseg.data.samples import detection_sample
from detseg.data.types import DetectionDataset, DetectionRecord
from detseg.errors import UserError, run_cli
from detseg.viz import save_grid

EXAMPLE = bbox_training.EXAMPLE


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Draw predicted vs true boxes of a trained 07 model, with their IoU",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=settings.runs_root() / EXAMPLE / "bbox-small" / "best.keras",
        help="a .keras checkpoint written by train_bbox.py / train_multiclass.py",
    )
    parser.add_argument(
        "--images", type=Path, nargs="+", default=None, help="image files or folders (default: "
        "the checkpoint's test images)",
    )  # fmt: skip
    parser.add_argument("--num-images", type=int, default=12, help="pictures in the grid")
    parser.add_argument("--output", type=Path, default=None, help="PNG grid to write")
    parser.add_argument(
        "--debug", action="store_true", help="tracebacks instead of one-line errors"
    )
    return parser


def images_dataset(paths: Sequence[Path]) -> DetectionDataset:
    """User images as a dataset without boxes (so they go through the training pipeline).

    Raises:
        UserError: a path that does not exist, a folder without images, an unreadable image.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise UserError("no images in this folder", path=path, fix="pass image files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError("--images: no such file or folder", path=path, fix="check the path")
    records = []
    for index, file in enumerate(files):
        height, width = image_size(file.resolve())
        records.append(
            DetectionRecord(index, str(file.resolve()), height, width, np.zeros((0, 4)), [])
        )
    return DetectionDataset(root=Path("."), classes=[], records=records, format="images")


def test_split(state: dict[str, Any]) -> DetectionDataset:
    """The held-out split of the run that wrote the checkpoint (same data, seed and fractions)."""
    config = state["config"]
    dataset = bbox_data.load_source(config.get("data_path"), num_images=config.get("num_images"))
    splits = bbox_data.split_dataset(
        dataset,
        val_fraction=config["val_fraction"],
        test_fraction=config["test_fraction"],
        seed=config["seed"],
    )
    return bbox_data.select_classes(splits["test"], config["classes"])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Predict and draw; returns ``{"output", "images", "mean_iou" (None without ground truth),
    "ious", "boxes"}``."""
    args = get_args_parser().parse_args(argv)
    positive_int(args.num_images, "--num-images")
    model, state = bbox_training.load_trained(args.weights)
    config = state["config"]
    classes = config["classes"]
    dataset = images_dataset(args.images) if args.images else test_split(state)
    if args.images is None and len(dataset.records) > args.num_images:  # spread over the classes
        picked = np.unique(np.linspace(0, len(dataset.records) - 1, args.num_images).astype(int))
        dataset.records = [dataset.records[i] for i in picked]
    dataset.records = dataset.records[: args.num_images]
    predictions = bbox_training.predict_split(model, dataset, image_size=config["image_size"])
    truth = bbox_data.true_boxes(dataset) if args.images is None else None
    ious = None if truth is None else bbox_training.paired_iou(predictions["boxes"], truth)
    pictures, titles = [], []
    for index, record in enumerate(dataset.records):
        image, _ = detection_sample(dataset, index)
        pictures.append(
            bbox_training.draw_boxes(
                image, predictions["boxes"][index], None if truth is None else truth[index]
            )
        )
        parts = [] if ious is None else [f"IoU {ious[index]:.2f}"]
        if "scores" in predictions:
            label = int(predictions["scores"][index].argmax())
            parts.append(f"{classes[label]} {predictions['scores'][index, label]:.2f}")
        titles.append(" ".join(parts) or Path(record.file_name).name)
    output = args.output or Path(args.weights).with_name("predictions.png")
    save_grid(pictures, output, titles=titles, ncols=4)
    mean_iou = None if ious is None else float(ious.mean())
    print(
        f"{output}: {len(pictures)} images"
        + ("" if mean_iou is None else f", mean IoU {mean_iou:.3f} (true green, predicted red)")
    )
    return {
        "output": str(output),
        "images": len(pictures),
        "mean_iou": mean_iou,
        "ious": None if ious is None else ious.tolist(),
        "boxes": predictions["boxes"].tolist(),
    }


if __name__ == "__main__":
    sys.exit(run_cli(main))
