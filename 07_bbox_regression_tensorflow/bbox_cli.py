"""The command line shared by ``train_bbox.py`` (07a, one class) and ``train_multiclass.py`` (07b).

Both scripts are this module with other defaults (:data:`DEFAULTS`): the flags, the checks that turn
bad values into one-line errors, and the run itself (:func:`bbox_fit.fit_regressor`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bbox_data
import bbox_fit
import bbox_models
import bbox_training

from detseg import settings
from detseg.cli.common import (
    HelpFormatter,
    add_standard_args,
    existing_path,
    non_negative_int,
    positive_float,
    positive_int,
    validate_standard_args,
)
from detseg.errors import UserError

EXAMPLE = bbox_training.EXAMPLE
# the measured configurations of the README (small backbone, 2 CPU cores)
DEFAULTS: dict[str, dict[str, Any]] = {
    "single": {"classes": ["airplane"], "epochs": 40, "batch_size": 64, "lr": 1e-3, "run": "bbox"},
    "multi": {"classes": None, "epochs": 40, "batch_size": 64, "lr": 1e-3, "run": "multiclass"},
}  # fmt: skip
PRETRAIN = bbox_training.PRETRAIN_DEFAULTS
BOX_LOSS = "l1+giou"
LR_SCHEDULE = "cosine"


def get_args_parser(task: str) -> argparse.ArgumentParser:
    """The parser of ``train_bbox.py`` (``task="single"``) or ``train_multiclass.py`` (``"multi"``)."""
    defaults = DEFAULTS[task]
    single = task == "single"
    parser = argparse.ArgumentParser(
        description=(
            "07a: regress the box of the one object in each image (Keras, frozen backbone)"
            if single
            else "07b: regress the box and classify the object (two heads, weighted losses)"
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--backbone",
        default="auto",
        choices=["auto", *bbox_models.IMAGE_SIZE],
        help="vgg16: ImageNet weights (downloaded once, ~59 MB); small: pretrained here on the "
        "built-in classification task, no download; auto: vgg16 if its weights are cached or "
        "can be downloaded, else small",
    )
    parser.add_argument(
        "--classes",
        nargs="+",
        default=defaults["classes"],
        help="classes to use (default: "
        + ("airplane" if single else "every class of the dataset")
        + ")",
    )
    parser.add_argument(
        "--num-images", type=int, default=None, help="size of the built-in dataset (default 2400)"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.1, help="per class, for early stopping"
    )
    parser.add_argument("--test-fraction", type=float, default=0.2, help="per class, held out")
    parser.add_argument("--patience", type=int, default=15, help="early-stopping patience (epochs)")
    if not single:
        parser.add_argument("--bbox-weight", type=float, default=1.0, help="weight of the box loss")
        parser.add_argument(
            "--class-weight", type=float, default=1.0, help="weight of the class loss"
        )
    parser.add_argument(
        "--cached-features",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the frozen backbone once and train the heads on its cached features; "
        "--no-cached-features runs it on every image in every epoch (the seed's loop)",
    )
    parser.add_argument(
        "--box-loss",
        default=BOX_LOSS,
        choices=list(bbox_models.BOX_LOSSES),
        help="mse: the seed's; l1+giou: mean absolute error + (1 - generalised IoU)",
    )
    parser.add_argument(
        "--lr-schedule",
        default=LR_SCHEDULE,
        choices=["constant", "cosine"],
        help="the heads' learning rate: constant, or a cosine from --lr to 0 over --epochs",
    )
    parser.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also train on every training image mirrored left-right, its box with it; needs "
        "--cached-features (the mirrored features are cached too) (default: on with "
        "--cached-features, off without)",
    )
    parser.add_argument(
        "--pretrain-epochs", type=int, default=PRETRAIN["epochs"], help="small backbone only"
    )
    parser.add_argument(
        "--pretrain-lr", type=float, default=PRETRAIN["lr"], help="small backbone only"
    )
    parser.add_argument(
        "--pretrain-batch-size",
        type=int,
        default=PRETRAIN["batch_size"],
        help="small backbone only (the quick path's few images take 16, for more steps)",
    )
    parser.add_argument(
        "--pretrain-images",
        type=int,
        default=None,
        help="small backbone only: other built-in images (data seed 1) it learns to classify and "
        "locate, 80 %% trained on (default 1200; 16 in smoke mode)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="TensorFlow CPU threads (default: its choice)"
    )
    add_standard_args(
        parser,
        example=EXAMPLE,
        epochs=defaults["epochs"],
        batch_size=defaults["batch_size"],
        lr=defaults["lr"],
        workers=0,
    )
    parser.set_defaults(output_dir=None)
    return parser


def resolve_backbone(name: str) -> str:
    """``auto`` -> ``vgg16`` when its ImageNet weights are cached or downloadable, else ``small``."""
    if name != "auto":
        return name
    try:
        bbox_models.vgg16_weights_path()
    except UserError as err:
        print(f"note: {err.what}; using --backbone small")
        return "small"
    return "vgg16"


def check_args(args: argparse.Namespace, task: str) -> argparse.Namespace:
    """Validate the flags (one-line UserError) and fill ``output_dir`` and ``resume``."""
    resume = args.resume
    args.resume = False  # the core check looks for last.pt; this folder writes last.keras
    validate_standard_args(args)
    args.resume = resume
    for fraction in ("val_fraction", "test_fraction"):
        value = getattr(args, fraction)
        if not 0 < value < 1:
            flag = "--" + fraction.replace("_", "-")
            raise UserError(f"{flag} must be in (0, 1), got {value}", fix=f"e.g. {flag} 0.2")
    if args.val_fraction + args.test_fraction >= 0.9:
        raise UserError(
            "--val-fraction + --test-fraction leave under 10% to train", fix="e.g. 0.1 and 0.2"
        )
    non_negative_int(args.patience, "--patience")
    positive_int(args.pretrain_epochs, "--pretrain-epochs")
    positive_float(args.pretrain_lr, "--pretrain-lr")
    positive_int(args.pretrain_batch_size, "--pretrain-batch-size")
    if args.pretrain_images is not None and args.pretrain_images < 5:
        raise UserError(
            f"--pretrain-images must be >= 5, got {args.pretrain_images}", fix="e.g. 1200"
        )
    if args.num_images is not None:
        positive_int(args.num_images, "--num-images")
    if args.threads is not None:
        positive_int(args.threads, "--threads")
    for flag in ("bbox_weight", "class_weight"):
        if hasattr(args, flag):
            positive_float(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.flip is None:
        args.flip = args.cached_features
    if args.flip and not args.cached_features and not args.resume:
        raise UserError(
            "--flip needs --cached-features (the mirrored images' features are cached)",
            fix="drop --no-cached-features or add --no-flip",
        )
    if args.weights is not None:
        bbox_training.check_keras_file(args.weights, "--weights")
    bbox_training.select_strategy(args.device)  # an unknown device fails here, before any work
    args.backbone = resolve_backbone(args.backbone)
    if args.output_dir is None:
        run = f"{DEFAULTS[task]['run']}-{args.backbone}"
        args.output_dir = settings.runs_root() / EXAMPLE / run
    if args.resume is True:
        args.resume = Path(args.output_dir) / "last.keras"
        if not args.resume.is_file():
            raise UserError(
                "--resume: no last.keras in the output folder",
                path=args.resume,
                fix="pass --resume CHECKPOINT, the --output-dir of the run to continue, or drop --resume",
            )
    elif args.resume:
        args.resume = existing_path(args.resume, "--resume", kind="file")
    if args.resume:
        bbox_training.check_keras_file(args.resume, "--resume")
        state = bbox_training.read_state(args.resume)
        args.cached_features = bool(state["config"].get("cached_features", args.cached_features))
        args.flip = bool(state["config"].get("flip", False))
        # the resumed optimizer comes with its loss and schedule: keep the config truthful
        args.box_loss = state["config"].get("box_loss", "mse")
        args.lr_schedule = state["config"].get("lr_schedule", "constant")
        started = state["config"].get("epochs")
        if args.lr_schedule == "cosine" and started is not None and args.epochs != started:
            raise UserError(
                f"--epochs {args.epochs}: this run's cosine learning rate ends at epoch {started}",
                path=args.resume,
                fix=f"resume with --epochs {started} (or train anew with --lr-schedule constant)",
            )
        if args.cached_features:
            heads = Path(args.resume).with_name("last-heads.keras")
            bbox_training.check_keras_file(heads, "--resume (the heads with their optimizer)")
    return args


def main(task: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train 07a (``task="single"``) or 07b (``"multi"``); returns :func:`fit_regressor`'s result
    plus ``mean_iou`` and ``class_accuracy`` (test split; None for 07a)."""
    args = check_args(get_args_parser(task).parse_args(argv), task)
    bbox_training.set_threads(args.threads or bbox_training.environment_threads())
    with_class = task == "multi"
    dataset = bbox_data.load_source(args.data_path, num_images=args.num_images)
    classes = args.classes or dataset.classes
    splits_all = bbox_data.split_dataset(
        dataset, val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed
    )
    splits = {name: bbox_data.select_classes(part, classes) for name, part in splits_all.items()}
    output_dir = Path(args.output_dir) / "dry-run" if args.dry_run else Path(args.output_dir)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result = bbox_fit.fit_regressor(
        splits=splits,
        backbone_name=args.backbone,
        with_class=with_class,
        epochs=1 if args.dry_run else args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        output_dir=output_dir,
        config=config,
        pretrain={
            "epochs": 1 if args.dry_run else args.pretrain_epochs,
            "batch_size": args.pretrain_batch_size,
            "lr": args.pretrain_lr,
            "cache_dir": settings.runs_root() / EXAMPLE / "pretrained",
            "num_images": args.pretrain_images,
            # never an image that 07a or 07b holds out, whatever --classes says
            "held_out": {"val": splits_all["val"], "test": splits_all["test"]},
        },
        bbox_weight=getattr(args, "bbox_weight", 1.0),
        class_weight=getattr(args, "class_weight", 1.0),
        patience=args.patience,
        cached_features=args.cached_features,
        flip=args.flip,
        box_loss=args.box_loss,
        lr_schedule=args.lr_schedule,
        resume=args.resume or None,
        init_weights=args.weights,
        max_steps=1 if args.dry_run else None,
        tracker=args.tracker,
        device=args.device,
        verbose=1,
    )
    print(f"trainable parameters: {result['trainable_parameters']}")
    print(bbox_fit.describe(result))
    print(f"run folder: {result['output_dir']}")
    result["mean_iou"] = result["test"]["mean_iou"]
    result["class_accuracy"] = result["test"].get("class_accuracy")
    return result
