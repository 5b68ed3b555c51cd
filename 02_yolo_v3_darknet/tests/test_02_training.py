"""Loss, anchor assignment, k-means anchors, mAP from fixed predictions (checked with pycocotools),
and train.py end to end: darknet round trip, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from anchors import kmeans_anchors, wh_iou
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from yolo_loss import LossConfig, assign_targets, shape_iou, yolo_loss
from yolo_training import build_custom_model, load_splits, predictions_to_coco

from detseg.data.formats import coco
from detseg.data.yolo_dataset import YoloDataset
from detseg.metrics import evaluate_coco

TINY_RUN = ["--image-size", "64", "--epochs", "1", "--threads", "1", "--mosaic", "0.5"]


def test_shape_iou_hand_computed():
    iou = shape_iou(torch.tensor([[10.0, 10.0]]), torch.tensor([[10.0, 10.0], [20.0, 5.0]]))
    torch.testing.assert_close(iou, torch.tensor([[1.0, 50 / 150]]))  # inter 10 x 5


def test_assign_targets_hand_computed():
    anchors = [[(80.0, 80.0), (120.0, 60.0)], [(20.0, 20.0), (40.0, 30.0)]]  # coarse, fine
    target = {"boxes": torch.tensor([[10.0, 12.0, 50.0, 42.0]]), "labels": torch.tensor([3])}
    # 40 x 30 matches the fine scale's anchor 1 exactly; centre (30, 27) -> stride 16: col 1, row 1
    assigned = assign_targets([target], anchors, [32, 16], [(4, 4), (8, 8)])
    assert len(assigned[0]["image"]) == 0
    fine = assigned[1]
    assert fine["anchor"].tolist() == [1] and fine["row"].tolist() == [1]
    assert fine["col"].tolist() == [1] and fine["label"].tolist() == [3]
    # with a low threshold the 20 x 20 anchor (shape IoU 400 / 1200 = 0.33) is added
    more = assign_targets([target], anchors, [32, 16], [(4, 4), (8, 8)], assign_threshold=0.3)
    assert sorted(more[1]["anchor"].tolist()) == [0, 1]


def test_two_boxes_in_one_slot_get_a_multi_label_class_target():
    """Two boxes of classes 0 and 2 centred in the same cell, both best matched by the one anchor:
    darknet's multi-label target [1, 0, 1] at that prediction, so logits (+10, -10, +10) cost
    3 ln(1 + e^-10) in all; one-hot rows per box would cost > 20 (1 and 0 for the same logit)."""
    from yolo_loss import class_targets

    from detseg.yolo_decode import split_raw

    anchors = [[(20.0, 20.0)]]
    boxes = torch.tensor([[14.0, 14.0, 34.0, 34.0], [13.0, 15.0, 35.0, 33.0]])  # centre (24, 24)
    target = {"boxes": boxes, "labels": torch.tensor([0, 2])}
    raw = torch.zeros(1, 8, 4, 4)  # 1 anchor x (5 + 3 classes)
    raw[0, 5:, 1, 1] = torch.tensor([10.0, -10.0, 10.0])
    (assigned,) = assign_targets([target], anchors, [16], [(4, 4)])
    idx = [assigned[k] for k in ("image", "row", "col", "anchor")]
    assert [int(v) for v in (*assigned["row"], *assigned["col"])] == [1, 1, 1, 1]
    logits, targets = class_targets(split_raw(raw, 1), idx, assigned["label"])
    torch.testing.assert_close(targets, torch.tensor([[1.0, 0.0, 1.0]]))
    torch.testing.assert_close(logits, torch.tensor([[10.0, -10.0, 10.0]]))
    loss = yolo_loss([raw], [target], anchors, [16], 64, LossConfig())["loss_cls"]
    assert float(loss) == pytest.approx(3 * np.log1p(np.exp(-10.0)), abs=1e-6)  # float32 log1p
    # one box alone: the plain one-hot BCE of its prediction
    single = {"boxes": boxes[1:], "labels": torch.tensor([2])}
    loss = yolo_loss([raw], [single], anchors, [16], 64, LossConfig())["loss_cls"]
    expected = 2 * np.log1p(np.exp(-10.0)) + np.log1p(np.exp(10.0))  # class 0 wrongly sure
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_loss_falls_on_one_batch():
    torch.manual_seed(0)
    model, _ = build_custom_model("yolov3-tiny", 3, image_size=64)
    images = torch.rand(2, 3, 64, 64)
    targets = [
        {"boxes": torch.tensor([[8.0, 8.0, 30.0, 26.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[20.0, 30.0, 60.0, 62.0], [2.0, 2.0, 12.0, 10.0]]),
         "labels": torch.tensor([0, 2])},
    ]  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(10):
        parts = yolo_loss(model(images), targets, model.anchors, model.strides, 64, LossConfig())
        loss = sum(parts.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_kmeans_recovers_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[10.0, 12.0], [40.0, 20.0], [90.0, 100.0]])
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, (50, 2)) for c in centres])
    anchors, mean_iou = kmeans_anchors(wh, 3, seed=1)
    np.testing.assert_allclose(anchors, centres, rtol=0.05)
    assert mean_iou > 0.9
    assert wh_iou(np.array([[10.0, 10.0]]), np.array([[5.0, 20.0]]))[0, 0] == pytest.approx(
        50 / 150
    )  # inter 5 x 10
    with pytest.raises(ValueError):
        kmeans_anchors(wh[:2], 3)


def test_fixed_predictions_map_agrees_with_pycocotools(tmp_path: Path):
    """Ground truth moved into letterboxed pixels, some of it jittered, dropped or mislabelled, as
    if a model had predicted it: our pipeline's AP equals pycocotools' on the saved JSON."""
    splits = load_splits(None)
    dataset = YoloDataset(splits.val, 96)
    rng = np.random.default_rng(0)
    outputs, targets = [], []
    for index in range(len(dataset)):
        _, target = dataset[index]
        boxes = target["boxes"].numpy()
        keep = rng.random(len(boxes)) > 0.2
        noisy = boxes + rng.normal(0, 1.5, boxes.shape).astype(np.float32)
        labels = target["labels"].numpy().copy()
        labels[rng.random(len(labels)) < 0.1] = 0
        outputs.append({
            "boxes": torch.from_numpy(noisy[keep]), "labels": torch.from_numpy(labels[keep]),
            "scores": torch.from_numpy(rng.random(int(keep.sum())).astype(np.float32)),
        })  # fmt: skip
        targets.append(target)
    results = predictions_to_coco(outputs, tuple(targets))
    gt = coco.to_dict(splits.val)
    ours = evaluate_coco(gt, results, "bbox").stats
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    cocogt = COCO(str(tmp_path / "gt.json"))
    evaluator = COCOeval(cocogt, cocogt.loadRes(str(tmp_path / "dt.json")), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert 0.3 < ours["AP50"] < 1.0
    assert ours["AP50"] == pytest.approx(evaluator.stats[1], abs=1e-12)
    assert ours["AP"] == pytest.approx(evaluator.stats[0], abs=1e-12)
    # the mapping back is exact: unperturbed ground truth scores AP 1
    clean = [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))}
             for t in targets]  # fmt: skip
    assert evaluate_coco(gt, predictions_to_coco(clean, tuple(targets)), "bbox").stats["AP"] == 1.0


def test_train_main_writes_darknet_files_and_predictions(trained_run: dict):
    result = trained_run
    assert result["weights_roundtrip_max_diff"] == 0.0
    cfg_path, weights_path = (Path(p) for p in result["darknet_files"])
    assert "filters=30" in cfg_path.read_text()  # 3 x (5 + 5 shape classes)
    from darknet_cfg import parse_cfg

    assert weights_path.stat().st_size == parse_cfg(cfg_path).weights_bytes
    predictions = json.loads((Path(result["output_dir"]) / "val_predictions.json").read_text())
    assert len(predictions) == result["eval"]["detections"] > 0
    assert set(result["eval"]) >= {"mAP50", "mAP"}
    assert result["history"][0]["train"]["loss"] > 0


def test_resume_continues_exactly(script, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A 2-epoch run killed in its second epoch and resumed ends with the weights of a run never
    interrupted; the resumed process trains only the missing steps."""
    import yolo_training

    from detseg.devices import set_deterministic

    set_deterministic(True)
    run = [*TINY_RUN, "--epochs", "2"]
    straight = script("train").main([*run, "--output-dir", str(tmp_path / "a")])
    steps_per_epoch = straight["history"][0]["steps"]
    make_step = yolo_training.make_step
    calls = {"count": 0, "kill_after": steps_per_epoch}

    def counting_step(*args, **kwargs):
        step = make_step(*args, **kwargs)

        def wrapped(*step_args):
            if calls["kill_after"] is not None and calls["count"] == calls["kill_after"]:
                raise KeyboardInterrupt  # killed at the first step of epoch 2
            calls["count"] += 1
            return step(*step_args)

        return wrapped

    monkeypatch.setattr(yolo_training, "make_step", counting_step)
    with pytest.raises(KeyboardInterrupt):
        script("train").main([*run, "--output-dir", str(tmp_path / "b")])
    first = json.loads((tmp_path / "b" / "metrics.json").read_text())["history"]
    assert [e["epoch"] for e in first] == [1]
    calls.update(count=0, kill_after=None)
    resumed = script("train").main([*run, "--output-dir", str(tmp_path / "b"), "--resume"])
    assert calls["count"] == straight["history"][1]["steps"]  # epoch 2 only
    assert resumed["history"][0] == first[0]  # carried over from the checkpoint
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert resumed["history"][1]["train"] == straight["history"][1]["train"]


