"""The slim model's mask additions: the detail branch (mask_detail.py) and Matrix NMS (matrix_nms.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from mask_detail import DETAIL_KEYS, DetailBackbone, DetailRoIPool, FPNLevelsRPN
from matrix_nms import MatrixNMSTransform, mask_iou, matrix_nms_decay
from models_maskrcnn import build_model
from pycocotools import mask as mask_utils
from slim_maskrcnn import (
    SlimConfig,
    checkpoint_slim_fields,
    slim_backbone,
    slim_config_dict,
    slim_maskrcnn,
)
from torchvision.models.detection.backbone_utils import BackboneWithFPN

from detseg.errors import UserError


def test_detail_backbone_keeps_the_fpn_and_adds_two_fine_maps():
    torch.manual_seed(0)
    plain = slim_backbone(SlimConfig(fpn_channels=32, mask_detail=0))
    detail = slim_backbone(SlimConfig(fpn_channels=32, mask_detail=8))
    assert isinstance(plain, BackboneWithFPN) and isinstance(detail, DetailBackbone)
    # same state-dict names for the shared part, so the FPN levels are the same function
    missing, unexpected = detail.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["detail.bias", "detail.weight"] and not unexpected
    images = torch.rand(2, 3, 128, 192)
    plain.eval(), detail.eval()
    with torch.no_grad():
        expected, features = plain(images), detail(images)
    assert list(features) == [*expected, *DETAIL_KEYS]
    for name, level in expected.items():
        torch.testing.assert_close(features[name], level)
    assert features["detail"].shape == (2, 8, 32, 48)  # stride 4
    assert features["detail"].min() >= 0  # after ReLU
    assert features["image"] is images


def test_detail_pool_by_hand_on_a_ramp_image():
    # image value = x coordinate of the pixel: RoIAlign (aligned=False, 2 x 2 samples per cell)
    # over the box [0, 0, 28, 28] samples x = j + 0.25 and j + 0.75 in cell j: their mean is
    # j + 0.5, and bilinear interpolation of a ramp is exact
    ramp = torch.arange(40.0).expand(1, 3, 32, 40).contiguous()
    features = {
        "0": torch.zeros(1, 4, 4, 5),  # one FPN level of stride 8
        "detail": torch.zeros(1, 2, 8, 10),
        "image": ramp,
    }
    box = [torch.tensor([[0.0, 0.0, 28.0, 28.0]])]
    coarse, fine = DetailRoIPool(["0"])(features, box, [(32, 40)])
    assert coarse.shape == (1, 4, 14, 14) and fine.shape == (1, 2 + 3, 28, 28)
    expected = (torch.arange(28.0) + 0.5).expand(28, 28)
    for channel in (2, 3, 4):  # the image's three channels come after the detail map's two
        torch.testing.assert_close(fine[0, channel], expected)
    # and it is torchvision's RoIAlign at the detail map's stride of 4
    detail = torch.rand(1, 2, 8, 10)
    _, fine = DetailRoIPool(["0"])({**features, "detail": detail}, box, [(32, 40)])
    reference = torchvision.ops.roi_align(detail, box, 28, spatial_scale=0.25, sampling_ratio=2)
    torch.testing.assert_close(fine[:, :2], reference)


def test_rpn_sees_only_the_fpn_levels():
    torch.manual_seed(0)
    model = slim_maskrcnn(2, SlimConfig(fpn_channels=32, mask_detail=8)).eval()
    assert isinstance(model.rpn, FPNLevelsRPN)
    images, _ = model.transform([torch.rand(3, 128, 192)])
    with torch.no_grad():
        features = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, features)
        levels = {k: v for k, v in features.items() if k not in DETAIL_KEYS}
        # torchvision's own RPN class, same modules and settings, on the FPN levels alone
        reference, _ = super(FPNLevelsRPN, model.rpn).forward(images, levels)
    torch.testing.assert_close(proposals[0], reference[0])
    assert model.rpn.nms_thresh == 0.7 and model.rpn._post_nms_top_n["testing"] == 100


def test_detail_model_trains_through_both_fine_inputs():
    torch.manual_seed(0)
    model = slim_maskrcnn(2, SlimConfig(fpn_channels=32, mask_detail=8, min_size=128))
    masks = torch.zeros(1, 128, 160, dtype=torch.uint8)
    masks[0, 20:110, 50:90] = 1
    target = {"boxes": torch.tensor([[50.0, 20.0, 90.0, 110.0]]), "labels": torch.tensor([1])}
    images = [torch.rand(3, 128, 160, requires_grad=True)]
    losses = model(images, [{**target, "masks": masks}])
    losses["loss_mask"].backward()
    assert model.backbone.detail.weight.grad.abs().sum() > 0  # the stage-1 projection learns
    # the mask loss reaches the pixels inside the box directly (through the "image" map)
    assert images[0].grad[:, 20:110, 50:90].abs().sum() > 0
    model.eval()
    with torch.no_grad():
        (output,) = model([torch.rand(3, 128, 160)])
    assert output["masks"].shape[1:] == (1, 128, 160)


def test_checkpoints_from_before_the_fields_rebuild_the_model_they_trained():
    before = slim_config_dict(SlimConfig(fpn_channels=32))
    del before["mask_detail"], before["mask_nms_sigma"]  # as train.py wrote them before 2026-12-06
    completed = checkpoint_slim_fields(before)
    assert completed["mask_detail"] == 0 and completed["mask_nms_sigma"] == 0
    model = build_model("maskrcnn_slim", num_classes=2, weights="none", slim=completed)
    assert not isinstance(model.backbone, DetailBackbone)
    assert not isinstance(model.transform, MatrixNMSTransform)
    assert checkpoint_slim_fields({"mask_detail": 8})["mask_detail"] == 8  # stored: kept


def test_negative_values_of_the_new_fields_are_refused_in_one_line():
    with pytest.raises(UserError, match="mask_detail must be >= 0"):
        SlimConfig(mask_detail=-1)
    with pytest.raises(UserError, match="mask_nms_sigma must be >= 0"):
        SlimConfig(mask_nms_sigma=-0.5)
    with pytest.raises(UserError, match="stage 1 feeds the mask head's detail branch"):
        SlimConfig(returned_layers=(1, 2, 3, 4))
    SlimConfig(returned_layers=(1, 2, 3, 4), mask_detail=0)  # a stride-4 FPN level instead


def test_matrix_nms_decay_by_hand():
    masks = torch.zeros(4, 10, 10, dtype=torch.bool)
    masks[0, 0:5, 0:8] = True  # A: 40 pixels, the best score
    masks[1, 0:4, 0:8] = True  # B: a duplicate of A, IoU 32 / 40 = 0.8
    masks[2, 6:10, 0:10] = True  # C: another person, no overlap
    masks[3, 0:5, 0:8] = True  # D: A's pixels again, but of another class
    decay = matrix_nms_decay(masks, torch.tensor([1, 1, 1, 2]), sigma=0.5)
    # B: exp(-(0.8^2 - 0) / 0.5) against A (A has nothing above it); its own overlap with A does
    # not protect C, which keeps 1: its terms are exp(-(0 - 0) / 0.5) (A) and exp(+0.64 / 0.5) (B)
    expected = torch.tensor([1.0, math.exp(-0.64 / 0.5), 1.0, 1.0])
    torch.testing.assert_close(decay, expected)


def test_matrix_nms_with_no_detection_or_one():
    """An image with no detection left (a model early in training) used to crash the evaluation:
    ``max()`` over an empty dimension (the 01-summary benchmark of 2026-12-07, epoch 2)."""
    empty = matrix_nms_decay(torch.zeros(0, 10, 10, dtype=torch.bool), torch.zeros(0), 0.5)
    assert empty.shape == (0,)
    one = matrix_nms_decay(torch.ones(1, 10, 10, dtype=torch.bool), torch.ones(1), 0.5)
    torch.testing.assert_close(one, torch.ones(1))


def test_model_with_matrix_nms_on_an_image_with_no_detection():
    torch.manual_seed(0)
    model = slim_maskrcnn(2, SlimConfig(fpn_channels=32, mask_nms_sigma=0.5)).eval()
    model.roi_heads.score_thresh = 1.1  # nothing can pass
    with torch.no_grad():
        (out,) = model([torch.rand(3, 96, 128)])
    assert out["scores"].shape == (0,) and out["masks"].shape[0] == 0


def test_matrix_nms_forgives_what_the_one_above_already_lost():
    # A > B > C by score; B repeats A (IoU 0.8), C repeats B (IoU 0.75) and A (IoU 0.6): C's decay
    # is the smaller of exp(-(0.6^2 - 0) / s) (from A) and exp(-(0.75^2 - 0.8^2) / s) (from B,
    # which is itself a duplicate: its overlap is compensated)
    masks = torch.zeros(3, 10, 10, dtype=torch.bool)
    masks[0, 0:5, 0:8] = True  # 40 pixels
    masks[1, 0:4, 0:8] = True  # 32, all inside A
    masks[2, 0:3, 0:8] = True  # 24, all inside B: IoU 24 / 32 with B, 24 / 40 with A
    decay = matrix_nms_decay(masks, torch.ones(3, dtype=torch.long), sigma=0.5)
    from_a, from_b = math.exp(-(0.6**2) / 0.5), math.exp(-(0.75**2 - 0.8**2) / 0.5)
    assert from_b > 1  # B's own overlap with A outweighs C's with B
    torch.testing.assert_close(decay[2], torch.tensor(min(from_a, from_b)))


def test_model_with_matrix_nms_rescores_and_sorts_its_detections():
    torch.manual_seed(0)
    plain = slim_maskrcnn(2, SlimConfig(fpn_channels=32, mask_nms_sigma=0.0)).eval()
    rescored = slim_maskrcnn(2, SlimConfig(fpn_channels=32, mask_nms_sigma=0.5)).eval()
    assert isinstance(rescored.transform, MatrixNMSTransform)
    assert not isinstance(plain.transform, MatrixNMSTransform)
    rescored.load_state_dict(plain.state_dict())
    plain.roi_heads.score_thresh = rescored.roi_heads.score_thresh = 0.0  # untrained: keep all
    image = torch.rand(3, 128, 160)
    with torch.no_grad():
        (before,) = plain([image])
        (after,) = rescored([image])
    assert len(after["scores"]) == len(before["scores"]) > 1
    assert torch.all(after["scores"][:-1] >= after["scores"][1:])  # sorted again
    decay = matrix_nms_decay(before["masks"][:, 0] > 0.5, before["labels"], 0.5)
    expected, order = (before["scores"] * decay).sort(descending=True)
    torch.testing.assert_close(after["scores"], expected)
    torch.testing.assert_close(after["boxes"], before["boxes"][order])


def test_mask_iou_equals_pycocotools_on_random_masks():
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        first = torch.rand(4, 20, 30, generator=generator) > 0.6
        second = torch.rand(3, 20, 30, generator=generator) > 0.4
        second[0] = False  # an empty mask: IoU 0 with everything
        encode = lambda masks: mask_utils.encode(  # noqa: E731
            np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8))
        )
        reference = mask_utils.iou(encode(first), encode(second), [0, 0, 0])  # [4, 3]
        np.testing.assert_allclose(mask_iou(first, second).numpy(), reference, atol=1e-6)
