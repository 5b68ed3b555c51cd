"""Every script's main() on tiny built-in data: train (+ exact resume), evaluation against
pycocotools, export parity with and without NMS, detect with both backends, record_images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yolov7_budget
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from yolov7_data import YoloSamples, collate, read_split
from yolov7_training import CosineFactor, cosine_schedule, evaluate

from detseg.data.formats import coco
from detseg.engine.checkpoint import load_checkpoint, save_checkpoint
from detseg.errors import UserError
from detseg.scripts import load_script

FOLDER = Path(__file__).resolve().parents[1]
# 12 images -> 9 train (3 steps of 3... batches of 4), 2 valid, 1 test; 64 px; one thread
SHORT = ["--num-images", "12", "--image-size", "64", "--batch-size", "4", "--workers", "0",
         "--device", "cpu", "--seed", "3"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data) -> Path:
    """One short training run (1 epoch) shared by the export / detect tests."""
    out = tmp_path_factory.mktemp("ex03-run")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETSEG_SMOKE", "1")
        patch.setenv("DETSEG_DATA", str(shared_data))
        torch.set_num_threads(1)
        train = load_script(FOLDER, "train")
        train.main([*SHORT, "--epochs", "1", "--output-dir", str(out), "--tracker", "csv"])
    torch.set_num_threads(threads)
    return out


def test_train_writes_checkpoints_metrics_and_csv(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    entry = metrics["history"][0]
    assert set(entry["train"]) >= {"box", "obj", "cls", "loss"}
    assert {"map50", "map", "fitness"} <= set(entry["eval"]) and entry["steps"] == 3
    assert (trained / "last.pt").is_file() and (trained / "best.pt").is_file()
    assert "map50" in (trained / "metrics.csv").read_text().splitlines()[0]
    checkpoint = load_checkpoint(trained / "last.pt")
    assert checkpoint["config"]["variant"] == "tiny" and checkpoint["config"]["classes"] == [
        "ball", "cup", "lotion",
    ]  # fmt: skip
    assert int(checkpoint["model"]["updates"]) == 3  # EMA updated after each optimizer step


@pytest.fixture(scope="module")
def straight(tmp_path_factory, shared_data) -> tuple[dict, Path]:
    """A 2-epoch run never interrupted: what the resumed runs must equal."""
    out = tmp_path_factory.mktemp("ex03-straight")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETSEG_SMOKE", "1")
        patch.setenv("DETSEG_DATA", str(shared_data))
        torch.set_num_threads(1)
        result = load_script(FOLDER, "train").main(
            [*SHORT, "--epochs", "2", "--output-dir", str(out)]
        )
    torch.set_num_threads(threads)
    return result, out


def assert_same_run(resumed: dict, path: Path, straight: tuple[dict, Path]) -> None:
    """Same weights, EMA and optimizer state bit for bit, same scheduler, same epoch-2 metrics."""
    a, b = load_checkpoint(straight[1] / "last.pt"), load_checkpoint(path / "last.pt")
    assert int(b["model"]["updates"]) == 6  # EMA counter carried over the restart
    for name in a["model"]:
        torch.testing.assert_close(b["model"][name], a["model"][name], atol=0, rtol=0, msg=name)
    assert b["lr_scheduler"] == a["lr_scheduler"]
    assert resumed["history"][1]["train"] == straight[0]["history"][1]["train"]
    assert resumed["history"][1]["eval"] == straight[0]["history"][1]["eval"]


class EvaluationClock:
    """A fake ``yolov7_budget.clock``: each evaluation (one per epoch) advances it by the next of
    ``epoch_s`` seconds, so the budget sees those epoch times whatever the machine's speed."""

    def __init__(self, train, monkeypatch, epoch_s: list[float], die_at: int | None = None):
        self.now, self.calls, self.epoch_s, self.die_at = 0.0, 0, list(epoch_s), die_at
        real = train.evaluate

        def timed(*args, **kwargs):
            self.calls += 1
            if self.calls == self.die_at:
                raise KeyboardInterrupt  # killed at the end of this epoch, before its checkpoint
            self.now += self.epoch_s[min(self.calls, len(self.epoch_s)) - 1]
            return real(*args, **kwargs)

        monkeypatch.setattr(train, "evaluate", timed)
        monkeypatch.setattr(yolov7_budget, "clock", lambda: self.now)


