"""Training pieces of this folder: data, a model for custom classes, the step, mAP evaluation.

``train.py`` and ``tour.py`` both call :func:`fit`, the one call into the core engine.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anchors import kmeans_anchors
from darknet import Darknet, save_weights
from darknet_cfg import custom_cfg, parse_cfg_text
from torch import Tensor, nn
from yolo_loss import LossConfig, yolo_loss

from detseg import engine
from detseg.data import recipes
from detseg.data.formats import coco, yolo
from detseg.data.letterbox import unletterbox_boxes
from detseg.data.types import DetectionDataset
from detseg.data.yolo_dataset import YoloAugment, YoloDataset, yolo_collate
from detseg.engine.budget import train_within_budget
from detseg.engine.distributed import make_loader
from detseg.errors import UserError
from detseg.metrics import evaluate_coco
from detseg.yolo_decode import postprocess


@dataclass
class Splits:
    train: DetectionDataset
    val: DetectionDataset
    source: str

    @property
    def classes(self) -> list[str]:
        return list(self.train.classes)


def load_splits(
    data_path: str | Path | None, *, num_images: int | None = None, seed: int = 0
) -> Splits:
    """The train / val splits of a YOLO ``data.yaml``, or of the built-in ``shapes`` YOLO export."""
    if data_path is None:
        root = recipes.ensure("shapes", seed=seed, num_images=num_images)
        data_yaml = root / "yolo" / "data.yaml"
        source = f"built-in shapes ({root.name}, YOLO layout)"
    else:
        data_yaml = Path(data_path)
        source = str(data_yaml)
    train = yolo.read(data_yaml, "train")
    val = yolo.read(data_yaml, "val")
    if not len(train) or not len(val):
        raise UserError(
            f"{len(train)} training and {len(val)} validation images",
            path=data_yaml, fix="a YOLO dataset needs images in both train and valid",
        )  # fmt: skip
    return Splits(train, val, source)


def training_boxes_wh(dataset: DetectionDataset, image_size: int) -> np.ndarray:
    """Widths / heights of every training box after letterboxing to ``image_size`` ([N, 2])."""
    sizes = []
    for record in dataset.records:
        scale = min(image_size / record.height, image_size / record.width)
        sizes.append((record.boxes[:, 2:] - record.boxes[:, :2]) * scale)
    return np.concatenate(sizes) if sizes else np.zeros((0, 2))


def build_custom_model(
    base_cfg: str, num_classes: int, *, anchors: Any = None, image_size: int, scale_xy: float = 1.0
) -> tuple[Darknet, str]:
    """A darknet model of ``base_cfg`` adapted to ``num_classes`` (and anchors, and ``scale_x_y``
    in its [yolo] layers); returns the cfg text too (saved next to the checkpoints and in them, so
    the run can be rebuilt and exported)."""
    text = custom_cfg(base_cfg, num_classes, anchors=anchors, size=image_size, scale_xy=scale_xy)
    model = Darknet(parse_cfg_text(text, f"{base_cfg} ({num_classes} classes)"))
    init_head_biases(model)
    return model, text


def init_head_biases(model: Darknet, objects_per_image: float = 8.0) -> None:
    """Start the objectness and class logits at sensible priors instead of 0 (p = 0.5).

    With every cell saying "object, p = 0.5", the first steps are spent pushing thousands of
    empty cells down, with huge gradients. Objectness starts at ``objects_per_image`` over the
    cells of the scale, classes at ``0.6 / (C - 0.99)`` (YOLOv5's choice, Focal-loss paper's idea).
    """
    convs = model.conv_layers()
    heads = [m for m in convs if m.bn is None]  # the linear 1x1 convs before each [yolo]
    with torch.no_grad():
        for conv, layer, stride in zip(heads, model.spec.yolo_layers, model.strides):
            assert conv.conv.bias is not None
            bias = conv.conv.bias.view(len(layer.anchors), -1)
            cells = (model.spec.height // stride) * (model.spec.width // stride)
            bias[:, 4] = float(np.log(objects_per_image / cells))
            bias[:, 5:] = float(np.log(0.6 / max(model.num_classes - 0.99, 0.01)))


def dataset_anchors(
    dataset: DetectionDataset, base_cfg: str, image_size: int, seed: int = 0
) -> list:
    """k-means (1 - IoU) anchors of the training boxes, as many as ``base_cfg`` has."""
    from darknet_cfg import parse_cfg

    count = len(parse_cfg(base_cfg).yolo_layers[0].options["anchors"].split(",")) // 2
    anchors, _ = kmeans_anchors(training_boxes_wh(dataset, image_size), count, seed=seed)
    return [tuple(float(v) for v in a) for a in anchors]


def make_step(model: Darknet, image_size: int, loss_config: LossConfig) -> Callable:
    def step(train_model: nn.Module, batch: Any, device: torch.device) -> dict[str, Tensor]:
        images, targets = batch
        raws = train_model(images.to(device))
        return yolo_loss(
            raws, targets, model.anchors, model.strides, image_size, loss_config, model.scale_xy
        )

    return step


@torch.no_grad()
def predict_batch(
    model: Darknet,
    images: Tensor,
    *,
    score_threshold: float = 0.001,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
) -> list[dict[str, Tensor]]:
    """Detections in the letterboxed input's pixels, per image."""
    raws = model(images)
    decoded = model.decode(raws)
    return postprocess(
        decoded, score_threshold=score_threshold, iou_threshold=iou_threshold,
        max_detections=max_detections,
    )  # fmt: skip


