"""The single-object detector: the seed's heads, a frozen backbone, the cache gives the same run."""

from __future__ import annotations

import math
import urllib.error
from pathlib import Path

import pytest
import torch
from single_object_detector import (
    SmallBackbone,
    TwoHeadDetector,
    build_resnet50,
    count_trainable,
)
from torch import nn

from detseg.errors import UserError
from detseg.pretrained import cache_path

# the seed's heads on ResNet-50's 2048 features, counted by hand (weights + biases)
SEED_BOX_HEAD = 2048 * 128 + 128 + 128 * 64 + 64 + 64 * 32 + 32 + 32 * 4 + 4
SEED_CLASS_HEAD = 2048 * 512 + 512 + 512 * 512 + 512 + 512 * 3 + 3


def test_resnet50_heads_are_the_seeds() -> None:
    model = TwoHeadDetector(build_resnet50("none"), num_classes=3)
    linears = [(m.in_features, m.out_features) for m in model.box_head if isinstance(m, nn.Linear)]
    assert linears == [(2048, 128), (128, 64), (64, 32), (32, 4)]
    assert isinstance(model.box_head[-1], nn.Sigmoid)
    linears = [
        (m.in_features, m.out_features) for m in model.class_head if isinstance(m, nn.Linear)
    ]
    assert linears == [(2048, 512), (512, 512), (512, 3)]
    assert sum(isinstance(m, nn.Dropout) for m in model.class_head) == 2
    assert count_trainable(model) == SEED_BOX_HEAD + SEED_CLASS_HEAD
    boxes, logits = model(torch.rand(2, 3, 224, 224))
    assert boxes.shape == (2, 4) and logits.shape == (2, 3)
    assert bool(((boxes > 0) & (boxes < 1)).all())


def test_frozen_backbone_stays_frozen_in_train_mode() -> None:
    model = TwoHeadDetector(SmallBackbone(), num_classes=3)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.train()
    assert not model.backbone.training and model.box_head.training
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    boxes, logits = model(torch.rand(4, 3, 128, 128))
    (boxes.sum() + logits.sum()).backward()
    optimizer.step()
    for key, value in model.backbone.state_dict().items():  # BN running stats included
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_imagenet_weights_from_the_hub_cache_and_offline_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V1
    path = cache_path(weights)
    assert path.name == "resnet50-0676ba61.pth" and str(tmp_path) in str(path)

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserError) as info:
        build_resnet50("imagenet")
    message = info.value.message()
    assert weights.url in message and str(path) in message and "--backbone small" in message

    torch.manual_seed(3)
    saved = torchvision.models.resnet50(weights=None).state_dict()
    path.parent.mkdir(parents=True)
    torch.save(saved, path)
    backbone = build_resnet50("imagenet")
    torch.testing.assert_close(backbone.conv1.weight, saved["conv1.weight"])


def test_cached_features_give_the_same_run(script, capsys: pytest.CaptureFixture) -> None:
    train = script("train_single_object")
    common = ["--num-images", "12", "--epochs", "2", "--batch-size", "4", "--seed", "1"]
    cached = train.main(common + ["--output-dir", "runs/a"])
    printed = capsys.readouterr().out
    seed_loop = train.main(common + ["--no-cached-features", "--output-dir", "runs/b"])
    assert f"trainable parameters: {cached['trainable_parameters']}\n" in printed
    assert cached["trainable_parameters"] == seed_loop["trainable_parameters"] > 0
    assert cached["feature_seconds"] > 0 and seed_loop["feature_seconds"] == 0
    for mine, theirs in zip(cached["history"], seed_loop["history"]):
        assert mine["train"]["loss"] == pytest.approx(theirs["train"]["loss"], rel=1e-4)
    assert cached["mean_iou"] == pytest.approx(seed_loop["mean_iou"], abs=1e-4)
    assert cached["class_accuracy"] == seed_loop["class_accuracy"]
    assert 0 <= cached["mean_iou"] <= 1


