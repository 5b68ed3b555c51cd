"""The seed's single-object detector: a frozen backbone and two heads in parallel.

One image holds one object; the model answers "where" (a box, xyxy normalised to [0, 1]) and "what"
(one of ``C`` classes) at once::

    image [B, 3, S, S] -> frozen backbone -> features [B, F] -+-> box head   -> [B, 4] in [0, 1]
                                                              +-> class head -> [B, C] logits

The heads are exactly the seed's (PyImageSearch's PyTorch bounding-box regression lesson):

- box head: ``Linear(F, 128) ReLU Linear(128, 64) ReLU Linear(64, 32) ReLU Linear(32, 4) Sigmoid``
- class head: ``Linear(F, 512) ReLU Dropout Linear(512, 512) ReLU Dropout Linear(512, C)``

Backbones (:data:`BACKBONES`): ``resnet50`` (the seed's, ``F = 2048`` after global average pooling;
ImageNet weights when they can be downloaded) and ``small`` (5 conv stages, ``F = 2048`` as a
flattened 4 x 4 x 128 map, pretrained here on a built-in classification task: the shapes cut out of
the built-in ``shapes`` scenes, see :func:`pretrain_small_backbone`).

Because the backbone is frozen, its features for an image never change: :func:`compute_features`
runs it once over the dataset and the heads train on that cache (``--cached-features``), instead of
running the backbone on every image in every epoch as the seed did.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from detseg.data.imageio import read_image
from detseg.data.types import DetectionDataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def box_head(in_features: int) -> nn.Sequential:
    """The seed's box regressor: ``in_features -> 128 -> 64 -> 32 -> 4``, sigmoid at the end."""
    return nn.Sequential(
        nn.Linear(in_features, 128),
        nn.ReLU(),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Linear(32, 4),
        nn.Sigmoid(),
    )


def class_head(in_features: int, num_classes: int, dropout: float = 0.5) -> nn.Sequential:
    """The seed's classifier: ``in_features -> 512 -> 512 -> num_classes`` with dropout."""
    return nn.Sequential(
        nn.Linear(in_features, 512),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(512, num_classes),
    )


