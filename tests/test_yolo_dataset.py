"""detseg.data.yolo_dataset: letterboxed targets that map back, reproducible augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from detseg.data.imageio import write_image
from detseg.data.letterbox import unletterbox_boxes
from detseg.data.types import DetectionDataset, DetectionRecord
from detseg.data.yolo_dataset import YoloAugment, YoloDataset, yolo_collate


def make_dataset(root: Path, count: int = 4) -> DetectionDataset:
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        height, width = (60, 100) if i % 2 else (90, 50)
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        write_image(root / f"{i}.png", image)
        boxes = np.array([[5, 6, 30, 40], [10, 20, width - 1, height - 1]], np.float32)
        records.append(DetectionRecord(i + 1, f"{i}.png", height, width, boxes, [0, 2]))
    return DetectionDataset(root, ["a", "b", "c"], records)


def test_eval_samples_map_back(tmp_path: Path):
    dataset = YoloDataset(make_dataset(tmp_path), 64)
    image, target = dataset[1]  # 60 x 100 -> scale 0.64, 38 x 64, pad_y (64 - 38) // 2 = 13
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert target["scale"] == 0.64 and target["pad"] == (0.0, 13.0)
    assert target["orig_size"] == (60, 100) and target["image_id"] == 2
    torch.testing.assert_close(target["boxes"][0], torch.tensor([3.2, 16.84, 19.2, 38.6]))
    back = unletterbox_boxes(target["boxes"], target["scale"], target["pad"], target["orig_size"])
    torch.testing.assert_close(
        back, torch.from_numpy(dataset.dataset.records[1].boxes), atol=1e-4, rtol=0
    )
    assert target["labels"].tolist() == [0, 2]
    images, targets = yolo_collate([dataset[0], dataset[1]])
    assert images.shape == (2, 3, 64, 64) and len(targets) == 2


def test_augmented_samples_are_reproducible(tmp_path: Path):
    augment = YoloAugment(mosaic=0.5, hflip=0.5, hsv=(0.015, 0.5, 0.3), scale=(0.7, 1.3))
    dataset = YoloDataset(make_dataset(tmp_path, 6), 64, augment=augment, seed=3, cache_images=True)
    first = [dataset[i] for i in range(6)]
    again = [dataset[i] for i in range(6)]
    dataset.set_epoch(1)
    other = [dataset[i] for i in range(6)]
    for (image, target), (image2, target2) in zip(first, again):
        assert torch.equal(image, image2) and torch.equal(target["boxes"], target2["boxes"])
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, other))
    for image, target in first + other:
        boxes = target["boxes"]
        assert image.shape == (3, 64, 64)
        assert len(boxes) == len(target["labels"])
        assert ((boxes >= 0) & (boxes <= 64)).all() and (boxes[:, 2:] > boxes[:, :2]).all()