def test_fit_schedule_by_hand():
    # this VM: ~97 s per default epoch, 10 min: 600 x 0.97 / 97 = 6.0 -> 6 epochs, mosaic to 4
    plan = yolov7_budget.fit_schedule(97.0, 600.0, epochs=8, close_mosaic=2)
    assert (plan.epochs, plan.mosaic_epochs, plan.requested_epochs) == (6, 4, 8)
    assert yolov7_budget.fit_schedule(97.1, 600.0, 8, 2).epochs == 5  # 5.99 does not round up
    assert yolov7_budget.fit_schedule(50.0, 600.0, 8, 2).epochs == 8  # never more than --epochs
    slow = yolov7_budget.fit_schedule(900.0, 600.0, 8, 2)  # epoch 1 alone overran the budget
    assert (slow.epochs, slow.mosaic_epochs) == (1, 1)  # the first epoch always keeps mosaic
    assert yolov7_budget.fit_schedule(100.0, 600.0, 8, 0).mosaic_epochs == 5
    # mosaic epochs at 256 px, the 2 closing ones at 320 px cost (320 / 256)^2 = 1.5625 each:
    # 582 / 53 = 10.98 units; 10 epochs need 8 + 3.125 = 11.125, 9 need 7 + 3.125 = 10.125
    dearer = yolov7_budget.fit_schedule(53.0, 600.0, 10, 2, closing_cost=1.5625)
    assert (dearer.epochs, dearer.mosaic_epochs) == (9, 7)
    line = plan.describe()
    assert "epoch 1 took 97.0 s" in line and "6 of the 8 --epochs fit" in line
    assert "cosine lr ends at epoch 6, no mosaic in epochs 5-6" in line


def test_cosine_factor_holds_the_first_epoch_then_anneals_and_is_checkpointed():
    factor = CosineFactor(total_steps=30, hold_steps=10, final_fraction=0.01)
    assert [factor(t) for t in (0, 5, 10)] == [1.0, 1.0, 1.0]
    assert factor(20) == pytest.approx(0.505) and factor(30) == pytest.approx(0.01)
    assert factor(45) == pytest.approx(0.01)  # flat after the end
    assert all(factor(t) > factor(t + 1) for t in range(10, 30))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = cosine_schedule(optimizer, 30, 0.01, hold_steps=10)
    scheduler.lr_lambdas[0].total_steps = 20  # what a budget does
    state = scheduler.state_dict()
    restored = cosine_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 30)
    restored.load_state_dict(state)  # --resume: the checkpoint's curve, not the flags'
    assert restored.lr_lambdas[0].total_steps == 20 and restored.lr_lambdas[0].hold_steps == 10


def test_time_budget_fits_the_schedule_and_resume_follows_it_exactly(
    script, tmp_path, capsys, monkeypatch, straight
):
    """Epochs of 100 s (fake clock) and 3.5 min: 2 of 4 epochs fit (210 x 0.97 / 100 = 2.04), so
    the cosine and the closing of mosaic move to epoch 2. Killed in epoch 2, then resumed with a
    budget that would fit all 4 (or with none): the run follows the plan in its checkpoint and ends
    bit for bit where the uninterrupted ``--epochs 2`` run ends (epoch 1 does not depend on the
    schedule's length, and the resumed epoch 2 is exact)."""
    train = script("train")
    out = tmp_path / "killed"
    args = [*SHORT, "--epochs", "4", "--output-dir", str(out)]
    EvaluationClock(train, monkeypatch, [100.0], die_at=2)
    with pytest.raises(KeyboardInterrupt):
        train.main([*args, "--time-budget", "3.5"])
    assert "2 of the 4 --epochs fit" in capsys.readouterr().err
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["epoch"] == 1 and checkpoint["config"]["schedule"]["epochs"] == 2
    assert checkpoint["lr_scheduler"]["lr_lambdas"][0]["total_steps"] == 2 * 3
    recorded = json.loads((out / "metrics.json").read_text())["config"]["schedule"]
    assert recorded == checkpoint["config"]["schedule"]
    EvaluationClock(train, monkeypatch, [100.0])
    resumed = train.main([*args, "--resume", "--time-budget", "60"])
    assert resumed["epochs_run"] == 2 and resumed["schedule"]["epochs"] == 2
    assert [h["steps"] for h in resumed["history"]] == [3, 3] and "stopped_early" not in resumed
    assert_same_run(resumed, out, straight)
    again = train.main([*args, "--resume"])  # no budget: the finished plan, nothing to train
    assert again["epochs_run"] == 2 and again["history"] == resumed["history"]