class SmallBackbone(nn.Module):
    """Five conv stages (conv-BN-ReLU, max-pool), stride 32: ``[B, 3, S, S] -> [B, 128, S/32, S/32]``.

    ``forward`` flattens the map of the last stage, ``grid`` x ``grid`` cells: 4 (the map after the
    last max-pool, ``[B, 2048]``) or 8 (the map before it, stride 16, ``[B, 8192]``). Unlike a global
    average it keeps *where* things are, which the box head needs. ``classify`` (global average +
    linear) is the head of the pretraining task only.
    """

    def __init__(
        self,
        num_pretrain_classes: int = 5,
        widths: tuple[int, ...] = (16, 32, 64, 128, 128),
        *,
        grid: int = 4,
    ):
        super().__init__()
        if grid not in (4, 8):
            raise ValueError(f"grid must be 4 or 8, got {grid}")
        layers: list[nn.Module] = []
        channels = 3
        for width in widths:
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.body = nn.Sequential(*layers)
        self.grid = grid
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.classifier = nn.Linear(channels, num_pretrain_classes)
        self.out_features = channels * grid * grid

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, out_features]`` (the grid x grid map, flattened)."""
        body = self.body if self.grid == 4 else self.body[:-1]  # grid 8: before the last max-pool
        return self.pool(body(images)).flatten(1)

    def classify(self, images: Tensor) -> Tensor:
        """Pretraining head: ``[B, 3, H, W]`` -> ``[B, num_pretrain_classes]`` logits."""
        return self.classifier(self.body(images).mean(dim=(2, 3)))


def build_resnet50(weights: str = "imagenet") -> nn.Module:
    """torchvision ResNet-50 with ``fc`` replaced by Identity: ``[B, 3, 224, 224] -> [B, 2048]``.

    Args:
        weights: ``"imagenet"`` (IMAGENET1K_V1, the seed's ``pretrained=True``; downloaded and
            hash-checked by :mod:`detseg.pretrained`) or ``"none"`` (random, for tests / dry runs).
    """
    import torchvision

    from detseg.pretrained import load_state_dict

    model = torchvision.models.resnet50(weights=None)
    if weights == "imagenet":
        state = load_state_dict(
            torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
            offline_hint="or use --backbone small (pretrained here on built-in data, no download)",
        )
        model.load_state_dict(state)
    model.out_features = model.fc.in_features
    model.fc = nn.Identity()
    return model


# name -> (image side the backbone is run at, normalisation mean / std)
BACKBONES: dict[str, dict[str, Any]] = {
    "small": {"image_size": 128, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)},
    "resnet50": {"image_size": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
}


class TwoHeadDetector(nn.Module):
    """Frozen ``backbone`` + the seed's box and class heads.

    ``forward(images [B, 3, S, S]) -> (boxes [B, 4] xyxy in [0, 1], logits [B, C])``;
    ``heads(features [B, F])`` is the same from cached features.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.backbone = backbone
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)
        features = int(backbone.out_features)
        self.box_head = box_head(features)
        self.class_head = class_head(features, num_classes, dropout)

    def train(self, mode: bool = True) -> TwoHeadDetector:
        """Train mode for the heads only: the frozen backbone's BatchNorm keeps its statistics."""
        super().train(mode)
        self.backbone.eval()
        return self

    def heads(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return self.box_head(features), self.class_head(features)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            features = self.backbone(images)
        return self.heads(features)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def letterless_resize(image: np.ndarray, side: int) -> np.ndarray:
    """Resize to ``side`` x ``side`` ignoring the aspect ratio, as the seed did (boxes are stored
    normalised, so they stay valid)."""
    import cv2

    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def to_input(image: np.ndarray, side: int, mean: tuple, std: tuple) -> Tensor:
    """RGB uint8 ``[H, W, 3]`` -> normalised float ``[3, side, side]``."""
    resized = letterless_resize(image, side).astype(np.float32) / 255.0
    tensor = torch.from_numpy(resized).permute(2, 0, 1)
    return (tensor - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


class SingleObjectImages(Dataset):
    """Records of a single-object dataset, images read lazily (one file per ``__getitem__``).

    Items: ``(image [3, S, S], box [4] xyxy / image size, label)``; the first box of each record.
    ``mirrored``: every image flipped left-right and its box with it (``x1, x2 -> 1 - x2, 1 - x1``),
    the one augmentation a feature cache can hold (``--mirror-train`` adds these items).
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        indices: list[int],
        backbone: str,
        *,
        mirrored: bool = False,
    ) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.spec = BACKBONES[backbone]
        self.mirrored = mirrored

    def __len__(self) -> int:
        return len(self.indices)

    def target(self, index: int) -> tuple[Tensor, Tensor]:
        record = self.dataset.records[self.indices[index]]
        scale = np.array([record.width, record.height] * 2, dtype=np.float32)
        box = torch.from_numpy(record.boxes[0] / scale)
        if self.mirrored:
            box = torch.stack([1 - box[2], box[1], 1 - box[0], box[3]])
        return box, torch.tensor(int(record.labels[0]))

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        record = self.dataset.records[self.indices[index]]
        image = read_image(self.dataset.image_path(record))
        if self.mirrored:
            image = np.ascontiguousarray(image[:, ::-1])
        spec = self.spec
        box, label = self.target(index)
        return to_input(image, spec["image_size"], spec["mean"], spec["std"]), box, label


class CachedFeatures(Dataset):
    """``(features [F], box [4], label)`` from a feature tensor computed once."""

    def __init__(self, features: Tensor, boxes: Tensor, labels: Tensor) -> None:
        self.features, self.boxes, self.labels = features, boxes, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.features[index], self.boxes[index], self.labels[index]


@torch.no_grad()
def compute_features(
    backbone: nn.Module, images: SingleObjectImages, batch_size: int = 32, workers: int = 0
) -> CachedFeatures:
    """Run the frozen backbone once over every image: the cache the heads train on."""
    backbone.eval()
    device = next(backbone.parameters()).device
    features, boxes, labels = [], [], []
    loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=workers)
    for batch_images, batch_boxes, batch_labels in loader:
        features.append(backbone(batch_images.to(device)).cpu())
        boxes.append(batch_boxes)
        labels.append(batch_labels)
    return CachedFeatures(torch.cat(features), torch.cat(boxes), torch.cat(labels))


@dataclass
class LossWeights:
    """The seed's total loss: ``box * MSE(boxes) + label * CrossEntropy(logits)`` (both 1.0)."""

    box: float = 1.0
    label: float = 1.0
    giou: float = 0.0  # > 0 adds giou * (1 - GIoU) to the box loss (``--box-loss mse+giou``)
    l1: bool = False  # L1 instead of the seed's MSE on the corners (``--box-loss l1+giou``)


def ordered(boxes: Tensor) -> Tensor:
    """``[N, 4]`` with each pair of coordinates sorted, so that x1 <= x2 and y1 <= y2."""
    x = torch.stack([boxes[:, 0], boxes[:, 2]], 1)
    y = torch.stack([boxes[:, 1], boxes[:, 3]], 1)
    return torch.stack([x.min(1).values, y.min(1).values, x.max(1).values, y.max(1).values], 1)


def make_step(cached: bool, weights: LossWeights | None = None) -> Callable[..., dict[str, Tensor]]:
    """Engine step: ``(images or features, boxes, labels)`` -> ``{"loss_box", "loss_class"}``."""
    weights = weights or LossWeights()

    def step(model: TwoHeadDetector, batch: Any, device: torch.device) -> dict[str, Tensor]:
        inputs, boxes, labels = (item.to(device) for item in batch)
        predicted_boxes, logits = model.heads(inputs) if cached else model(inputs)
        distance = nn.functional.l1_loss if weights.l1 else nn.functional.mse_loss
        loss_box = distance(predicted_boxes, boxes)
        if weights.giou > 0:
            from torchvision.ops import generalized_box_iou_loss

            giou = generalized_box_iou_loss(ordered(predicted_boxes), boxes, reduction="mean")
            loss_box = loss_box + weights.giou * giou
        return {
            "loss_box": weights.box * loss_box,
            "loss_class": weights.label * nn.functional.cross_entropy(logits, labels),
        }

    return step


def paired_iou(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """IoU of ``boxes_a[i]`` with ``boxes_b[i]``: ``[N, 4], [N, 4] -> [N]`` (xyxy, any scale)."""
    from detseg.boxes import box_iou

    return torch.diagonal(box_iou(boxes_a, boxes_b)) if len(boxes_a) else boxes_a.new_zeros(0)


@torch.no_grad()
def evaluate_heads(
    model: TwoHeadDetector, batches: Any, cached: bool, device: torch.device
) -> dict[str, float]:
    """Mean box IoU and class accuracy over ``(inputs, boxes, labels)`` batches."""
    was_training = model.training
    model.eval()
    ious, hits = [], []
    for inputs, boxes, labels in batches:
        inputs = inputs.to(device)
        predicted, logits = model.heads(inputs) if cached else model(inputs)
        ious.append(paired_iou(predicted.cpu().double(), boxes.double()))
        hits.append((logits.argmax(1).cpu() == labels).double())
    model.train(was_training)
    return {
        "mean_iou": float(torch.cat(ious).mean()),
        "class_accuracy": float(torch.cat(hits).mean()),
    }


# --- pretraining the small backbone on a built-in classification task ---------------------------


class ShapeCrops(Dataset):
    """Shapes cut out of built-in ``shapes`` scenes (their box plus a random margin of context),
    resized to ``side`` x ``side``: a 5-class classification set (circle, triangle, ...).

    Every crop is cut once at construction (uint8, ``side`` x ``side``), each image read once.
    """

    def __init__(self, dataset: DetectionDataset, side: int = 64, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        crops, labels = [], []
        for record in dataset.records:
            image = read_image(dataset.image_path(record))
            for (x1, y1, x2, y2), label in zip(record.boxes, record.labels):
                w, h = x2 - x1, y2 - y1
                m = rng.uniform(0.05, 0.4, size=4)
                left, top = int(max(0, x1 - m[0] * w)), int(max(0, y1 - m[1] * h))
                right = int(min(record.width, x2 + m[2] * w)) + 1
                bottom = int(min(record.height, y2 + m[3] * h)) + 1
                crops.append(letterless_resize(image[top:bottom, left:right], side))
                labels.append(int(label))
        self.crops = np.stack(crops)  # [N, side, side, 3] uint8
        self.labels = torch.tensor(labels)
        spec = BACKBONES["small"]
        self.mean = torch.tensor(spec["mean"]).view(3, 1, 1)
        self.std = torch.tensor(spec["std"]).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        crop = torch.from_numpy(self.crops[index]).permute(2, 0, 1).float() / 255.0
        return (crop - self.mean) / self.std, self.labels[index]


class WholeImages(Dataset):
    """Whole images of a single-object dataset with their class: plain image classification.

    Every image is read and resized once at construction (uint8, ``side`` x ``side``).
    """

    def __init__(self, dataset: DetectionDataset, side: int = 128, *, boxes: bool = False) -> None:
        self.images = np.stack(
            [letterless_resize(read_image(dataset.image_path(r)), side) for r in dataset.records]
        )
        self.labels = torch.tensor([int(r.labels[0]) for r in dataset.records])
        # with ``boxes``: items are (image, (label, box xyxy normalised)) for the locating task
        self.boxes = (
            torch.tensor(np.stack([np.asarray(r.boxes[0], np.float32) /
                                   np.float32([r.width, r.height, r.width, r.height])
                                   for r in dataset.records]))
            if boxes else None
        )  # fmt: skip
        spec = BACKBONES["small"]
        self.mean = torch.tensor(spec["mean"]).view(3, 1, 1)
        self.std = torch.tensor(spec["std"]).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1).float() / 255.0
        image = (image - self.mean) / self.std
        if self.boxes is None:
            return image, self.labels[index]
        return image, (self.labels[index], self.boxes[index])


def pretrain_sets(task: str, num_images: int | None, seed: int) -> tuple[Dataset, Dataset, int]:
    """``(train, val, num_classes)`` of a pretraining task (:data:`PRETRAIN_TASKS`)."""
    from detseg.data import recipes

    if task == "shape_crops":
        train = ShapeCrops(recipes.load("shapes", split="train", num_images=num_images), seed=seed)
        val = ShapeCrops(recipes.load("shapes", split="val", num_images=num_images), seed=seed + 1)
        return train, val, 5
    # other images of the same three classes, drawn with data seed 1: never the detector's images
    images = recipes.load("single_object", seed=1, num_images=num_images)
    indices = np.random.default_rng(seed).permutation(len(images))
    cut = max(1, len(images) // 5)
    subset = [replace(images, records=[images.records[i] for i in part]) for part in
              (indices[cut:], indices[:cut])]  # fmt: skip
    boxes = task == "other_images_boxes"
    return (WholeImages(subset[0], boxes=boxes), WholeImages(subset[1], boxes=boxes),
            len(images.classes))  # fmt: skip


PRETRAIN_TASKS = {
    "shape_crops": "classify shapes cut out of the built-in shapes scenes (5 classes)",
    "other_images": "classify 600 other built-in single_object images (data seed 1; 3 classes)",
    "other_images_boxes": "classify and locate (box of the object, from the grid features) 600 "
    "other built-in single_object images (data seed 1; 3 classes)",
}


def pretrain_small_backbone(
    *,
    task: str = "shape_crops",
    seed: int = 0,
    num_images: int | None = None,
    epochs: int = 4,
    max_steps: int | None = None,
    log: Callable[[str], Any] = lambda text: print(text, file=sys.stderr),
) -> tuple[SmallBackbone, dict[str, float]]:
    """Train :class:`SmallBackbone` on a built-in classification task (:data:`PRETRAIN_TASKS`).

    The stand-in for ImageNet pretraining: a classification task on other images than the detector's.
    ``other_images_boxes`` also asks where the object is: a linear layer on the flattened 4 x 4
    grid (dropped after pretraining, never part of the backbone's weights) regresses its box with
    L1 + (1 - GIoU), so the frozen features keep position, as a detection-pretrained backbone does.
    Returns the backbone (eval mode) and ``{"crop_accuracy" (held-out accuracy of the task),
    "seconds", "train_crops" (training items)}`` (+ ``"box_iou"``, held out, when locating).
    """
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    train_set, val_set, num_classes = pretrain_sets(task, num_images, seed)
    backbone = SmallBackbone(num_pretrain_classes=num_classes)
    locating = task == "other_images_boxes"
    locator = nn.Sequential(nn.Linear(backbone.out_features, 4), nn.Sigmoid())
    parameters = [*backbone.parameters(), *(locator.parameters() if locating else [])]
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    loader = DataLoader(train_set, batch_size=64, shuffle=True, generator=generator)
    total = epochs * len(loader) if max_steps is None else min(max_steps, epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=total)
    steps = 0
    backbone.train()
    for epoch in range(epochs):
        for crops, targets in loader:
            labels = targets[0] if locating else targets
            loss = nn.functional.cross_entropy(backbone.classify(crops), labels)
            if locating:
                loss = loss + locate_loss(locator(backbone(crops)), targets[1])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            steps += 1
            if steps >= total:
                break
        log(f"pretraining the small backbone ({task}): epoch {epoch + 1}, loss {loss:.3f}")
        if steps >= total:
            break
    backbone.eval()
    hits, ious = [], []
    with torch.no_grad():
        for crops, targets in DataLoader(val_set, batch_size=128):
            labels = targets[0] if locating else targets
            hits.append((backbone.classify(crops).argmax(1) == labels).double())
            if locating:
                ious.append(paired_iou(ordered(locator(backbone(crops))).double(),
                                       targets[1].double()))  # fmt: skip
    accuracy = float(torch.cat(hits).mean())
    return backbone, {
        "crop_accuracy": accuracy,
        "seconds": time.perf_counter() - start,
        "train_crops": len(train_set),
        **({"box_iou": float(torch.cat(ious).mean())} if locating else {}),
    }


def locate_loss(predicted: Tensor, boxes: Tensor) -> Tensor:
    """L1 + (1 - GIoU) between ``[N, 4]`` predicted and true boxes (xyxy, normalised)."""
    from torchvision.ops import generalized_box_iou_loss

    l1 = nn.functional.l1_loss(predicted, boxes)
    return l1 + generalized_box_iou_loss(ordered(predicted), boxes, reduction="mean")


def small_backbone_path(runs: Path, task: str, seed: int, epochs: int, smoke: bool) -> Path:
    """Where the pretrained small backbone is cached (one per task, seed and epochs)."""
    name = f"small-backbone-{task}-seed{seed}-e{epochs}{'-smoke' if smoke else ''}.pt"
    return runs / "04_basic_object_detection" / name