def test_time_budget_stops_before_an_epoch_that_would_end_past_it(script, tmp_path: Path):
    """--time-budget goes through the core's train_within_budget: a budget shorter than one
    epoch trains epoch 1 of 3 only, and says so."""
    result = script("train").main(
        [*TINY_RUN, "--epochs", "3", "--time-budget", "0.0001", "--output-dir", str(tmp_path)]
    )
    assert result["stopped_early"] is True
    assert [entry["epoch"] for entry in result["history"]] == [1]


@pytest.mark.parametrize("box_loss", ["giou", "mse"])
def test_box_loss_is_zero_where_the_decode_hits_the_box(box_loss: str):
    """Raw outputs whose decode (detseg.yolo_decode) is exactly the ground-truth box at the assigned
    cell and anchor give no box loss; moving them gives some: loss and decode agree."""
    import math

    from detseg.yolo_decode import decode_output

    anchors = [[(40.0, 30.0), (80.0, 80.0)]]
    box = torch.tensor([[20.0, 38.0, 70.0, 62.0]])  # centre (45, 50), 50 x 24 -> anchor 0
    target = {"boxes": box, "labels": torch.tensor([1])}
    (assigned,) = assign_targets([target], anchors, [16], [(4, 4)])
    row, col, anchor = int(assigned["row"]), int(assigned["col"]), int(assigned["anchor"])
    assert (row, col, anchor) == (3, 2, 0)
    raw = torch.zeros(1, 2 * 7, 4, 4)  # 2 anchors x (5 + 2 classes)
    channel = anchor * 7
    fx, fy = 45 / 16 - col, 50 / 16 - row
    raw[0, channel + 0, row, col] = math.log(fx / (1 - fx))
    raw[0, channel + 1, row, col] = math.log(fy / (1 - fy))
    raw[0, channel + 2, row, col] = math.log(50 / 40)
    raw[0, channel + 3, row, col] = math.log(24 / 30)
    decoded = decode_output(raw, anchors[0], 16)[0, (row * 4 + col) * 2 + anchor, :4]
    torch.testing.assert_close(decoded, torch.tensor([45.0, 50.0, 50.0, 24.0]))
    config = LossConfig(box_loss=box_loss)
    exact = yolo_loss([raw], [target], anchors, [16], 64, config)["loss_box"]
    moved = raw.clone()
    moved[0, channel + 2, row, col] += 0.3
    off = yolo_loss([moved], [target], anchors, [16], 64, config)["loss_box"]
    if box_loss == "giou":
        assert float(exact) < 1e-5 < float(off)
    else:  # BCE on the offsets has its minimum (the entropy of the target) at the target itself
        assert float(off) > float(exact) + 0.05
