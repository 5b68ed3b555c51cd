"""Fine-tune (or train from scratch) a Mask R-CNN on PennFudan-layout or COCO-layout data.

    python train.py                                   # slim model, built-in pedestrians, CPU-sized
    python train.py --model maskrcnn_resnet50_fpn --weights coco --data pennfudan --image-size 800
    python train.py --data shapes --epochs 12         # several classes, COCO JSON layout
    python train.py --data-path my/instances.json     # any COCO instances JSON
    torchrun --nproc-per-node 2 train.py ...          # DDP (gloo on CPU, nccl on CUDA)
    python train.py --resume                          # continue <output-dir>/last.pt exactly

Every epoch: SGD with momentum, linear warm-up, step decay at ``--lr-steps``, checkpoints
``last.pt`` / ``best.pt`` (by ``--best-metric``, default the mask AP), COCO bbox and segm AP on the
validation images with ``detseg.metrics`` (the same numbers as pycocotools), ``metrics.json`` and a
training-curve plot.
"""

from __future__ import annotations

# isort: off
# first, before torch loads: on macOS it turns on PyTorch's CPU fallback for operators without an
# MPS kernel (PYTORCH_ENABLE_MPS_FALLBACK=1), see README "Apple MPS"
from detseg import devices

# isort: on
import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maskrcnn_data import DATA_CHOICES, DataSplits, load_splits, torch_datasets
from maskrcnn_eval import evaluate_model
from models_maskrcnn import (
    DEFAULT_WEIGHTS,
    MODELS,
    WEIGHT_KEYWORDS,
    build_model,
    count_parameters,
    has_masks,
)
from slim_maskrcnn import SlimConfig, slim_config_dict

from detseg import engine
from detseg.cli.common import HelpFormatter, add_standard_args, train_kwargs, validate_standard_args
from detseg.data.copy_paste import DEPTH_ORDERS
from detseg.data.torch_datasets import detection_collate
from detseg.engine.distributed import dist_info
from detseg.engine.steps import StepFn
from detseg.errors import UserError, run_cli

EXAMPLE = "01_mask_r_cnn_fine_tuning"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Fine-tune Mask R-CNN (torchvision) on PennFudan or COCO-layout data",
        formatter_class=HelpFormatter,
    )
    add_standard_args(parser, example=EXAMPLE, epochs=16, batch_size=4, lr=0.02, workers=1)
    parser.add_argument("--model", choices=list(MODELS), default="maskrcnn_slim")
    parser.add_argument(
        "--data",
        choices=DATA_CHOICES,
        default="pedestrians",
        help="built-in pedestrians / shapes, or the real PennFudanPed (downloaded); "
        "ignored when --data-path is given",
    )
    parser.add_argument(
        "--num-images",
        type=int,
        default=None,
        help="size of a built-in dataset (default: recipe's)",
    )
    parser.add_argument("--val-fraction", type=float, default=0.2, help="held-out share")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="resize the shorter side to MIN, the longer to at most MAX (default: the model's; "
        "slim 256 384, torchvision 800 1333)",
    )
    parser.add_argument(
        "--slim",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="slim model option (slim_maskrcnn.SlimConfig), e.g. fpn_channels=96 or "
        "'anchor_sizes=[[32],[64],[128],[256]]'; repeatable",
    )
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument(
        "--lr-steps", type=int, nargs="*", default=[12, 15], help="epochs after which lr x 0.1"
    )
    parser.add_argument("--warmup-iters", type=int, default=100, help="linear warm-up steps")
    parser.add_argument("--clip-grad-norm", type=float, default=None, help="clip gradients")
    parser.add_argument(
        "--best-metric",
        default=None,
        help="eval number that picks best.pt (default: segm_AP for models with masks, else bbox_AP, "
        "COCO's main numbers)",
    )
    parser.add_argument("--no-hflip", action="store_true", help="no horizontal-flip augmentation")
    parser.add_argument(
        "--copy-paste",
        type=float,
        default=1.0,
        metavar="P",
        help="probability that a training image gets 1-2 objects of another training image "
        "pasted in (copy-paste augmentation, Ghiasi et al. 2021; 0 = off)",
    )
    parser.add_argument(
        "--copy-paste-depth",
        choices=DEPTH_ORDERS,
        default="box_bottom",
        help="who hides whom: box_bottom = the lower box is nearer (people, cars on a street); "
        "top = pasted objects in front",
    )
    parser.add_argument(
        "--mask-loss-weight",
        type=float,
        default=2.0,
        help="factor on loss_mask in the summed loss (the logged loss_mask is scaled too); the "
        "mask branch trains from scratch and learns slowest",
    )
    return parser


