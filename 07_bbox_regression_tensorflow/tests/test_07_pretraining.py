"""The small backbone's pretraining: other images than the lessons', classify and locate, cached."""

from __future__ import annotations

import bbox_data
import bbox_models
import bbox_training
import numpy as np
import pytest
from bbox_models import keras

from detseg.data.pretraining import image_digests
from detseg.errors import UserError


@pytest.fixture
def pretraining(example_env):
    return bbox_training.pretraining_data()  # smoke: 16 built-in images of data seed 1


def test_pretraining_images_are_other_images_than_the_lessons(pretraining):
    lessons = bbox_data.load_source(None)  # the 24 smoke images of data seed 0
    splits = bbox_data.split_dataset(lessons, val_fraction=0.1, test_fraction=0.2, seed=0)
    train, val = pretraining["train"], pretraining["val"]
    assert (len(train), len(val)) == (13, 3)
    assert not {r.file_name for r in train.records} & {r.file_name for r in val.records}
    ours = set(image_digests(train)) | set(image_digests(val))
    assert len(ours) == 16  # 16 different images
    assert not ours & set(image_digests(lessons))  # none of the lessons' 24
    bbox_training.check_disjoint(pretraining, {"val": splits["val"], "test": splits["test"]})


def test_a_pretraining_set_holding_a_held_out_image_is_refused(pretraining):
    held_out = bbox_data.load_source(None)
    leaked = {"train": pretraining["train"], "val": held_out}  # the same bytes, another name
    with pytest.raises(UserError, match=r"include 24 of the test images \(first: "):
        bbox_training.check_disjoint(leaked, {"test": held_out})


def test_pretraining_targets_are_each_images_class_and_box_mirrored_with_it(
    pretraining, tmp_path, monkeypatch
):
    """The batches the pretraining fits: in each epoch's order, the record's class, and its box
    (divided by the image size) where the image is as read, the mirrored box where it is mirrored."""
    train = pretraining["train"]
    seen = {}

    class Captured(Exception):
        pass

    def capture(model, batches, **kwargs):
        seen.update(model=model, batches=list(batches), steps=kwargs["steps_per_epoch"])
        raise Captured

    monkeypatch.setattr(keras.Model, "fit", capture)
    with pytest.raises(Captured):
        bbox_training.pretrain_small_backbone(
            image_size=32, epochs=2, batch_size=8, lr=3e-3, seed=0, cache_dir=tmp_path
        )
    assert sorted(seen["model"].output) == ["bbox", "class"] and seen["steps"] == 2
    assert len(seen["batches"]) == 4  # 2 epochs of 13 images in batches of 8
    boxes = bbox_data.true_boxes(train) / bbox_data.image_sizes(train)
    labels = bbox_data.true_labels(train)
    plain = next(iter(bbox_data.box_dataset(train, image_size=32, batch_size=13, with_class=True)))
    mirrored_count = 0
    for epoch in range(2):
        order = bbox_data.epoch_order(13, seed=0, epoch=epoch)
        batches = seen["batches"][2 * epoch : 2 * epoch + 2]
        images = np.concatenate([b[0].numpy() for b in batches])
        targets = {k: np.concatenate([b[1][k].numpy() for b in batches]) for k in ("bbox", "class")}
        np.testing.assert_array_equal(targets["class"], labels[order])
        for row, index in enumerate(order):
            as_read = plain[0].numpy()[index]
            if np.allclose(images[row], as_read, atol=1e-6):
                np.testing.assert_allclose(targets["bbox"][row], boxes[index], atol=1e-6)
            else:  # mirrored: the image reversed along x, and the box with it
                np.testing.assert_allclose(images[row], as_read[:, ::-1], atol=2 / 255)
                expected = bbox_data.mirror_boxes(boxes[index][None])[0]
                np.testing.assert_allclose(targets["bbox"][row], expected, atol=1e-6)
                mirrored_count += 1
    assert 0 < mirrored_count < 26  # flip 0.5: some of each


def test_pretraining_model_locates_on_the_8x8_map_and_the_backbone_keeps_no_head(tmp_path):
    backbone = bbox_models.build_small_backbone(128)
    model = bbox_models.pretraining_model(backbone, 3)
    outputs = model(np.zeros((2, 128, 128, 3), np.float32))
    assert tuple(outputs["bbox"].shape) == (2, 4) and tuple(outputs["class"].shape) == (2, 3)
    conv = model.get_layer("locate_conv")
    assert tuple(conv.input.shape) == (None, 8, 8, 128) and conv.kernel.shape == (1, 1, 128, 32)
    first, info = bbox_training.pretrain_small_backbone(
        image_size=64, epochs=1, batch_size=16, lr=3e-3, seed=0, cache_dir=tmp_path
    )
    assert info["cached"] is False and info["data_seed"] == 1 and info["train_images"] == 13
    assert 0 <= info["val_box_iou"] <= 1 and 0 <= info["val_accuracy"] <= 1
    assert not [layer.name for layer in first.layers if layer.name.startswith(("locate", "gap"))]
    again, cached = bbox_training.pretrain_small_backbone(
        image_size=64, epochs=1, batch_size=16, lr=3e-3, seed=0, cache_dir=tmp_path
    )
    assert cached["cached"] is True and cached["val_box_iou"] == info["val_box_iou"]
    for a, b in zip(first.weights, again.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
