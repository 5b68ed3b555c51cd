"""Train a segmentation model of this folder on built-in (or real) data.

    python 05_unet_segmentation/train.py --dataset salt      # lesson 1: U-Net, TGS-layout salt
    python 05_unet_segmentation/train.py --dataset road      # lesson 2: FCN-8s, KITTI-layout road
    python 05_unet_segmentation/train.py --dataset street    # lesson 3: U-Net, Cityscapes pairs
    python 05_unet_segmentation/train.py --dataset street --model pspnet_os16      # lesson 3: PSPNet
    python 05_unet_segmentation/train.py --dataset street --model lraspp_mobilenet_v3_large
    python 05_unet_segmentation/train.py ... --dry-run                      # one batch end to end

Run from the repository root (built-in data goes to ``data/``, runs to ``runs/``). Without
``--data-path`` the built-in dataset of ``--dataset`` is generated on first use; with it, the real
dataset in its own layout is read by the same reader. Checkpoints, ``metrics.json`` and curves go to
``--output-dir`` (default ``runs/05_unet_segmentation/<model>-<dataset>``). The defaults are the
configurations measured in the README (CPU, minutes).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import torch
from seg_training import TASKS, fit, get_task, make_datasets, output_channels
from segmentation_models import (
    MODELS,
    WEIGHTS_CHOICES,
    build_model,
    count_parameters,
    load_weights,
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
from detseg.devices import seed_everything, select_device
from detseg.engine.checkpoint import load_checkpoint
from detseg.engine.distributed import dist_info
from detseg.errors import UserError, run_cli

EXAMPLE = "05_unet_segmentation"
# what `--model` / `--width` / `--epochs` ... default to, per dataset: the README's measured runs
DEFAULTS: dict[str, dict[str, Any]] = {
    "salt": {"model": "unet", "width": 0.5, "epochs": 4, "batch_size": 16, "lr": 3e-3, "num_images": 2000},
    "road": {"model": "fcn8s", "width": None, "epochs": 8, "batch_size": 4, "lr": 1e-3, "num_images": None},
    "street": {"model": "unet", "width": None, "epochs": 4, "batch_size": 8, "lr": 2e-3, "num_images": None},
}  # fmt: skip


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train U-Net / FCN-8s / PSPNet / torchvision segmentation models",
        formatter_class=HelpFormatter,
        epilog="defaults per --dataset (flags override them): "
        + "; ".join(
            f"{name}: " + ", ".join(f"{key} {value}" for key, value in defaults.items())
            for name, defaults in DEFAULTS.items()
        ),
    )
    parser.add_argument(
        "--dataset", default="salt", choices=list(TASKS), help="task and its built-in data"
    )
    parser.add_argument(
        "--model", default=None, choices=list(MODELS), help="model (default: per dataset)"
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
    parser.add_argument(
        "--num-images",
        type=int,
        default=None,
        help="use the first N training pairs (default: per dataset)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="resize every pair to H x W (default: salt as stored, road 160 480, street 128 128)",
    )
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
        metavar="MINUTES",
        help="stop before an epoch that would end past this many minutes of training (wall clock)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    add_standard_args(parser, example=EXAMPLE, epochs=0, batch_size=0, lr=0.0, workers=0)
    parser.set_defaults(output_dir=None, epochs=None, batch_size=None, lr=None)
    return parser


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the flags left unset with the dataset's defaults (:data:`DEFAULTS`) and check them."""
    defaults = dict(DEFAULTS[args.dataset])
    if args.model is not None and args.model != defaults["model"]:
        defaults["width"] = None  # the default width belongs to the default model
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.output_dir is None:
        args.output_dir = settings.runs_root() / EXAMPLE / f"{args.model}-{args.dataset}"
    if args.dry_run and args.num_images is None:
        args.num_images = 4 * args.batch_size
    validate_standard_args(args)
    if not 0 < args.val_fraction < 1:
        raise UserError(
            f"--val-fraction must be in (0, 1), got {args.val_fraction}", fix="e.g. 0.2"
        )
    if args.num_images is not None:
        positive_int(args.num_images, "--num-images")
    if args.image_size is not None:
        for side in args.image_size:
            positive_int(side, "--image-size")
        args.image_size = tuple(args.image_size)
    if args.time_budget is not None:
        positive_float(args.time_budget, "--time-budget")
        if dist_info().world_size > 1:
            raise UserError("--time-budget works in one process only", fix="drop it under torchrun")
    if args.threads is not None:
        torch.set_num_threads(positive_int(args.threads, "--threads"))
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train; returns the engine's result plus ``parameters`` and ``main_metric``."""
    args = resolve_defaults(get_args_parser().parse_args(argv))
    task = get_task(args.dataset)
    seed_everything(args.seed)
    device = select_device(args.device)
    train_set, val_set, source = make_datasets(
        task,
        data_path=args.data_path,
        num_images=args.num_images,
        seed=args.seed,
        val_fraction=args.val_fraction,
        image_size=args.image_size,
    )
    num_outputs = output_channels(task, source)
    model = build_model(
        args.model, num_classes=num_outputs, width=args.width, weights=args.pretrained
    )
    if args.weights is not None:
        load_weights(model, load_checkpoint(args.weights), path=args.weights)
    config = {
        **vars(args),
        "num_outputs": num_outputs,
        "classes": source.classes,
        "palette": source.palette,
        "parameters": count_parameters(model),
        "binary": task.binary,
        "image_size": args.image_size or task.image_size,
    }
    kwargs = train_kwargs(args)
    result = fit(
        model,
        train_set,
        val_set,
        task=task,
        classes=source.classes,
        device=device,
        epochs=kwargs.pop("epochs"),
        batch_size=args.batch_size,
        lr=args.lr,
        output_dir=kwargs.pop("output_dir"),
        seed=args.seed,
        workers=args.workers,
        threshold=args.threshold,
        time_budget_min=args.time_budget,
        **{**kwargs, "config": config},
    )
    result["parameters"] = config["parameters"]
    result["main_metric"] = task.main_metric
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