def predictions_to_coco(
    outputs: list[dict[str, Tensor]], targets: tuple[dict[str, Any], ...]
) -> list[dict[str, Any]]:
    """Detections (letterboxed pixels) -> COCO results in original pixels, category id = label + 1
    (what :func:`detseg.data.formats.coco.to_dict` writes for a YOLO dataset)."""
    results = []
    for output, target in zip(outputs, targets):
        boxes = unletterbox_boxes(output["boxes"].cpu(), target["scale"], target["pad"],
                                  target["orig_size"]).numpy()  # fmt: skip
        for box, score, label in zip(boxes, output["scores"].tolist(), output["labels"].tolist()):
            results.append({
                "image_id": int(target["image_id"]),
                "category_id": int(label) + 1,
                "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                "score": float(score),
            })  # fmt: skip
    return results


def evaluate_map(
    model: Darknet,
    dataset: YoloDataset,
    device: torch.device,
    *,
    batch_size: int = 16,
    predictions_path: Path | None = None,
) -> dict[str, float]:
    """COCO box AP of ``model`` on ``dataset`` (``mAP50`` = AP at IoU 0.5, ``mAP`` = 0.5:0.95)."""
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=yolo_collate)
    results: list[dict[str, Any]] = []
    for images, targets in loader:
        results += predictions_to_coco(predict_batch(model, images.to(device)), targets)
    if predictions_path is not None:
        predictions_path.parent.mkdir(parents=True, exist_ok=True)
        predictions_path.write_text(json.dumps(results))
    gt = coco.to_dict(dataset.dataset)
    if not results:
        return {"mAP50": 0.0, "mAP": 0.0, "detections": 0}
    stats = evaluate_coco(gt, results, "bbox").stats
    return {"mAP50": float(stats["AP50"]), "mAP": float(stats["AP"]), "detections": len(results)}


def fit(
    model: Darknet,
    splits: Splits,
    *,
    image_size: int,
    epochs: int,
    batch_size: int,
    lr: float,
    output_dir: Path,
    device: torch.device,
    seed: int = 0,
    workers: int = 0,
    augment: YoloAugment | None = None,
    loss_config: LossConfig | None = None,
    warmup_iters: int = 50,
    weight_decay: float = 5e-4,
    optimizer_name: str = "sgd",
    time_budget_s: float | None = None,
    **engine_kwargs: Any,
) -> dict[str, Any]:
    """Train with the core engine: SGD (momentum 0.9, darknet's) or AdamW, warm-up, cosine lr per step;
    COCO box AP on the validation split after every epoch; ``best.pt`` by mAP@0.5.

    ``time_budget_s``: stop before an epoch that would end past this many seconds
    (:func:`detseg.engine.budget.train_within_budget`; the cosine schedule still spans ``epochs``).
    """
    train_set = YoloDataset(splits.train, image_size, augment=augment, seed=seed, cache_images=True)
    val_set = YoloDataset(splits.val, image_size, cache_images=True)
    # drop the last incomplete batch (batch norm on 1-2 images is noisy) when there is a full one
    drop_last = len(train_set) > batch_size
    loader = make_loader(
        train_set, batch_size, True, seed, workers, yolo_collate, drop_last=drop_last
    )
    decay, no_decay = [], []
    for param in model.parameters():
        (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0},
    ]
    if optimizer_name == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    else:
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    steps = (engine_kwargs.get("max_steps_per_epoch") or len(loader)) * epochs
    warmup_iters = min(warmup_iters, max(1, steps // 5))  # short runs: at most a fifth warming up
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)),
    )
    output_dir = Path(output_dir)

    def evaluate_fn(eval_model: nn.Module, epoch: int) -> dict[str, float]:
        start = time.perf_counter()
        metrics = evaluate_map(
            eval_model, val_set, device, predictions_path=output_dir / "val_predictions.json"
        )
        return {**metrics, "eval_s": time.perf_counter() - start}

    loss_config = loss_config or LossConfig()
    config = dict(engine_kwargs.pop("config", {}) or {})
    config.setdefault("loss", asdict(loss_config))
    kwargs = dict(
        optimizer=optimizer,
        output_dir=output_dir,
        device=device,
        lr_scheduler=scheduler,
        lr_scheduler_interval="step",
        step_fn=make_step(model, image_size, loss_config),
        evaluate_fn=evaluate_fn,
        warmup_iters=warmup_iters,
        clip_grad_norm=10.0,
        best_metric="mAP50",
        config=config,
        **engine_kwargs,
    )
    if time_budget_s is None:
        return engine.train(model, loader, epochs=epochs, **kwargs)
    return train_within_budget(model, loader, epochs=epochs, budget_s=time_budget_s, **kwargs)


def save_darknet(model: Darknet, cfg_text: str, output_dir: Path, name: str) -> tuple[Path, Path]:
    """Write ``<name>.cfg`` and ``<name>.weights`` (darknet's own formats) into ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = output_dir / f"{name}.cfg"
    cfg_path.write_text(cfg_text, encoding="utf-8")
    return cfg_path, save_weights(model, output_dir / f"{name}.weights")


def log(message: str) -> None:
    print(message, file=sys.stderr)