def test_time_budget_still_stops_when_later_epochs_are_slower(tmp_path, capsys, monkeypatch):
    """The loop of ``train_fitted`` with a stand-in engine: epoch 1 takes 70 s, so 3 epochs fit
    4 min (240 x 0.97 / 70 = 3.3); epoch 2 takes 130 s: 200 s spent + the mean 100 s would end
    past 240 s, so the run stops after epoch 2 of 3, with a note."""
    now, calls, applied = [0.0], [], []

    def engine(model, loader, *, epochs, output_dir, stop_after_epoch=None, resume=False, **kw):
        calls.append((epochs, stop_after_epoch, resume))
        now[0] += {1: 70.0, 2: 130.0}[stop_after_epoch]
        save_checkpoint({"epoch": stop_after_epoch, "config": dict(kw["config"])},
                        output_dir / "last.pt")  # fmt: skip
        return {"history": [{"epoch": e} for e in range(1, stop_after_epoch + 1)]}

    monkeypatch.setattr(yolov7_budget, "train", engine)
    monkeypatch.setattr(yolov7_budget, "clock", lambda: now[0])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    result = yolov7_budget.train_fitted(
        None, None, epochs=4, budget_s=240.0, close_mosaic=2, apply_schedule=applied.append,
        output_dir=tmp_path, lr_scheduler=cosine_schedule(optimizer, 40, hold_steps=10), config={},
    )  # fmt: skip
    assert applied == [3] and result["schedule"]["epochs"] == 3 and result["stopped_early"]
    assert calls == [(4, 1, False), (3, 2, True)]  # epoch 1 of the request, then the plan's
    assert "stopped after epoch 2 of 3" in capsys.readouterr().err


def test_train_with_auxiliary_head_end_to_end(script, tmp_path, monkeypatch):
    """--aux-head through train.py: 6 raw maps into the loss, the auxiliary weights trained and
    saved, rebuilt by load_trained, dropped by export. The base model's real head is too heavy for
    a smoke test (its checkpoint alone is 0.5 GB), so the same wiring is lent to tiny here: P3 from
    its last top-down ELAN (57), P4 from the top-down ELAN (47), P5 from SPP (37)."""
    import yolov7
    from yolov7_checkpoint import load_trained

    from detseg.devices import seed_everything

    monkeypatch.setitem(yolov7.AUX_SOURCES, "tiny", ((57, 47, 37), (64, 128, 256)))
    train, export = script("train"), script("export")
    out = tmp_path / "aux"
    result = train.main([*SHORT, "--epochs", "1", "--output-dir", str(out), "--aux-head"])
    assert result["history"][0]["steps"] == 3
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["config"]["aux_head"] is True
    seed_everything(3)
    initial = yolov7.build_model("tiny", 3, aux_head=True).state_dict()
    aux_keys = [
        k for k in initial if k.startswith("aux.") and k.endswith("weight") and "bn" not in k
    ]
    assert len(aux_keys) == 6  # 3 stem convolutions + 3 predictions
    for key in aux_keys:  # every auxiliary convolution got gradient and moved
        assert not torch.equal(checkpoint["model"][f"model.{key}"], initial[key]), key
    model, _ = load_trained(out / "last.pt")
    assert model.aux is not None and len(model.train()(torch.rand(1, 3, 64, 64))) == 6
    exported = export.main(["--weights", str(out / "last.pt"), "--dry-run"])
    assert exported["max_abs_diff"] <= 1e-4 and Path(exported["onnx"]).is_file()


