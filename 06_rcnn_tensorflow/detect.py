"""Detect raccoons with a trained R-CNN: selective search, classifier, threshold, box regression, NMS.

    python 06_rcnn_tensorflow/detect.py --source photo.jpg
    python 06_rcnn_tensorflow/detect.py --source folder/ --proposals opencv --score-threshold 0.9
    python 06_rcnn_tensorflow/detect.py --source folder/ --no-bbox-regression

``--weights`` is the classifier written by ``train_rcnn.py`` (default its ``best.keras``); the box
regression head ``bbox_head.keras`` and its target statistics ``head.json`` are taken from the same
folder when they are there. Writes ``<stem>_detections.png`` per image and ``detections.json``
(per image: boxes xyxy, scores) into ``--output-dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rcnn_detection import detect
from rcnn_models import load_model
from selective_search import MODES, propose

from detseg import settings
from detseg.cli.common import HelpFormatter, existing_path, positive_int
from detseg.data.imageio import read_image, write_image
from detseg.errors import UserError, run_cli
from detseg.viz import draw_detections

EXAMPLE = "06_rcnn_tensorflow"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="R-CNN detection on images with a classifier trained by train_rcnn.py",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--source", type=Path, required=True, help="an image or a folder of them")
    parser.add_argument(
        "--weights",
        type=Path,
        default=settings.runs_root() / EXAMPLE / "train" / "best.keras",
        help="classifier (.keras) written by train_rcnn.py",
    )
    parser.add_argument("--proposals", default="ours", choices=["ours", "opencv"])
    parser.add_argument("--mode", default="fast", choices=list(MODES))
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--nms-iou", type=float, default=0.3)
    parser.add_argument("--max-proposals", type=int, default=2000)
    parser.add_argument(
        "--no-bbox-regression", action="store_true", help="ignore bbox_head.keras next to --weights"
    )
    parser.add_argument(
        "--output-dir", type=Path, default=settings.runs_root() / EXAMPLE / "detect"
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one line")
    return parser


def list_images(source: Path) -> list[Path]:
    """``source`` itself, or the images in the folder ``source`` (sorted)."""
    existing_path(source, "--source")
    if source.is_file():
        return [source]
    images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UserError(
            "--source: no .jpg / .png images in this folder", path=source, fix="pass an image"
        )
    return images


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Detect; returns ``{"images", "detections" (per file: count), "outputs", "bbox_regression"}``."""
    args = get_args_parser().parse_args(argv)
    for flag in ("score_threshold", "nms_iou"):
        if not 0 <= getattr(args, flag) <= 1:
            raise UserError(f"--{flag.replace('_', '-')} must be in [0, 1]", fix="e.g. 0.5")
    positive_int(args.max_proposals, "--max-proposals")
    images = list_images(args.source)
    existing_path(args.weights, "--weights", kind="file")
    classifier = load_model(args.weights)
    head, stats = None, None
    head_file, stats_file = (
        args.weights.with_name("bbox_head.keras"),
        args.weights.with_name("head.json"),
    )
    if not args.no_bbox_regression and head_file.is_file() and stats_file.is_file():
        head = load_model(head_file)
        config = json.loads(stats_file.read_text())
        stats = (config["target_mean"], config["target_std"])
    args.output_dir.mkdir(parents=True, exist_ok=True)
    results, outputs = {}, []
    for path in images:
        image = read_image(path)
        found = detect(
            image, propose(image, args.proposals, args.mode), classifier,
            score_threshold=args.score_threshold, nms_iou=args.nms_iou,
            max_proposals=args.max_proposals, bbox_head=head, target_stats=stats,
        )  # fmt: skip
        results[path.name] = {"boxes": found["boxes"].tolist(), "scores": found["scores"].tolist()}
        drawn = draw_detections(
            image, found["boxes"], found["labels"], found["scores"], class_names=["raccoon"]
        )
        outputs.append(str(write_image(args.output_dir / f"{path.stem}_detections.png", drawn)))
        print(f"{path.name}: {len(found['boxes'])} raccoons")
    (args.output_dir / "detections.json").write_text(json.dumps(results))
    return {
        "images": len(images),
        "detections": {name: len(r["boxes"]) for name, r in results.items()},
        "outputs": outputs,
        "bbox_regression": head is not None,
    }


if __name__ == "__main__":
    sys.exit(run_cli(main))