def test_predict_reads_the_checkpoint(script, tmp_path: Path) -> None:
    result = script("train_single_object").main(
        ["--dry-run", "--output-dir", str(tmp_path / "run")]
    )
    assert {"trainable_parameters", "seconds_per_epoch", "mean_iou", "class_accuracy"} <= set(
        result
    )
    from detseg.data import recipes

    images = recipes.ensure("single_object", num_images=8) / "images" / "face"
    predictions = script("predict_single_object").main(
        [str(images), "--weights", str(tmp_path / "run" / "dry-run" / "last.pt"),
         "--output-dir", str(tmp_path / "out")]
    )  # fmt: skip
    assert len(predictions) == len(list(images.glob("*.jpg"))) >= 1
    first = predictions[0]
    assert first["class"] in ("airplane", "face", "motorcycle") and 0 < first["score"] <= 1
    assert Path(first["output"]).is_file()


def test_small_backbone_feature_grids() -> None:
    images = torch.rand(2, 3, 128, 128)
    four, eight = SmallBackbone(grid=4).eval(), SmallBackbone(grid=8).eval()
    eight.load_state_dict(four.state_dict())  # same weights: the grid only picks the map
    with torch.no_grad():
        assert four(images).shape == (2, 2048) and eight(images).shape == (2, 8192)
        by_hand = four.body[:-1](images)  # [2, 128, 8, 8] before the last max-pool
        torch.testing.assert_close(eight(images), by_hand.flatten(1))
        torch.testing.assert_close(four(images), nn.functional.max_pool2d(by_hand, 2).flatten(1))


def test_box_map_output_is_the_finer_map_then_the_class_features() -> None:
    images = torch.rand(2, 3, 128, 128)
    plain = SmallBackbone(num_pretrain_classes=3).eval()
    eight = SmallBackbone(num_pretrain_classes=3, box_map=8).eval()
    sixteen = SmallBackbone(num_pretrain_classes=3, box_map=16).eval()
    for other in (eight, sixteen):
        other.load_state_dict(plain.state_dict())  # the output choice adds no weights
    with torch.no_grad():
        flat = plain(images)  # [2, 2048], the 4 x 4 grid
        before_last_pool = plain.body[:-1](images)  # [2, 128, 8, 8]
        before_fourth_pool = plain.body[:-5](images)  # [2, 128, 16, 16]
        assert before_fourth_pool.shape == (2, 128, 16, 16)
        torch.testing.assert_close(eight(images), torch.cat([before_last_pool.flatten(1), flat], 1))
        torch.testing.assert_close(
            sixteen(images), torch.cat([before_fourth_pool.flatten(1), flat], 1)
        )
    assert eight.out_features == 128 * 64 + 2048 and eight.box_map_shape == (128, 8, 8)
    assert sixteen.out_features == 128 * 256 + 2048 and sixteen.class_features == 2048
    with pytest.raises(ValueError, match="grid-4"):
        SmallBackbone(grid=8, box_map=8)


def test_spatial_box_head_reads_the_map_and_the_class_head_the_grid() -> None:
    torch.manual_seed(0)
    backbone = SmallBackbone(num_pretrain_classes=3, box_map=8).eval()
    model = TwoHeadDetector(backbone, num_classes=3, box_channels=32, box_kernel=1).eval()
    convolution = model.box_head[0]
    assert isinstance(convolution, nn.Conv2d) and convolution.kernel_size == (1, 1)
    assert (convolution.in_channels, convolution.out_channels) == (128, 32)
    # after the convolution, the seed's box head on 32 x 8 x 8 = 2048 inputs
    linears = [(m.in_features, m.out_features) for m in model.box_head if isinstance(m, nn.Linear)]
    assert linears == [(2048, 128), (128, 64), (64, 32), (32, 4)]
    assert isinstance(model.box_head[-1], nn.Sigmoid)
    assert model.class_head[0].in_features == 2048
    conv_weights = 128 * 32 + 32
    assert count_trainable(model) == SEED_BOX_HEAD + conv_weights + SEED_CLASS_HEAD
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        features = backbone(images)
        boxes, logits = model.heads(features)
        box_map = features[:, : 128 * 64].view(2, 128, 8, 8)
        torch.testing.assert_close(boxes, model.box_head(box_map))
        torch.testing.assert_close(logits, model.class_head(features[:, 128 * 64 :]))
        torch.testing.assert_close(model(images)[0], boxes)
    wide = TwoHeadDetector(SmallBackbone(box_map=16), 3, box_channels=64, box_kernel=3)
    assert wide.box_head[0].kernel_size == (3, 3) and wide.box_head[0].padding == (1, 1)
    assert wide.box_head[3].in_features == 64 * 16 * 16
    bare = TwoHeadDetector(SmallBackbone(box_map=8), 3, box_channels=0)
    assert bare.box_head[1].in_features == 128 * 64  # no convolution: the flattened map


