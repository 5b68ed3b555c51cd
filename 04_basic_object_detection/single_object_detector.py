"""The seed's single-object detector: a frozen backbone and two heads in parallel.

One image holds one object; the model answers "where" (a box, xyxy normalised to [0, 1]) and "what"
(one of ``C`` classes) at once::

    image [B, 3, S, S] -> frozen backbone -> features [B, F] -+-> box head   -> [B, 4] in [0, 1]
                                                              +-> class head -> [B, C] logits

The heads are exactly the seed's (PyImageSearch's PyTorch bounding-box regression lesson):

- box head: ``Linear(F, 128) ReLU Linear(128, 64) ReLU Linear(64, 32) ReLU Linear(32, 4) Sigmoid``
- class head: ``Linear(F, 512) ReLU Dropout Linear(512, 512) ReLU Dropout Linear(512, C)``

Backbones (:data:`BACKBONES`): ``resnet50`` (the seed's, ``F = 2048`` after global average pooling;
ImageNet weights when they can be downloaded; exactly the seed's heads) and ``small`` (5 conv
stages at 128 px, pretrained here on built-in images, :mod:`single_object_pretraining`). On the
small backbone the class head reads its flattened 4 x 4 x 128 grid (``F = 2048``) and the box head
by default its finer 8 x 8 x 128 map through a trainable convolution to 32 channels, flattened
into the seed's layers (:func:`spatial_box_head`; ``--box-map 0`` gives the seed's box head on the
grid).

Because the backbone is frozen, its features for an image never change: :func:`compute_features`
runs it once over the dataset and the heads train on that cache (``--cached-features``), instead of
running the backbone on every image in every epoch as the seed did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from detseg.boxes import paired_box_iou as paired_iou  # IoU of a[i] with b[i]: [N, 4] x 2 -> [N]
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

    What ``forward`` returns (:meth:`set_output`), at the 128 px input of :data:`BACKBONES`:

    - ``grid`` 4 (the map after the last max-pool, ``[B, 2048]``) or 8 (the map before it, stride
      16, ``[B, 8192]``), flattened: unlike a global average it keeps *where* things are;
    - with ``box_map`` 8 or 16, the map the box head reads, flattened, *followed by* the grid-4
      features the class head reads: ``[B, 128 * box_map**2 + 2048]``. ``box_map`` 8 is the map
      before the last max-pool (a cell every 16 px), 16 the map before the fourth (every 8 px).
      :class:`TwoHeadDetector` splits them (``box_map_shape``, ``class_features``).

    ``classify`` (global average + linear) is the head of the pretraining task only.
    """

    def __init__(
        self,
        num_pretrain_classes: int = 5,
        widths: tuple[int, ...] = (16, 32, 64, 128, 128),
        *,
        grid: int = 4,
        box_map: int = 0,
    ):
        super().__init__()
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
        self.widths = tuple(widths)
        self.classifier = nn.Linear(channels, num_pretrain_classes)
        self.set_output(grid=grid, box_map=box_map)

    def set_output(self, *, grid: int = 4, box_map: int = 0) -> SmallBackbone:
        """Choose what ``forward`` returns (class docstring); no weights change."""
        if grid not in (4, 8):
            raise ValueError(f"grid must be 4 or 8, got {grid}")
        if box_map not in (0, 8, 16):
            raise ValueError(f"box_map must be 0, 8 or 16, got {box_map}")
        if box_map and grid != 4:
            raise ValueError("with a box map the class features are the grid-4 ones")
        self.grid, self.box_map = grid, box_map
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.class_features = self.widths[-1] * grid * grid
        # the box map: before the last max-pool (8) or the fourth (16), at 128 px
        self.box_map_cut = len(self.body) - (1 if box_map == 8 else 5)
        channels = self.widths[-1] if box_map == 8 else self.widths[-2]
        self.box_map_shape = (channels, box_map, box_map) if box_map else None
        self.out_features = self.class_features + (channels * box_map**2 if box_map else 0)
        return self

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, out_features]`` (class docstring)."""
        if not self.box_map:
            body = self.body if self.grid == 4 else self.body[:-1]  # grid 8: before the last pool
            return self.pool(body(images)).flatten(1)
        box_map = self.body[: self.box_map_cut](images)  # [B, 128, 8 or 16, 8 or 16]
        last = self.pool(self.body[self.box_map_cut :](box_map))  # [B, 128, 4, 4]
        return torch.cat([box_map.flatten(1), last.flatten(1)], 1)

    def classify(self, images: Tensor) -> Tensor:
        """Pretraining head: ``[B, 3, H, W]`` -> ``[B, num_pretrain_classes]`` logits."""
        return self.classifier(self.body(images).mean(dim=(2, 3)))


def spatial_box_head(
    map_shape: tuple[int, int, int], channels: int, kernel: int = 1
) -> nn.Sequential:
    """The small backbone's box head: a trainable ``kernel`` x ``kernel`` convolution to
    ``channels`` (+ ReLU) on the box map ``[B, C, H, W]``, flattened, then the seed's layers
    (:func:`box_head`, ``channels * H * W -> 128 -> 64 -> 32 -> 4``, sigmoid). ``channels`` 0: the
    seed's head on the flattened map itself."""
    depth, height, width = map_shape
    if channels == 0:
        return nn.Sequential(nn.Flatten(), *box_head(depth * height * width))
    return nn.Sequential(
        nn.Conv2d(depth, channels, kernel, padding=kernel // 2),
        nn.ReLU(),
        nn.Flatten(),
        *box_head(channels * height * width),
    )


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
    ``heads(features [B, F])`` is the same from cached features. A backbone with a
    ``box_map_shape`` (the small one with ``box_map``) gets :func:`spatial_box_head`
    (``box_channels``, ``box_kernel``) on its box map and the class head on its ``class_features``;
    any other (ResNet-50) gets exactly the seed's heads on its ``out_features``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        dropout: float = 0.5,
        *,
        box_channels: int = 32,
        box_kernel: int = 1,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)
        self.box_map_shape = getattr(backbone, "box_map_shape", None)
        class_features = int(getattr(backbone, "class_features", backbone.out_features))
        if self.box_map_shape is None:
            self.box_head = box_head(class_features)
        else:
            self.box_head = spatial_box_head(self.box_map_shape, box_channels, box_kernel)
        self.class_head = class_head(class_features, num_classes, dropout)

    def train(self, mode: bool = True) -> TwoHeadDetector:
        """Train mode for the heads only: the frozen backbone's BatchNorm keeps its statistics."""
        super().train(mode)
        self.backbone.eval()
        return self

    def heads(self, features: Tensor) -> tuple[Tensor, Tensor]:
        if self.box_map_shape is None:
            return self.box_head(features), self.class_head(features)
        split = int(np.prod(self.box_map_shape))
        box_map = features[:, :split].unflatten(1, self.box_map_shape)  # [B, C, H, W]
        return self.box_head(box_map), self.class_head(features[:, split:])

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
    Fixed augmentations, which a feature cache can hold (each a second copy of the training items):

    - ``mirrored``: every image flipped left-right and its box with it (``x1, x2 -> 1 - x2, 1 - x1``;
      ``--mirror-train``);
    - ``crop_seed``: every image cropped to a window that keeps the whole box, drawn once per item
      from ``(crop_seed, index)``: each margin around the box loses a uniform share in
      ``[0, crop_margin]``; the box is given in the crop's coordinates (``--crop-copies``).
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        indices: list[int],
        backbone: str,
        *,
        mirrored: bool = False,
        crop_seed: int | None = None,
        crop_margin: float = 0.5,
    ) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.spec = BACKBONES[backbone]
        self.mirrored = mirrored
        self.crop_seed, self.crop_margin = crop_seed, crop_margin

    def __len__(self) -> int:
        return len(self.indices)

    def window(self, index: int) -> tuple[int, int, int, int]:
        """The pixel window ``(left, top, right, bottom)`` item ``index`` is cut to (whole image
        without ``crop_seed``)."""
        record = self.dataset.records[self.indices[index]]
        if self.crop_seed is None:
            return 0, 0, int(record.width), int(record.height)
        x1, y1, x2, y2 = (float(v) for v in record.boxes[0])
        cut = np.random.default_rng([self.crop_seed, index]).uniform(0, self.crop_margin, 4)
        left, top = int(cut[0] * x1), int(cut[1] * y1)
        right = int(np.ceil(record.width - cut[2] * (record.width - x2)))
        bottom = int(np.ceil(record.height - cut[3] * (record.height - y2)))
        return left, top, right, bottom

    def target(self, index: int) -> tuple[Tensor, Tensor]:
        record = self.dataset.records[self.indices[index]]
        left, top, right, bottom = self.window(index)
        shift = np.array([left, top] * 2, dtype=np.float32)
        scale = np.array([right - left, bottom - top] * 2, dtype=np.float32)
        box = torch.from_numpy(np.clip((record.boxes[0] - shift) / scale, 0, 1).astype(np.float32))
        if self.mirrored:
            box = torch.stack([1 - box[2], box[1], 1 - box[0], box[3]])
        return box, torch.tensor(int(record.labels[0]))

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        record = self.dataset.records[self.indices[index]]
        image = read_image(self.dataset.image_path(record))
        left, top, right, bottom = self.window(index)
        image = image[top:bottom, left:right]
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
