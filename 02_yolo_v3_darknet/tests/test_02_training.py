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
from yolo_loss import LossConfig, assign_targets, assign_targets_yolov5, shape_iou, yolo_loss
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


def test_assign_targets_yolov5_hand_computed():
    """YOLOv5's rule: every anchor within a 4x side ratio, at every scale, in the centre cell and
    the 2 nearest neighbours; offsets = centre in cells - cell, in (-0.5, 1.5)."""
    anchors = [[(80.0, 80.0), (20.0, 20.0)], [(10.0, 10.0), (200.0, 200.0)]]  # strides 32, 16
    target = {"boxes": torch.tensor([[40.0, 55.0, 60.0, 85.0]]), "labels": torch.tensor([2])}
    # 20 x 30, centre (50, 70). Ratios: 80 -> (4, 2.67): 4 is not < 4, out; 20 -> 1.5 in;
    # 10 -> 3 in; 200 -> 10 out. Stride 32: centre (1.5625, 2.1875) -> cell (1, 2), x past the
    # middle: right neighbour (2, 2); y before it: upper neighbour (1, 1). Stride 16: centre
    # (3.125, 4.375) -> cell (3, 4), left (2, 4), up (3, 3).
    coarse, fine = assign_targets_yolov5([target], anchors, [32, 16], [(4, 4), (8, 8)])

    def cells(assigned: dict) -> dict:
        return {
            (int(a), int(c), int(r)): tuple(round(float(v), 4) for v in o)
            for a, c, r, o in zip(
                assigned["anchor"], assigned["col"], assigned["row"], assigned["offset"]
            )
        }

    assert cells(coarse) == {
        (1, 1, 2): (0.5625, 0.1875),
        (1, 2, 2): (-0.4375, 0.1875),
        (1, 1, 1): (0.5625, 1.1875),
    }
    assert cells(fine) == {
        (0, 3, 4): (0.125, 0.375),
        (0, 2, 4): (1.125, 0.375),
        (0, 3, 3): (0.125, 1.375),
    }
    assert coarse["label"].tolist() == [2] * 3 and coarse["image"].tolist() == [0] * 3
    # YOLOv3's rule gives this box one prediction: the 20 x 20 anchor (shape IoU 400 / 600)
    v3 = assign_targets([target], anchors, [32, 16], [(4, 4), (8, 8)])
    assert cells(v3[0]) == {(1, 1, 2): (0.5625, 0.1875)} and len(v3[1]["image"]) == 0


def test_assign_targets_yolov5_border_and_lonely_box():
    """No neighbour past the border (nor the first column / row, as YOLOv5); a box that no anchor
    fits within 4x still gets its best-fitting anchor (at its 3 cells)."""
    anchors = [[(16.0, 16.0)]]
    corner = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([0])}
    (assigned,) = assign_targets_yolov5([corner], anchors, [16], [(4, 4)])  # centre (0.31, 0.31)
    assert list(zip(assigned["col"].tolist(), assigned["row"].tolist())) == [(0, 0)]
    far = {"boxes": torch.tensor([[54.0, 54.0, 64.0, 64.0]]), "labels": torch.tensor([0])}
    (assigned,) = assign_targets_yolov5([far], anchors, [16], [(4, 4)])  # centre (3.69, 3.69)
    assert list(zip(assigned["col"].tolist(), assigned["row"].tolist())) == [(3, 3)]
    huge = {"boxes": torch.tensor([[2.0, 2.0, 66.0, 58.0]]), "labels": torch.tensor([1])}
    two_scales = [[(16.0, 16.0)], [(4.0, 4.0)]]  # worst ratios 64 / 16 = 4 and 16: none fits
    coarse, fine = assign_targets_yolov5([huge], two_scales, [16, 8], [(4, 4), (8, 8)])
    assert len(fine["image"]) == 0 and coarse["anchor"].tolist() == [0, 0, 0]
    cells = set(zip(coarse["col"].tolist(), coarse["row"].tolist()))
    assert cells == {(2, 1), (1, 1), (2, 2)}  # centre (2.125, 1.875): left and lower neighbours
    empty = assign_targets_yolov5([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}],
                                  two_scales, [16, 8], [(4, 4), (8, 8)])  # fmt: skip
    assert [len(a["image"]) for a in empty] == [0, 0]


def test_yolov5_loss_hits_the_box_from_every_assigned_cell_and_sets_iou_objectness():
    """With scale_x_y = 2, logits that put the centre on the box from each of its 3 cells give no
    GIoU loss; with raw zeros (centre of each cell, anchor size) the objectness targets are the
    IoUs of those boxes with the ground truth (hand-computed), or 1 with ``obj_target="one"``."""
    import math

    anchors = [[(16.0, 16.0)]]
    target = {"boxes": torch.tensor([[20.0, 20.0, 36.0, 36.0]]), "labels": torch.tensor([0])}
    # centre (28, 28) = cell (1.75, 1.75): cells (1, 1), (2, 1), (1, 2)
    (assigned,) = assign_targets_yolov5([target], anchors, [16], [(4, 4)])
    raw = torch.zeros(1, 6, 4, 4)  # 1 anchor x (5 + 1 class)
    for col, row, offset in zip(assigned["col"], assigned["row"], assigned["offset"]):
        sig = (offset + 0.5) / 2  # 2 sigmoid - 0.5 = offset
        raw[0, :2, row, col] = torch.log(sig / (1 - sig))
    config = LossConfig(box_loss="giou", assign="yolov5", obj_target="iou")
    loss = yolo_loss([raw], [target], anchors, [16], 64, config, scale_xy=[2.0])
    assert float(loss["loss_box"]) < 1e-5
    with pytest.raises(ValueError, match="scale_x_y"):
        yolo_loss([raw], [target], anchors, [16], 64, config)  # centres could not reach
    # objectness: raw zeros except the objectness logit L everywhere; boxes at the cell centres
    # (24, 24), (40, 24), (24, 40), 16 x 16: IoU 144 / 368 and twice 48 / 464 with the target
    logit = 1.5
    raw = torch.zeros(1, 6, 4, 4)
    raw[0, 4] = logit
    softplus = math.log1p(math.exp(logit))  # BCE with logits = softplus(L) - target x L
    for obj_target, total in (("iou", 144 / 368 + 2 * 48 / 464), ("one", 3.0)):
        config = LossConfig(box_loss="giou", assign="yolov5", obj_target=obj_target)
        loss = yolo_loss([raw], [target], anchors, [16], 64, config, scale_xy=[2.0])
        assert float(loss["loss_obj"]) == pytest.approx(16 * softplus - logit * total, rel=1e-5)


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