def test_giou_box_loss_adds_to_the_seeds_mse() -> None:
    from single_object_detector import LossWeights, make_step, ordered
    from torchvision.ops import generalized_box_iou_loss

    swapped = torch.tensor([[0.6, 0.1, 0.2, 0.5]])
    torch.testing.assert_close(ordered(swapped), torch.tensor([[0.2, 0.1, 0.6, 0.5]]))
    torch.manual_seed(0)
    model = TwoHeadDetector(SmallBackbone(), num_classes=3).eval()
    batch = (
        torch.rand(4, 2048),
        torch.tensor([[0.1, 0.1, 0.5, 0.6]] * 4),
        torch.tensor([0, 1, 2, 0]),
    )
    seed = make_step(True)(model, batch, torch.device("cpu"))
    both = make_step(True, LossWeights(giou=1.0))(model, batch, torch.device("cpu"))
    predicted, _ = model.heads(batch[0])
    expected = generalized_box_iou_loss(ordered(predicted), batch[1], reduction="mean")
    torch.testing.assert_close(both["loss_box"] - seed["loss_box"], expected)
    torch.testing.assert_close(both["loss_class"], seed["loss_class"])


def test_l1_giou_box_loss_by_hand() -> None:
    from single_object_detector import LossWeights, make_step, ordered
    from torchvision.ops import generalized_box_iou_loss

    torch.manual_seed(0)
    model = TwoHeadDetector(SmallBackbone(), num_classes=3).eval()
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.3, 0.2, 0.9, 0.8]])
    batch = (torch.rand(2, 2048), boxes, torch.tensor([0, 2]))
    loss = make_step(True, LossWeights(giou=1.0, l1=True))(model, batch, torch.device("cpu"))
    predicted, _ = model.heads(batch[0])
    l1 = (predicted - boxes).abs().mean()
    giou = generalized_box_iou_loss(ordered(predicted), boxes, reduction="mean")
    torch.testing.assert_close(loss["loss_box"], l1 + giou)


def test_locating_pretraining_task_gives_boxes_and_keeps_the_backbone_weights() -> None:
    from single_object_pretraining import pretrain_sets, pretrain_small_backbone

    train, _, classes = pretrain_sets("other_images_boxes", 16, seed=0)
    image, (label, box) = train[0]
    assert classes == 3 and image.shape == (3, 128, 128) and 0 <= int(label) < 3
    assert box.shape == (4,) and 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1
    backbone, stats = pretrain_small_backbone(
        task="other_images_boxes", num_images=16, epochs=1, max_steps=1, log=lambda text: None
    )
    assert 0 <= stats["box_iou"] <= 1 and 0 <= stats["crop_accuracy"] <= 1
    # the locating layer is dropped: the weights load into a plain backbone
    assert set(backbone.state_dict()) == set(SmallBackbone(num_pretrain_classes=3).state_dict())
    plain, plain_stats = pretrain_small_backbone(
        task="other_images", num_images=16, epochs=1, max_steps=1, log=lambda text: None
    )
    assert "box_iou" not in plain_stats
    # the box loss changed the one step's gradient: different weights from the same start
    assert not torch.equal(backbone.body[0].weight, plain.body[0].weight)


