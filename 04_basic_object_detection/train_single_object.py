"""Train the seed's single-object detector (frozen backbone, box head + class head).

    python 04_basic_object_detection/train_single_object.py                 # small backbone, cached
    python 04_basic_object_detection/train_single_object.py --no-cached-features   # the seed's loop
    python 04_basic_object_detection/train_single_object.py --backbone resnet50    # ImageNet ResNet-50
    python 04_basic_object_detection/train_single_object.py --data-path DIR        # any CSV layout
    python 04_basic_object_detection/train_single_object.py --dry-run              # one batch

Data: the built-in ``single_object`` set (airplane / face / motorcycle in PyImageSearch's CSV layout,
``images/<class>/*.jpg`` + ``annotations/<class>.csv``), or the real Caltech-101 subset in the same
layout with ``--data-path``. Images are read lazily, one file per item.

The backbone is frozen, so by default its features are computed once and the heads train on that
cache (``--cached-features``); ``--no-cached-features`` runs the backbone on every image in every epoch
as the seed did. Both give the same numbers (same seed, same batches, same dropout draws);
``seconds_per_epoch`` says what the cache saves. Every run prints ``trainable parameters: N``.

``--backbone small`` is pretrained here on a built-in task (``--pretrain-task``: classify and
locate 1,200 other built-in single-object images (the default), classify them only, or classify
shape crops of the ``shapes`` data; cached in ``<runs>/04_basic_object_detection/``); its box head
reads the 8 x 8 map before the last pooling (``--box-map``), and the cache holds the training
images plus fixed mirrored (``--mirror-train``) and cropped (``--crop-copies``) copies.
``--backbone resnet50`` uses the ImageNet weights (downloaded once, hash-checked; offline, one
line says where to put the file) and exactly the seed's heads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from single_object_detector import (
    BACKBONES,
    LossWeights,
    SingleObjectImages,
    SmallBackbone,
    TwoHeadDetector,
    build_resnet50,
    compute_features,
    count_trainable,
    evaluate_heads,
    make_step,
)
from single_object_pretraining import PRETRAIN_TASKS, pretrain_small_backbone, small_backbone_path

from detseg import engine, settings
from detseg.cli.common import HelpFormatter, add_standard_args, train_kwargs, validate_standard_args
from detseg.data import recipes
from detseg.data.formats import csvboxes
from detseg.data.torch_datasets import split_indices
from detseg.devices import seed_everything, select_device
from detseg.engine.checkpoint import load_checkpoint, save_checkpoint
from detseg.errors import UserError, run_cli

EXAMPLE = "04_basic_object_detection"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train a single-object detector (frozen backbone + box and class heads)",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--backbone", choices=list(BACKBONES), default="small")
    parser.add_argument(
        "--pretrained",
        choices=("imagenet", "none"),
        default="imagenet",
        help="resnet50 only: ImageNet weights (download once) or random (tests, timing)",
    )
    parser.add_argument(
        "--cached-features",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compute the frozen backbone's features once and train the heads on them; "
        "--no-cached-features runs the backbone every epoch (the seed's loop)",
    )
    parser.add_argument(
        "--num-images", type=int, default=None, help="built-in images (default: 600; 16 smoke)"
    )
    parser.add_argument("--val-fraction", type=float, default=0.2, help="held-out share")
    parser.add_argument(
        "--pretrain-epochs", type=int, default=10, help="small backbone: epochs of pretraining"
    )
    parser.add_argument(
        "--pretrain-task",
        choices=list(PRETRAIN_TASKS),
        default="other_images_boxes",
        help="small backbone: the built-in task it is pretrained on: "
        + "; ".join(f"{k}: {v}" for k, v in PRETRAIN_TASKS.items()),
    )
    parser.add_argument(
        "--pretrain-images",
        type=int,
        default=1200,
        help="small backbone, other_images tasks: images of data seed 1 it is pretrained on "
        "(4 / 5 of them trained on, 1 / 5 held out)",
    )
    parser.add_argument(
        "--feature-grid",
        type=int,
        choices=(4, 8),
        default=4,
        help="small backbone: cells of the flattened feature map (4: 4 x 4 x 128 = 2048 features "
        "after the last pooling; 8: 8 x 8 x 128 = 8192, stride 16); with --box-map, the class "
        "head's (4 only)",
    )
    parser.add_argument(
        "--box-map",
        type=int,
        choices=(0, 8, 16),
        default=None,
        help="small backbone: the box head reads the 8 x 8 map before the last pooling or the "
        "16 x 16 before the fourth, through a --box-kernel convolution to --box-channels, "
        "flattened (default 8); 0: the seed's box head on the --feature-grid features "
        "(always 0 with resnet50: the seed's heads)",
    )
    parser.add_argument(
        "--box-channels",
        type=int,
        default=32,
        help="with --box-map: channels of the box head's convolution (0: none, flatten the map)",
    )
    parser.add_argument(
        "--box-kernel", type=int, choices=(1, 3), default=3, help="with --box-map: its kernel"
    )
    parser.add_argument(
        "--lr-schedule",
        choices=("constant", "cosine"),
        default="cosine",
        help="the heads' learning rate: constant (the seed's), or a cosine from --lr to 0 over "
        "--epochs",
    )
    parser.add_argument(
        "--box-loss",
        choices=("mse", "mse+giou", "l1+giou"),
        default="l1+giou",
        help="mse: the seed's MSE on the normalised corners; mse+giou adds 1 - GIoU; l1+giou: L1 "
        "instead of MSE (EXPERIMENTS.md)",
    )
    parser.add_argument(
        "--mirror-train",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add every training image mirrored left-right (box mirrored): twice the items, "
        "cached like the others",
    )
    parser.add_argument(
        "--crop-copies",
        type=int,
        default=2,
        help="add this many copies of every training image cropped at random around its box "
        "(each window drawn once, box in the crop's coordinates; mirrored too with "
        "--mirror-train), cached like the others",
    )
    parser.add_argument("--dropout", type=float, default=0.5, help="class head dropout")
    add_standard_args(
        parser,
        example=EXAMPLE,
        epochs=40,
        batch_size=32,
        lr=1e-3,
        workers=0,
        output_dir=settings.runs_root() / EXAMPLE / "single-object",
    )
    return parser


def validate_args(args: argparse.Namespace) -> argparse.Namespace:
    validate_standard_args(args)
    if not 0 < args.val_fraction < 1:
        raise UserError(
            f"--val-fraction must be in (0, 1), got {args.val_fraction}", fix="e.g. 0.2"
        )
    if args.num_images is not None and args.num_images < 4:
        raise UserError(f"--num-images must be >= 4, got {args.num_images}", fix="e.g. 600")
    if args.pretrain_epochs < 1:
        raise UserError(f"--pretrain-epochs must be >= 1, got {args.pretrain_epochs}", fix="e.g. 4")
    if not 0 <= args.dropout < 1:
        raise UserError(f"--dropout must be in [0, 1), got {args.dropout}", fix="e.g. 0.5")
    if args.pretrained == "none" and args.backbone != "resnet50":
        raise UserError("--pretrained applies to --backbone resnet50 only", fix="drop it")
    if args.backbone == "resnet50" and args.box_map:
        raise UserError(
            "--box-map applies to --backbone small only (resnet50 keeps the seed's heads)",
            fix="drop it",
        )
    if args.box_map is None:
        args.box_map = 8 if args.backbone == "small" and args.feature_grid == 4 else 0
    if args.box_map and args.feature_grid != 4:
        raise UserError(
            "--feature-grid 8 needs --box-map 0 (with a box map the class head reads the 4 x 4 grid)",
            fix="add --box-map 0 or drop --feature-grid",
        )
    if args.resume and args.lr_schedule == "cosine" and not args.dry_run:
        path = Path(args.output_dir) / "last.pt" if args.resume is True else Path(args.resume)
        started = (load_checkpoint(path).get("config") or {}).get("epochs")
        if started is not None and started != args.epochs:
            raise UserError(
                f"--epochs {args.epochs}: this run's cosine learning rate ends at epoch {started}",
                path=path,
                fix=f"resume with --epochs {started}, or train with --lr-schedule constant",
            )
    if args.crop_copies < 0:
        raise UserError(f"--crop-copies must be >= 0, got {args.crop_copies}", fix="e.g. 2")
    if args.box_channels < 0:
        raise UserError(f"--box-channels must be >= 0, got {args.box_channels}", fix="e.g. 32")
    if args.pretrain_images is not None and args.pretrain_images < 10:
        raise UserError(
            f"--pretrain-images must be >= 10, got {args.pretrain_images}", fix="e.g. 600"
        )
    return args


def load_dataset(args: argparse.Namespace) -> Any:
    """The built-in single_object set, or a CSV-layout folder given with --data-path."""
    if args.data_path is not None:
        dataset = csvboxes.read(args.data_path)
    else:
        num_images = args.num_images
        if num_images is None and args.dry_run:
            num_images = 8
        dataset = recipes.load("single_object", num_images=num_images)
    if len(dataset) < 4:
        raise UserError(
            f"the dataset has {len(dataset)} images; need 4 or more to split",
            path=dataset.root,
            fix="add images to the CSV files",
        )
    empty = [r.file_name for r in dataset.records if len(r.labels) == 0]
    if empty:
        raise UserError(
            f"{len(empty)} images without a box (first: {empty[0]})",
            path=dataset.root,
            fix="every image of a single-object set needs one box",
        )
    return dataset


def small_backbone(args: argparse.Namespace, log: Any) -> tuple[SmallBackbone, dict[str, Any]]:
    """The pretrained small backbone: loaded from its cache file, else pretrained and saved there."""
    quick = args.dry_run or settings.smoke_mode()
    images = None if quick or args.pretrain_task == "shape_crops" else args.pretrain_images
    path = small_backbone_path(
        settings.runs_root(), args.pretrain_task, args.seed, args.pretrain_epochs, quick,
        num_images=images,
    )  # fmt: skip
    classes = 5 if args.pretrain_task == "shape_crops" else 3
    backbone = SmallBackbone(num_pretrain_classes=classes)
    if path.is_file():
        checkpoint = load_checkpoint(path)
        backbone.load_state_dict(checkpoint["model"])
        backbone.set_output(grid=args.feature_grid, box_map=args.box_map)
        return backbone.eval(), {**checkpoint["pretrain"], "cached": str(path)}
    backbone, stats = pretrain_small_backbone(
        task=args.pretrain_task,
        seed=args.seed,
        num_images=16 if quick else images,
        epochs=1 if quick else args.pretrain_epochs,
        max_steps=2 if quick else None,
        log=log,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": backbone.state_dict(), "pretrain": stats}, path)
    backbone.set_output(grid=args.feature_grid, box_map=args.box_map)
    located = f", box IoU {stats['box_iou']:.3f}" if "box_iou" in stats else ""
    log(
        f"small backbone: held-out accuracy {stats['crop_accuracy']:.3f}{located} on "
        f"{args.pretrain_task} after {stats['seconds']:.0f} s; saved to {path}"
    )
    return backbone, {**stats, "cached": None}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train; returns the engine's result plus ``trainable_parameters``, ``seconds_per_epoch``,
    ``mean_iou``, ``class_accuracy`` (held-out images, last epoch), ``feature_seconds`` (the one
    pass of the backbone that fills the cache; 0 without the cache) and ``backbone_pretrain``."""
    args = validate_args(get_args_parser().parse_args(argv))

    def log(text: str) -> None:
        print(text, file=sys.stderr)

    seed_everything(args.seed)
    device = select_device(args.device)
    dataset = load_dataset(args)
    train_idx, val_idx = split_indices(len(dataset), val_fraction=args.val_fraction, seed=args.seed)
    if args.backbone == "small":
        backbone, pretrain = small_backbone(args, log)
    else:
        backbone, pretrain = build_resnet50(args.pretrained), {"weights": args.pretrained}
    seed_everything(args.seed)  # the heads start the same whether the backbone was just pretrained
    model = TwoHeadDetector(
        backbone,
        dataset.num_classes,
        dropout=args.dropout,
        box_channels=args.box_channels,
        box_kernel=args.box_kernel,
    ).to(device)
    trainable = count_trainable(model)
    print(f"trainable parameters: {trainable}", flush=True)

    # the training images, then their fixed augmented copies (--crop-copies, --mirror-train)
    crops = [None] + [1000 * args.seed + k for k in range(1, args.crop_copies + 1)]
    copies = [
        SingleObjectImages(dataset, train_idx, args.backbone, mirrored=mirrored, crop_seed=crop)
        for crop in crops
        for mirrored in ((False, True) if args.mirror_train else (False,))
    ]
    train_images: Any = copies[0] if len(copies) == 1 else torch.utils.data.ConcatDataset(copies)
    val_images = SingleObjectImages(dataset, val_idx, args.backbone)
    feature_seconds = 0.0
    if args.cached_features:
        start = time.perf_counter()
        train_items = compute_features(model.backbone, train_images, args.batch_size)
        val_items = compute_features(model.backbone, val_images, args.batch_size)
        feature_seconds = time.perf_counter() - start
        log(f"backbone features of {len(dataset)} images computed once in {feature_seconds:.1f} s")
    else:
        train_items, val_items = train_images, val_images
    val_loader = torch.utils.data.DataLoader(val_items, batch_size=args.batch_size)

    def evaluate(model: TwoHeadDetector, epoch: int) -> dict[str, float]:
        return evaluate_heads(model, val_loader, args.cached_features, device)

    trainable_params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable_params, lr=args.lr)
    loader = engine.make_loader(train_items, args.batch_size, True, args.seed, args.workers)
    epochs = 1 if args.dry_run else args.epochs
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        if args.lr_schedule == "cosine"
        else None
    )
    kwargs = train_kwargs(args)
    kwargs["config"] = {
        **vars(args),
        "classes": list(dataset.classes),
        "num_classes": dataset.num_classes,
        "image_size": BACKBONES[args.backbone]["image_size"],
        "data_source": str(dataset.root),
    }
    seed_everything(args.seed)  # the same dropout draws with and without the cache
    result = engine.train(
        model,
        loader,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        device=device,
        step_fn=make_step(
            args.cached_features,
            LossWeights(giou=0.0 if args.box_loss == "mse" else 1.0, l1=args.box_loss == "l1+giou"),
        ),
        evaluate_fn=evaluate,
        best_metric="mean_iou",
        **kwargs,
    )
    history = result["history"]
    final = history[-1]["eval"] if history else {}
    result.update(
        {
            "trainable_parameters": trainable,
            "seconds_per_epoch": statistics.median(e["time"]["epoch_s"] for e in history),
            "mean_iou": final.get("mean_iou"),
            "class_accuracy": final.get("class_accuracy"),
            "feature_seconds": feature_seconds,
            "cached_features": args.cached_features,
            "backbone": args.backbone,
            "backbone_pretrain": pretrain,
            "train_images": len(train_idx),
            "val_images": len(val_idx),
        }
    )
    log(
        f"done: mean IoU {result['mean_iou']:.3f}, class accuracy {result['class_accuracy']:.3f} "
        f"on {len(val_idx)} held-out images; {result['seconds_per_epoch']:.3f} s per epoch "
        f"({'cached features' if args.cached_features else 'backbone every epoch'})"
    )
    return result


