"""Builders of models_maskrcnn, the COCO result conversion, and the per-epoch augmentation seed."""

from __future__ import annotations

import json
import urllib.error
from dataclasses import replace

import numpy as np
import pytest
import torch
from maskrcnn_eval import label_to_category, people_by_occlusion, predictions_to_coco
from models_maskrcnn import MODELS, build_model, has_masks, replace_heads
from pycocotools import mask as mask_utils
from slim_maskrcnn import (
    RoICoordinates,
    SlimConfig,
    receptive_field,
    slim_backbone,
    slim_config_dict,
    slim_mask_head,
    slim_maskrcnn,
)

from detseg.data.types import DetectionDataset
from detseg.errors import UserError


def test_replace_heads_resizes_only_the_class_dependent_layers():
    with torch.device("meta"):  # shapes only: no memory, no random init cost
        model = torchvision_maskrcnn(num_classes=91)
        backbone_before = model.backbone.body.layer1[0].conv1.weight
        box_head_before = model.roi_heads.box_head.fc6.weight
        replace_heads(model, num_classes=3)
    predictor = model.roi_heads.box_predictor
    assert (predictor.cls_score.in_features, predictor.cls_score.out_features) == (1024, 3)
    assert predictor.bbox_pred.out_features == 4 * 3
    mask_predictor = model.roi_heads.mask_predictor
    assert mask_predictor.conv5_mask.in_channels == 256
    assert mask_predictor.mask_fcn_logits.out_channels == 3
    # everything else is the same module with the same (pretrained) weights
    assert model.backbone.body.layer1[0].conv1.weight is backbone_before
    assert model.roi_heads.box_head.fc6.weight is box_head_before


def torchvision_maskrcnn(num_classes: int):
    import torchvision

    return torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=num_classes
    )


def test_coco_weights_offline_give_one_line_naming_url_and_alternative(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserError) as info:
        MODELS["maskrcnn_resnet50_fpn"](num_classes=2, weights="coco")
    message = info.value.message()
    assert "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco" in message
    assert str(tmp_path / "checkpoints") in message and "--weights none" in message


def test_slim_model_has_no_coco_weights():
    with pytest.raises(UserError, match="--weights none"):
        build_model("maskrcnn_slim", num_classes=2, weights="coco")
    with pytest.raises(UserError, match="unknown model"):
        build_model("maskrcnn_huge", num_classes=2)
    with pytest.raises(UserError, match="num_classes"):
        build_model("maskrcnn_slim", num_classes=1)


def test_slim_backbone_strides_and_channels():
    config = SlimConfig(fpn_channels=32)
    features = slim_backbone(config)(torch.zeros(1, 3, 128, 192))
    shapes = {name: tuple(value.shape) for name, value in features.items()}
    assert shapes == {
        "0": (1, 32, 16, 24),  # stride 8
        "1": (1, 32, 8, 12),  # stride 16
        "2": (1, 32, 4, 6),  # stride 32
        "pool": (1, 32, 2, 3),  # stride 64 (max pool of the last level, RPN only)
        "detail": (1, 16, 32, 48),  # stride 4, the mask head's detail branch only
        "image": (1, 3, 128, 192),  # the input itself, for the same branch
    }


def test_slim_config_survives_a_json_round_trip():
    config = SlimConfig(
        anchor_sizes=((16,), (32,), (64,), (128,)), mask_layers=(32,), mask_dilations=(2,)
    )
    back = SlimConfig.from_dict(json.loads(json.dumps(slim_config_dict(config))))
    assert back == config
    with pytest.raises(UserError, match="unknown slim model options"):
        SlimConfig.from_dict({"fpn_chanels": 3})


def test_roi_coordinates_by_hand():
    features = torch.randn(3, 5, 4, 4)
    out = RoICoordinates(4)(features)
    assert out.shape == (3, 7, 4, 4)
    torch.testing.assert_close(out[:, :5], features)
    steps = torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0])
    torch.testing.assert_close(out[2, 5], steps.expand(4, 4))  # x grows along a row
    torch.testing.assert_close(out[2, 6], steps[:, None].expand(4, 4))  # y down a column
    assert RoICoordinates(4).state_dict() == {}  # nothing to save or load


@pytest.mark.parametrize(
    ("layers", "dilations", "cells_seen"),
    [
        ((8, 8), (), 5 * 5),  # two plain convolutions
        ((8, 8, 8, 8), (2, 2, 2, 2), 7 * 7),  # one rate: every other cell only ("gridding")
        ((8, 8, 8, 8), (1, 2, 4, 1), 14 * 14),  # mixed rates: all of the RoI
    ],
)
def test_mask_head_receptive_field(layers, dilations, cells_seen):
    """How many of the 14 x 14 RoI cells change the head's output at the centre cell."""
    torch.manual_seed(0)
    config = SlimConfig(fpn_channels=8, mask_layers=layers, mask_dilations=dilations)
    reach = receptive_field(slim_mask_head(config, None), channels=8)  # [14, 14]
    assert int(reach.sum()) == cells_seen
    assert bool(reach[7, 7])
    with pytest.raises(UserError, match="one rate per mask layer"):
        slim_mask_head(SlimConfig(mask_layers=(8, 8), mask_dilations=(1,)), None)


@pytest.mark.parametrize("coords", [False, True])
def test_mask_head_with_coordinates_tells_positions_apart(coords):
    """On a constant input, two cells whose 5 x 5 view is all inside the RoI look the same to a
    plain convolution head; with the coordinate channels they do not."""
    torch.manual_seed(0)
    config = SlimConfig(fpn_channels=8, mask_layers=(8, 8), mask_dilations=(), mask_coords=coords)
    head = slim_mask_head(config, None)
    out = head(torch.ones(1, 8, 14, 14))  # [1, 8, 14, 14]
    same = torch.allclose(out[0, :, 5, 5], out[0, :, 8, 8])
    assert same is not coords