def test_pretraining_flips_mirror_the_box_and_spare_the_held_out_images() -> None:
    from single_object_pretraining import WholeImages, pretrain_sets

    from detseg.data import recipes

    dataset = recipes.load("single_object", seed=1, num_images=8)
    plain = WholeImages(dataset, boxes=True)
    flipping = WholeImages(dataset, boxes=True, flip=True)
    image, (label, box) = plain[0]
    seen = set()
    torch.manual_seed(0)
    for _ in range(20):
        other, (other_label, other_box) = flipping[0]
        assert other_label == label
        if torch.equal(other, image):
            torch.testing.assert_close(other_box, box)
            seen.add("plain")
        else:
            torch.testing.assert_close(other, image.flip(-1))
            x1, y1, x2, y2 = box.tolist()
            torch.testing.assert_close(other_box, torch.tensor([1 - x2, y1, 1 - x1, y2]))
            seen.add("mirrored")
    assert seen == {"plain", "mirrored"}
    train, val, _ = pretrain_sets("other_images_boxes", 16, seed=0)
    assert train.flip and not val.flip


def test_cosine_schedule_of_the_heads(script, tmp_path: Path) -> None:
    train = script("train_single_object")
    common = ["--num-images", "12", "--batch-size", "4", "--epochs", "3", "--lr", "0.01"]
    cosine = train.main([*common, "--output-dir", str(tmp_path / "a")])
    constant = train.main(
        [*common, "--lr-schedule", "constant", "--output-dir", str(tmp_path / "b")]
    )
    # the rate each epoch trained with: 0.01 * (1 + cos(pi * epoch / 3)) / 2
    expected = [0.01 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    assert [e["lr"] for e in cosine["history"]] == pytest.approx(expected)
    assert [e["lr"] for e in constant["history"]] == pytest.approx([0.01] * 3)


def test_resnet50_refuses_the_small_backbones_box_map(script) -> None:
    with pytest.raises(UserError, match="--box-map"):
        script("train_single_object").main(["--backbone", "resnet50", "--box-map", "8"])


def test_crop_copies_keep_the_box_in_the_crops_coordinates() -> None:
    from single_object_detector import SingleObjectImages, to_input

    from detseg.data import recipes
    from detseg.data.imageio import read_image

    dataset = recipes.load("single_object", num_images=8)
    plain = SingleObjectImages(dataset, [0, 1, 2], "small")
    cropped = SingleObjectImages(dataset, [0, 1, 2], "small", crop_seed=1)
    again = SingleObjectImages(dataset, [0, 1, 2], "small", crop_seed=1)
    for index in range(3):
        record = dataset.records[index]
        left, top, right, bottom = cropped.window(index)
        x1, y1, x2, y2 = record.boxes[0]
        assert 0 <= left <= x1 and 0 <= top <= y1 and x2 <= right <= record.width
        assert y2 <= bottom <= record.height
        assert (right - left, bottom - top) != (record.width, record.height)
        expected = [(x1 - left) / (right - left), (y1 - top) / (bottom - top),
                    (x2 - left) / (right - left), (y2 - top) / (bottom - top)]  # fmt: skip
        image, box, label = cropped[index]
        torch.testing.assert_close(box, torch.tensor(expected, dtype=torch.float32))
        assert label == plain[index][2]
        spec = cropped.spec
        crop = read_image(dataset.image_path(record))[top:bottom, left:right]
        torch.testing.assert_close(image, to_input(crop, 128, spec["mean"], spec["std"]))
        assert again.window(index) == cropped.window(index)  # drawn once: the cache stays valid
    assert plain.window(0) == (0, 0, dataset.records[0].width, dataset.records[0].height)


def test_mirrored_items_flip_the_image_and_the_box() -> None:
    from single_object_detector import SingleObjectImages

    from detseg.data import recipes

    dataset = recipes.load("single_object", num_images=8)
    plain = SingleObjectImages(dataset, [0, 1], "small")
    mirrored = SingleObjectImages(dataset, [0, 1], "small", mirrored=True)
    image, box, label = plain[1]
    flipped, flipped_box, flipped_label = mirrored[1]
    x1, y1, x2, y2 = box.tolist()
    torch.testing.assert_close(flipped_box, torch.tensor([1 - x2, y1, 1 - x1, y2]))
    assert flipped_label == label
    torch.testing.assert_close(flipped, image.flip(-1), atol=0.05, rtol=0)
    assert not torch.allclose(flipped, image, atol=0.05)  # the image is not symmetric
