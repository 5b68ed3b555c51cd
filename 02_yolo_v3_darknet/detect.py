"""Detect objects in an image, a folder, a video, a webcam or the built-in stream.

    python 02_yolo_v3_darknet/detect.py --source data/shapes-0/val                 # trained best.pt
    python 02_yolo_v3_darknet/detect.py --cfg yolov3 --darknet-weights official --source photo.jpg
    python 02_yolo_v3_darknet/detect.py --cfg my.cfg --darknet-weights my.weights --names my.names \\
        --source clip.mp4
    python 02_yolo_v3_darknet/detect.py --source synthetic --max-frames 60         # no file needed
    python 02_yolo_v3_darknet/detect.py --source 0 --show                          # webcam

The model is a ``train.py`` checkpoint (``--weights``, default the training run's ``best.pt``), or a
darknet ``--cfg`` with its ``--darknet-weights`` (``official`` downloads darknet's COCO weights once,
checked against their published SHA-256). Images get ``<name>_detections.png`` and one
``detections.json`` (boxes in the image's pixels); videos, webcams and the stream one video.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from yolo_inference import load_detector

from detseg import settings
from detseg.cli.common import HelpFormatter, add_checkpoint_arg
from detseg.data.imageio import IMAGE_SUFFIXES, read_image, write_image
from detseg.devices import select_device
from detseg.errors import UserError, run_cli
from detseg.video import SOURCE_HELP, run_loop
from detseg.viz import draw_detections

EXAMPLE = "02_yolo_v3_darknet"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="YOLOv3 detection on images, folders, videos, a webcam or a synthetic stream",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--source", required=True, help=f"an image file, or {SOURCE_HELP}")
    add_checkpoint_arg(parser, example=EXAMPLE)
    parser.add_argument("--cfg", default=None, help="darknet cfg (yolov3, yolov3-tiny, yolov3-spp "
                        "or a file) instead of --weights")  # fmt: skip
    parser.add_argument("--darknet-weights", default=None,
                        help="the cfg's .weights file, or 'official' (darknet's COCO weights)")  # fmt: skip
    parser.add_argument("--names", type=Path, default=None,
                        help="class names, one a line (default: cfg/coco.names)")  # fmt: skip
    parser.add_argument("--image-size", type=int, default=None,
                        help="input side for --cfg (default: the cfg's width)")  # fmt: skip
    parser.add_argument("--score-threshold", type=float, default=0.25)
    parser.add_argument("--iou-threshold", type=float, default=0.45, help="class-wise NMS")
    parser.add_argument(
        "--output-dir", type=Path, default=settings.runs_root() / EXAMPLE / "detect",
        help="where pictures, detections.json and videos go",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:<index> or mps")
    parser.add_argument("--max-frames", type=int, default=None, help="stop a video after N frames")
    parser.add_argument("--show", action="store_true", help="show video frames in a window")
    parser.add_argument("--dry-run", action="store_true", help="one image / frame only")
    parser.add_argument(
        "--debug", action="store_true", help="tracebacks instead of one-line errors"
    )
    return parser


def validate_args(args: argparse.Namespace) -> argparse.Namespace:
    for flag in ("score_threshold", "iou_threshold"):
        value = getattr(args, flag)
        if not 0.0 <= value <= 1.0:
            name = "--" + flag.replace("_", "-")
            raise UserError(f"{name} must be in [0, 1], got {value}", fix="e.g. 0.25")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames must be >= 1, got {args.max_frames}", fix="e.g. 100")
    if args.image_size is not None and (args.image_size < 32 or args.image_size % 32):
        raise UserError(f"--image-size must be a positive multiple of 32, got {args.image_size}",
                        fix="e.g. 416")  # fmt: skip
    if args.cfg is None and not Path(args.weights).is_file():
        raise UserError(
            "checkpoint not found", path=args.weights,
            fix="train first (train.py), pass --weights, or --cfg yolov3 --darknet-weights official",
        )  # fmt: skip
    return args


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Detect; returns ``{"images", "frames", "detections", "ms_per_image", "outputs"}``."""
    args = validate_args(get_args_parser().parse_args(argv))
    device = select_device(args.device)
    detector = load_detector(
        device=device, weights=args.weights, cfg=args.cfg, darknet_weights=args.darknet_weights,
        names=args.names, image_size=args.image_size,
    )  # fmt: skip
    detector.score_threshold, detector.iou_threshold = args.score_threshold, args.iou_threshold
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: list[float] = []
    counts: list[int] = []

    def annotate(image: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        start = time.perf_counter()
        found = detector(image)
        timings.append(time.perf_counter() - start)
        counts.append(len(found["boxes"]))
        drawn = draw_detections(image, found["boxes"], found["labels"], found["scores"],
                                class_names=detector.classes)  # fmt: skip
        return drawn, found

    source = Path(args.source)
    outputs: list[str] = []
    frames = images = 0
    if _is_image(source) or (source.is_dir() and not args.source.isdigit()):
        paths = (
            [source] if source.is_file() else sorted(p for p in source.iterdir() if _is_image(p))
        )
        if not paths:
            raise UserError("no images in this folder", path=source,
                            fix=f"--source takes {SOURCE_HELP}")  # fmt: skip
        records = []
        for path in paths[: 1 if args.dry_run else None]:
            drawn, found = annotate(read_image(path))
            outputs.append(str(write_image(out_dir / f"{path.stem}_detections.png", drawn)))
            records.append({
                "image": str(path),
                "boxes": found["boxes"].round(2).tolist(),
                "scores": found["scores"].round(4).tolist(),
                "labels": [detector.classes[i] for i in found["labels"]],
            })  # fmt: skip
        (out_dir / "detections.json").write_text(json.dumps(records, indent=1))
        outputs.append(str(out_dir / "detections.json"))
        images = len(records)
    else:
        name = f"webcam{args.source}" if args.source.isdigit() else (
            "synthetic" if args.source == "synthetic" else source.stem
        )  # fmt: skip
        loop = run_loop(
            args.source, lambda frame: annotate(frame.image)[0],
            writer_path=out_dir / f"{name}.mp4", show=args.show,
            max_frames=1 if args.dry_run else args.max_frames,
        )  # fmt: skip
        frames = loop["frames"]
        if loop["output"] is not None:
            outputs.append(str(loop["output"]))
    result = {
        "images": images,
        "frames": frames,
        "detections": int(sum(counts)),
        "ms_per_image": float(np.median(timings) * 1e3) if timings else float("nan"),
        "outputs": outputs,
    }
    print(
        f"{images or frames} {'image(s)' if images else 'frame(s)'}, {result['detections']} "
        f"detections, {result['ms_per_image']:.1f} ms per image (median); written to {out_dir}"
    )
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
