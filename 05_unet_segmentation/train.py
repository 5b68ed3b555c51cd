"""Train a segmentation model of this folder on built-in (or real) data.

    python train.py --model unet --dataset salt                    # lesson 1: U-Net on TGS-layout salt
    python train.py --model fcn8s --dataset road                   # lesson 2: FCN-8s on KITTI-layout road
    python train.py --model pspnet --dataset street                # lesson 3: PSPNet on Cityscapes pairs
    python train.py --model lraspp_mobilenet_v3_large --dataset street   # lesson 4: torchvision models
    python train.py ... --dry-run                                  # one batch end to end

Without ``--data-path`` the built-in dataset of ``--dataset`` is generated on first use under
``data/``; with it, the real dataset in its own layout is read by the same reader. Checkpoints,
``metrics.json`` and curves go to ``--output-dir`` (default ``runs/05_unet_segmentation/<model>-<dataset>``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
from seg_training import evaluate, get_task, make_datasets, make_step, output_channels
from segmentation_models import MODELS, WEIGHTS_CHOICES, build_model, count_parameters

from detseg import engine, settings
from detseg.cli.common import add_standard_args, train_kwargs, validate_standard_args
from detseg.devices import seed_everything, select_device
from detseg.engine.checkpoint import load_checkpoint, model_state
from detseg.engine.distributed import make_loader
from detseg.errors import UserError, run_cli

EXAMPLE = "05_unet_segmentation"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train U-Net / FCN-8s / PSPNet / torchvision segmentation models",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default="unet", choices=list(MODELS), help="model name")
    parser.add_argument(
        "--dataset", default="salt", choices=["salt", "road", "street"], help="task / built-in data"
    )
    parser.add_argument(
        "--width", type=float, default=None, help="channel multiplier (model default if unset)"
    )
    parser.add_argument(
        "--pretrained",
        default="none",
        choices=list(WEIGHTS_CHOICES),
        help="start from ImageNet / COCO weights (downloaded and hash-checked; needs internet once)",
    )
    parser.add_argument("--num-images", type=int, default=None, help="size of the built-in dataset")
    parser.add_argument(
        "--val-fraction", type=float, default=0.2, help="held out when the layout has no val split"
    )
    parser.add_argument(
        "--threshold", type=float, default=0.5, help="probability threshold (binary tasks)"
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="stop after the epoch that passes this many minutes",
    )
    add_standard_args(parser, example=EXAMPLE, epochs=20, batch_size=8, lr=1e-3, workers=0)
    parser.set_defaults(output_dir=None)
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = get_args_parser().parse_args(argv)
    if args.output_dir is None:
        args.output_dir = settings.runs_root() / EXAMPLE / f"{args.model}-{args.dataset}"
    validate_standard_args(args)
    if not 0 < args.val_fraction < 1:
        raise UserError(
            f"--val-fraction must be in (0, 1), got {args.val_fraction}", fix="e.g. 0.2"
        )
    task = get_task(args.dataset)
    seed_everything(args.seed)
    device = select_device(args.device)
    if settings.smoke_mode() and args.num_images is None:
        args.num_images = 16
    train_set, val_set, source = make_datasets(
        task,
        data_path=args.data_path,
        num_images=args.num_images,
        seed=args.seed,
        val_fraction=args.val_fraction,
    )
    num_outputs = output_channels(task, source)
    width_kwargs = {} if args.width is None else {"width": args.width}
    model = build_model(
        args.model, num_classes=num_outputs, weights=args.pretrained, **width_kwargs
    )
    if args.weights is not None:
        model.load_state_dict(model_state(load_checkpoint(args.weights)))
    train_loader = make_loader(
        train_set,
        args.batch_size,
        True,
        args.seed,
        args.workers,
        drop_last=len(train_set) > args.batch_size,
    )
    val_loader = make_loader(val_set, args.batch_size, False, args.seed, args.workers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    epochs = 1 if args.dry_run else args.epochs
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    started = time.perf_counter()

    def evaluate_fn(model: torch.nn.Module, epoch: int) -> dict[str, float]:
        metrics = evaluate(
            model,
            val_loader,
            device,
            class_names=source.classes,
            binary=task.binary,
            threshold=args.threshold,
        )
        metrics["minutes"] = (time.perf_counter() - started) / 60
        return metrics

    config = {
        **vars(args),
        "num_outputs": num_outputs,
        "classes": source.classes,
        "parameters": count_parameters(model),
        "binary": task.binary,
    }
    kwargs = {**train_kwargs(args), "config": config}
    result = engine.train(
        model,
        train_loader,
        optimizer=optimizer,
        device=device,
        lr_scheduler=scheduler,
        step_fn=make_step(task.binary),
        evaluate_fn=evaluate_fn,
        best_metric=task.main_metric,
        **kwargs,
    )
    result["parameters"] = config["parameters"]
    result["main_metric"] = task.main_metric
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
