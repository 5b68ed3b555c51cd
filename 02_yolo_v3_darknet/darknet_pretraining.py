"""The offline ``yolov3-tiny.conv.15``: YOLOv3-tiny's first 15 layers pretrained on shape crops.

Darknet never trains YOLOv3-tiny detection from random weights: it starts from a *partial*
weights file, the first 15 layers of a trained network cut with

    darknet partial cfg/yolov3-tiny.cfg yolov3-tiny.weights yolov3-tiny.conv.15 15

(a ``.weights`` header, then those layers' numbers in order, nothing else). Offline there is no
such file and no ImageNet, so the stand-in is taught here, as 04 and 07 do: the first 15 layers
(convolutions 0-14, down to stride 32, 512 channels), a global average pool and a linear layer
learn to classify the shapes cut out of built-in ``shapes`` scenes of *another* data seed
(:mod:`detseg.data.pretraining`; :func:`detseg.data.pretraining.check_disjoint` proves on the
files' bytes that no detector image is among them). The classifier is dropped and the 15 layers
are written with this folder's own darknet writer as ``yolov3-tiny.conv.15``, which
``train.py --weights`` loads into the first 15 layers of the detector, as darknet does.

    python 02_yolo_v3_darknet/darknet_pretraining.py      # writes runs/.../yolov3-tiny.conv.15

Recipe: crops of ``side`` px (input in [0, 1], as darknet's), mirrored at random, batches of 64,
AdamW with a one-cycle rate (up to ``lr`` over the first 30 % of the steps), ``epochs`` passes.
:func:`ensure_partial` caches the file under ``runs/`` with the seconds it took (like downloaded
ImageNet weights, those seconds are not part of the detector's training budget).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from darknet import Darknet, save_weights
from darknet_cfg import NetSpec, parse_cfg
from torch import Tensor, nn
from torch.utils.data import DataLoader

from detseg import settings
from detseg.cli.common import HelpFormatter
from detseg.data import recipes
from detseg.data.pretraining import (
    PRETRAIN_DATA_SEED,
    check_disjoint,
    shape_crop_sets,
    train_steps,
)
from detseg.data.types import DetectionDataset
from detseg.errors import UserError, run_cli

PARTIAL_LAYERS = {"yolov3-tiny": 15, "yolov3": 74, "yolov3-spp": 74}  # darknet's .conv.N files


@dataclass
class PretrainConfig:
    """What the cached file depends on (its folder name is made of it)."""

    cfg: str = "yolov3-tiny"
    layers: int = 15  # darknet's yolov3-tiny.conv.15
    epochs: int = 6
    side: int = 64
    lr: float = 3e-3
    batch_size: int = 64
    num_images: int | None = (
        None  # scenes of data seed PRETRAIN_DATA_SEED (None: the recipe's 1000)
    )
    seed: int = 0
    max_steps: int | None = None  # smoke runs: stop after this many steps

    def tag(self) -> str:
        scenes = "" if self.num_images is None else f"-n{self.num_images}"
        steps = "" if self.max_steps is None else f"-s{self.max_steps}"
        return f"shape-crops{scenes}-side{self.side}-e{self.epochs}-lr{self.lr:g}-seed{self.seed}{steps}"


def truncated(spec: NetSpec, layers: int) -> NetSpec:
    """The first ``layers`` layers of a cfg (no [yolo] among them)."""
    if not 0 < layers < len(spec.layers):
        raise ValueError(f"layers must be in 1..{len(spec.layers) - 1}, got {layers}")
    if any(layer.kind == "yolo" for layer in spec.layers[:layers]):
        raise ValueError(f"the first {layers} layers of {spec.path} hold a [yolo] layer")
    return NetSpec(spec.path, spec.width, spec.height, spec.channels, spec.layers[:layers],
                   dict(spec.options))  # fmt: skip


class PartialClassifier(nn.Module):
    """The first ``layers`` layers of a cfg, a global average pool and a linear layer:
    ``[B, 3, S, S] -> [B, num_classes]``. ``body`` is a :class:`Darknet` of exactly those layers,
    so :func:`darknet.save_weights` writes it as the partial file."""

    def __init__(self, cfg: str, layers: int, num_classes: int, side: int) -> None:
        super().__init__()
        self.body = Darknet(truncated(parse_cfg(cfg, size=side), layers))
        self.linear = nn.Linear(self.body.spec.layers[-1].out_shape[0], num_classes)

    def forward(self, images: Tensor) -> Tensor:
        features = self.body.features(images, len(self.body.layers))  # [B, 512, S/32, S/32]
        return self.linear(features.mean(dim=(2, 3)))


def pretraining_scenes(config: PretrainConfig) -> dict[str, DetectionDataset]:
    return {f"pretraining {split}": recipes.load("shapes", split=split, seed=PRETRAIN_DATA_SEED,
                                                 num_images=config.num_images)
            for split in ("train", "val")}  # fmt: skip


def pretrain_partial(
    config: PretrainConfig,
    *,
    log: Callable[[str], Any] = lambda text: print(text, file=sys.stderr),
) -> tuple[PartialClassifier, dict[str, Any]]:
    """Train :class:`PartialClassifier` on shape crops (module docstring).

    Returns:
        the classifier (eval mode) and ``{"crop_accuracy" (held-out crops of other scenes),
        "seconds", "train_crops", "steps"}``.
    """
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    train_set, held_out, num_classes = shape_crop_sets(config.num_images, config.seed, config.side)
    model = PartialClassifier(config.cfg, config.layers, num_classes, config.side).train()
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True,
                        generator=generator, drop_last=len(train_set) > config.batch_size)  # fmt: skip
    total = config.epochs * len(loader)
    total = total if config.max_steps is None else min(config.max_steps, total)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total)
    steps = train_steps(
        loader,
        lambda batch: nn.functional.cross_entropy(model(batch[0]), batch[1]),
        optimizer,
        scheduler,
        epochs=config.epochs,
        total=total,
        describe=f"pretraining {config.cfg}'s first {config.layers} layers on shape crops",
        log=lambda text: log(f"{text} ({time.perf_counter() - start:.0f} s)"),
    )
    model.eval()
    with torch.no_grad():
        hits = [(model(crops).argmax(1) == labels).double()
                for crops, labels in DataLoader(held_out, batch_size=256)]  # fmt: skip
    info = {
        "crop_accuracy": float(torch.cat(hits).mean()) if hits else 0.0,
        "seconds": time.perf_counter() - start,
        "train_crops": len(train_set),
        "steps": steps,
    }
    return model, info


def partial_path(runs: Path, config: PretrainConfig) -> Path:
    """``runs/02_yolo_v3_darknet/pretrained/<tag>/<cfg>.conv.<layers>`` (darknet's name)."""
    return (
        runs
        / "02_yolo_v3_darknet"
        / "pretrained"
        / config.tag()
        / f"{config.cfg}.conv.{config.layers}"
    )


def ensure_partial(
    path: Path,
    config: PretrainConfig,
    *,
    held_out: Mapping[str, DetectionDataset] | None = None,
    log: Callable[[str], Any] = lambda text: print(text, file=sys.stderr),
) -> tuple[Path, dict[str, Any]]:
    """The partial weights file at ``path``, pretrained now (:func:`pretrain_partial`) if missing.

    ``held_out``: the detector's datasets; the pretraining scenes must not hold any of their
    images (checked on the files' bytes, cached or not). The info (``seconds``: the pretraining's
    own time, whenever it ran; ``crop_accuracy`` ...) is kept next to the file as ``.json``.

    Returns:
        ``(path, info)``, ``info["cached"]`` telling whether the file was already there.
    """
    scenes = pretraining_scenes(config)  # generated once (data seed 1), outside the timing
    if held_out:
        check_disjoint(scenes, held_out)
    info_path = path.with_name(path.name + ".json")
    if path.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        return path, {**info, "cached": True}
    model, info = pretrain_partial(config, log=log)
    save_weights(model.body, path)
    info = {**info, "config": asdict(config), "bytes": path.stat().st_size}
    info_path.write_text(json.dumps(info, indent=1))
    log(f"{path.name}: {info['bytes']:,} bytes, pretrained in {info['seconds']:.0f} s, held-out "
        f"crop accuracy {info['crop_accuracy']:.3f} ({info['train_crops']} crops, "
        f"{info['steps']} steps)")  # fmt: skip
    return path, {**info, "cached": False}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Pretrain a cfg's first layers on shape crops and write <cfg>.conv.N (what "
        "train.py does first by default; run alone, it is the offline 'download the weights')",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--cfg", default="yolov3-tiny", choices=list(PARTIAL_LAYERS))
    parser.add_argument("--epochs", type=int, default=PretrainConfig.epochs)
    parser.add_argument("--side", type=int, default=PretrainConfig.side, help="crop side (x 32)")
    parser.add_argument("--lr", type=float, default=PretrainConfig.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one line")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Writes (or finds) the cached partial file; returns its info with ``path``."""
    args = get_args_parser().parse_args(argv)
    if args.side < 32 or args.side % 32:
        raise UserError(f"--side must be a positive multiple of 32, got {args.side}", fix="e.g. 64")
    if args.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {args.epochs}", fix="e.g. 6")
    config = PretrainConfig(cfg=args.cfg, layers=PARTIAL_LAYERS[args.cfg], epochs=args.epochs,
                            side=args.side, lr=args.lr, seed=args.seed)  # fmt: skip
    path, info = ensure_partial(partial_path(settings.runs_root(), config), config)
    print(f"{path} ({'cached' if info['cached'] else 'pretrained now'}): {info['seconds']:.0f} s, "
          f"held-out crop accuracy {info['crop_accuracy']:.3f}")  # fmt: skip
    return {**info, "path": str(path)}


if __name__ == "__main__":
    sys.exit(run_cli(main))
