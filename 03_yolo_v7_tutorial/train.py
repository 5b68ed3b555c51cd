"""Train YOLOv7-tiny or YOLOv7 on a YOLO / Roboflow export (default: the built-in table-top set).

    python 03_yolo_v7_tutorial/train.py                         # YOLOv7-tiny, 320 px, built-in set
    python 03_yolo_v7_tutorial/train.py --data-path my_export/  # any Roboflow "YOLO v7" export
    python 03_yolo_v7_tutorial/train.py --variant base --image-size 640 --device cuda --amp
    python 03_yolo_v7_tutorial/train.py --tracker wandb         # W&B, offline unless logged in
    python 03_yolo_v7_tutorial/train.py --resume                # continue <output-dir>/last.pt
    torchrun --nproc-per-node 2 03_yolo_v7_tutorial/train.py    # DDP (gloo on CPU, nccl on CUDA)
    python 03_yolo_v7_tutorial/train.py --time-budget 10        # fit the schedule into 10 min
    python 03_yolo_v7_tutorial/train.py --variant base --aux-head  # + coarse-to-fine auxiliary head
    python 03_yolo_v7_tutorial/train.py --dry-run               # one batch end to end

Every epoch: mosaic + HSV + flip augmentation, the YOLOv7 assignment and loss (``yolov7_loss.py``),
a linear warm-up then a cosine learning rate, EMA of the weights, COCO mAP@0.5 and mAP@0.5:0.95 of
the EMA on the validation split (``detseg.metrics``), ``last.pt`` and ``best.pt`` (by the authors'
fitness 0.1 mAP@0.5 + 0.9 mAP@0.5:0.95), ``metrics.json`` and training curves.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
from yolov7 import AUX_SOURCES, VARIANTS, build_model, count_parameters
from yolov7_budget import train_fitted
from yolov7_checkpoint import load_start_weights
from yolov7_data import YoloSamples, collate, read_split
from yolov7_loss import LossConfig, YOLOv7Loss
from yolov7_training import (
    cosine_schedule,
    evaluate,
    make_optimizer,
    make_step_fn,
)

from detseg.cli.common import (
    HelpFormatter,
    add_standard_args,
    positive_float,
    positive_int,
    train_kwargs,
    validate_standard_args,
)
from detseg.devices import seed_everything, select_device
from detseg.engine import WithEMA
from detseg.engine.distributed import dist_info, make_loader
from detseg.errors import UserError, run_cli

EXAMPLE = "03_yolo_v7_tutorial"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train YOLOv7-tiny / YOLOv7 on a YOLO data.yaml (Roboflow export)",
        formatter_class=HelpFormatter,
    )
    # defaults: the 10-minute CPU recipe of the README (up to 10 epochs of 420 images, mosaic at
    # 256 px, the last 2 at 320 px without mosaic; --time-budget 10 keeps as many as fit); the
    # authors train 300 epochs with SGD lr 0.01, batch 64 (--optimizer sgd)
    add_standard_args(parser, example=EXAMPLE, epochs=10, batch_size=8, lr=0.004, workers=0)
    parser.add_argument("--variant", choices=list(VARIANTS), default="tiny", help="model size")
    parser.add_argument(
        "--aux-head", action="store_true",
        help="base only: train with an auxiliary head on the coarse, lead-guided labels "
        "(removed on export)",
    )  # fmt: skip
    parser.add_argument(
        "--time-budget", type=float, default=None, metavar="MINUTES",
        help="fit the schedule into this many minutes of training (wall clock): after timing "
        "epoch 1, the cosine lr and --close-mosaic end at the last epoch that fits (at most "
        "--epochs; yolov7_budget.py)",
    )  # fmt: skip
    parser.add_argument(
        "--image-size", type=int, default=320, help="square input side, multiple of 32"
    )
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="adamw")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up length")
    parser.add_argument(
        "--final-lr-fraction", type=float, default=0.01, help="cosine ends at lr x this"
    )
    parser.add_argument("--mosaic", type=float, default=1.0, help="probability of a mosaic sample")
    parser.add_argument(
        "--close-mosaic", type=int, default=2, metavar="N",
        help="no mosaic in the last N epochs (the first epoch always has it): single letterboxed "
        "images at the evaluation's scale (YOLOX); 0: mosaic in every epoch",
    )  # fmt: skip
    parser.add_argument(
        "--mosaic-scale", type=float, default=0.8, metavar="F",
        help="train the mosaic epochs at this fraction of --image-size (rounded to a multiple of "
        "32: 320 -> 256), the --close-mosaic epochs and the evaluation at --image-size "
        "(progressive resizing); 1: one size throughout",
    )  # fmt: skip
    parser.add_argument(
        "--hsv", type=float, nargs=3, default=(0.015, 0.7, 0.4), metavar=("H", "S", "V")
    )
    parser.add_argument("--flip", type=float, default=0.5, help="probability of a horizontal flip")
    parser.add_argument("--ema-decay", type=float, default=0.9999)
    parser.add_argument(
        "--clip-grad", type=float, default=10.0, metavar="NORM",
        help="clip the gradients' global L2 norm to this (a spike then cannot inflate AdamW's "
        "second moments for the rest of a short run)",
    )  # fmt: skip
    parser.add_argument("--num-images", type=int, default=None, help="size of the built-in set")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser


def mosaic_size(image_size: int, scale: float) -> int:
    """Side of the mosaic epochs: ``scale x image_size`` to the nearest multiple of 32 (>= 32)."""
    return max(32, round(image_size * scale / 32) * 32)


def check_args(args: argparse.Namespace) -> argparse.Namespace:
    validate_standard_args(args)
    if args.image_size < 32 or args.image_size % 32:
        raise UserError(
            f"--image-size must be a multiple of 32 (the largest stride), got {args.image_size}",
            fix="e.g. --image-size 320 or 640",
        )
    if not 0 < args.mosaic_scale <= 1:
        raise UserError(
            f"--mosaic-scale must be in (0, 1], got {args.mosaic_scale}", fix="e.g. 0.8 or 1"
        )
    for flag, value in (("--mosaic", args.mosaic), ("--flip", args.flip)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{flag} is a probability, got {value}", fix=f"pass {flag} in [0, 1]")
    if any(not 0 <= g < 1 for g in args.hsv):
        raise UserError(
            f"--hsv gains must be in [0, 1), got {args.hsv}", fix="e.g. --hsv 0.015 0.7 0.4"
        )
    if not 0 < args.ema_decay < 1:
        raise UserError(f"--ema-decay must be in (0, 1), got {args.ema_decay}", fix="e.g. 0.9999")
    if args.warmup_epochs < 0 or not 0 < args.final_lr_fraction <= 1:
        raise UserError(
            "--warmup-epochs must be >= 0 and --final-lr-fraction in (0, 1]", fix="e.g. 1 and 0.01"
        )
    positive_float(args.clip_grad, "--clip-grad")
    if args.close_mosaic < 0:
        raise UserError(f"--close-mosaic must be >= 0, got {args.close_mosaic}", fix="e.g. 2 or 0")
    if args.num_images is not None:
        positive_int(args.num_images, "--num-images")
    if args.aux_head and args.variant not in AUX_SOURCES:
        raise UserError(
            f"--aux-head: --variant {args.variant} has no auxiliary head",
            fix="use --variant base --aux-head, or drop --aux-head",
        )
    if args.time_budget is not None:
        positive_float(args.time_budget, "--time-budget")
        if dist_info().world_size > 1:
            raise UserError("--time-budget works in one process only", fix="drop it under torchrun")
    if args.threads is not None:
        torch.set_num_threads(positive_int(args.threads, "--threads"))
    if args.dry_run and args.num_images is None and args.data_path is None:
        args.num_images = 16
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train; returns the engine's result plus ``parameters``, ``classes``, the final mAPs and
    ``schedule`` (what ``--time-budget`` decided, else None)."""
    args = check_args(get_args_parser().parse_args(argv))
    seed_everything(args.seed)
    device = select_device(args.device)
    train_data = read_split(args.data_path, "train", seed=args.seed, num_images=args.num_images)
    val_data = read_split(args.data_path, "val", seed=args.seed, num_images=args.num_images)
    classes = list(train_data.classes)
    model = build_model(args.variant, len(classes), aux_head=args.aux_head)
    if args.weights is not None:
        load_start_weights(model, args.weights)
    # NHWC activations: oneDNN's convolutions run ~13 % faster on this CPU (README); the weights
    # and checkpoints are the same numbers in another memory order
    model = model.to(memory_format=torch.channels_last)
    trainee = WithEMA(model, decay=args.ema_decay)
    train_set = YoloSamples(
        train_data, args.image_size, augment=True, mosaic=args.mosaic, hsv=tuple(args.hsv),
        flip=args.flip, mosaic_epochs=max(1, args.epochs - args.close_mosaic), seed=args.seed,
        mosaic_size=mosaic_size(args.image_size, args.mosaic_scale),
    )  # fmt: skip
    val_set = YoloSamples(val_data, args.image_size, augment=False)
    loader = make_loader(train_set, args.batch_size, True, args.seed, args.workers, collate)
    val_loader = make_loader(val_set, args.batch_size, False, 0, 0, collate)
    kwargs = train_kwargs(args)
    steps_per_epoch = 1 if args.dry_run else len(loader)
    optimizer = make_optimizer(trainee.model, args.optimizer, args.lr, args.weight_decay)
    trainee.attach(optimizer)
    # the first epoch (the warm-up) at the base lr, then the cosine: epoch 1 is the same for any
    # schedule length, which --time-budget decides after it
    scheduler = cosine_schedule(
        optimizer, kwargs["epochs"] * steps_per_epoch, args.final_lr_fraction, steps_per_epoch
    )

    def apply_schedule(epochs: int) -> None:
        """Shorten (or keep) the schedule to ``epochs``: cosine end and mosaic closing."""
        for factor in scheduler.lr_lambdas:
            factor.total_steps = epochs * steps_per_epoch
        train_set.mosaic_epochs = max(1, epochs - args.close_mosaic)

    loss_fn = YOLOv7Loss(
        model.head.anchors.clone(), (8, 16, 32), len(classes),
        LossConfig.scaled(args.variant, len(classes), args.image_size),
    )  # fmt: skip
    config = {
        **vars(args),
        "classes": classes,
        "num_classes": len(classes),
        "parameters": count_parameters(model),
    }

    def evaluate_fn(trained: torch.nn.Module, epoch: int) -> dict[str, float]:
        metrics, _ = evaluate(trained.ema, val_loader, val_data, device)
        return metrics

    kwargs.update(
        optimizer=optimizer,
        device=device,
        lr_scheduler=scheduler,
        lr_scheduler_interval="step",
        step_fn=make_step_fn(loss_fn),
        evaluate_fn=evaluate_fn,
        warmup_iters=math.ceil(args.warmup_epochs * steps_per_epoch),
        warmup_factor=0.01,
        clip_grad_norm=args.clip_grad,
        best_metric="fitness",
        config=config,
    )
    start = time.perf_counter()
    budget_s = None if args.time_budget is None else args.time_budget * 60
    # a closing epoch at --image-size costs (image / mosaic side)^2 of a first (mosaic) epoch
    closing_cost = (args.image_size / train_set.mosaic_size) ** 2
    result = train_fitted(
        trainee, loader, budget_s=budget_s, close_mosaic=args.close_mosaic,
        apply_schedule=apply_schedule, closing_cost=closing_cost, **kwargs,
    )  # fmt: skip
    final = result["history"][-1]["eval"]
    result.update(
        parameters=config["parameters"], classes=classes, map50=final["map50"], map=final["map"],
        epochs_run=len(result["history"]), train_time_s=time.perf_counter() - start,
    )  # fmt: skip
    print(
        f"done in {result['train_time_s']:.0f} s, {result['epochs_run']} epochs: mAP@0.5 "
        f"{result['map50']:.3f}, mAP@0.5:0.95 {result['map']:.3f}", file=sys.stderr,
    )  # fmt: skip
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
