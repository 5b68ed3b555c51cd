"""Pretraining SSDlite's MobileNetV3 trunk on other built-in images (the offline "ImageNet").

The published SSDlite starts from an ImageNet-trained MobileNetV3; offline there is none, and from
scratch 250 steps of SSDlite on ``shapes`` scored AP50 0.003 (EXPERIMENTS.md). As lesson 2 does for
its small backbone, the trunk first learns a cheap task on *other* images: classify the shapes cut
out of built-in ``shapes`` scenes drawn with **data seed 1** (the detector trains and is scored on
seed 0; image ``i`` of a recipe depends only on ``(seed, recipe, i)``, so no scene is shared).

A crop is the shape's box plus a random margin of context (5-40 % of its side), resized to
``side`` x ``side`` (64 px: 1/16 of a 256 px scene's pixels, so a step of 64 crops costs about
what 4 scenes do), mirrored left-right with probability 1/2. The trunk is
:func:`detection_zoo.mobilenet_v3_for_ssdlite`'s ``features``, a global average pool and a linear
layer on top (dropped afterwards); AdamW with a one-cycle rate (up to ``lr`` over the first 30 %
of the steps), batches of 64. :func:`ensure_trunk` caches the result with the seconds it took, so
``train_detector.py`` can count them inside its time budget.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from detection_zoo import mobilenet_v3_for_ssdlite
from torch import Tensor, nn
from torch.utils.data import DataLoader

from detseg.data.pretraining import PRETRAIN_DATA_SEED, ShapeCrops, shape_crop_sets, train_steps


def crop_sets(num_images: int | None, seed: int, side: int) -> tuple[ShapeCrops, ShapeCrops, int]:
    """``(train, held_out, num_classes)``: crops of the train / val scenes of ``shapes`` with data
    seed :data:`PRETRAIN_DATA_SEED` (``num_images`` scenes in all; None: the recipe's 1000), in
    SSDlite's input normalisation ``(x - 0.5) / 0.5`` (:func:`detseg.data.pretraining.shape_crop_sets`)."""
    return shape_crop_sets(num_images, seed, side, mean=(0.5,) * 3, std=(0.5,) * 3)


class TrunkClassifier(nn.Module):
    """The trunk, a global average pool and a linear layer: ``[B, 3, S, S] -> [B, num_classes]``."""

    def __init__(self, width_mult: float, num_classes: int) -> None:
        super().__init__()
        mobilenet = mobilenet_v3_for_ssdlite(width_mult)
        self.trunk = mobilenet.features
        self.linear = nn.Linear(mobilenet.classifier[0].in_features, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.linear(self.trunk(images).mean(dim=(2, 3)))


def pretrain_trunk(
    *,
    width_mult: float = 0.5,
    seed: int = 0,
    num_images: int | None = None,
    epochs: int = 16,
    side: int = 64,
    lr: float = 3e-3,
    max_steps: int | None = None,
    log: Callable[[str], Any] = lambda text: print(text, file=sys.stderr),
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Train the trunk to classify shape crops (module docstring).

    Returns:
        the trunk's ``state_dict`` (for :func:`detection_zoo.load_pretrained_trunk`) and
        ``{"crop_accuracy" (held-out crops of seed-1 scenes), "seconds", "train_crops", "steps"}``.
    """
    from detseg.data import recipes

    recipes.ensure("shapes", seed=PRETRAIN_DATA_SEED, num_images=num_images)  # made once, untimed
    start = time.perf_counter()
    torch.manual_seed(seed)
    train_set, val_set, num_classes = crop_sets(num_images, seed, side)
    model = TrunkClassifier(width_mult, num_classes).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    drop_last = len(train_set) > 64  # a last batch of one crop cannot train BatchNorm
    loader = DataLoader(
        train_set, batch_size=64, shuffle=True, generator=generator, drop_last=drop_last
    )
    total = epochs * len(loader) if max_steps is None else min(max_steps, epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total)
    steps = train_steps(
        loader, lambda batch: nn.functional.cross_entropy(model(batch[0]), batch[1]), optimizer,
        scheduler, epochs=epochs, total=total, log=log,
        describe="pretraining SSDlite's trunk on shape crops",
    )  # fmt: skip
    model.eval()
    with torch.no_grad():
        hits = [
            (model(crops).argmax(1) == labels).double()
            for crops, labels in DataLoader(val_set, batch_size=256)
        ]
    info = {
        "crop_accuracy": float(torch.cat(hits).mean()),
        "seconds": time.perf_counter() - start,
        "train_crops": len(train_set),
        "steps": steps,
    }
    log(f"trunk pretrained in {info['seconds']:.0f} s: held-out crop accuracy "
        f"{info['crop_accuracy']:.3f} ({len(train_set)} crops, {steps} steps)")  # fmt: skip
    return model.trunk.state_dict(), info


def trunk_path(runs: Path, *, width_mult: float, epochs: int, seed: int, smoke: bool) -> Path:
    """Where :func:`ensure_trunk` caches a pretrained trunk (one per width, epochs and seed)."""
    tag = "-smoke" if smoke else ""
    name = f"ssdlite-trunk-shape-crops-w{width_mult:g}-seed{seed}-e{epochs}{tag}.pt"
    return runs / "04_basic_object_detection" / name


def ensure_trunk(path: Path, **options: Any) -> tuple[dict[str, Tensor], dict[str, Any], bool]:
    """The trunk cached at ``path``, else :func:`pretrain_trunk` (``options``) saved there.

    Returns ``(state_dict, info, cached)``; ``info["seconds"]`` is the pretraining's own time,
    whether it ran now or when the file was written.
    """
    from detseg.engine.checkpoint import load_checkpoint, save_checkpoint

    if path.is_file():  # a corrupt cache file is one clear error line, not a traceback
        saved = load_checkpoint(path)
        return saved["trunk"], saved["info"], True
    state, info = pretrain_trunk(**options)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"trunk": state, "info": info, "options": options}, path)
    return state, info, False
