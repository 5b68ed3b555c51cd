"""The detector flags that ``detect_image.py`` and ``detect_video.py`` share, and the predictor
they name.

``--model NAME`` picks a COCO-pretrained torchvision detector (:data:`detection_zoo.PRETRAINED`,
downloaded once) or ``mobilenet_ssd_caffe``, the seed's VOC MobileNet-SSD on ``cv2.dnn``
(:mod:`caffe_mobilenet_ssd`, weights downloaded once); ``--weights CKPT`` a detector trained here by ``train_detector.py`` (no download);
``--classic haar_face|hog_people`` an OpenCV 4 classic detector. With ``--weights`` of an SSDlite,
``--runtime onnxruntime|opencv`` runs its exported body (``export_detector.py`` writes it; exported
on the fly into ``--output-dir`` when missing).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from caffe_mobilenet_ssd import caffe_predictor
from detection_zoo import PRETRAINED, build_pretrained
from detector_body import DecodeConfig
from detector_runtime import (
    CLASSIC,
    RUNTIMES,
    Predictor,
    body_predictor,
    classic_predictor,
    torch_predictor,
)

from detseg.cli.common import existing_path
from detseg.errors import UserError
from detseg.scripts import load_script

FOLDER = Path(__file__).resolve().parent
CAFFE_MODEL = "mobilenet_ssd_caffe"  # Caffe MobileNet-SSD (VOC) on OpenCV DNN


def add_predictor_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    group = parser.add_argument_group("detector (one of --model, --weights, --classic)")
    group.add_argument(
        "--model",
        choices=[*PRETRAINED, CAFFE_MODEL],
        default=None,
        help="COCO-pretrained torchvision detector, or mobilenet_ssd_caffe (VOC, Caffe, on OpenCV "
        "DNN); weights downloaded once into the torch hub cache; default "
        "ssdlite320_mobilenet_v3_large when neither --weights nor --classic is given",
    )
    group.add_argument(
        "--weights", type=Path, default=None, help="checkpoint of train_detector.py (offline)"
    )
    group.add_argument("--classic", choices=list(CLASSIC), default=None, help="OpenCV 4 classic")
    group.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="torch",
        help="with --weights of an SSDlite: run its exported body on ONNX Runtime or OpenCV DNN",
    )
    group.add_argument("--score-threshold", type=float, default=0.5, help="detections drawn")
    return parser


def validate_predictor_args(args: argparse.Namespace) -> argparse.Namespace:
    """Check the detector flags (before any file is read or written)."""
    chosen = [flag for flag in ("model", "weights", "classic") if getattr(args, flag) is not None]
    if len(chosen) > 1:
        raise UserError(
            f"give one of --model, --weights, --classic, not {' and '.join('--' + c for c in chosen)}",
            fix="drop all but one",
        )
    if not 0 <= args.score_threshold <= 1:
        raise UserError(
            f"--score-threshold must be in [0, 1], got {args.score_threshold}", fix="e.g. 0.5"
        )
    if args.runtime != "torch" and args.weights is None:
        raise UserError(
            f"--runtime {args.runtime} needs --weights of an SSDlite trained by train_detector.py",
            fix="train one (no download needed) or use --runtime torch",
        )
    if args.weights is not None:
        existing_path(args.weights, "--weights", kind="file")
    return args


def predictor_from_args(args: argparse.Namespace, work_dir: Path) -> Predictor:
    """The predictor the flags name (``work_dir`` receives an on-the-fly ONNX export)."""
    validate_predictor_args(args)
    if args.classic is not None:
        return classic_predictor(args.classic)
    if args.weights is None:
        name = args.model or "ssdlite320_mobilenet_v3_large"
        if name == CAFFE_MODEL:
            return caffe_predictor(score_threshold=args.score_threshold)
        model, classes = build_pretrained(name)
        return torch_predictor(model, classes, score_threshold=args.score_threshold, name=name)
    model, config = load_script(FOLDER, "train_detector").load_detector(args.weights)
    classes = ["__background__", *config["classes"]]
    if args.runtime == "torch":
        return torch_predictor(model, classes, score_threshold=args.score_threshold,
                               name=config["model"])  # fmt: skip
    if config["model"] != "ssdlite320":
        raise UserError(
            f"--runtime {args.runtime} runs SSD bodies only; this checkpoint is {config['model']}",
            path=args.weights,
            fix="use --runtime torch",
        )
    export = load_script(FOLDER, "export_detector")
    work_dir.mkdir(parents=True, exist_ok=True)
    body, onnx_path = export.export_body(model, work_dir / "ssd_body.onnx")
    return body_predictor(args.runtime, DecodeConfig.from_ssd(model), classes, body=body,
                          onnx_path=onnx_path, score_threshold=args.score_threshold)  # fmt: skip
