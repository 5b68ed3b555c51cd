"""Export a trained model (or a darknet cfg) to ONNX; check parity, time eager / ORT / OpenCV DNN.

    python 02_yolo_v3_darknet/export.py                                   # the training run's best.pt
    python 02_yolo_v3_darknet/export.py --cfg yolov3 --darknet-weights official --image-size 416
    python 02_yolo_v3_darknet/export.py --cfg yolov3-tiny --darknet-weights random   # speed only

The ONNX graph takes ``images`` [1, 3, S, S] in [0, 1] and returns the raw input of each [yolo]
layer (decode and NMS stay outside, in :mod:`detseg.yolo_decode`, as in darknet and OpenCV).
Parity: the raw outputs on letterboxed validation images (not the traced input) and every
detection after decoding + NMS, matched between eager PyTorch and ONNX Runtime. Timing: median of
``--repeats`` runs of eager, ONNX Runtime and OpenCV DNN reading the darknet cfg + weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import torch
from darknet import Darknet, load_weights, randomize
from darknet_cfg import parse_cfg
from yolo_export import export_and_check
from yolo_inference import load_trained
from yolo_training import load_splits

from detseg import settings
from detseg.cli.common import HelpFormatter, add_checkpoint_arg, positive_int
from detseg.data.yolo_dataset import YoloDataset
from detseg.errors import UserError, run_cli

EXAMPLE = "02_yolo_v3_darknet"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export a YOLOv3 model to ONNX, check parity, time eager / ORT / OpenCV DNN",
        formatter_class=HelpFormatter,
    )
    add_checkpoint_arg(parser, example=EXAMPLE)
    parser.add_argument("--cfg", default=None, help="export this darknet cfg instead of --weights")
    parser.add_argument("--darknet-weights", default="random",
                        help="with --cfg: a .weights file, 'official' or 'random'")  # fmt: skip
    parser.add_argument("--image-size", type=int, default=None, help="input side (x 32)")
    parser.add_argument("--check-images", type=int, default=3,
                        help="validation images of the built-in data to check parity on")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per engine")
    parser.add_argument("--threads", type=int, default=None, help="torch / ORT / OpenCV threads")
    parser.add_argument(
        "--output-dir", type=Path, default=settings.runs_root() / EXAMPLE / "export",
        help="where the .onnx (and the .cfg / .weights OpenCV reads) go",
    )  # fmt: skip
    parser.add_argument(
        "--debug", action="store_true", help="tracebacks instead of one-line errors"
    )
    return parser


def load_model(args: argparse.Namespace) -> tuple[Darknet, str, str]:
    """(model, cfg text, name) from --cfg / --darknet-weights or from the checkpoint."""
    if args.cfg is not None:
        spec = parse_cfg(args.cfg, size=args.image_size)
        model = Darknet(spec)
        if args.darknet_weights == "random":
            randomize(model)
        elif args.darknet_weights == "official":
            from official_weights import official_weights

            load_weights(model, official_weights(str(args.cfg)))
        else:
            load_weights(model, args.darknet_weights)
        text = Path(spec.path).read_text(encoding="utf-8")
        return model, text, Path(spec.path).stem
    if not Path(args.weights).is_file():
        raise UserError("checkpoint not found", path=args.weights,
                        fix="train first (train.py), pass --weights, or use --cfg")  # fmt: skip
    model, config = load_trained(args.weights, torch.device("cpu"))
    return model, config["cfg_text"], Path(args.weights).stem


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Export and check; returns :func:`yolo_export.export_and_check`'s numbers (also in
    ``<output-dir>/<name>_export.json``)."""
    args = get_args_parser().parse_args(argv)
    positive_int(args.check_images, "--check-images")
    positive_int(args.repeats, "--repeats")
    if args.image_size is not None and (args.image_size < 32 or args.image_size % 32):
        raise UserError(f"--image-size must be a positive multiple of 32, got {args.image_size}",
                        fix="e.g. 416")  # fmt: skip
    if args.threads is not None:
        torch.set_num_threads(positive_int(args.threads, "--threads"))
    cv2.setNumThreads(torch.get_num_threads())
    model, cfg_text, name = load_model(args)
    size = model.spec.height
    val = YoloDataset(load_splits(None).val, size)
    images = [val[i][0][None] for i in range(min(args.check_images, len(val)))]
    out_dir = Path(args.output_dir)
    result = export_and_check(
        model, out_dir / f"{name}.onnx", images, cfg_text=cfg_text, repeats=args.repeats
    )
    (out_dir / f"{name}_export.json").write_text(json.dumps(result, indent=1))
    print(
        f"{result['onnx']}: max |eager - ORT| {result['max_abs_diff']:.2e} on {len(images)} images, "
        f"{result['matched']}/{result['detections']} detections matched; eager "
        f"{result['eager_ms']:.1f} ms, ORT {result['onnxruntime_ms']:.1f} ms "
        f"({result['speedup']:.2f}x), OpenCV DNN {result['opencv_ms']:.1f} ms"
    )
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
