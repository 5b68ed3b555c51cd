"""Train a darknet YOLOv3 model (YOLOv3-tiny by default) on custom classes.

    python 02_yolo_v3_darknet/train.py                         # yolov3-tiny, built-in shapes (YOLO layout)
    python 02_yolo_v3_darknet/train.py --data-path my/data.yaml --cfg yolov3 --image-size 416
    python 02_yolo_v3_darknet/train.py --weights runs/.../yolov3-tiny-custom.weights   # fine-tune
    python 02_yolo_v3_darknet/train.py --weights yolov3-tiny.conv.15   # first 15 layers only
    python 02_yolo_v3_darknet/train.py --backbone-pretraining none     # from random weights
    python 02_yolo_v3_darknet/train.py --resume                # continue <output-dir>/last.pt exactly
    python 02_yolo_v3_darknet/train.py --dry-run               # one batch end to end

The cfg is adapted to the dataset's classes (``filters = 3 x (5 + classes)`` before each [yolo],
``classes=`` in each [yolo]) and, by default, its anchors come from k-means (1 - IoU) on the
training boxes. By default the first 15 layers start from ``yolov3-tiny.conv.15``, darknet's
partial weights file, here pretrained offline on shape crops of other scenes
(:mod:`darknet_pretraining`, cached under ``runs/``; its seconds are reported apart, not counted in
``--time-budget``, like downloaded ImageNet weights). Every epoch: the YOLOv3 loss through the core engine, COCO box AP on the validation
split, ``last.pt`` / ``best.pt`` (by mAP@0.5). At the end the model is also written in darknet's own
format, ``<run>/<cfg>-custom.cfg`` and ``.weights``, read back and checked to give identical outputs,
so darknet and OpenCV DNN can run it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from darknet import Darknet, count_parameters, load_weights, partial_layers
from darknet_cfg import OFFICIAL_CFGS, parse_cfg_text
from darknet_pretraining import PARTIAL_LAYERS, PretrainConfig, ensure_partial, partial_path
from yolo_loss import LossConfig
from yolo_training import (
    build_custom_model,
    dataset_anchors,
    fit,
    load_splits,
    log,
    save_darknet,
)

from detseg import settings
from detseg.cli.common import (
    HelpFormatter,
    add_standard_args,
    positive_float,
    positive_int,
    train_kwargs,
    validate_standard_args,
)
from detseg.data.yolo_dataset import YoloAugment
from detseg.devices import seed_everything, select_device
from detseg.engine.checkpoint import load_checkpoint, model_state
from detseg.errors import UserError, run_cli

EXAMPLE = "02_yolo_v3_darknet"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train YOLOv3 / YOLOv3-tiny (darknet cfg) on a YOLO data.yaml or built-in shapes",
        formatter_class=HelpFormatter,
    )
    add_standard_args(parser, example=EXAMPLE, epochs=9, batch_size=8, lr=0.002, workers=0)
    parser.add_argument("--cfg", default="yolov3-tiny", choices=list(OFFICIAL_CFGS),
                        help="base architecture; adapted to the dataset's classes")  # fmt: skip
    parser.add_argument("--image-size", type=int, default=192, help="square input side (x 32)")
    parser.add_argument(
        "--backbone-pretraining", choices=("shape_crops", "none"), default="shape_crops",
        help="shape_crops: start the first layers from <cfg>.conv.N (yolov3-tiny: 15), darknet's "
        "partial weights, pretrained here on shape crops of other built-in scenes (data seed 1) "
        "and cached in the runs folder (its time is reported apart, like downloaded weights); "
        "none: random weights. --weights replaces it",
    )  # fmt: skip
    parser.add_argument("--pretrain-epochs", type=int, default=PretrainConfig.epochs,
                        help="epochs of that pretraining")  # fmt: skip
    parser.add_argument(
        "--anchors", choices=("kmeans", "cfg"), default="kmeans",
        help="k-means (1 - IoU) anchors of the training boxes, or the cfg's COCO anchors",
    )  # fmt: skip
    parser.add_argument("--num-images", type=int, default=None,
                        help="size of the built-in dataset (default: the recipe's 1000)")  # fmt: skip
    parser.add_argument("--mosaic", type=float, default=0.0,
                        help="probability of a 4-image mosaic (off: it shrinks the objects, and "
                        "short runs learn faster without it)")  # fmt: skip
    parser.add_argument("--hflip", type=float, default=0.5, help="probability of a mirror")
    parser.add_argument("--hsv", type=float, nargs=3, default=(0.015, 0.5, 0.3),
                        metavar=("H", "S", "V"), help="HSV jitter amplitudes")  # fmt: skip
    parser.add_argument("--box-loss", choices=("mse", "giou"), default="giou")
    parser.add_argument("--cls-weight", type=float, default=1.0,
                        help="weight of the class term of the loss (objectness and box: 1)")  # fmt: skip
    parser.add_argument(
        "--assign", choices=("yolov3", "yolov5"), default="yolov5",
        help="yolov3: the best anchor over all scales (and --assign-threshold), centre cell only; "
        "yolov5: every anchor within a 4x width / height ratio, centre cell and its 2 nearest "
        "neighbours ([yolo] layers get scale_x_y = 2 so the centre can reach them)",
    )  # fmt: skip
    parser.add_argument("--assign-threshold", type=float, default=0.5,
                        help="yolov3 assignment: also assign anchors whose shape IoU with a box is "
                        "above this (> 1: only the best anchor, as darknet)")  # fmt: skip
    parser.add_argument("--obj-target", choices=("one", "iou"), default="iou",
                        help="objectness target of assigned predictions: 1 (darknet) or their "
                        "IoU with the box, detached, clamped at 0 (YOLOv5)")  # fmt: skip
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="adamw",
                        help="AdamW converges faster on short CPU schedules; SGD is darknet's")  # fmt: skip
    parser.add_argument("--warmup-iters", type=int, default=100,
                        help="linear lr warm-up steps (at most a fifth of the run)")  # fmt: skip
    parser.add_argument(
        "--time-budget", type=float, default=10.0, metavar="MINUTES",
        help="stop before an epoch that would end past this many minutes of training (the "
        "cosine lr still spans --epochs); 0: no limit",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser


def validate_args(args: argparse.Namespace) -> argparse.Namespace:
    validate_standard_args(args)
    if args.image_size < 32 or args.image_size % 32:
        raise UserError(f"--image-size must be a positive multiple of 32, got {args.image_size}",
                        fix="e.g. 256 or 416")  # fmt: skip
    if args.num_images is not None and positive_int(args.num_images, "--num-images") < 4:
        raise UserError(f"--num-images must be >= 4, got {args.num_images}", fix="e.g. 200")
    for flag in ("mosaic", "hflip"):
        if not 0 <= getattr(args, flag) <= 1:
            raise UserError(
                f"--{flag} must be in [0, 1], got {getattr(args, flag)}", fix="e.g. 0.5"
            )
    if args.cls_weight < 0:
        raise UserError(f"--cls-weight must be >= 0, got {args.cls_weight}", fix="e.g. 1 or 4")
    if args.pretrain_epochs < 1:
        raise UserError(f"--pretrain-epochs must be >= 1, got {args.pretrain_epochs}", fix="e.g. 6")
    if args.warmup_iters < 0:
        raise UserError(f"--warmup-iters must be >= 0, got {args.warmup_iters}", fix="e.g. 50")
    if args.time_budget != 0:
        positive_float(args.time_budget, "--time-budget")
    if args.threads is not None:
        torch.set_num_threads(positive_int(args.threads, "--threads"))
    return args


def load_start_weights(model: Darknet, path: Path) -> None:
    """``--weights``: a partial darknet file ``<name>.conv.N`` (the first N layers, strict about
    the size they imply), a darknet .weights file of the adapted cfg, or a checkpoint of this
    script."""
    layers = partial_layers(path)
    if layers is not None or path.suffix == ".weights":
        load_weights(model, path, layers=layers)
        return
    state = model_state(load_checkpoint(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(
            f"checkpoint does not fit this model ({len(missing)} missing, {len(unexpected)} "
            "unexpected tensors)", path=path,
            fix="train with the same --cfg and dataset classes, or start without --weights",
        )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train; returns the engine's result plus ``eval`` (last epoch), ``parameters``,
    ``train_time_s``, the darknet files written and their round-trip difference."""
    args = validate_args(get_args_parser().parse_args(argv))
    device = select_device(args.device)
    num_images = args.num_images or (16 if args.dry_run else None)
    splits = load_splits(args.data_path, num_images=num_images, seed=args.seed)
    start_weights, pretraining = start_weights_of(args, splits)
    seed_everything(args.seed)  # after the pretraining: the same detector run, cached or not
    anchors = (
        dataset_anchors(splits.train, args.cfg, args.image_size, args.seed)
        if args.anchors == "kmeans"
        else None
    )
    model, cfg_text = build_custom_model(
        args.cfg, len(splits.classes), anchors=anchors, image_size=args.image_size,
        scale_xy=2.0 if args.assign == "yolov5" else 1.0,
    )  # fmt: skip
    if start_weights is not None:
        load_start_weights(model, start_weights)
    augment = YoloAugment(
        mosaic=args.mosaic, hflip=args.hflip, hsv=tuple(args.hsv), scale=(0.75, 1.25)
    )
    loss_config = LossConfig(
        box_loss=args.box_loss, assign_threshold=args.assign_threshold, cls=args.cls_weight,
        assign=args.assign, obj_target=args.obj_target,
    )  # fmt: skip
    kwargs = train_kwargs(args)
    config = {
        **kwargs.pop("config"),
        "cfg_text": cfg_text,
        "classes": splits.classes,
        "anchors": model.anchors,
        "num_classes": len(splits.classes),
        "start_weights": None if start_weights is None else str(start_weights),
    }
    log(
        f"{args.cfg} for {len(splits.classes)} classes {splits.classes}: "
        f"{count_parameters(model) / 1e6:.2f} M parameters, input {args.image_size}, anchors "
        f"{[tuple(round(v) for v in a) for s in model.anchors for a in s]}; data {splits.source}: "
        f"{len(splits.train)} train / {len(splits.val)} val images; device {device}"
    )
    start = time.perf_counter()
    result = fit(
        model,
        splits,
        image_size=args.image_size,
        batch_size=args.batch_size,
        lr=args.lr,
        device=device,
        seed=args.seed,
        workers=args.workers,
        augment=augment,
        loss_config=loss_config,
        optimizer_name=args.optimizer,
        warmup_iters=args.warmup_iters,
        time_budget_s=None if args.time_budget == 0 or args.dry_run else args.time_budget * 60,
        config=config,
        **kwargs,
    )
    result["train_time_s"] = time.perf_counter() - start
    result["pretrain_s"] = float(pretraining.get("seconds", 0.0))
    result["backbone_pretraining"] = pretraining
    result["start_weights"] = config["start_weights"]
    result["eval"] = dict(result["history"][-1].get("eval", {})) if result["history"] else {}
    result["parameters"] = count_parameters(model)
    output_dir = Path(result["output_dir"])
    cfg_path, weights_path = save_darknet(model.cpu(), cfg_text, output_dir, f"{args.cfg}-custom")
    result["darknet_files"] = [str(cfg_path), str(weights_path)]
    result["weights_roundtrip_max_diff"] = roundtrip_difference(model, cfg_text, weights_path)
    log(
        f"done in {result['train_time_s']:.0f} s (+ {result['pretrain_s']:.0f} s of backbone "
        f"pretraining, not counted): mAP@0.5 {result['eval'].get('mAP50', 0):.3f}, "
        f"mAP {result['eval'].get('mAP', 0):.3f}; darknet files {cfg_path.name}, "
        f"{weights_path.name} in {output_dir}"
    )
    return result


