"""Train SSDlite320-MobileNetV3 or a small RetinaNet from scratch (the seed's to-do: SSD, RetinaNet).

    python 04_basic_object_detection/train_detector.py                         # SSDlite320, shapes
    python 04_basic_object_detection/train_detector.py --model retinanet_small
    python 04_basic_object_detection/train_detector.py --data-path my/data.yaml # YOLO / VOC / COCO
    python 04_basic_object_detection/train_detector.py --time-budget 0         # no 10-min stop
    python 04_basic_object_detection/train_detector.py --resume                # continue exactly
    python 04_basic_object_detection/train_detector.py --dry-run               # one batch

Data: the built-in ``shapes`` in its COCO layout, or any COCO JSON, YOLO ``data.yaml`` or VOC folder
with ``--data-path`` (``detector_data.py``). Every epoch: COCO AP on the validation images with the
core evaluator, ``last.pt`` / ``best.pt`` (by bbox AP50), ``metrics.json``, training curves. The
checkpoint rebuilds the model without flags: ``detect_image.py`` / ``detect_video.py --weights
best.pt`` and ``export_detector.py`` read it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from detection_zoo import (
    TRAINABLE,
    build_trainable,
    count_parameters,
    load_pretrained_trunk,
    recompute_batchnorm,
)
from detector_data import (
    category_ids,
    coco_scores,
    load_splits,
    predict_loader,
    to_coco_results,
    without_masks,
)
from ssdlite_pretraining import ensure_trunk, trunk_path

from detseg import engine, settings
from detseg.cli.common import HelpFormatter, add_standard_args, train_kwargs, validate_standard_args
from detseg.data.torch_datasets import DetectionTorchDataset, detection_collate
from detseg.data.transforms import Compose, HorizontalFlip
from detseg.data.types import DetectionDataset
from detseg.devices import seed_everything, select_device
from detseg.engine.budget import train_within_budget
from detseg.engine.checkpoint import load_checkpoint
from detseg.errors import UserError, run_cli

EXAMPLE = "04_basic_object_detection"
# per model: the defaults the README's runs measured (flags override them)
DEFAULTS: dict[str, dict[str, Any]] = {
    # SSDlite: its trunk pretrained on shape crops of other scenes (~245 s, once, cached: the
    # stand-in for ImageNet weights, outside the 10 minutes as in 02 and 07), then 11 epochs of ~50 s (800 images at 256 px, the scenes' own size, evaluation included) on
    # 2 idle cores; default boxes 0.05-0.6 of the input for shapes of 13-125 px in 256 px scenes
    # (the paper's 0.2-0.95 leave the small ones one poor match each); AdamW 6e-3, EXPERIMENTS.md
    "ssdlite320": {"epochs": 11, "batch_size": 16, "lr": 0.006, "width_mult": 0.5,
                   "anchor_scales": (0.05, 0.6), "optimizer": "adamw", "time_budget": 10.0,
                   "image_size": 256, "backbone_pretraining": "shape_crops"},
    "retinanet_small": {"epochs": 12, "batch_size": 8, "lr": 0.01, "width_mult": None,
                        "optimizer": "sgd", "time_budget": 10.0, "image_size": 256,
                        "backbone_pretraining": "none"},
}  # fmt: skip


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train SSDlite320 or a small RetinaNet on built-in shapes or your data",
        formatter_class=HelpFormatter,
        epilog="defaults per --model: " + "; ".join(f"{k}: {v}" for k, v in DEFAULTS.items()),
    )
    parser.add_argument("--model", choices=list(TRAINABLE), default="ssdlite320")
    parser.add_argument(
        "--width-mult", type=float, default=None, help="ssdlite320 backbone width (1.0 = paper)"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="the fixed square input side (SSDlite's paper: 320; the built-in scenes are 256)",
    )
    parser.add_argument(
        "--backbone-pretraining",
        choices=("none", "shape_crops"),
        default=None,
        help="ssdlite320: start from a MobileNetV3 trunk pretrained to classify shape crops of "
        "other built-in scenes (data seed 1; ssdlite_pretraining.py), cached in the runs folder; "
        "its seconds are reported apart, outside --time-budget (the stand-in for ImageNet weights)",
    )
    parser.add_argument(
        "--pretrain-epochs", type=int, default=16, help="epochs of the trunk's pretraining"
    )
    parser.add_argument("--num-images", type=int, default=None, help="built-in images (1000)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="held out (JSON / VOC)")
    parser.add_argument(
        "--anchor-scales",
        type=float,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="ssdlite320 default-box sides as fractions of the input (paper: 0.2 0.95)",
    )
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default=None)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=4e-5)
    parser.add_argument("--warmup-iters", type=int, default=100)
    parser.add_argument(
        "--precise-bn",
        type=int,
        default=128,
        metavar="IMAGES",
        help="before each evaluation, set the BatchNorm statistics from this many training images "
        "(0: keep the running averages, which lag far behind in a short run from scratch)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="MINUTES",
        help="stop before an epoch that would end past this many minutes of training (the "
        "trunk's pretraining, done once and cached, is not counted; cosine lr still planned over --epochs); default 10 (the "
        "README's bar), 0: no limit",
    )
    add_standard_args(parser, example=EXAMPLE, epochs=0, batch_size=0, lr=0.0, workers=1)
    parser.set_defaults(output_dir=None, epochs=None, batch_size=None, lr=None)
    return parser


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    for key, value in DEFAULTS[args.model].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.output_dir is None:
        args.output_dir = settings.runs_root() / EXAMPLE / args.model
    validate_standard_args(args)
    if not 0 < args.val_fraction < 1:
        raise UserError(
            f"--val-fraction must be in (0, 1), got {args.val_fraction}", fix="e.g. 0.2"
        )
    if args.num_images is not None and args.num_images < 4:
        raise UserError(f"--num-images must be >= 4, got {args.num_images}", fix="e.g. 1000")
    if args.width_mult is not None and not 0.1 <= args.width_mult <= 2:
        raise UserError(f"--width-mult must be in [0.1, 2], got {args.width_mult}", fix="e.g. 0.5")
    if not 64 <= args.image_size <= 1333:
        raise UserError(
            f"--image-size must be in [64, 1333], got {args.image_size}", fix="e.g. 256"
        )
    if (
        args.anchor_scales is not None
        and not 0 < args.anchor_scales[0] < args.anchor_scales[1] <= 1
    ):
        raise UserError(
            f"--anchor-scales must be 0 < MIN < MAX <= 1, got {args.anchor_scales}",
            fix="e.g. 0.05 0.6",
        )
    if args.precise_bn < 0 or args.precise_bn == 1:
        raise UserError(
            f"--precise-bn must be 0 (off) or >= 2 images, got {args.precise_bn}", fix="e.g. 128"
        )
    if args.backbone_pretraining != "none" and args.model != "ssdlite320":
        raise UserError(
            f"--backbone-pretraining {args.backbone_pretraining} is for ssdlite320 only",
            fix="leave it out, or use --backbone-pretraining none",
        )
    if args.pretrain_epochs < 1:
        raise UserError(
            f"--pretrain-epochs must be >= 1, got {args.pretrain_epochs}", fix="e.g. 16"
        )
    if not args.time_budget >= 0:
        raise UserError(f"--time-budget must be >= 0, got {args.time_budget}", fix="e.g. 10")
    return args


def model_options(config: dict[str, Any]) -> dict[str, Any]:
    """Builder keywords from a run's config (what the checkpoint needs to rebuild the model)."""
    if config["model"] == "ssdlite320":
        # runs saved before --anchor-scales / ssd_image_size existed used the paper's (0.2-0.95
        # at 320 px; their image_size was RetinaNet's flag, unused by SSDlite)
        scales = tuple(config.get("anchor_scales") or (0.2, 0.95))
        size = config.get("ssd_image_size", 320)
        return {"width_mult": config["width_mult"], "anchor_scales": scales, "image_size": size}
    return {"image_size": config["image_size"]}


