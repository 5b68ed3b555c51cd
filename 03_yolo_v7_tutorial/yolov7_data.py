"""Data for YOLOv7 training and evaluation: any YOLO ``data.yaml`` (Roboflow export) in, batches out.

Training samples: with probability ``mosaic`` four images in one (:func:`detseg.data.yolo_augment
.random_mosaic`), else the image letterboxed to ``image_size`` (:func:`detseg.data.letterbox
.letterbox`); then HSV jitter and a horizontal flip. Evaluation samples: letterbox only, with the
scale and padding kept so predictions go back to the original pixels. Randomness of sample ``i`` in
epoch ``e`` comes from ``sample_rng(seed, e, i)``, so ``--resume`` sees the same augmentations.

A batch is ``(images [N, 3, S, S] float in [0, 1], targets [M, 6], metas)``: one target row per
object, ``(image index in batch, class, cx, cy, w, h)`` in input pixels (what the loss wants).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from detseg.data import recipes
from detseg.data.formats import yolo
from detseg.data.imageio import read_image
from detseg.data.letterbox import letterbox, letterbox_boxes
from detseg.data.samples import sample_rng
from detseg.data.torch_datasets import image_to_tensor
from detseg.data.types import DetectionDataset
from detseg.data.yolo_augment import hflip, hsv_gains, hsv_jitter, random_mosaic
from detseg.errors import UserError

BUILT_IN = "tabletop"


def read_split(
    data_path: str | Path | None, split: str, *, seed: int = 0, num_images: int | None = None
) -> DetectionDataset:
    """One split of the dataset: the built-in ``tabletop`` export when ``data_path`` is None, else
    the YOLO ``data.yaml`` (or its folder) given. ``split``: ``"train"``, ``"val"`` or ``"test"``."""
    if data_path is None:
        return recipes.load(BUILT_IN, seed=seed, num_images=num_images, split=split)
    path = Path(data_path)
    yaml_path = path / "data.yaml" if path.is_dir() else path
    if not yaml_path.is_file():
        raise UserError(
            "no data.yaml here", path=yaml_path,
            fix="pass the folder of a YOLO / Roboflow export (it holds data.yaml) or the yaml itself",
        )  # fmt: skip
    dataset = yolo.read(yaml_path, split)
    for record in dataset.records:  # six-decimal labels may overshoot the border by 1e-6 * size
        limits = np.array([record.width, record.height] * 2, dtype=np.float32)
        record.boxes = np.clip(record.boxes, 0, limits).astype(np.float32)
    if len(dataset) == 0:
        raise UserError(
            f"split {split!r} has no images", path=dataset.image_root,
            fix="check the train / val entries of data.yaml",
        )  # fmt: skip
    return dataset


class YoloSamples(Dataset):
    """Letterboxed (and, for training, augmented) samples of a :class:`DetectionDataset`.

    Args:
        dataset: from :func:`read_split` or any reader.
        image_size: square input side S (a multiple of 32).
        augment: mosaic / HSV / flip (training) or letterbox only (evaluation).
        mosaic: probability of a mosaic sample.
        hsv: hue, saturation, value gains (YOLOv7's 0.015, 0.7, 0.4).
        flip: probability of a horizontal flip.
        mosaic_epochs: the last epoch (1-based, as the engine counts) with mosaic samples; later
            epochs see single letterboxed images, the evaluation's scale (YOLOX's "close mosaic").
            None: mosaic in every epoch.
        seed: base seed of the per-sample generators; the engine calls :meth:`set_epoch`.
        mosaic_size: side of every sample in the mosaic epochs (``mosaic_epochs``; all epochs
            when it is None); the later epochs use ``image_size``. None: ``image_size`` throughout.
            Smaller mosaic epochs are cheaper (progressive resizing: the bulk of training at a low
            resolution, the last epochs at the evaluation's).
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        image_size: int,
        *,
        augment: bool,
        mosaic: float = 1.0,
        hsv: tuple[float, float, float] = (0.015, 0.7, 0.4),
        flip: float = 0.5,
        mosaic_epochs: int | None = None,
        seed: int = 0,
        mosaic_size: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.image_size = image_size
        self.augment = augment
        self.mosaic = mosaic
        self.hsv = hsv
        self.flip = flip
        self.mosaic_epochs = mosaic_epochs
        self.seed = seed
        self.mosaic_size = mosaic_size
        self.epoch = 0
        self._cache: dict[int, np.ndarray] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` (RGB uint8), decoded once and kept in memory."""
        if index not in self._cache:
            record = self.dataset.records[index]
            image = read_image(self.dataset.image_path(record))
            if image.shape[:2] != (record.height, record.width):
                raise UserError(
                    f"image is {image.shape[0]}x{image.shape[1]} but its record says "
                    f"{record.height}x{record.width}", path=self.dataset.image_path(record),
                    fix="re-export the dataset or run 'detseg data validate' on it",
                )  # fmt: skip
            self._cache[index] = image
        return self._cache[index]

    def _raw(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        record = self.dataset.records[index]
        return self.image(index), record.boxes.astype(np.float32), record.labels.astype(np.int64)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, np.ndarray, dict[str, Any]]:
        record = self.dataset.records[index]
        meta: dict[str, Any] = {
            "image_id": int(record.image_id),
            "index": index,
            "size": (record.height, record.width),
        }
        rng = sample_rng(self.seed, self.epoch, index)
        mosaic, size = self.mosaic, self.image_size
        if self.mosaic_epochs is not None and self.epoch > self.mosaic_epochs:
            mosaic = 0.0
        elif self.augment and self.mosaic_size is not None:
            size = self.mosaic_size
        if self.augment and rng.random() < mosaic:
            picks = [index] + [int(i) for i in rng.integers(0, len(self.dataset), 3)]
            parts = [self._raw(i) for i in picks]
            image, boxes, labels = random_mosaic(
                rng, [p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts],
                size=size,
            )  # fmt: skip
            meta.update(scale=1.0, pad=(0.0, 0.0))
        else:
            image, boxes, labels = self._raw(index)
            image, scale, pad = letterbox(image, size)
            boxes = letterbox_boxes(boxes, scale, pad)
            meta.update(scale=scale, pad=pad)
        if self.augment:
            image = hsv_jitter(image, hsv_gains(rng, *self.hsv))
            if rng.random() < self.flip:
                image, boxes = hflip(image, boxes)
        targets = np.concatenate(
            [labels.reshape(-1, 1).astype(np.float32), _xyxy_to_cxcywh(boxes)], axis=1
        )  # [n, 5]: class, cx, cy, w, h
        return image_to_tensor(image), targets, meta


def _xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.stack(
        [(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
         boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1,
    )  # fmt: skip


def collate(
    items: Sequence[tuple[torch.Tensor, np.ndarray, dict[str, Any]]],
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
    """Stack images; targets as rows ``(image index, class, cx, cy, w, h)`` [M, 6]."""
    images = torch.stack([item[0] for item in items])
    rows = [
        np.concatenate([np.full((len(t), 1), i, np.float32), t], axis=1)
        for i, (_, t, _) in enumerate(items)
    ]
    targets = torch.from_numpy(np.concatenate(rows) if rows else np.zeros((0, 6), np.float32))
    return images, targets, [item[2] for item in items]
