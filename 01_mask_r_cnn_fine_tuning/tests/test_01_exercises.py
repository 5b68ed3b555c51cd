"""The lesson's exercises work as written: the flags, --slim options and calls they name exist and
are accepted (parsed, validated, built once on tiny inputs; nothing is trained or downloaded)."""

from __future__ import annotations

import torch
from models_maskrcnn import build_model
from slim_maskrcnn import SlimConfig
from torchvision.ops import roi_align, roi_pool

from detseg.scripts import load_script

from .conftest import FOLDER


def _train_args(argv):
    train = load_script(FOLDER, "train")
    return train.validate_args(train.get_args_parser().parse_args(argv)), train


def test_exercise_1_coco_aspect_ratios():
    args, train = _train_args(["--slim", "aspect_ratios=[0.5,1.0,2.0]"])
    config = SlimConfig.from_dict(train.parse_slim_options(args.slim))
    assert config.aspect_ratios == (0.5, 1.0, 2.0)
    model = build_model("maskrcnn_slim", num_classes=2, slim=config.__dict__)
    assert model.rpn.anchor_generator.aspect_ratios[0] == (0.5, 1.0, 2.0)


def test_exercise_2_roi_pool_mask_target():
    masks = torch.zeros(1, 1, 60, 40)
    masks[0, 0, 10:50, 12:30] = 1
    proposal = torch.tensor([[8.0, 6.0, 33.0, 55.0]])
    pooled = roi_pool(masks, [proposal], 28, spatial_scale=1.0)  # as written in the exercise
    aligned = roi_align(masks, [proposal], 28, spatial_scale=1.0)
    assert pooled.shape == aligned.shape == (1, 1, 28, 28)
    assert set(pooled.unique().tolist()) <= {0.0, 1.0}  # max of whole cells: quantised
    assert ((aligned > 0) & (aligned < 1)).any()  # bilinear: fractional edges


def test_exercises_3_and_4_flags():
    args, _ = _train_args(["--data", "shapes"])
    assert args.data == "shapes"
    args, _ = _train_args(
        ["--model", "maskrcnn_mobilenet_v3_fpn", "--weights", "coco", "--data", "pennfudan"]
    )
    assert (args.model, args.weights, args.data) == (
        "maskrcnn_mobilenet_v3_fpn",
        "coco",
        "pennfudan",
    )
    with torch.device("meta"):
        assert build_model("maskrcnn_mobilenet_v3_fpn", num_classes=2, weights="none") is not None


def test_optional_exercise_without_detail_branch_and_matrix_nms():
    argv = ["--slim", "mask_detail=0", "--slim", "mask_nms_sigma=0", "--slim", "box_nms_thresh=0.6"]
    args, train = _train_args(argv)
    config = SlimConfig.from_dict(train.parse_slim_options(args.slim))
    assert (config.mask_detail, config.mask_nms_sigma, config.box_nms_thresh) == (0, 0, 0.6)
    evaluate = load_script(FOLDER, "evaluate")
    args = evaluate.get_args_parser().parse_args(
        ["--data-seed", "7", "--num-images", "300", "--split", "all"]
    )
    assert (args.data_seed, args.num_images, args.split) == (7, 300, "all")
