"""torch Dataset and tf.data adapters on tiny datasets written to tmp (PNG, exact pixels)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import DataLoader

from detseg.data import transforms as T
from detseg.data.imageio import read_image, read_label_png, write_image
from detseg.data.samples import decode_segmentation
from detseg.data.torch_datasets import (
    DetectionTorchDataset,
    SegmentationTorchDataset,
    detection_collate,
    split_indices,
    subset,
)
from detseg.data.types import (
    DetectionDataset,
    DetectionRecord,
    SegmentationDataset,
    SegmentationRecord,
)
from detseg.errors import UserError


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": list(mask.shape), "counts": counts}


def ellipse_mask(height, width, center, axes):
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, center, axes, 0.0, 0, 360, 1, -1)
    return mask


@pytest.fixture
def detection(tmp_path):
    """Two PNG images: a polygon rectangle + a compressed RLE ellipse; a crowd uncompressed RLE."""
    rng = np.random.default_rng(0)
    ellipse = ellipse_mask(48, 64, (45, 30), (10, 7))
    crowd = ellipse_mask(40, 56, (20, 20), (12, 9))
    compressed = mask_utils.encode(np.asfortranarray(ellipse))
    compressed["counts"] = compressed["counts"].decode("ascii")
    records = [
        DetectionRecord(
            image_id=7,
            file_name="images/a.png",
            height=48,
            width=64,
            boxes=[[10, 8, 30, 28], T.boxes_from_masks(ellipse[None])[0]],
            labels=[0, 1],
            segmentations=[[[10, 8, 30, 8, 30, 28, 10, 28]], compressed],
        ),
        DetectionRecord(
            image_id=9,
            file_name="images/b.png",
            height=40,
            width=56,
            boxes=[T.boxes_from_masks(crowd[None])[0]],
            labels=[2],
            iscrowd=[True],
            segmentations=[uncompressed_rle(crowd)],
        ),
    ]
    for record in records:
        image = rng.integers(0, 256, (record.height, record.width, 3), dtype=np.uint8)
        write_image(tmp_path / record.file_name, image)
    masks = {7: np.stack([np.zeros_like(ellipse), ellipse]), 9: crowd[None]}
    return DetectionDataset(tmp_path, ["a", "b", "c"], records, format="test"), masks


@pytest.fixture
def segmentation(tmp_path):
    rng = np.random.default_rng(1)
    records = []
    for i, (height, width) in enumerate([(30, 40), (36, 28), (30, 40)]):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        mask = rng.choice([0, 1, 2, 255], size=(height, width)).astype(np.uint8)
        write_image(tmp_path / f"img/{i}.png", image)
        write_image(tmp_path / f"mask/{i}.png", mask)
        records.append(SegmentationRecord(i, f"img/{i}.png", f"mask/{i}.png", height, width))

    def loader(root: Path, record: SegmentationRecord):
        return read_image(root / record.file_name), read_label_png(root / record.mask_name)

    return SegmentationDataset(tmp_path, ["bg", "x", "y"], records, loader, format="test")


def test_decode_segmentation_formats():
    mask = ellipse_mask(20, 30, (15, 10), (6, 4))
    compressed = mask_utils.encode(np.asfortranarray(mask))
    np.testing.assert_array_equal(decode_segmentation(compressed, 20, 30), mask)
    np.testing.assert_array_equal(decode_segmentation(uncompressed_rle(mask), 20, 30), mask)
    square = decode_segmentation([[2, 3, 12, 3, 12, 9, 2, 9]], 20, 30)
    assert np.abs(T.boxes_from_masks(square[None])[0] - [2, 3, 12, 9]).max() <= 1
    assert decode_segmentation([[1, 2]], 20, 30).sum() == 0  # degenerate polygon


def test_detection_sample_is_torchvision_ready(detection):
    dataset, masks = detection
    image, target = DetectionTorchDataset(dataset)[0]
    assert image.dtype == torch.float32 and image.shape == (3, 48, 64)
    pixels = read_image(dataset.image_path(dataset.records[0]))
    torch.testing.assert_close(image, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (2, 4)
    torch.testing.assert_close(target["boxes"], torch.from_numpy(dataset.records[0].boxes))
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [1, 2]
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (2, 48, 64)
    np.testing.assert_array_equal(target["masks"][1].numpy(), masks[7][1])
    rect_box = T.boxes_from_masks(target["masks"][:1].numpy())[0]
    assert np.abs(rect_box - [10, 8, 30, 28]).max() <= 1
    assert target["area"].dtype == torch.float32
    assert target["area"][1].item() == masks[7][1].sum()
    assert target["iscrowd"].dtype == torch.int64 and target["iscrowd"].tolist() == [0, 0]
    assert target["image_id"] == 7


def test_uncompressed_rle_crowd(detection):
    dataset, masks = detection
    _, target = DetectionTorchDataset(dataset)[1]
    np.testing.assert_array_equal(target["masks"].numpy(), masks[9])
    assert target["iscrowd"].tolist() == [1] and target["labels"].tolist() == [3]


def test_boxes_only_records_have_no_masks(detection):
    dataset, _ = detection
    for record in dataset.records:
        record.segmentations = None
    _, target = DetectionTorchDataset(dataset)[0]
    assert "masks" not in target
    torch.testing.assert_close(target["area"], torch.tensor([400.0, 21.0 * 15.0]))


def test_dataloader_with_collate_and_flip(detection):
    dataset, masks = detection
    wrapped = DetectionTorchDataset(dataset, T.HorizontalFlip(p=1.0))
    images, targets = next(iter(DataLoader(wrapped, batch_size=2, collate_fn=detection_collate)))
    assert isinstance(images, tuple) and [im.shape for im in images] == [(3, 48, 64), (3, 40, 56)]
    np.testing.assert_array_equal(targets[1]["masks"].numpy(), masks[9][:, :, ::-1])
    flipped = targets[0]["boxes"].numpy()
    np.testing.assert_allclose(flipped[0], [64 - 30, 8, 64 - 10, 28])
    np.testing.assert_allclose(flipped, T.boxes_from_masks(targets[0]["masks"].numpy()), atol=1)


def test_augmentation_is_seeded_by_epoch_and_index(detection):
    dataset, _ = detection
    crop = T.RandomCrop((24, 24), min_visibility=0.0)
    wrapped = DetectionTorchDataset(dataset, crop, seed=3)
    first, again = wrapped[0][0], wrapped[0][0]
    torch.testing.assert_close(first, again)
    draws = set()
    for epoch in range(6):
        wrapped.set_epoch(epoch)
        draws.add(wrapped[0][0].numpy().tobytes())
    assert len(draws) > 1


def test_image_size_must_match_annotation(detection):
    dataset, _ = detection
    dataset.records[0].width = 65
    with pytest.raises(UserError, match="annotation says 48x65"):
        DetectionTorchDataset(dataset)[0]


def test_segmentation_dataset(segmentation):
    image, mask = SegmentationTorchDataset(segmentation)[1]
    assert image.shape == (3, 36, 28) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert mask.dtype == torch.int64 and mask.shape == (36, 28)
    expected = read_label_png(segmentation.root / "mask/1.png")
    np.testing.assert_array_equal(mask.numpy(), expected)
    normalized, _ = SegmentationTorchDataset(
        segmentation, normalize=T.Normalize((0.5,) * 3, (0.5,) * 3)
    )[1]
    torch.testing.assert_close(normalized, image * 2 - 1)
    resized, small = SegmentationTorchDataset(segmentation, T.Resize((18, 14)))[1]
    assert resized.shape == (3, 18, 14)
    assert set(small.unique().tolist()) <= {0, 1, 2, 255}


def test_split_indices_and_subset(segmentation):
    train, val = split_indices(10, val_fraction=0.3, seed=5)
    assert len(val) == 3 and sorted(train + val) == list(range(10))
    assert split_indices(10, val_fraction=0.3, seed=5) == (train, val)
    assert any(split_indices(10, val_fraction=0.3, seed=s)[1] != val for s in range(6, 10))
    assert split_indices(3, val_fraction=0.1)[1] != []  # never an empty validation set
    wrapped = SegmentationTorchDataset(segmentation)
    parts = [subset(wrapped, split, val_fraction=0.34, seed=1) for split in ("train", "val")]
    assert sorted(parts[0].indices + parts[1].indices) == [0, 1, 2]
    with pytest.raises(ValueError):
        subset(wrapped, "test")


# --------------------------------------------------------------------------------------- tf.data


@pytest.mark.tf
def test_tf_detection_matches_torch(detection):
    from detseg.data.tf_datasets import detection_tf_dataset

    dataset, _ = detection
    batches = list(detection_tf_dataset(dataset, image_size=(32, 40), batch_size=2))
    assert len(batches) == 1
    images, targets = batches[0]
    assert images.dtype.name == "float32" and tuple(images.shape) == (2, 32, 40, 3)
    assert tuple(targets["boxes"].shape) == (2, 2, 4) and tuple(targets["labels"].shape) == (2, 2)
    assert targets["num_boxes"].numpy().tolist() == [2, 1]
    reference = DetectionTorchDataset(dataset, T.Resize((32, 40)))
    for i in range(2):
        image, target = reference[i]
        np.testing.assert_allclose(images[i].numpy(), image.permute(1, 2, 0).numpy(), atol=1e-6)
        count = int(targets["num_boxes"][i])
        np.testing.assert_allclose(targets["boxes"][i, :count].numpy(), target["boxes"].numpy())
        assert (targets["labels"][i, :count].numpy() + 1).tolist() == target["labels"].tolist()
    assert targets["labels"][1, 1] == -1 and not targets["boxes"][1, 1].numpy().any()
    normalized = next(
        iter(detection_tf_dataset(dataset, image_size=(32, 40), batch_size=2, normalize_boxes=True))
    )
    np.testing.assert_allclose(
        normalized[1]["boxes"][0, 0].numpy(), [10 / 64, 8 / 48, 30 / 64, 28 / 48], rtol=1e-5
    )


@pytest.mark.tf
def test_tf_shuffle_is_seeded_permutation(segmentation):
    from detseg.data.tf_datasets import segmentation_tf_dataset

    def order(seed):
        pipeline = segmentation_tf_dataset(
            segmentation, image_size=(8, 8), batch_size=1, shuffle=True, seed=seed
        )
        return [batch[0].numpy().tobytes() for batch in pipeline]

    first = order(4)
    assert first == order(4) and len(set(first)) == 3


@pytest.mark.tf
def test_tf_segmentation_matches_torch(segmentation):
    from detseg.data.tf_datasets import segmentation_tf_dataset

    normalize = T.Normalize()
    pipeline = segmentation_tf_dataset(
        segmentation, image_size=(20, 24), batch_size=2, normalize=normalize
    )
    batches = list(pipeline)
    assert [tuple(b[0].shape) for b in batches] == [(2, 20, 24, 3), (1, 20, 24, 3)]
    reference = SegmentationTorchDataset(segmentation, T.Resize((20, 24)), normalize)
    images = np.concatenate([b[0].numpy() for b in batches])
    masks = np.concatenate([b[1].numpy() for b in batches])
    assert masks.dtype == np.int32
    for i in range(3):
        image, mask = reference[i]
        np.testing.assert_allclose(images[i], image.permute(1, 2, 0).numpy(), atol=1e-6)
        np.testing.assert_array_equal(masks[i], mask.numpy())
