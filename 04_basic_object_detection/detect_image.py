"""Detect objects on images of any size with a pretrained, trained or classic detector.

    python 04_basic_object_detection/detect_image.py photo.jpg                  # SSDlite COCO
    python 04_basic_object_detection/detect_image.py DIR --model fasterrcnn_resnet50_fpn_v2
    python 04_basic_object_detection/detect_image.py DIR --weights runs/04_basic_object_detection/ssdlite320/best.pt
    python 04_basic_object_detection/detect_image.py DIR --weights best.pt --runtime opencv
    python 04_basic_object_detection/detect_image.py face.png --classic haar_face

Writes ``<output-dir>/<stem>.png`` with the detections drawn and prints ``path: N detections (ms)``.
Offline, a COCO ``--model`` stops with one line naming the URL, where to put the file, and the
alternative (``--weights`` of a detector trained here).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detector_cli import add_predictor_args, predictor_from_args, validate_predictor_args

from detseg import settings
from detseg.cli.common import HelpFormatter, existing_path
from detseg.data.formats._common import list_images
from detseg.data.imageio import read_image, write_image
from detseg.errors import UserError, run_cli
from detseg.viz import draw_detections

EXAMPLE = "04_basic_object_detection"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Detect objects on images (COCO-pretrained, trained here, or OpenCV classic)",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    add_predictor_args(parser)
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=settings.runs_root() / EXAMPLE / "detect-image",
        help="where the drawn images go",
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one line")
    return parser


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Returns per image ``{"path", "output", "boxes", "scores", "labels", "names", "ms"}``."""
    args = validate_predictor_args(get_args_parser().parse_args(argv))
    paths: list[Path] = []
    for item in args.inputs:
        existing_path(item, "input")
        paths += list_images(item) if item.is_dir() else [item]
    if not paths:
        raise UserError("no images found", path=args.inputs[0], fix="give .jpg / .png files")
    predictor = predictor_from_args(args, args.output_dir / "onnx")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for path in paths:
        image = read_image(path)
        start = time.perf_counter()
        found = predictor(image)
        ms = (time.perf_counter() - start) * 1e3
        drawn = draw_detections(image, found["boxes"], found["labels"], found["scores"],
                                class_names=predictor.classes)  # fmt: skip
        output = write_image(args.output_dir / f"{path.stem}.png", drawn)
        names = [predictor.classes[int(label)] for label in found["labels"]]
        print(f"{path}: {len(names)} detections ({ms:.0f} ms) {', '.join(names)}")
        results.append({"path": str(path), "output": str(output), "names": names, "ms": ms,
                        **{k: v.tolist() for k, v in found.items()}})  # fmt: skip
    return results


if __name__ == "__main__":
    sys.exit(run_cli(main))