def load_model(path: str | Path) -> tuple[TwoHeadDetector, dict[str, Any]]:
    """Rebuild the model of a checkpoint written by :func:`main` (no download needed)."""
    checkpoint = load_checkpoint(path)
    config = checkpoint.get("config") or {}
    if "backbone" not in config or "num_classes" not in config:
        raise UserError(
            "not a checkpoint of train_single_object.py (no backbone / num_classes in its config)",
            path=path,
            fix="pass the best.pt or last.pt of a train_single_object.py run",
        )
    if config["backbone"] == "small":
        pretrain_classes = 5 if config.get("pretrain_task", "shape_crops") == "shape_crops" else 3
        backbone = SmallBackbone(
            num_pretrain_classes=pretrain_classes,
            grid=int(config.get("feature_grid", 4)),
            box_map=int(config.get("box_map") or 0),
        )
    else:
        backbone = build_resnet50("none")
    model = TwoHeadDetector(
        backbone,
        int(config["num_classes"]),
        dropout=config.get("dropout", 0.5),
        box_channels=int(config.get("box_channels", 32)),
        box_kernel=int(config.get("box_kernel", 1)),
    )
    model.load_state_dict(checkpoint["model"])
    return model.eval(), config


if __name__ == "__main__":
    sys.exit(run_cli(main))