def weighted_step(mask_loss_weight: float) -> StepFn:
    """The engine's detection step with ``loss_mask`` (Mask R-CNN only) times ``mask_loss_weight``."""

    def step(model: Any, batch: Any, device: Any) -> dict[str, Any]:
        losses = engine.detection_step(model, batch, device)
        if "loss_mask" in losses:
            losses["loss_mask"] = losses["loss_mask"] * mask_loss_weight
        return losses

    return step


def parse_slim_options(items: Sequence[str]) -> dict[str, Any]:
    """``["fpn_channels=96", "mask_layers=[64]"]`` -> ``{"fpn_channels": 96, "mask_layers": [64]}``.

    Values are JSON (numbers, lists); anything that is not JSON stays a string.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"--slim {item!r} is not KEY=VALUE", fix="e.g. --slim fpn_channels=96")
        try:
            options[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            options[key.strip()] = text
    return options


def validate_args(args: argparse.Namespace) -> argparse.Namespace:
    """The standard checks, with ``--weights`` also taking the keywords ``coco`` and ``none``."""
    keyword = None
    if args.weights is not None and str(args.weights) in WEIGHT_KEYWORDS:
        keyword, args.weights = str(args.weights), None
    validate_standard_args(args)
    if keyword is not None:
        args.weights = keyword
    if args.num_images is not None and args.num_images < 2:
        raise UserError(f"--num-images must be >= 2, got {args.num_images}", fix="pass e.g. 170")
    if args.image_size is not None and not 32 <= args.image_size[0] <= args.image_size[1]:
        raise UserError(
            f"--image-size needs 32 <= MIN <= MAX, got {args.image_size}", fix="e.g. 256 384"
        )
    if not args.mask_loss_weight > 0:
        raise UserError(
            f"--mask-loss-weight must be > 0, got {args.mask_loss_weight}", fix="e.g. 2"
        )
    if not 0.0 <= args.copy_paste <= 1.0:
        raise UserError(f"--copy-paste must be in [0, 1], got {args.copy_paste}", fix="e.g. 0.5")
    if args.slim and args.model != "maskrcnn_slim":
        raise UserError("--slim applies to --model maskrcnn_slim only", fix="drop --slim")
    return args


def model_config(args: argparse.Namespace, splits: DataSplits) -> dict[str, Any]:
    """What ``predict.py`` / ``export.py`` need to rebuild the model, plus the flags of the run."""
    return {
        **vars(args),
        "weights": str(args.weights or DEFAULT_WEIGHTS[args.model]),
        "num_classes": splits.num_classes,
        "classes": list(splits.classes),
        "category_ids": splits.train.category_ids,
        # every field, not only the --slim ones: a later change of a default leaves this run's
        # checkpoints rebuilding the model they were trained with
        "slim": slim_config_dict(SlimConfig.from_dict(parse_slim_options(args.slim)))
        if args.model == "maskrcnn_slim"
        else None,
        "data_source": splits.source,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = validate_args(get_args_parser().parse_args(argv))
    import torch

    device = devices.select_device(args.device)
    devices.seed_everything(args.seed)
    splits = load_splits(
        args.data,
        args.data_path,
        val_fraction=args.val_fraction,
        seed=args.seed,
        num_images=args.num_images,
    )
    train_set, val_set = torch_datasets(
        splits,
        seed=args.seed,
        hflip=not args.no_hflip,
        copy_paste=args.copy_paste,
        copy_paste_depth=args.copy_paste_depth,
    )
    val_records = splits.val
    if args.dry_run:  # one batch end to end: evaluate on one batch of images too
        val_records = type(splits.val)(
            **{**splits.val.__dict__, "records": splits.val.records[: args.batch_size]}
        )
        val_set = torch_datasets(DataSplits(splits.train, val_records, splits.source))[1]
    config = model_config(args, splits)
    model = build_model(
        args.model,
        num_classes=splits.num_classes,
        weights=args.weights,
        image_size=args.image_size,
        slim=config["slim"],
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=args.lr_steps, gamma=0.1)
    loader = engine.make_loader(
        train_set, args.batch_size, True, args.seed, args.workers, detection_collate
    )
    val_loader = torch.utils.data.DataLoader(
        val_set, batch_size=args.batch_size, shuffle=False, collate_fn=detection_collate
    )
    iou_types = ("bbox", "segm") if has_masks(model) else ("bbox",)

    def evaluate(model: torch.nn.Module, epoch: int) -> dict[str, float]:
        return evaluate_model(model, val_loader, val_records, device, iou_types=iou_types)

    info = dist_info()
    if info.is_main:
        print(
            f"{args.model}: {count_parameters(model) / 1e6:.1f} M parameters "
            f"({count_parameters(model, trainable_only=True) / 1e6:.1f} M trainable), "
            f"weights {config['weights']}; data {splits.source}: {len(splits.train)} train / "
            f"{len(val_records)} val images, classes {splits.classes}; device {device}",
            file=sys.stderr,
        )
    kwargs = train_kwargs(args)
    kwargs["config"] = config
    start = time.perf_counter()
    result = engine.train(
        model,
        loader,
        optimizer=optimizer,
        device=device,
        lr_scheduler=scheduler,
        evaluate_fn=evaluate,
        warmup_iters=args.warmup_iters,
        clip_grad_norm=args.clip_grad_norm,
        best_metric=args.best_metric or ("segm_AP" if "segm" in iou_types else "bbox_AP"),
        step_fn=weighted_step(args.mask_loss_weight),
        **kwargs,
    )
    result["train_time_s"] = time.perf_counter() - start
    result["eval"] = dict(result["history"][-1]["eval"]) if result["history"] else {}
    result["num_parameters"] = count_parameters(model)
    if info.is_main:
        _save_prediction_grid(model, val_set, splits.classes, Path(args.output_dir), device)
        summary = ", ".join(
            f"{k} {v:.3f}" for k, v in result["eval"].items() if k.endswith(("_AP", "_AP50"))
        )
        print(f"done in {result['train_time_s']:.0f} s: {summary}", file=sys.stderr)
    return result


def _save_prediction_grid(
    model: Any, val_set: Any, classes: list[str], out_dir: Path, device: Any, count: int = 8
) -> Path:
    """Draw the model's detections on the first validation images into ``predictions.png``."""
    import torch

    from detseg.viz import draw_detections, save_grid

    model.eval()
    pictures = []
    with torch.no_grad():
        for index in range(min(count, len(val_set))):
            image, _ = val_set[index]
            output = model([image.to(device)])[0]
            pictures.append(
                draw_detections(
                    image.permute(1, 2, 0).numpy(),  # float [H, W, 3] in [0, 1]
                    output["boxes"].cpu().numpy(),
                    output["labels"].cpu().numpy() - 1,  # torchvision 1..C -> class index
                    output["scores"].cpu().numpy(),
                    masks=output["masks"].cpu().numpy() if "masks" in output else None,
                    class_names=classes,
                    score_threshold=0.5,
                )
            )
    return save_grid(pictures, out_dir / "predictions.png")


if __name__ == "__main__":
    sys.exit(run_cli(main))