def load_detector(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a model trained by this script from its checkpoint (eval mode) and its config."""
    checkpoint = load_checkpoint(path)
    config = checkpoint.get("config") or {}
    if config.get("model") not in TRAINABLE or "classes" not in config:
        raise UserError(
            "not a checkpoint of train_detector.py (its config names no model / classes)",
            path=path,
            fix="pass the best.pt or last.pt of a train_detector.py run",
        )
    model = build_trainable(config["model"], len(config["classes"]) + 1, **model_options(config))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), config


def train_with_budget(
    model: torch.nn.Module, loader: Any, budget_s: float, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The engine's epochs until the next one would end past ``budget_s`` seconds
    (:func:`detseg.engine.budget.train_within_budget`)."""
    return train_within_budget(model, loader, budget_s=budget_s, **kwargs)


def precise_bn_batches(
    train: DetectionDataset, num_images: int, batch_size: int
) -> Callable[[], Iterator[list[torch.Tensor]]]:
    """Batches of the first ``num_images`` training images, not augmented, read anew on each call
    (:func:`detection_zoo.recompute_batchnorm`); a last batch of one image is dropped (BatchNorm
    cannot take it on SSD's 1 x 1 maps) unless it is the only one."""
    dataset = DetectionTorchDataset(train)
    count = min(num_images, len(dataset))
    groups = [range(s, min(s + batch_size, count)) for s in range(0, count, batch_size)]
    if len(groups) > 1 and len(groups[-1]) == 1:
        groups.pop()
    return lambda: ([dataset[i][0] for i in group] for group in groups)


def pretrained_trunk(args: argparse.Namespace) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The SSDlite trunk of ``--backbone-pretraining`` (cached, or pretrained now) and its info
    (``seconds``: the pretraining's own time, ``cached``); ``(None, {})`` for ``none``."""
    if args.backbone_pretraining == "none":
        return None, {}
    options: dict[str, Any] = {"width_mult": args.width_mult, "epochs": args.pretrain_epochs,
                               "seed": args.seed}  # fmt: skip
    if args.dry_run:  # a few steps on a few scenes: checks the path, teaches nothing
        options.update(num_images=16, epochs=1, max_steps=2)
    path = trunk_path(settings.runs_root(), smoke=args.dry_run, **{k: options[k] for k in
                      ("width_mult", "epochs", "seed")})  # fmt: skip
    state, info, cached = ensure_trunk(path, **options)
    print(f"trunk: {path} ({'cached' if cached else 'pretrained now'}; its pretraining took "
          f"{info['seconds']:.0f} s, held-out crop accuracy {info['crop_accuracy']:.3f})",
          file=sys.stderr)  # fmt: skip
    return state, {**info, "cached": cached, "path": str(path)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train; returns the engine's result plus ``eval`` (last epoch's COCO numbers),
    ``train_time_s`` (the detector's training), ``pretrain_s`` (the trunk's pretraining, 0 without
    it), ``num_parameters``, ``epochs_run``."""
    args = resolve_args(get_args_parser().parse_args(argv))
    device = select_device(args.device)
    num_images = args.num_images or (16 if args.dry_run and args.data_path is None else None)
    train, val, source = load_splits(  # first: a bad --data-path stops before any pretraining
        args.data_path, num_images=num_images, val_fraction=args.val_fraction, seed=args.seed
    )
    trunk, trunk_info = pretrained_trunk(args)
    seed_everything(args.seed)  # after the pretraining, as before: the same detector run
    if args.dry_run:
        val = type(val)(**{**val.__dict__, "records": val.records[: args.batch_size]})
    config = {
        **vars(args),
        "classes": list(train.classes),
        "category_ids": category_ids(train),
        "data_source": source,
        "data_num_images": num_images,
        "backbone_pretraining_info": {k: v for k, v in trunk_info.items() if k != "path"},
    }
    if args.model == "ssdlite320":
        config["ssd_image_size"] = args.image_size
    model = build_trainable(args.model, len(train.classes) + 1, **model_options(config))
    if trunk is not None:
        load_pretrained_trunk(model, trunk, width_mult=args.width_mult)
    # boxes and labels only: a detector does not need the masks the COCO files carry
    train_set = DetectionTorchDataset(without_masks(train), Compose([HorizontalFlip()]),
                                      seed=args.seed)  # fmt: skip
    val_set = DetectionTorchDataset(without_masks(val))
    loader = engine.make_loader(
        train_set, args.batch_size, True, args.seed, args.workers, detection_collate
    )
    val_loader = torch.utils.data.DataLoader(
        val_set, batch_size=args.batch_size, shuffle=False, collate_fn=detection_collate
    )
    params = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
        )
    steps = (1 if args.dry_run else args.epochs) * max(1, len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + torch.cos(torch.tensor(step / steps * torch.pi)).item())
    )

    bn_batches = precise_bn_batches(without_masks(train), args.precise_bn, args.batch_size)

    def evaluate(model: torch.nn.Module, epoch: int) -> dict[str, float]:
        if args.precise_bn:  # kept in the checkpoint: the engine evaluates, then saves
            recompute_batchnorm(model, ([i.to(device) for i in b] for b in bn_batches()))
        outputs, image_ids = predict_loader(model, val_loader, device)
        return coco_scores(to_coco_results(outputs, image_ids, config["category_ids"]), val)

    print(
        f"{args.model}: {count_parameters(model) / 1e6:.2f} M parameters; {source}: "
        f"{len(train)} train / {len(val)} val images, classes {train.classes}; device {device}",
        file=sys.stderr,
    )
    kwargs = train_kwargs(args)
    kwargs["config"] = config
    kwargs.update(
        optimizer=optimizer,
        device=device,
        lr_scheduler=scheduler,
        lr_scheduler_interval="step",
        evaluate_fn=evaluate,
        warmup_iters=0 if args.dry_run else args.warmup_iters,
        best_metric="bbox_AP50",
    )
    pretrain_s = float(trunk_info.get("seconds", 0.0))
    train_start = time.perf_counter()
    if not args.time_budget or args.dry_run:
        result = engine.train(model, loader, **kwargs)
    else:  # the trunk's pretraining (cached, once) stands in for ImageNet weights: not counted
        result = train_with_budget(model, loader, args.time_budget * 60, kwargs)
    result["train_time_s"] = time.perf_counter() - train_start
    result["pretrain_s"] = pretrain_s
    result["backbone_pretraining"] = trunk_info
    result["eval"] = dict(result["history"][-1]["eval"]) if result["history"] else {}
    result["num_parameters"] = count_parameters(model)
    result["epochs_run"] = len(result["history"])
    summary = ", ".join(f"{k} {v:.3f}" for k, v in result["eval"].items() if k.startswith("bbox"))
    print(f"done in {result['train_time_s']:.0f} s (+ {pretrain_s:.0f} s of the trunk's "
          f"pretraining), {result['epochs_run']} epochs: {summary}", file=sys.stderr)  # fmt: skip
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
