"""SSDlite's pretrained trunk (ssdlite_pretraining.py), its loading, and the mask-free targets."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from detseg.data import recipes
from detseg.data.imageio import read_image


def test_pretrained_trunk_loads_into_the_ssdlite_backbone_and_changes_its_output() -> None:
    """SSDlite cuts the trunk in two at C4's expansion layer: after loading, its two halves run
    one after the other compute exactly the pretrained trunk, and the backbone's maps differ from
    the random ones it had."""
    from detection_zoo import build_ssdlite320, load_pretrained_trunk, mobilenet_v3_for_ssdlite

    torch.manual_seed(0)
    trunk = mobilenet_v3_for_ssdlite(0.25).features
    for module in trunk.modules():  # statistics other than 0 / 1, so that they must travel too
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    trunk.eval()
    model = build_ssdlite320(6, width_mult=0.25, image_size=128).eval()
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        before = [m.clone() for m in model.backbone(images).values()]
        load_pretrained_trunk(model, trunk.state_dict(), width_mult=0.25)
        halves = model.backbone.features
        torch.testing.assert_close(halves[1](halves[0](images)), trunk(images))
        after = list(model.backbone(images).values())
    assert all(not torch.allclose(a, b, rtol=1e-3, atol=0) for a, b in zip(before, after))


def test_a_trunk_of_another_width_is_refused() -> None:
    from detection_zoo import build_ssdlite320, load_pretrained_trunk, mobilenet_v3_for_ssdlite

    model = build_ssdlite320(6, width_mult=0.5, image_size=128)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_pretrained_trunk(
            model, mobilenet_v3_for_ssdlite(0.25).features.state_dict(), width_mult=0.5
        )


def _pixels(dataset) -> set[str]:
    return {
        hashlib.sha1(read_image(dataset.image_path(r)).tobytes()).hexdigest()
        for r in dataset.records
    }


def test_the_pretraining_never_sees_an_image_of_the_detector(shared_data: Path) -> None:
    """Its crops come from scenes of data seed 1; the detector trains and is scored on seed 0
    (the same sizes here, so a seed of 0 would give the very same images)."""
    from ssdlite_pretraining import PRETRAIN_DATA_SEED, crop_sets

    assert PRETRAIN_DATA_SEED != 0
    train, held_out, num_classes = crop_sets(16, seed=0, side=32)
    assert num_classes == 5 and len(train) > 16 and len(held_out) > 0
    assert train.crops.shape[1:] == (3, 32, 32) and train.crops.dtype == torch.uint8
    seen = set()
    for split in ("train", "val"):
        seen |= _pixels(recipes.load("shapes", split=split, seed=PRETRAIN_DATA_SEED, num_images=16))
    detector = set()
    for split in ("train", "val"):
        detector |= _pixels(recipes.load("shapes", split=split, num_images=16))
    assert len(seen) == 16 and len(detector) == 16 and not seen & detector


def test_pretraining_normalises_like_ssdlite_and_flips_only_training_crops(
    shared_data: Path,
) -> None:
    from ssdlite_pretraining import crop_sets

    train, held_out, _ = crop_sets(16, seed=0, side=32)
    raw = held_out.crops[0].float() / 255.0
    torch.testing.assert_close(held_out[0][0], (raw - 0.5) / 0.5)  # SSD's image_mean / std 0.5
    assert train.flip and not held_out.flip
    torch.manual_seed(0)
    views = {bool(torch.equal(train[0][0], (train.crops[0].float() / 255 - 0.5) / 0.5))
             for _ in range(20)}  # fmt: skip
    assert views == {True, False}  # as it is, and mirrored


def test_trunk_is_cached_with_its_seconds(shared_data: Path, tmp_path: Path) -> None:
    from ssdlite_pretraining import ensure_trunk

    path = tmp_path / "trunk.pt"
    options = {"width_mult": 0.25, "num_images": 16, "epochs": 1, "side": 32, "max_steps": 1}
    state, info, cached = ensure_trunk(path, **options)
    assert not cached and path.is_file() and info["steps"] == 1 and info["seconds"] > 0
    again, info_again, cached_again = ensure_trunk(path, **options)
    assert cached_again and info_again == info
    assert all(torch.equal(state[k], again[k]) for k in state)


def test_targets_without_masks_keep_boxes_and_labels(shared_data: Path) -> None:
    from detector_data import load_splits, without_masks

    from detseg.data.torch_datasets import DetectionTorchDataset

    train, _, _ = load_splits(None, num_images=16)
    with_masks, plain = DetectionTorchDataset(train), DetectionTorchDataset(without_masks(train))
    assert train.records[0].segmentations is not None  # the original is left as it was
    for index in range(len(train)):
        image, target = with_masks[index]
        plain_image, plain_target = plain[index]
        assert "masks" in target and "masks" not in plain_target
        torch.testing.assert_close(plain_image, image)
        torch.testing.assert_close(plain_target["boxes"], target["boxes"])
        assert torch.equal(plain_target["labels"], target["labels"])
        assert plain_target["image_id"] == target["image_id"]


def test_input_side_reaches_the_model_and_old_checkpoints_keep_320(script) -> None:
    from detection_zoo import build_trainable
    from detector_body import DecodeConfig

    train = script("train_detector")
    base = {"model": "ssdlite320", "width_mult": 0.25, "anchor_scales": [0.05, 0.6]}
    for config, side in ((base, 320), ({**base, "ssd_image_size": 256}, 256)):
        model = build_trainable("ssdlite320", 6, **train.model_options(config)).eval()
        assert model.transform.fixed_size == (side, side)
        anchors = DecodeConfig.from_ssd(model).anchors
        smallest = float((anchors[:, 2] - anchors[:, 0]).min())
        assert smallest == pytest.approx(0.05 * side / 3**0.5, rel=1e-3)
        with torch.no_grad():
            (out,) = model([torch.rand(3, 200, 300)])
        assert out["boxes"].shape[1] == 4 and np.all(out["boxes"].numpy()[:, 2] <= 300 + 1e-3)