@pytest.mark.parametrize("name", ["maskrcnn_slim", "maskrcnn_mobilenet_v3_fpn"])
def test_untrained_models_predict_boxes_and_masks(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, weights="none", image_size=(128, 160)).eval()
    with torch.no_grad():
        (output,) = model([torch.rand(3, 100, 140)])
    count = len(output["scores"])
    assert output["boxes"].shape == (count, 4)
    assert output["masks"].shape == (count, 1, 100, 140)  # pasted back at the input size
    assert set(output["labels"].tolist()) <= {1, 2}
    assert has_masks(model)


def test_faster_rcnn_builder_has_no_mask_head():
    with torch.device("meta"):
        model = build_model("fasterrcnn_resnet50_fpn", num_classes=4, weights="none")
    assert not has_masks(model)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4


def test_predictions_to_coco_by_hand():
    mask = torch.zeros(1, 1, 8, 10)
    mask[0, 0, 2:5, 3:7] = 0.9  # 3 x 4 pixels above the 0.5 threshold
    mask[0, 0, 6, 0] = 0.4  # below it
    output = {
        "boxes": torch.tensor([[3.0, 2.0, 7.0, 5.0], [1.0, 1.0, 2.5, 4.0]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.9, 0.25]),
        "masks": torch.cat([mask, torch.zeros(1, 1, 8, 10)]),
    }
    results = predictions_to_coco([output], [42], category_ids=[5, 9])
    assert [r["category_id"] for r in results] == [5, 9]  # label l -> category_ids[l - 1]
    assert results[0]["bbox"] == [3.0, 2.0, 4.0, 3.0]  # xywh
    assert results[1]["bbox"] == [1.0, 1.0, 1.5, 3.0]
    assert results[0]["image_id"] == 42 and results[0]["score"] == pytest.approx(0.9)
    decoded = mask_utils.decode({**results[0]["segmentation"]})
    assert decoded.shape == (8, 10) and decoded.sum() == 12 and decoded[2:5, 3:7].all()
    assert mask_utils.decode(results[1]["segmentation"]).sum() == 0
    json.dumps(results)  # plain JSON, as COCO.loadRes reads it


def test_label_to_category_keeps_coco_ids_with_gaps():
    dataset = DetectionDataset(root=".", classes=["a", "b"], records=[], category_ids=[3, 7])
    assert label_to_category(dataset) == [3, 7]
    dataset.category_ids = None
    assert label_to_category(dataset) == [1, 2]


def test_engine_sets_the_dataset_epoch_so_flips_change_every_epoch():
    from detseg.engine.distributed import set_loader_epoch

    class Epochs(torch.utils.data.Dataset):
        epoch = 0

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __len__(self):
            return 4

        def __getitem__(self, index):
            return index

    dataset = Epochs()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, [0, 1]))
    set_loader_epoch(loader, 3)
    assert dataset.epoch == 3
    assert np.array_equal(np.arange(2), [int(x) for x in loader])


def test_slim_fields_reach_the_model_and_extra_cannot_override_them():
    config = SlimConfig(box_nms_thresh=0.65, box_positive_fraction=0.4, box_batch_size_per_image=20)
    model = slim_maskrcnn(2, replace(config, extra={"box_score_thresh": 0.2}))
    assert model.roi_heads.nms_thresh == 0.65
    sampler = model.roi_heads.fg_bg_sampler
    assert (sampler.positive_fraction, sampler.batch_size_per_image) == (0.4, 20)
    assert model.roi_heads.score_thresh == 0.2
    with pytest.raises(UserError, match=r"extra sets \['box_nms_thresh'\]"):
        slim_maskrcnn(2, SlimConfig(extra={"box_nms_thresh": 0.7}))


def test_people_by_occlusion_by_hand():
    truth = torch.zeros(3, 10, 12, dtype=torch.uint8)
    truth[0, 0:5, 0:4] = 1  # A: 20 pixels, of which B hides 4 below
    truth[1, 3:10, 2:6] = 1  # B: 28 pixels, box ends lower: B stands in front of A
    truth[0, 3:5, 2:4] = 0  # A keeps 16 visible pixels; its box is still [0, 0, 4, 5]
    truth[2, 0:2, 9:12] = 1  # C: 6 pixels, overlaps nobody
    boxes = torch.tensor([[0.0, 0, 4, 5], [2, 3, 6, 10], [9, 0, 12, 2]])  # box IoU(A, B) = 4 / 44
    predicted = torch.zeros(3, 1, 10, 12)
    predicted[0, 0] = truth[1] * 0.9  # B exactly
    predicted[1, 0] = (truth[0] | truth[1]) * 0.8  # A and B together: IoU with A 16 / 44
    predicted[2, 0, 0:2, 8:11] = 0.7  # C shifted by one column: IoU 4 / 8 = 0.5 counts
    lone = torch.zeros(1, 10, 12, dtype=torch.uint8)
    lone[0, 4:8, 4:8] = 1
    counts = people_by_occlusion(
        [{"masks": predicted}, {"masks": torch.zeros(0, 1, 10, 12)}],  # nothing detected
        [
            {"boxes": boxes, "masks": truth},
            {"boxes": torch.tensor([[4.0, 4, 8, 8]]), "masks": lone},
        ],
    )
    assert counts == {
        "alone": {"objects": 2, "found": 1},
        "in_front": {"objects": 1, "found": 1},
        "behind": {"objects": 1, "found": 0},
    }
