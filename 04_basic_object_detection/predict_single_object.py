"""Run a trained single-object detector on images: one box and one class per image.

    python 04_basic_object_detection/predict_single_object.py IMAGE_OR_FOLDER [...]
    python 04_basic_object_detection/predict_single_object.py --weights runs/.../best.pt img.jpg

Writes ``<output-dir>/<image stem>.png`` with the box and ``class score`` drawn, and prints one line
per image: ``path: class score x1 y1 x2 y2`` (pixels of the original image).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from single_object_detector import BACKBONES, to_input

from detseg import settings
from detseg.cli.common import HelpFormatter, add_checkpoint_arg, existing_path
from detseg.data.formats._common import list_images
from detseg.data.imageio import read_image, write_image
from detseg.errors import UserError, run_cli
from detseg.scripts import load_script
from detseg.viz import draw_detections

EXAMPLE = "04_basic_object_detection"
FOLDER = Path(__file__).resolve().parent


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Predict one box and one class per image with a train_single_object.py model",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, help="image files or folders of images")
    add_checkpoint_arg(parser, example=EXAMPLE, run="single-object")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=settings.runs_root() / EXAMPLE / "single-object-predictions",
        help="where the drawn images go",
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one line")
    return parser


def image_paths(inputs: Sequence[Path]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted)."""
    paths: list[Path] = []
    for item in inputs:
        existing_path(item, "input")
        paths += list_images(item) if item.is_dir() else [item]
    if not paths:
        raise UserError("no images found", path=inputs[0], fix="give .jpg / .png files or folders")
    return paths


@torch.no_grad()
def predict(model: Any, config: dict[str, Any], image: np.ndarray) -> dict[str, Any]:
    """``{"box": [x1, y1, x2, y2] pixels, "label": int, "class": name, "score": float}``."""
    spec = BACKBONES[config["backbone"]]
    batch = to_input(image, spec["image_size"], spec["mean"], spec["std"])[None]
    box, logits = model(batch)
    probabilities = torch.softmax(logits[0], 0)
    label = int(probabilities.argmax())
    height, width = image.shape[:2]
    scale = np.array([width, height, width, height], dtype=np.float64)
    return {
        "box": (box[0].double().numpy() * scale).tolist(),
        "label": label,
        "class": config["classes"][label],
        "score": float(probabilities[label]),
    }


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Returns one prediction dict per image, with ``"path"`` and ``"output"`` (the drawn PNG)."""
    args = get_args_parser().parse_args(argv)
    existing_path(args.weights, "--weights", kind="file")
    paths = image_paths(args.inputs)
    model, config = load_script(FOLDER, "train_single_object").load_model(args.weights)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for path in paths:
        image = read_image(path)
        result = predict(model, config, image)
        drawn = draw_detections(
            image,
            np.array([result["box"]]),
            np.array([result["label"]]),
            np.array([result["score"]]),
            class_names=config["classes"],
        )
        output = write_image(args.output_dir / f"{path.stem}.png", drawn)
        box = " ".join(f"{v:.0f}" for v in result["box"])
        print(f"{path}: {result['class']} {result['score']:.2f} {box}")
        results.append({**result, "path": str(path), "output": str(output)})
    return results


if __name__ == "__main__":
    sys.exit(run_cli(main))
