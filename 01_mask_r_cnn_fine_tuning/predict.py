"""Detect and segment with a trained model: one image, a folder of images, a video or a webcam.

    python predict.py --source photo.jpg                       # -> runs/.../predict/photo.png
    python predict.py --source data/pedestrians-0/PennFudanPed/PNGImages --score-threshold 0.7
    python predict.py --source street.mp4                      # -> runs/.../predict/street.mp4
    python predict.py --source 0 --show                        # webcam, in a window
    python predict.py --source synthetic --max-frames 50       # no camera, no file needed

The model is rebuilt from the checkpoint alone (``--weights``, default the last training run's
``best.pt``): its ``config`` names the architecture, classes and input size. Drawn per detection:
mask (thresholded at 0.5), box, class name and score, for scores >= ``--score-threshold``; images
also get ``detections.json`` (boxes xyxy in pixels, labels, class names, scores).
"""

from __future__ import annotations

# isort: off
# first, before torch loads: on macOS it turns on PyTorch's CPU fallback for operators without an
# MPS kernel (PYTORCH_ENABLE_MPS_FALLBACK=1), see README "Apple MPS"
from detseg import devices

# isort: on
import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from models_maskrcnn import load_trained

from detseg import settings
from detseg.cli.common import HelpFormatter, add_checkpoint_arg
from detseg.data.imageio import IMAGE_SUFFIXES, read_image, write_image
from detseg.errors import UserError, run_cli
from detseg.video import SOURCE_HELP, run_loop
from detseg.viz import draw_detections

EXAMPLE = "01_mask_r_cnn_fine_tuning"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Mask R-CNN inference on an image, a folder, a video or a webcam",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--source", required=True, help=f"an image file, or {SOURCE_HELP}")
    add_checkpoint_arg(parser, example=EXAMPLE)
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=settings.runs_root() / EXAMPLE / "predict",
        help="where annotated images / videos go",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:<index> or mps")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="minimum score drawn")
    parser.add_argument("--max-frames", type=int, default=None, help="stop a video after N frames")
    parser.add_argument("--show", action="store_true", help="show video frames in a window")
    parser.add_argument("--dry-run", action="store_true", help="process one image / frame only")
    parser.add_argument(
        "--debug", action="store_true", help="tracebacks instead of one-line errors"
    )
    return parser


def detect(
    model: Any, image: np.ndarray, device: Any, score_threshold: float = 0.0
) -> dict[str, np.ndarray]:
    """Run the model on one RGB uint8 image [H, W, 3].

    Returns:
        ``{"boxes": float32 [N, 4] xyxy pixels, "labels": int64 [N] in 1..C, "scores": [N],
        "masks": float32 [N, H, W] probabilities}`` (no ``masks`` for Faster R-CNN), sorted by
        decreasing score, only detections with ``score >= score_threshold``.
    """
    import torch

    from detseg.data.torch_datasets import image_to_tensor

    with torch.no_grad():
        output = model([image_to_tensor(image).to(device)])[0]
    keep = output["scores"] >= score_threshold
    result = {key: value[keep].cpu().numpy() for key, value in output.items()}
    if "masks" in result:
        result["masks"] = result["masks"][:, 0]
    return result


def _names(config: dict[str, Any]) -> list[str]:
    return list(config.get("classes") or [str(i) for i in range(1, int(config["num_classes"]))])


def _as_json(detections: dict[str, np.ndarray], classes: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "box_xyxy": [round(float(v), 2) for v in box],
            "label": int(label),
            "class": classes[int(label) - 1],
            "score": round(float(score), 4),
        }
        for box, label, score in zip(
            detections["boxes"], detections["labels"], detections["scores"]
        )
    ]


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = get_args_parser().parse_args(argv)
    if not 0.0 <= args.score_threshold <= 1.0:
        raise UserError(
            f"--score-threshold must be in [0, 1], got {args.score_threshold}", fix="e.g. 0.5"
        )
    device = devices.select_device(args.device)
    model, config = load_trained(args.weights, device=device)
    # the model itself drops boxes scoring < 0.05 before NMS; a lower threshold lowers that too
    model.roi_heads.score_thresh = min(model.roi_heads.score_thresh, args.score_threshold)
    classes = _names(config)
    out_dir = Path(args.output_dir)
    source = Path(args.source)
    max_frames = 1 if args.dry_run else args.max_frames
    timings: list[float] = []
    counts: list[int] = []

    def annotate(image: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        start = time.perf_counter()
        found = detect(model, image, device, args.score_threshold)
        timings.append(time.perf_counter() - start)
        counts.append(len(found["scores"]))
        drawn = draw_detections(
            image,
            found["boxes"],
            found["labels"] - 1,  # torchvision 1..C -> index into classes
            found["scores"],
            masks=found.get("masks"),
            class_names=classes,
        )
        return drawn, found

    outputs: list[str] = []
    if _is_image(source) or (source.is_dir() and not args.show):
        files = (
            [source] if source.is_file() else sorted(p for p in source.iterdir() if _is_image(p))
        )
        if not files:
            raise UserError("the folder holds no images", path=source, fix=f"use {IMAGE_SUFFIXES}")
        files = files[:max_frames] if max_frames else files
        records = {}
        for path in files:
            drawn, found = annotate(read_image(path))
            outputs.append(str(write_image(out_dir / f"{path.stem}.png", drawn)))
            records[path.name] = _as_json(found, classes)
        (out_dir / "detections.json").write_text(json.dumps(records, indent=1))
    else:
        if source.is_file() and source.suffix.lower() not in VIDEO_SUFFIXES:
            raise UserError(
                f"unsupported file type {source.suffix!r}",
                path=source,
                fix=f"pass an image ({', '.join(IMAGE_SUFFIXES)}) or a video "
                f"({', '.join(VIDEO_SUFFIXES)})",
            )
        name = source.stem if source.is_file() else str(args.source).replace("/", "_")
        loop = run_loop(
            args.source,
            lambda frame: annotate(frame.image)[0],
            writer_path=out_dir / f"{name}.mp4",
            show=args.show,
            max_frames=max_frames,
        )
        if loop["output"] is not None:
            outputs.append(str(loop["output"]))
    if not timings:
        raise UserError("the source gave no frames", path=source, fix="check the file")
    result = {
        "images": len(timings),
        "detections": int(sum(counts)),
        "mean_ms": 1000.0 * float(np.mean(timings)),
        "outputs": outputs,
        "device": str(device),
    }
    print(
        f"{result['images']} image(s), {result['detections']} detection(s) >= "
        f"{args.score_threshold}, {result['mean_ms']:.0f} ms per image on {device}; "
        f"written to {out_dir}",
        file=sys.stderr,
    )
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
