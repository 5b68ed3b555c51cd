"""Losses, evaluation, threshold sweep and data preparation by hand; then a tiny run that learns."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from seg_training import (
    IGNORE_INDEX,
    TASKS,
    evaluate,
    fit,
    make_datasets,
    make_step,
    prepare,
    segmentation_loss,
    soft_dice_loss,
    threshold_sweep,
)
from segmentation_models import build_model
from torch import nn

from detseg.data import recipes
from detseg.engine.checkpoint import load_checkpoint, save_checkpoint


def _logits(probabilities: list[list[float]]) -> torch.Tensor:
    """[N, 1, 1, W] logits whose sigmoid is the given probabilities."""
    probs = torch.tensor(probabilities).clamp(1e-6, 1 - 1e-6)
    return torch.logit(probs)[:, None, None, :]


def test_soft_dice_by_hand():
    # prediction [1, 0, 1, 0] vs truth [1, 1, 0, 0]: 2*1 + 1 over (2 + 2 + 1) -> Dice 0.6
    loss = soft_dice_loss(_logits([[1, 0, 1, 0]]), torch.tensor([[[1, 1, 0, 0]]]))
    assert loss.item() == pytest.approx(0.4, abs=1e-4)
    perfect = soft_dice_loss(_logits([[1, 1, 0, 0]]), torch.tensor([[[1, 1, 0, 0]]]))
    assert perfect.item() == pytest.approx(0.0, abs=1e-4)
    # ignoring the two wrong pixels leaves a perfect match
    valid = torch.tensor([[[True, False, False, True]]])
    ignored = soft_dice_loss(_logits([[1, 0, 1, 0]]), torch.tensor([[[1, 1, 0, 0]]]), valid)
    assert ignored.item() == pytest.approx(0.0, abs=1e-4)


def test_batch_dice_is_not_dominated_by_empty_masks():
    # an empty mask predicted almost empty: per-image Dice would be ~0 (loss ~1), batch Dice is fine
    logits = _logits([[1, 1, 0, 0], [0.01, 0.01, 0.01, 0.01]])
    target = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])
    assert soft_dice_loss(logits, target).item() < 0.05


def test_binary_loss_skips_ignored_pixels():
    logits = torch.tensor([[[[2.0, -1.0, 0.5, 3.0]]]])
    target = torch.tensor([[[1, 0, IGNORE_INDEX, 0]]])
    losses = segmentation_loss(logits, target, binary=True)
    expected = F.binary_cross_entropy_with_logits(
        torch.tensor([2.0, -1.0, 3.0]), torch.tensor([1.0, 0.0, 0.0])
    )
    torch.testing.assert_close(losses["bce"], expected)
    assert set(losses) == {"bce", "dice"}


def test_multiclass_loss_adds_weighted_aux():
    torch.manual_seed(0)
    out, aux = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 0, 0] = IGNORE_INDEX
    losses = segmentation_loss({"out": out, "aux": aux}, target, binary=False)
    torch.testing.assert_close(losses["ce"], F.cross_entropy(out, target, ignore_index=255))
    torch.testing.assert_close(losses["aux"], 0.4 * F.cross_entropy(aux, target, ignore_index=255))


class FixedLogits(nn.Module):
    """A 'model' that returns the logits stored for each image (looked up by its first pixel)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits[images[:, 0, 0, 0].long()]


def test_evaluate_and_threshold_sweep_agree_with_hand_counts():
    probs = torch.tensor([[0.9, 0.6, 0.4, 0.2], [0.7, 0.3, 0.8, 0.1]])  # [2 images, 4 pixels]
    masks = torch.tensor([[1, 1, 0, IGNORE_INDEX], [0, 1, 1, 0]])
    model = FixedLogits(torch.logit(probs)[:, None, None, :])
    images = torch.zeros(2, 3, 1, 4)
    images[1] = 1  # image index encoded in the first pixel
    loader = [(images, masks[:, None, :])]
    # at 0.5: predicted salt = {0,1} in image 0, {0,2} in image 1; truth {0,1}, {1,2}
    # salt: intersection 3, union 5 -> 0.6; sediment (valid pixels only): intersection 2, union 4
    metrics = evaluate(model, loader, torch.device("cpu"), class_names=["sed", "salt"], binary=True)
    assert metrics["iou_salt"] == pytest.approx(0.6)
    assert metrics["iou_sed"] == pytest.approx(0.5)
    assert metrics["pixel_accuracy"] == pytest.approx(5 / 7)
    sweep = threshold_sweep(model, loader, torch.device("cpu"), np.array([0.5, 0.75, 0.95]))
    assert sweep[0.5] == pytest.approx(metrics["iou_salt"])
    assert sweep[0.75] == pytest.approx(0.5)  # predicted {0} and {2}: 2 hits, union 4
    assert sweep[0.95] == pytest.approx(0.0)  # nothing predicted


