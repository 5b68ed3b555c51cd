"""The Keras pieces: IoU in Keras ops against the core and torchvision, the heads, VGG16's weights."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import bbox_models
import h5py
import numpy as np
import pytest
import torch
import torchvision
from bbox_models import keras
from keras.src.legacy.saving import legacy_h5_format

from detseg.boxes import box_iou
from detseg.errors import UserError


def test_box_iou_pairs_hand_computed():
    boxes_a = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 0, 0]], np.float32)
    boxes_b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [2, 2, 3, 3], [0, 0, 0, 0]], np.float32)
    iou = keras.ops.convert_to_numpy(bbox_models.box_iou_pairs(boxes_a, boxes_b))
    # 1 / (4 + 4 - 1); identical; disjoint; both empty -> 0 (not nan)
    np.testing.assert_allclose(iou, [1 / 7, 1.0, 0.0, 0.0], rtol=1e-6)


def test_box_iou_pairs_equals_core_and_torchvision_on_random_boxes():
    rng = np.random.default_rng(3)
    corners = np.sort(rng.random((200, 2, 2)), axis=1).astype(np.float32)  # [N, (min, max), (x, y)]
    boxes_a = np.concatenate([corners[:, 0], corners[:, 1]], axis=1)  # xyxy
    boxes_b = np.clip(boxes_a + rng.normal(0, 0.1, boxes_a.shape).astype(np.float32), 0, 1)
    boxes_b[:, 2:] = np.maximum(boxes_b[:, 2:], boxes_b[:, :2])
    mine = keras.ops.convert_to_numpy(bbox_models.box_iou_pairs(boxes_a, boxes_b))
    core = np.diag(box_iou(boxes_a, boxes_b))
    reference = torch.diag(
        torchvision.ops.box_iou(torch.from_numpy(boxes_a), torch.from_numpy(boxes_b))
    )
    np.testing.assert_allclose(mine, core, atol=1e-6)
    np.testing.assert_allclose(mine, reference.numpy(), atol=1e-6)
    assert 0.05 < mine.mean() < 0.95  # a mix of overlaps, not a degenerate draw


def test_iou_of_normalised_boxes_equals_iou_in_pixels():
    """The metric runs on boxes divided by (width, height): the same IoU as in pixels."""
    boxes_a = np.array([[10, 20, 110, 90]], np.float32)
    boxes_b = np.array([[30, 10, 140, 80]], np.float32)
    scale = np.array([320, 240, 320, 240], np.float32)
    normalised = keras.ops.convert_to_numpy(
        bbox_models.box_iou_pairs(boxes_a / scale, boxes_b / scale)
    )
    np.testing.assert_allclose(normalised, box_iou(boxes_a, boxes_b)[0], rtol=1e-5)


def test_mean_box_iou_metric_averages_over_batches():
    metric = bbox_models.MeanBoxIoU()
    metric.update_state(np.array([[0, 0, 2, 2]], np.float32), np.array([[1, 1, 3, 3]], np.float32))
    metric.update_state(np.array([[0, 0, 1, 1]], np.float32), np.array([[0, 0, 1, 1]], np.float32))
    assert float(metric.result()) == pytest.approx((1 / 7 + 1) / 2)


def test_caffe_preprocess_equals_keras_vgg16_preprocess_input():
    images = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    mine = keras.ops.convert_to_numpy(bbox_models.CaffePreprocess()(images))
    reference = keras.applications.vgg16.preprocess_input(images * 255.0)
    np.testing.assert_allclose(mine, reference, atol=1e-4)


def test_regressor_freezes_the_backbone_and_counts_the_seed_heads():
    backbone = bbox_models.build_small_backbone(64)  # features [2, 2, 128] -> 512
    model = bbox_models.build_regressor(backbone, num_classes=3)
    features = 2 * 2 * bbox_models.SMALL_WIDTHS[-1]
    bbox_head = (features * 128 + 128) + (128 * 64 + 64) + (64 * 32 + 32) + (32 * 4 + 4)
    class_head = (features * 512 + 512) + (512 * 512 + 512) + (512 * 3 + 3)
    assert bbox_models.trainable_parameters(model) == bbox_head + class_head
    assert not backbone.trainable
    outputs = model(np.zeros((2, 64, 64, 3), np.float32), training=False)
    assert outputs["bbox"].shape == (2, 4) and outputs["class"].shape == (2, 3)
    box = keras.ops.convert_to_numpy(outputs["bbox"])
    assert (box > 0).all() and (box < 1).all()  # sigmoid
    only_box = bbox_models.build_regressor(bbox_models.build_small_backbone(64))
    assert set(only_box(np.zeros((1, 64, 64, 3), np.float32))) == {"bbox"}


def test_vgg16_offline_names_url_cache_file_and_the_small_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    with pytest.raises(UserError) as info:
        bbox_models.vgg16_weights_path(download=offline)
    message = info.value.message()
    assert bbox_models.VGG16_WEIGHTS["url"] in message
    assert str(tmp_path / "models" / bbox_models.VGG16_WEIGHTS["file"]) in message
    assert "--backbone small" in message and bbox_models.VGG16_WEIGHTS["md5"] in message


def test_vgg16_uses_a_cached_weights_file_without_downloading(tmp_path, monkeypatch):
    """A weights file at Keras' cache path (copied from a machine with internet) is loaded as is."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    keras.utils.set_random_seed(5)
    donor = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    cached = tmp_path / "models" / bbox_models.VGG16_WEIGHTS["file"]
    cached.parent.mkdir(parents=True)
    # the layout of Keras' published file: the legacy HDF5 weights format, one group per layer
    with h5py.File(cached, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, donor)

    def no_download(*args, **kwargs):
        raise AssertionError("must not download")

    assert bbox_models.vgg16_weights_path(download=no_download) == cached
    backbone = bbox_models.vgg16_backbone(32)
    vgg = backbone.get_layer("vgg16")
    for mine, theirs in zip(vgg.weights, donor.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    assert backbone(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 1, 1, 512)


def test_save_keras_atomic_keeps_the_old_file_when_saving_fails(tmp_path):
    import bbox_training

    model = bbox_models.build_heads(8)
    path = bbox_training.save_keras_atomic(model, tmp_path / "last.keras")
    before = path.read_bytes()

    class Broken:
        def save(self, target):
            Path(target).write_bytes(b"half a file")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        bbox_training.save_keras_atomic(Broken(), path)
    assert path.read_bytes() == before  # the old checkpoint, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.keras"]  # no temporary left


def test_tracker_callback_hands_epochs_to_the_core_csv_tracker(tmp_path):
    import bbox_training

    from detseg.engine.trackers import make_tracker

    model = bbox_models.compile_regressor(bbox_models.build_heads(8), lr=0.01, with_class=False)
    callback = bbox_training.TrackerCallback(make_tracker("csv", tmp_path, config={}), [])
    callback.set_model(model)
    callback.on_epoch_end(0, {"loss": 0.5, "iou": 0.25, "val_loss": 0.75, "val_iou": 0.125})
    callback.on_epoch_end(1, {"loss": 0.25, "iou": 0.5, "val_loss": 0.5, "val_iou": 0.25})
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == [
        "epoch", "lr", "train/loss", "train/bbox_iou", "eval/loss", "eval/bbox_iou"
    ]  # fmt: skip
    assert rows[2].split(",") == ["2", "0.009999999776482582", "0.25", "0.5", "0.5", "0.25"]


def test_giou_loss_hand_computed_and_equal_to_torchvision():
    # disjoint: IoU 0, union 2, enclosing box 3 -> GIoU -1/3; identical -> 1; nested 1 in 4 -> 1/4
    boxes_a = np.array([[0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 2, 2]], np.float32)
    boxes_b = np.array([[2, 0, 3, 1], [0, 0, 2, 2], [0, 0, 1, 1]], np.float32)
    giou = keras.ops.convert_to_numpy(bbox_models.giou_pairs(boxes_a, boxes_b))
    np.testing.assert_allclose(giou, [-1 / 3, 1.0, 0.25], rtol=1e-6)
    rng = np.random.default_rng(4)
    corners = np.sort(rng.random((100, 2, 2)), axis=1).astype(np.float32)
    truth = np.concatenate([corners[:, 0], corners[:, 1]], axis=1)
    corners = np.sort(rng.random((100, 2, 2)), axis=1).astype(np.float32)
    predicted = np.concatenate([corners[:, 0], corners[:, 1]], axis=1)
    mine = keras.ops.convert_to_numpy(bbox_models.l1_giou_loss(truth, predicted))
    t_truth, t_pred = torch.from_numpy(truth), torch.from_numpy(predicted)
    reference = torchvision.ops.generalized_box_iou_loss(t_pred, t_truth, reduction="none")
    reference = reference + torch.nn.functional.l1_loss(t_pred, t_truth, reduction="none").mean(1)
    np.testing.assert_allclose(mine, reference.numpy(), atol=1e-5)
    assert (keras.ops.convert_to_numpy(bbox_models.giou_pairs(truth, predicted)) < 0).any()


def test_small_regressor_reads_the_map_before_the_last_pool():
    """Box head: 3x3 conv (64) then 1x1 conv (32) on the [S/8, S/8, 128] map; class head: that map pooled, which is exactly
    the whole backbone's output (the features the seed's heads flatten)."""
    keras.utils.set_random_seed(1)
    backbone = bbox_models.build_small_backbone(64)  # relu4 [4, 4, 128], output [2, 2, 128]
    model = bbox_models.build_for("small", backbone, num_classes=3)
    features = 2 * 2 * bbox_models.SMALL_WIDTHS[-1]
    reduce = (3 * 3 * 128 * 64 + 64) + (64 * 32 + 32)  # the box head's 3x3 and 1x1 convolutions
    bbox_head = reduce + (4 * 4 * 32 * 128 + 128) + (128 * 64 + 64) + (64 * 32 + 32) + (32 * 4 + 4)
    class_head = (features * 512 + 512) + (512 * 512 + 512) + (512 * 3 + 3)
    assert bbox_models.trainable_parameters(model) == bbox_head + class_head
    feature_model, heads = bbox_models.split_regressor(model)
    assert feature_model.output.shape[1:] == (4, 4, 128) and not feature_model.trainable
    images = np.random.default_rng(0).random((2, 64, 64, 3)).astype(np.float32)
    feature_map = feature_model(images, training=False)
    pooled = heads.get_layer("class_pool")(feature_map)
    np.testing.assert_allclose(pooled.numpy(), backbone(images, training=False).numpy(), atol=1e-6)
    outputs = model(images, training=False)
    np.testing.assert_allclose(
        outputs["bbox"].numpy(), heads(feature_map)["bbox"].numpy(), atol=1e-6
    )


def test_box_metrics_by_hand():
    import bbox_training

    truth = np.array([[0, 0, 10, 10], [0, 0, 2, 2], [0, 0, 4, 4]], np.float32)
    predicted = np.array([[0, 0, 10, 10], [1, 1, 3, 3], [8, 8, 9, 9]], np.float32)  # 1, 1/7, 0
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    result = bbox_training.box_metrics(
        predicted, truth, scores=scores, labels=np.array([0, 0, 1]), num_classes=2
    )
    assert result["mean_iou"] == pytest.approx((1 + 1 / 7) / 3)
    assert result["iou_above_0.5"] == result["iou_above_0.75"] == pytest.approx(1 / 3)
    assert result["num_images"] == 3 and result["class_accuracy"] == pytest.approx(1 / 3)
    assert result["confusion"] == [[1, 1], [1, 0]]  # rows: true class, columns: predicted
