"""detseg.data.pretraining: shape crops of other scenes, and the byte-level disjointness check."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from detseg.data import recipes
from detseg.data.imageio import write_image
from detseg.data.pretraining import (
    PRETRAIN_DATA_SEED,
    ShapeCrops,
    check_disjoint,
    cut_shape_crops,
    shape_crop_sets,
    train_steps,
)
from detseg.data.types import DetectionDataset, DetectionRecord
from detseg.errors import UserError


def _two_squares(root: Path) -> DetectionDataset:
    """One 100 x 100 PNG: a red square (class 0) at (10..29, 10..29) and a blue one (class 1) at
    (60..89, 50..79) on black."""
    image = np.zeros((100, 100, 3), np.uint8)
    image[10:30, 10:30] = (255, 0, 0)
    image[50:80, 60:90] = (0, 0, 255)
    write_image(root / "a.png", image)
    record = DetectionRecord(1, "a.png", 100, 100, [[10, 10, 30, 30], [60, 50, 90, 80]], [0, 1])
    return DetectionDataset(root, ["red", "blue"], [record])


def test_crops_hold_the_box_with_a_margin_and_its_label(tmp_path: Path) -> None:
    crops, labels = cut_shape_crops(_two_squares(tmp_path), side=32, seed=0)
    assert crops.shape == (2, 32, 32, 3) and crops.dtype == np.uint8
    assert labels.tolist() == [0, 1]
    # the margin is 5-40 % of the box on each side: the crop's centre is the square's colour,
    # its corners are background
    assert crops[0, 16, 16].tolist() == [255, 0, 0] and crops[1, 16, 16].tolist() == [0, 0, 255]
    for crop in crops:
        assert crop[0, 0].tolist() == [0, 0, 0] and crop[-1, -1].tolist() == [0, 0, 0]
        # the square fills more than a third and less than the whole crop
        assert 0.35 < (crop.max(axis=2) > 127).mean() < 0.95
    again, _ = cut_shape_crops(_two_squares(tmp_path), side=32, seed=0)
    other, _ = cut_shape_crops(_two_squares(tmp_path), side=32, seed=1)
    assert np.array_equal(crops, again) and not np.array_equal(crops, other)


def test_items_are_normalised_and_only_training_crops_flip(tmp_path: Path) -> None:
    dataset = _two_squares(tmp_path)
    plain = ShapeCrops(dataset, side=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert plain.crops.shape == (2, 3, 16, 16) and plain.classes == ["red", "blue"]
    image, label = plain[1]
    torch.testing.assert_close(image, (plain.crops[1].float() / 255 - 0.5) / 0.25)
    assert int(label) == 1
    assert [bool(torch.equal(plain[1][0], image)) for _ in range(10)] == [True] * 10
    flipping = ShapeCrops(dataset, side=16, flip=True)  # default: inputs in [0, 1]
    torch.manual_seed(0)
    views = set()
    for _ in range(20):
        item = flipping[1][0]
        if torch.equal(item, flipping.crops[1].float() / 255):
            views.add("plain")
        else:
            torch.testing.assert_close(item, flipping.crops[1].float().flip(-1) / 255)
            views.add("mirrored")
    assert views == {"plain", "mirrored"}


def test_crop_sets_come_from_another_data_seed_than_the_detector(isolated_dirs) -> None:
    train, held_out, num_classes = shape_crop_sets(16, seed=0, side=32)
    assert PRETRAIN_DATA_SEED != 0 and num_classes == 5
    assert train.flip and not held_out.flip and len(train) > 16 and len(held_out) > 0
    pretraining = {s: recipes.load("shapes", split=s, seed=PRETRAIN_DATA_SEED, num_images=16)
                   for s in ("train", "val")}  # fmt: skip
    detector = {s: recipes.load("shapes", split=s, num_images=16) for s in ("train", "val")}
    assert len(train) == sum(len(r.labels) for r in pretraining["train"].records)
    assert check_disjoint(pretraining, detector) == 16
    # the same seed gives the very same scenes: refused, naming the split and the count
    with pytest.raises(UserError, match=r"include 1[0-9] of the train images"):
        check_disjoint(detector, {"train": detector["train"]})


def test_disjointness_compares_bytes_not_names(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _two_squares(tmp_path / "a")
    second = _two_squares(tmp_path / "b")
    image = np.zeros((100, 100, 3), np.uint8)
    image[0, 0] = 1  # one pixel differs: other bytes under the same name
    write_image(tmp_path / "b" / "a.png", image)
    assert check_disjoint({"pretraining": first}, {"val": second}) == 1
    # the same bytes under another name are found
    shutil.copy(tmp_path / "a" / "a.png", tmp_path / "b" / "renamed.png")
    renamed = replace(second, records=[replace(second.records[0], file_name="renamed.png")])
    with pytest.raises(UserError, match=r"include 1 of the val images \(first: renamed.png\)"):
        check_disjoint({"pretraining": first}, {"val": renamed}, fix="use other images")


def test_train_steps_stops_at_total_logs_each_epoch_and_equals_a_hand_loop() -> None:
    torch.manual_seed(0)
    inputs, targets = torch.randn(10, 3), torch.randn(10, 1)
    batches = [(inputs[i : i + 2], targets[i : i + 2]) for i in range(0, 10, 2)]  # 5 a pass

    def setup():
        torch.manual_seed(1)
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return model, optimizer, scheduler

    model, optimizer, scheduler = setup()
    lines: list[str] = []
    steps = train_steps(
        batches,
        lambda batch: torch.nn.functional.mse_loss(model(batch[0]), batch[1]),
        optimizer,
        scheduler,
        epochs=3,
        total=7,
        describe="warm-up",
        log=lines.append,
    )
    assert steps == 7
    assert [line.split(", loss")[0] for line in lines] == ["warm-up: epoch 1", "warm-up: epoch 2"]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**7)

    hand, hand_optimizer, hand_scheduler = setup()
    for inputs_, targets_ in (batches + batches)[:7]:
        loss = torch.nn.functional.mse_loss(hand(inputs_), targets_)
        hand_optimizer.zero_grad()
        loss.backward()
        hand_optimizer.step()
        hand_scheduler.step()
    assert torch.equal(model.weight, hand.weight) and torch.equal(model.bias, hand.bias)
    assert lines[-1] == f"warm-up: epoch 2, loss {loss.item():.3f}"