def _metrics_by_counting(preds: np.ndarray, truths: np.ndarray, class_names: list[str]) -> dict:
    """IoU, Dice and pixel accuracy counted class by class with numpy boolean masks (no confusion
    matrix, no detseg): the independent check of :func:`evaluate`. A class absent from truth and
    prediction is left out of the means."""
    valid = truths != IGNORE_INDEX
    ious, dices, metrics = [], [], {}
    for index, name in enumerate(class_names):
        pred, truth = (preds == index) & valid, truths == index
        hits = int((pred & truth).sum())
        misses, false_alarms = int((truth & ~pred).sum()), int((pred & ~truth).sum())
        if hits + misses + false_alarms:
            ious.append(hits / (hits + misses + false_alarms))
            dices.append(2 * hits / (2 * hits + misses + false_alarms))
        metrics[f"iou_{name}"] = ious[-1] if hits + misses + false_alarms else float("nan")
    metrics["mean_iou"], metrics["mean_dice"] = float(np.mean(ious)), float(np.mean(dices))
    metrics["pixel_accuracy"] = int(((preds == truths) & valid).sum()) / int(valid.sum())
    return metrics


def _damaged(truths: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """Predictions of middling quality: the truth shifted 7 px right and 5 px down, a quarter of
    the pixels set to a random class, and a random class wherever the truth is ignored."""
    rng = np.random.default_rng(seed)
    preds = np.roll(truths, (5, 7), axis=(1, 2))
    noisy = rng.random(preds.shape) < 0.25
    preds[noisy] = rng.integers(0, num_classes, int(noisy.sum()))
    ignored = preds == IGNORE_INDEX
    preds[ignored] = rng.integers(0, num_classes, int(ignored.sum()))
    return preds


@pytest.mark.parametrize("task_name", ["street", "salt"])
def test_evaluate_equals_independent_counts_on_damaged_predictions(task_name):
    task = TASKS[task_name]
    train, _, source = make_datasets(task, val_fraction=0.25)
    truths = np.stack([train[i][1].numpy() for i in range(len(train))])  # [N, H, W]
    names = source.classes
    preds = _damaged(truths, len(names), seed=len(names))
    if task.binary:  # probabilities on both sides of the 0.5 threshold, never at it
        rng = np.random.default_rng(0)
        probs = np.where(preds == 1, rng.uniform(0.51, 0.99, preds.shape), rng.uniform(0.01, 0.49))
        logits = torch.logit(torch.from_numpy(probs).float())[:, None]  # [N, 1, H, W]
    else:  # one-hot logits: argmax is the damaged class
        logits = 4.0 * F.one_hot(torch.from_numpy(preds), len(names)).permute(0, 3, 1, 2).float()
    images = torch.arange(len(truths), dtype=torch.float32)[:, None, None, None].expand(
        -1, 3, *truths.shape[1:]
    )  # image index in every pixel: FixedLogits looks its logits up by it
    loader = [
        (images[i : i + 4], torch.from_numpy(truths[i : i + 4])) for i in range(0, len(truths), 4)
    ]
    reported = evaluate(
        FixedLogits(logits), loader, torch.device("cpu"), class_names=names, binary=task.binary
    )
    expected = _metrics_by_counting(preds, truths, names)
    assert reported.keys() == expected.keys()
    for key, value in expected.items():  # the same integer counts divided: equal to the last bit
        assert reported[key] == value or (np.isnan(value) and np.isnan(reported[key])), key
    # neither all right nor all wrong, and ignored pixels present where the dataset has them
    assert 0.25 < reported["mean_iou"] < 0.75 and 0.3 < reported["pixel_accuracy"] < 0.9
    assert task.binary or (truths == IGNORE_INDEX).any()


def test_prepare_resizes_caches_and_limits():
    dataset = recipes.load("street", split="val")
    calls = []

    def counting_loader(root, record):
        calls.append(record.file_name)
        return dataset.loader(root, record)

    counted = dataclasses.replace(dataset, loader=counting_loader)
    prepared = prepare(counted, image_size=(64, 32), cache=True, num_images=2)
    assert len(prepared) == 2
    image, mask = prepared.load(prepared.records[0])
    assert image.shape == (64, 32, 3) and mask.shape == (64, 32) and mask.dtype == np.int64
    _, full_mask = dataset.load(dataset.records[0])
    assert set(np.unique(mask)) <= set(np.unique(full_mask))  # nearest: no blended labels
    again_image, again_mask = prepared.load(prepared.records[0])
    np.testing.assert_array_equal(again_image, image)
    np.testing.assert_array_equal(again_mask, mask)
    assert calls == [dataset.records[0].file_name]  # decoded once


def test_held_out_split_is_disjoint():
    train, val, source = make_datasets(TASKS["salt"], val_fraction=0.25)
    assert len(train) + len(val) == len(source) == recipes.SMOKE_IMAGES
    assert not set(train.indices) & set(val.indices) and len(val) == 4
    image, mask = train[0]
    assert image.shape == (3, 101, 101) and mask.shape == (101, 101)


def _tiny_run(tmp_path, name, num_images=None, **kwargs):
    torch.manual_seed(0)
    train, val, source = make_datasets(TASKS["salt"], val_fraction=0.25, num_images=num_images)
    model = build_model("unet", num_classes=1, width=0.5)
    result = fit(
        model, train, train, task=TASKS["salt"], classes=source.classes,
        device=torch.device("cpu"), batch_size=2, lr=1e-2, output_dir=tmp_path / name,
        progress=False, **kwargs,
    )  # fmt: skip
    return model, result


def test_learning_loss_falls_and_iou_rises(tmp_path):
    # 12 salt images, 60 steps: measured with seed 0 loss x0.60, IoU 0.00 -> 0.85 (same images);
    # seeds 1 and 2 gave x0.69 / 0.24 -> 0.50 and x0.67 / 0.00 -> 0.83: the bounds hold for all three
    model, result = _tiny_run(tmp_path, "learn", epochs=10)
    first, last = result["history"][0], result["history"][-1]
    assert last["train"]["loss"] < 0.8 * first["train"]["loss"]
    assert last["eval"]["iou_salt"] > first["eval"]["iou_salt"] + 0.2
    assert last["eval"]["iou_salt"] > 0.4
    # the last epoch's reported metrics, recomputed from the trained model's own output on the
    # images it was evaluated on (this run evaluates on its training set, flipped as in that epoch)
    train, _, source = make_datasets(TASKS["salt"], val_fraction=0.25)
    train.set_epoch(last["epoch"])
    images = torch.stack([train[i][0] for i in range(len(train))])
    truths = np.stack([train[i][1].numpy() for i in range(len(train))])
    with torch.no_grad():  # in batches of 2 as fit's loader: the same kernels, the same bits
        logits = torch.cat([model.eval()(images[i : i + 2]) for i in range(0, len(images), 2)])
    preds = (torch.sigmoid(logits[:, 0]) > 0.5).long().numpy()
    expected = _metrics_by_counting(preds, truths, source.classes)
    for key, value in expected.items():
        assert last["eval"][key] == value, key


def _counting_step() -> tuple[list[int], object]:
    """The binary step, counting the steps it trains in this process (``calls[0]``)."""
    calls, step = [0], make_step(True)

    def counting(model, batch, device):
        calls[0] += 1
        return step(model, batch, device)

    return calls, counting


def test_time_budget_stops_early_and_resumes_exactly(tmp_path):
    whole_calls, step = _counting_step()
    whole, _ = _tiny_run(tmp_path, "whole", 6, epochs=2, step_fn=step)
    stop_calls, step = _counting_step()
    stopped, result = _tiny_run(tmp_path, "budget", 6, epochs=2, time_budget_min=1e-4, step_fn=step)
    assert result["stopped_early"] and len(result["history"]) == 1
    killed = load_checkpoint(tmp_path / "budget" / "last.pt")
    assert killed["epoch"] == 1
    shutil.copytree(tmp_path / "budget", tmp_path / "perturbed")
    resume_calls, step = _counting_step()
    resumed, result = _tiny_run(
        tmp_path, "budget", 6, epochs=2, time_budget_min=60, resume=True, step_fn=step
    )
    assert len(result["history"]) == 2 and "stopped_early" not in result
    # the resumed process trained epoch 2 only, and carries epoch 1 as the stopped run measured it
    calls = (whole_calls[0], stop_calls[0], resume_calls[0])
    assert calls[0] == 2 * calls[1] == 2 * calls[2] > 0, calls
    assert result["history"][0] == killed["history"][0]
    for mine, theirs in zip(resumed.state_dict().values(), whole.state_dict().values()):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    # the resumed weights come from last.pt: a perturbed copy ends elsewhere
    state = load_checkpoint(tmp_path / "perturbed" / "last.pt")
    first = next(iter(state["model"]))
    state["model"][first] = state["model"][first] + 0.05
    save_checkpoint(state, tmp_path / "perturbed" / "last.pt")
    perturbed, _ = _tiny_run(tmp_path, "perturbed", 6, epochs=2, time_budget_min=60, resume=True)
    assert not torch.equal(perturbed.state_dict()[first], whole.state_dict()[first])