def start_weights_of(args: argparse.Namespace, splits: Any) -> tuple[Path | None, dict[str, Any]]:
    """The file the model starts from: ``--weights``, else the cached (or now pretrained)
    ``<cfg>.conv.N`` of ``--backbone-pretraining shape_crops``, else None (random weights);
    with the pretraining's info (``seconds``, ``crop_accuracy``, ``cached``; ``{}`` if none)."""
    if args.weights is not None:
        return args.weights, {}
    if args.backbone_pretraining == "none":
        return None, {}
    config = PretrainConfig(cfg=args.cfg, layers=PARTIAL_LAYERS[args.cfg],
                            epochs=args.pretrain_epochs, seed=args.seed)  # fmt: skip
    if args.dry_run or settings.smoke_mode():  # a few steps on a few scenes: checks the path
        config = replace(config, num_images=16, epochs=1, max_steps=2)
    path, info = ensure_partial(
        partial_path(settings.runs_root(), config), config,
        held_out={"detector train": splits.train, "detector val": splits.val}, log=log,
    )  # fmt: skip
    log(f"start: {path} ({'cached' if info['cached'] else 'pretrained now'}; its pretraining took "
        f"{info['seconds']:.0f} s, held-out crop accuracy {info['crop_accuracy']:.3f})")  # fmt: skip
    return path, {**info, "path": str(path)}


def roundtrip_difference(model: Darknet, cfg_text: str, weights_path: Path) -> float:
    """Max abs difference of the raw outputs of ``model`` and of a fresh model read back from
    ``weights_path`` (0.0 when the writer and the reader agree)."""
    fresh = Darknet(parse_cfg_text(cfg_text, str(weights_path)))
    load_weights(fresh, weights_path)
    images = torch.rand(
        1, 3, model.spec.height, model.spec.width, generator=torch.Generator().manual_seed(0)
    )
    model.eval()
    fresh.eval()
    with torch.no_grad():
        return max(float((a - b).abs().max()) for a, b in zip(model(images), fresh(images)))


if __name__ == "__main__":
    sys.exit(run_cli(main))
