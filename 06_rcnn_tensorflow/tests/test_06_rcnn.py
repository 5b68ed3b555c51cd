"""R-CNN pieces: box-regression targets by hand, IoU labelling, crops, augmentation, Keras
checkpoints (atomic, exact resume), the offline MobileNet message, and mAP recomputed by pycocotools."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from rcnn_dataset import SEED_RULES, LabelRules, crop_boxes, jittered_boxes, label_proposals
from rcnn_detection import evaluate_detections
from rcnn_models import (
    build_classifier,
    decode_boxes,
    encode_boxes,
    load_model,
    mobilenet_weights_path,
    save_model_atomic,
)
from rcnn_training import epoch_arrays, fit_classifier

from detseg.boxes import box_iou
from detseg.errors import UserError


def test_box_regression_targets_by_hand_and_round_trip():
    proposal = np.array([[0, 0, 10, 10]], np.float32)
    target = np.array([[5, 0, 15, 20]], np.float32)
    # centres (5, 5) -> (10, 10); sizes 10 x 10 -> 10 x 20
    np.testing.assert_allclose(
        encode_boxes(proposal, target), [[0.5, 0.5, 0.0, math.log(2)]], rtol=1e-6
    )
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 100, (50, 2))
    proposals = np.concatenate([corner, corner + rng.uniform(15, 50, (50, 2))], 1)
    targets = proposals + rng.normal(0, 2, (50, 4))  # still valid boxes
    decoded = decode_boxes(proposals, encode_boxes(proposals, targets))
    np.testing.assert_allclose(decoded, targets, atol=1e-3)


def test_label_proposals_follows_the_rules():
    gt = np.array([[0, 0, 100, 100]], np.float32)
    proposals = np.array(
        [[0, 0, 100, 90],  # IoU 0.90: positive
         [0, 0, 100, 65],  # 0.65: regression only
         [0, 0, 100, 50],  # 0.50: dropped
         [0, 0, 100, 20],  # 0.20: part negative (R-CNN's rule, the default)
         [0, 0, 100, 4],  # 0.04: negative
         [200, 200, 250, 250],  # 0: negative
         [-100, -100, 200, 200]],  # 10000 / 90000: part negative (a box 9x the raccoon's)
        np.float32,
    )  # fmt: skip
    out = label_proposals(proposals, gt, LabelRules(), np.random.default_rng(0))
    # ground truth first, then by group: positives, negatives, part negatives, regression only
    assert out["labels"].tolist() == [1, 1, 0, 0, 0, 0, -1]
    np.testing.assert_allclose(out["ious"][:4], [1.0, 0.9, 0.04, 0.0], atol=1e-5)
    np.testing.assert_allclose(sorted(out["ious"][4:6]), [1 / 9, 0.2], atol=1e-5)
    assert out["ious"][6] == pytest.approx(0.65)
    assert (out["gt_boxes"] == gt).all()
    seed = label_proposals(proposals, gt, SEED_RULES, np.random.default_rng(0))
    assert seed["labels"].tolist() == [1, 1, 0, 0, -1]  # the seed's rules: no part negatives
    assert (seed["ious"][seed["labels"] == 0] < 0.05).all()
    capped = label_proposals(
        proposals,
        gt,
        LabelRules(max_negative=1, max_part_negative=1, include_gt=False),
        np.random.default_rng(0),
    )
    assert capped["labels"].tolist() == [1, 0, 0, -1]
    assert capped["ious"][1] < 0.05 <= capped["ious"][2] < 0.3


def test_crops_and_jitter():
    image = np.zeros((40, 60, 3), np.uint8)
    image[10:20, 30:50] = 255
    crops = crop_boxes(image, np.array([[30, 10, 50, 20], [0, 0, 10, 10]]), 8)
    assert crops.shape == (2, 8, 8, 3) and crops[0].min() == 255 and crops[1].max() == 0
    boxes, labels = jittered_boxes(
        np.array([[10, 5, 40, 35]]), (40, 60), np.random.default_rng(0), 40
    )
    best = box_iou(boxes, np.array([[10, 5, 40, 35]], np.float32)).max(1)
    assert (best[labels == 1] >= 0.7).all() and (best[labels == 0] < 0.3).all()
    assert 0 < labels.sum() < len(labels)


def test_epoch_augmentation_is_reproducible_per_epoch():
    crops = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(6)
    first, order = epoch_arrays(crops, labels, seed=3, epoch=1)
    again, order_again = epoch_arrays(crops, labels, seed=3, epoch=1)
    other, _ = epoch_arrays(crops, labels, seed=3, epoch=2)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(order, order_again)
    assert sorted(order.tolist()) == list(range(6)) and not np.array_equal(first, other)
    assert first.dtype == np.float32 and first.min() >= 0 and first.max() <= 255


def _tiny_data(count: int = 48):
    rng = np.random.default_rng(0)
    labels = np.arange(count) % 2
    crops = rng.integers(0, 120, (count, 16, 16, 3)).astype(np.uint8)
    crops[labels == 1, 4:12, 4:12] = 250  # positives: a bright square
    return crops, labels


def test_resume_trains_the_remaining_epochs_and_matches_a_straight_run(tmp_path):
    crops, labels = _tiny_data()
    kwargs = {"epochs": 2, "batch_size": 16, "lr": 1e-2, "seed": 0, "verbose": 0}
    straight = fit_classifier(
        build_classifier("small", crop_size=16), (crops, labels), (crops, labels),
        output_dir=tmp_path / "a", **kwargs,
    )  # fmt: skip
    assert straight["steps_trained"] == 6 and straight["epochs_trained"] == 2

    first = fit_classifier(
        build_classifier("small", crop_size=16), (crops, labels), (crops, labels),
        output_dir=tmp_path / "b", **{**kwargs, "epochs": 1},
    )  # fmt: skip
    assert first["steps_trained"] == 3
    resumed = fit_classifier(
        None, (crops, labels), (crops, labels), output_dir=tmp_path / "b", resume=True, **kwargs
    )
    assert resumed["steps_trained"] == 3 and resumed["epochs_trained"] == 1
    assert [row["epoch"] for row in resumed["history"]] == [1, 2]
    for mine, theirs in zip(resumed["model"].get_weights(), straight["model"].get_weights()):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)
    # carried state: the optimizer's step count and moments came back with the weights
    assert int(resumed["model"].optimizer.iterations.numpy()) == 6
    assert straight["history"][1]["loss"] < straight["history"][0]["loss"]  # it learns


def test_checkpoints_are_atomic_and_bad_files_are_one_line(tmp_path):
    model = build_classifier("small", crop_size=16)
    path = save_model_atomic(model, tmp_path / "m.keras")
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]  # no temporary file left
    loaded = load_model(path)
    for mine, theirs in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    (tmp_path / "bad.keras").write_text("not a model")
    with pytest.raises(UserError, match="not a readable Keras model"):
        load_model(tmp_path / "bad.keras")
    with pytest.raises(UserError, match="no such model file"):
        load_model(tmp_path / "missing.keras")


def test_mobilenet_offline_message_and_weights_from_the_cache(tmp_path, monkeypatch):
    import keras
    from keras.src.backend import config

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "keras"))  # what KERAS_HOME sets

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...")

    monkeypatch.setattr(keras.src.applications.mobilenet_v2.file_utils, "get_file", offline)
    with pytest.raises(UserError) as error:
        build_classifier("mobilenet_v2")
    message = error.value.message()
    assert "storage.googleapis.com" in message and str(mobilenet_weights_path()) in message
    assert "--backbone small" in message
    # the file Keras would download, made here: put at the cache path, it is loaded without network
    base = keras.applications.MobileNetV2(
        input_shape=(128, 128, 3), include_top=False, weights=None
    )
    mobilenet_weights_path().parent.mkdir(parents=True)
    import h5py
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    with h5py.File(mobilenet_weights_path(), "w") as handle:  # Keras' legacy .h5, as published
        save_weights_to_hdf5_group(handle, base)
    monkeypatch.undo()
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "keras"))
    model = build_classifier("mobilenet_v2")
    inner = next(layer for layer in model.layers if layer.name.startswith("mobilenet"))
    np.testing.assert_array_equal(inner.get_weights()[0], base.get_weights()[0])
    assert not inner.trainable


def test_map_of_fixed_detections_equals_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    gts, detections = [], []
    for _ in range(6):
        gt = np.array([[20, 20, 80, 90], [100, 30, 150, 70]], np.float32)
        boxes = np.concatenate([gt + rng.normal(0, 4, gt.shape), rng.uniform(0, 150, (2, 4))])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 5)
        gts.append(gt)
        detections.append({"boxes": boxes, "scores": rng.random(4).astype(np.float32)})
    ours = evaluate_detections(detections, gts, [(120, 160)] * 6, tmp_path, "det")
    assert 0.2 < ours["map50"] < 1.0
    coco = COCO(str(tmp_path / "gt.json"))
    evaluator = COCOeval(
        coco, coco.loadRes(json.loads((tmp_path / "det.json").read_text())), "bbox"
    )
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert ours["map50"] == pytest.approx(evaluator.stats[1], abs=1e-12)
    assert ours["ap"] == pytest.approx(evaluator.stats[0], abs=1e-12)
