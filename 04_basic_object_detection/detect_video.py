"""Realtime detection on a video file, a webcam, a folder of frames or the built-in stream.

    python 04_basic_object_detection/detect_video.py --source synthetic --weights best.pt --output out.mp4
    python 04_basic_object_detection/detect_video.py --source 0 --show            # webcam, COCO SSDlite
    python 04_basic_object_detection/detect_video.py --source clip.mp4 --classic hog_people
    python 04_basic_object_detection/detect_video.py --source synthetic --weights best.pt --runtime opencv

Every frame gets the detections and the frames-per-second (smoothed) drawn; ``--output`` writes the
annotated video, ``--show`` opens a window (q or Esc stops). Prints the mean FPS at the end.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detector_cli import add_predictor_args, predictor_from_args, validate_predictor_args

from detseg import settings
from detseg.cli.common import HelpFormatter, positive_int
from detseg.errors import run_cli
from detseg.video import SOURCE_HELP, run_loop
from detseg.viz import draw_detections

EXAMPLE = "04_basic_object_detection"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Detect objects on video frames with an FPS overlay",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--source", default="synthetic", help=SOURCE_HELP)
    add_predictor_args(parser)
    parser.add_argument("--output", type=Path, default=None, help="annotated video (.mp4 / .avi)")
    parser.add_argument("--show", action="store_true", help="display frames in a window")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=settings.runs_root() / EXAMPLE / "detect-video",
        help="where an on-the-fly ONNX export goes",
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one line")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Returns ``{"frames", "fps", "output", "detections"}`` (total detections drawn)."""
    args = validate_predictor_args(get_args_parser().parse_args(argv))
    if args.max_frames is not None:
        positive_int(args.max_frames, "--max-frames")
    predictor = predictor_from_args(args, args.work_dir)
    total = 0

    def process(frame: Any) -> Any:
        nonlocal total
        found = predictor(frame.image)
        total += len(found["boxes"])
        return draw_detections(frame.image, found["boxes"], found["labels"], found["scores"],
                               class_names=predictor.classes)  # fmt: skip

    result = run_loop(
        args.source, process, writer_path=args.output, show=args.show, max_frames=args.max_frames
    )
    result["detections"] = total
    print(f"{result['frames']} frames at {result['fps']:.1f} FPS ({predictor.name}); "
          f"output {result['output']}")  # fmt: skip
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