class Oracle(torch.nn.Module):
    """Returns the letterboxed ground truth as decoded predictions, with seeded noise: jittered
    boxes, scores in (0.3, 1), a wrong class now and then, and false positives."""

    def __init__(self, samples: YoloSamples, seed: int = 0):
        super().__init__()
        self.samples, self.next = samples, 0
        self.rng = np.random.default_rng(seed)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rows = []
        for _ in range(len(images)):
            _, targets, _ = self.samples[self.next]
            self.next += 1
            preds = np.zeros((20, 8), np.float32)
            for k, (label, cx, cy, w, h) in enumerate(targets[:10]):
                jitter = self.rng.normal(0, 0.08, 4) * [w, h, w, h]
                wrong = self.rng.random() < 0.15
                cls = (int(label) + 1) % 3 if wrong else int(label)
                preds[k, :4] = [cx, cy, w, h] + jitter
                preds[k, 4] = self.rng.uniform(0.3, 1.0)
                preds[k, 5 + cls] = 1.0
            for k in range(10, 13):  # false positives
                preds[k, :4] = [*self.rng.uniform(10, 50, 2), *self.rng.uniform(5, 20, 2)]
                preds[k, 4], preds[k, 5 + int(self.rng.integers(3))] = (
                    self.rng.uniform(0.1, 0.6),
                    1.0,
                )
            rows.append(torch.from_numpy(preds))
        return torch.stack(rows)


