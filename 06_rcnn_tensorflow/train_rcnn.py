"""Train R-CNN on racoon: region classifier, detection mAP, then box regression and mAP again.

    python 06_rcnn_tensorflow/train_rcnn.py                         # whole pipeline, built-in racoon
    python 06_rcnn_tensorflow/train_rcnn.py --backbone mobilenet_v2  # the seed's frozen MobileNetV2
    python 06_rcnn_tensorflow/train_rcnn.py --resume                # continue from last.keras
    python 06_rcnn_tensorflow/train_rcnn.py --dry-run               # a few images, one step

Steps: (1) the region dataset of ``build_dataset.py`` (built first when ``--dataset-dir`` has none,
relabelled when it was built with other rules; default labelling: R-CNN's, with part negatives);
(2) the classifier (no_raccoon / raccoon) trained with augmentation, ``last.keras`` and
``best.keras`` written atomically every epoch; (3) detection on the validation images: proposals +
classifier + ``--score-threshold`` + NMS, mAP@0.5 by :mod:`detseg.metrics`; (4) R-CNN's box
regression head on the positive proposals (IoU >= 0.6), mAP@0.5 again. Everything lands in
``--output-dir`` (default ``runs/06_rcnn_tensorflow/train``): the models, ``bbox_head.keras``,
``head.json``, ``metrics.json``, the COCO JSON of ground truth and detections, ``detections.png``.
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
from build_dataset import add_data_args, check_args, default_dataset_dir, load_proposals
from racoon_data import load_image, load_racoon
from rcnn_dataset import LabelRules, rules_dict
from rcnn_detection import detect, evaluate_detections
from rcnn_models import BACKBONES, build_classifier, keras_module, save_model_atomic
from rcnn_training import fit_bbox_head, fit_classifier

from detseg import settings
from detseg.cli.common import (
    HelpFormatter,
    add_standard_args,
    positive_float,
    validate_standard_args,
)
from detseg.errors import UserError, run_cli
from detseg.viz import draw_detections, save_grid

EXAMPLE = "06_rcnn_tensorflow"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="R-CNN on racoon: classifier on selective-search regions, mAP@0.5 before and "
        "after a box-regression head",
        formatter_class=HelpFormatter,
        conflict_handler="resolve",
    )
    add_standard_args(parser, example=EXAMPLE, epochs=6, batch_size=64, lr=1e-3, workers=2)
    add_data_args(parser)  # its --data-path / --workers replace the standard ones (same meaning)
    parser.add_argument("--backbone", default="small", choices=list(BACKBONES))
    parser.add_argument(
        "--dataset-dir",
        type=Path,
        default=None,
        help="build_dataset.py output to use (built there first if it has no samples.npz, "
        "relabelled if its rules differ; "
        "default runs/06_rcnn_tensorflow/rcnn_dataset)",
    )
    parser.add_argument("--score-threshold", type=float, default=0.5, help="detection threshold")
    parser.add_argument("--nms-iou", type=float, default=0.3, help="NMS IoU threshold")
    parser.add_argument(
        "--max-proposals", type=int, default=1000, help="proposals classified per image"
    )
    parser.add_argument("--head-epochs", type=int, default=40, help="box-regression head epochs")
    return parser


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    resume, args.resume = args.resume, False  # checked below: the checkpoint is last.keras here
    validate_standard_args(check_args(args))
    args.resume = resume
    for flag in ("score_threshold", "nms_iou"):
        value = getattr(args, flag)
        if not 0 <= value <= 1:
            raise UserError(
                f"--{flag.replace('_', '-')} must be in [0, 1], got {value}", fix="e.g. 0.5"
            )
    positive_float(float(args.max_proposals), "--max-proposals")
    if args.dataset_dir is None:
        args.dataset_dir = default_dataset_dir() if not args.dry_run else None
    if args.dry_run:
        args.output_dir = Path(args.output_dir) / "dry-run"
        args.dataset_dir = args.dataset_dir or args.output_dir / "rcnn_dataset"
        args.head_epochs = min(args.head_epochs, 2)
        args.max_proposals = min(args.max_proposals, 200)
    if args.resume:
        last = Path(args.output_dir) / "last.keras" if args.resume is True else Path(args.resume)
        if not last.is_file():
            raise UserError(
                "--resume: no such checkpoint",
                path=last,
                fix="pass --resume CHECKPOINT, the --output-dir of the run to continue, or drop --resume",
            )
    return args


def dataset_matches(summary: dict[str, Any], args: argparse.Namespace) -> bool:
    """Whether a built dataset (its ``dataset.json``) was made with this run's search, crop size
    and labelling rules."""
    rules = LabelRules(
        max_positive=args.max_positive,
        max_negative=args.max_negative,
        max_part_negative=args.max_part_negative,
    )
    wanted = {"proposals": args.proposals, "mode": args.mode, "crop_size": args.crop_size}
    return summary.get("rules") == rules_dict(rules) and all(
        summary.get(key) == value for key, value in wanted.items()
    )


def ensure_dataset(args: argparse.Namespace) -> dict[str, Any]:
    """The region dataset's summary; built by ``build_dataset.py`` when it is not there yet, or
    relabelled when it was built with other rules (the proposals are reused, no new search)."""
    summary_file = Path(args.dataset_dir) / "dataset.json"
    if (Path(args.dataset_dir) / "samples.npz").is_file() and summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        if dataset_matches(summary, args):
            return summary
    from build_dataset import main as build

    argv = ["--output-dir", str(args.dataset_dir), "--proposals", args.proposals, "--mode", args.mode,
            "--crop-size", str(args.crop_size), "--max-positive", str(args.max_positive),
            "--max-negative", str(args.max_negative), "--workers", str(args.workers),
            "--max-part-negative", str(args.max_part_negative),
            "--seed", str(args.seed)]  # fmt: skip
    if args.data_path is not None:
        argv += ["--data-path", str(args.data_path)]
    if args.download:
        argv.append("--download")
    if args.num_images is not None:
        argv += ["--num-images", str(args.num_images)]
    if args.dry_run:
        argv.append("--dry-run")
    return build(argv)


def run_detection(
    classifier: Any,
    val: Any,
    proposals: list[np.ndarray],
    args: argparse.Namespace,
    *,
    head: Any = None,
    stats: Any = None,
    name: str,
) -> tuple[dict[str, float], list[dict[str, np.ndarray]]]:
    """Detect on every validation image; mAP through the core evaluator (COCO JSON in output_dir)."""
    detections, gts, sizes = [], [], []
    began = time.perf_counter()
    for i, boxes in enumerate(proposals):
        image, gt = load_image(val, i)
        detections.append(
            detect(image, boxes, classifier, score_threshold=args.score_threshold,
                   nms_iou=args.nms_iou, max_proposals=args.max_proposals, bbox_head=head,
                   target_stats=stats)
        )  # fmt: skip
        gts.append(gt)
        sizes.append(image.shape[:2])
    metrics = evaluate_detections(detections, gts, sizes, args.output_dir, name)
    metrics["seconds_per_image"] = (time.perf_counter() - began) / max(1, len(proposals))
    return metrics, detections


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the pipeline; returns ``metrics.json``: dataset summary, classifier history,
    ``map50_before`` / ``map50_after`` (without / with box regression), timings."""
    args = resolve_args(get_args_parser().parse_args(argv))
    keras = keras_module()
    summary = ensure_dataset(args)
    began = time.perf_counter()  # the dataset's own building time is summary["seconds"]
    data = np.load(Path(args.dataset_dir) / "samples.npz")
    labels, split = data["labels"], data["split"]
    train_rows = np.flatnonzero((split == 0) & (labels >= 0))
    val_rows = np.flatnonzero((split == 1) & (labels >= 0))
    crops = data["crops"]
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = None
    if not args.resume:
        model = build_classifier(args.backbone, crop_size=args.crop_size, seed=args.seed)
        if args.weights is not None:
            model.load_weights(args.weights)
    keras.utils.set_random_seed(args.seed)
    fitted = fit_classifier(
        model,
        (crops[train_rows], labels[train_rows]),
        (crops[val_rows], labels[val_rows]),
        output_dir=output_dir,
        epochs=1 if args.dry_run else args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        resume=args.resume
        if args.resume is True
        else (Path(args.resume) if args.resume else False),
        max_steps_per_epoch=1 if args.dry_run else None,
        verbose=0 if settings.smoke_mode() else 2,
    )
    classifier = fitted["model"]
    train_seconds = time.perf_counter() - began

    _, val = load_racoon(
        data_path=args.data_path, download=args.download, num_images=args.num_images
    )
    proposals = load_proposals(args.dataset_dir, 1)
    before, plain = run_detection(classifier, val, proposals, args, name="detections")

    regress = np.flatnonzero((split == 0) & (data["ious"] >= 0.6))
    head, stats = fit_bbox_head(
        classifier, crops[regress], data["boxes"][regress], data["gt_boxes"][regress],
        epochs=args.head_epochs, seed=args.seed,
    )  # fmt: skip
    save_model_atomic(head, output_dir / "bbox_head.keras")
    (output_dir / "head.json").write_text(json.dumps(stats, indent=1))
    target_stats = (stats["target_mean"], stats["target_std"])
    after, regressed = run_detection(
        classifier, val, proposals, args, head=head, stats=target_stats, name="detections_bbox"
    )
    shown = []
    for i in range(min(4, len(plain))):
        image, gt = load_image(val, i)
        shown += [
            draw_detections(image, plain[i]["boxes"], plain[i]["labels"], plain[i]["scores"], class_names=["raccoon"]),
            draw_detections(image, regressed[i]["boxes"], regressed[i]["labels"], regressed[i]["scores"], class_names=["raccoon"]),
        ]  # fmt: skip
    picture = save_grid(shown, output_dir / "detections.png", ncols=4)
    metrics = {
        "dataset": summary,
        "backbone": args.backbone,
        "history": fitted["history"],
        "epochs_trained": fitted["epochs_trained"],
        "steps_trained": fitted["steps_trained"],
        "map50_before": before["map50"],
        "ap_before": before["ap"],
        "map50_after": after["map50"],
        "ap_after": after["ap"],
        "detect_seconds_per_image": before["seconds_per_image"],
        "head": stats,
        "train_seconds": train_seconds,
        "dataset_seconds": summary["seconds"],
        "total_seconds": summary["seconds"] + time.perf_counter() - began,
        "picture": str(picture),
        "output_dir": str(output_dir),
    }
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("history", "dataset")}))
    return metrics


if __name__ == "__main__":
    sys.exit(run_cli(main))
