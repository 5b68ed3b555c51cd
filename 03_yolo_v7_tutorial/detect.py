"""Real-time detection: webcam, video, image folder or the built-in stream; PyTorch or ONNX Runtime.

    python 03_yolo_v7_tutorial/detect.py --source 0                       # webcam 0, window
    python 03_yolo_v7_tutorial/detect.py --source clip.mp4 --output out.mp4 --no-show
    python 03_yolo_v7_tutorial/detect.py --source tabletop --backend onnx --no-show --output out.mp4
    python 03_yolo_v7_tutorial/detect.py --source frames/ --backend onnx --onnx model.onnx

``--source tabletop`` plays the built-in table-top set's test images as a stream (no camera
needed); ``synthetic`` is the core's bouncing-shapes stream. Each frame is letterboxed to the
model's size, detected, mapped back to the frame's pixels and drawn with an FPS overlay.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from yolov7_checkpoint import load_trained
from yolov7_data import BUILT_IN

from detseg.cli.common import HelpFormatter, add_checkpoint_arg, existing_path, positive_int
from detseg.data import recipes
from detseg.data.letterbox import letterbox, unletterbox_boxes
from detseg.data.torch_datasets import image_to_tensor
from detseg.errors import UserError, run_cli
from detseg.export import ort_run, ort_session
from detseg.video import SOURCE_HELP, FolderSource, Frame, FrameSource, open_source, run_loop
from detseg.viz import draw_detections
from detseg.yolo_decode import postprocess

EXAMPLE = "03_yolo_v7_tutorial"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run a trained YOLOv7 on a webcam, video, folder or the built-in stream",
        formatter_class=HelpFormatter,
    )
    add_checkpoint_arg(parser, example=EXAMPLE)
    parser.add_argument("--source", default="tabletop", help=f"{SOURCE_HELP}, or 'tabletop'")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    parser.add_argument(
        "--onnx",
        type=Path,
        default=None,
        help="ONNX file without NMS (default: export.py's next to --weights)",
    )
    parser.add_argument("--score-threshold", type=float, default=0.25)
    parser.add_argument("--iou-threshold", type=float, default=0.45)
    parser.add_argument("--output", type=Path, default=None, help="write the annotated video here")
    parser.add_argument("--no-show", action="store_true", help="never open a window")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--debug", action="store_true", help="tracebacks instead of one-line errors"
    )
    return parser


def make_predictor(args: argparse.Namespace) -> tuple[Any, int, list[str]]:
    """``(predict(images [1, 3, S, S]) -> decoded [1, K, 5 + C], S, classes)`` for the backend."""
    existing_path(args.weights, "--weights", kind="file")
    model, config = load_trained(args.weights)
    model.fuse()
    size = int(config.get("image_size", 320))
    classes = list(config["classes"])
    if args.backend == "torch":
        return (lambda images: model(images)), size, classes
    onnx_path = args.onnx or Path(args.weights).with_name(f"yolov7-{config['variant']}-{size}.onnx")
    existing_path(onnx_path, "--onnx", kind="file")
    session = ort_session(onnx_path, threads=torch.get_num_threads())
    if len(session.get_outputs()) != 1:
        raise UserError(
            "this ONNX file has NMS in its graph; detect.py runs NMS itself", path=onnx_path,
            fix="export without --nms (python 03_yolo_v7_tutorial/export.py)",
        )  # fmt: skip
    return (lambda images: torch.from_numpy(ort_run(session, images)[0])), size, classes


def open_stream(source: str) -> FrameSource:
    """``tabletop``: the built-in set's test images as a stream; anything else goes to the core's
    :func:`detseg.video.open_source` (webcam index, video file, folder, ``synthetic``)."""
    if source == BUILT_IN:
        return FolderSource(recipes.ensure(BUILT_IN) / "test" / "images", fps=10.0)
    return open_source(source)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = get_args_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(positive_int(args.threads, "--threads"))
    if args.max_frames is not None:
        positive_int(args.max_frames, "--max-frames")
    for flag, value in (
        ("--score-threshold", args.score_threshold),
        ("--iou-threshold", args.iou_threshold),
    ):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{flag} must be in [0, 1], got {value}", fix=f"e.g. {flag} 0.25")
    stream = open_stream(args.source)
    try:
        predict_fn, size, classes = make_predictor(args)
    except BaseException:
        stream.close()
        raise
    detections_total = 0

    @torch.no_grad()
    def process(frame: Frame) -> Any:
        nonlocal detections_total
        boxed, scale, pad = letterbox(frame.image, size)
        decoded = predict_fn(image_to_tensor(boxed)[None])
        det = postprocess(
            decoded, score_threshold=args.score_threshold, iou_threshold=args.iou_threshold
        )[0]
        boxes = unletterbox_boxes(det["boxes"].numpy(), scale, pad, frame.image.shape[:2])
        detections_total += len(boxes)
        return draw_detections(
            frame.image, boxes, det["labels"].numpy(), det["scores"].numpy(), class_names=classes
        )

    result = run_loop(
        stream, process, writer_path=args.output, show=not args.no_show,
        max_frames=args.max_frames, window_name="YOLOv7",
    )  # fmt: skip
    result["detections"] = detections_total
    result["backend"] = args.backend
    print(f"{result['frames']} frames, {result['fps']:.1f} FPS ({args.backend}), {detections_total} detections"
          + (f", wrote {result['output']}" if result["output"] else ""))  # fmt: skip
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