def test_evaluate_equals_pycocotools_on_fixed_predictions(tmp_path):
    dataset = read_split(None, "val", num_images=40)
    samples = YoloSamples(dataset, 96, augment=False)
    loader = torch.utils.data.DataLoader(samples, batch_size=3, collate_fn=collate)
    metrics, results = evaluate(Oracle(samples), loader, dataset, "cpu")
    assert 0.3 < metrics["map50"] < 1.0 and 0.0 < metrics["map"] < metrics["map50"]
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps(coco.to_dict(dataset)))
    dt_path.write_text(json.dumps(results))
    gt = COCO(str(gt_path))
    evaluator = COCOeval(gt, gt.loadRes(str(dt_path)), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert metrics["map"] == pytest.approx(evaluator.stats[0], abs=1e-9)
    assert metrics["map50"] == pytest.approx(evaluator.stats[1], abs=1e-9)


def test_close_mosaic_gives_the_evaluation_samples_in_the_last_epochs():
    dataset = read_split(None, "val", num_images=40)
    plain = YoloSamples(dataset, 96, augment=False)
    closing = YoloSamples(dataset, 96, augment=True, mosaic=1.0, hsv=(0.0, 0.0, 0.0), flip=0.0,
                          mosaic_epochs=1)  # fmt: skip
    closing.set_epoch(1)  # the last mosaic epoch: a mosaic of four scenes
    mosaic_image, _, mosaic_meta = closing[0]
    assert mosaic_meta["scale"] == 1.0 and not torch.equal(mosaic_image, plain[0][0])
    closing.set_epoch(2)  # after it: the letterboxed image and boxes the evaluation sees
    for index in range(3):
        image, targets, meta = closing[index]
        expected_image, expected_targets, expected_meta = plain[index]
        assert torch.equal(image, expected_image)
        np.testing.assert_array_equal(targets, expected_targets)
        assert meta["scale"] == expected_meta["scale"] < 1.0


def test_mosaic_epochs_at_a_smaller_side_then_the_evaluation_size():
    """--mosaic-scale 0.8 (progressive resizing): mosaic epochs at 64 px, the closing ones at the
    evaluation's 96 px, the same letterboxed samples as evaluation; 96 x 0.8 rounds to 64."""
    train = load_script(FOLDER, "train")
    assert [train.mosaic_size(s, 0.8) for s in (320, 192, 96, 64, 640)] == [256, 160, 64, 64, 512]
    dataset = read_split(None, "val", num_images=40)
    plain = YoloSamples(dataset, 96, augment=False)
    samples = YoloSamples(dataset, 96, augment=True, mosaic=1.0, hsv=(0.0, 0.0, 0.0), flip=0.0,
                          mosaic_epochs=1, mosaic_size=64)  # fmt: skip
    samples.set_epoch(1)
    image, targets, _ = samples[0]
    assert image.shape == (3, 64, 64) and targets[:, 1:].max() <= 64
    samples.set_epoch(2)
    image, targets, _ = samples[0]
    assert torch.equal(image, plain[0][0])
    np.testing.assert_array_equal(targets, plain[0][1])


def test_export_parity_without_and_with_nms(script, trained):
    export = script("export")
    plain = export.main(["--weights", str(trained / "best.pt"), "--dry-run", "--dynamic-batch"])
    assert plain["max_abs_diff"] <= 1e-4 and Path(plain["onnx"]).is_file()
    assert plain["max_abs_diff_px"] <= 1e-3  # boxes of a 64 px input: a few float32 spacings
    if plain["opencv_max_abs_diff"] is not None:
        assert plain["opencv_max_abs_diff"] <= 1e-3
    # the 1-epoch model scores every box about 3e-4: near-ties that NMS may order either way. Spread
    # the scores (head weights x 40, objectness and class biases + 6) so that the comparison is
    # about the graph, not about ties (measured: 105 and 106 detections above 0.3).
    checkpoint = load_checkpoint(trained / "best.pt")
    for name, value in checkpoint["model"].items():
        if name.startswith("ema.layers.77.m.") and name.endswith("weight"):
            value.mul_(40.0)
        if name.startswith("ema.layers.77.m.") and name.endswith("bias"):
            value.view(3, -1)[:, 4:].add_(6.0)
    torch.save(checkpoint, trained / "spread.pt")
    with_nms = export.main(
        ["--weights", str(trained / "spread.pt"), "--dry-run", "--nms", "--score-threshold", "0.3",
         "--max-detections", "1000", "--output", str(trained / "nms.onnx")]
    )  # fmt: skip
    for match in with_nms["matches"]:  # two inputs besides the traced one; every detection matched
        assert match["count_a"] == match["count_b"] == match["matched"] > 0
    assert with_nms["max_box_err"] < 1e-2


def test_detect_torch_and_onnx_agree(script, trained, tmp_path):
    detect, export = script("detect"), script("export")
    export.main(["--weights", str(trained / "best.pt"), "--dry-run"])
    common = ["--weights", str(trained / "best.pt"), "--source", "tabletop", "--no-show",
              "--max-frames", "2", "--score-threshold", "0.01"]  # fmt: skip
    eager = detect.main([*common, "--output", str(tmp_path / "torch.mp4")])
    onnx = detect.main([*common, "--backend", "onnx"])
    assert eager["frames"] == onnx["frames"] == 2 and eager["output"] is not None
    assert eager["detections"] == onnx["detections"]


def test_record_images_every_n_and_numbering(script, tmp_path):
    record = script("record_images")
    first = record.main(["--source", "synthetic", "--every", "5", "--max-images", "3",
                         "--no-show", "--out", str(tmp_path / "imgs")])  # fmt: skip
    assert first["saved"] == 3 and first["frames"] == 11  # frames 0, 5, 10 saved
    again = record.main(["--source", "synthetic", "--every", "5", "--max-images", "2",
                         "--no-show", "--out", str(tmp_path / "imgs")])  # fmt: skip
    names = sorted(p.name for p in (tmp_path / "imgs").iterdir())
    assert names == [f"frame_{i:04d}.jpg" for i in range(1, 6)] and again["saved"] == 2
    with pytest.raises(UserError, match="--no-show needs --every"):
        record.main(["--source", "synthetic", "--no-show", "--out", str(tmp_path / "x")])


def test_tour_and_bench_case_in_smoke_mode(script, tmp_path):
    result = script("tour").run(tmp_path)
    assert result["parameters"] == 6_228_762 and result["parameters_fused"] == 6_219_709
    assert result["onnx_max_abs_diff"] <= 1e-4 and 0.0 <= result["map50"] <= 1.0
    assert all(Path(p).is_file() for p in result["pictures"])
    bench = script("bench_cases").case_ort_vs_eager()
    assert bench["max_abs_diff"] <= 1e-4 and bench["onnxruntime_fps"] > 0
