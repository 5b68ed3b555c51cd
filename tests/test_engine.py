"""detseg.engine in one process on the CPU: learning, warm-up, clipping, non-finite stop, resume, best.

Everything here is tiny (a few hundred parameters, tens of batches) and seeded, so each test runs in
well under a second and gives the same numbers on every run.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from detseg import devices, engine
from detseg.engine import NonFiniteLossError, Warmup, supervised_step
from detseg.errors import UserError

torch.set_num_threads(1)


def tiny_cnn(num_classes: int = 2) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )


def left_or_right_images(count: int = 64, seed: int = 0) -> TensorDataset:
    """1x8x8 noise images with a bright 3x3 square in the left (class 0) or right (class 1) half."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, 8, 8, generator=generator) * 0.3
    labels = torch.randint(0, 2, (count,), generator=generator)
    for index, label in enumerate(labels.tolist()):
        column = 0 if label == 0 else 5
        row = int(torch.randint(0, 6, (1,), generator=generator))
        images[index, 0, row : row + 3, column : column + 3] += 1.0
    return TensorDataset(images, labels)


def linear_data(count: int = 16) -> TensorDataset:
    inputs = torch.linspace(-1, 1, count * 2).reshape(count, 2)
    return TensorDataset(inputs, inputs.sum(dim=1, keepdim=True))


def quiet_train(model, loader, **kwargs):
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("progress", False)
    kwargs.setdefault("step_fn", supervised_step(nn.functional.cross_entropy))
    return engine.train(model, loader, **kwargs)


def test_loss_falls_on_a_learnable_task(tmp_path):
    devices.seed_everything(0)
    model = tiny_cnn()
    loader = engine.make_loader(left_or_right_images(), 16, shuffle=True, seed=0, workers=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    result = quiet_train(model, loader, optimizer=optimizer, epochs=6, output_dir=tmp_path)
    losses = [entry["train"]["loss"] for entry in result["history"]]
    assert 0.6 < losses[0] < 0.8  # about ln 2 = 0.69 at the start
    assert losses[-1] < 0.5 * losses[0], losses
    assert result["final"]["train/loss"] == losses[-1]
    assert [entry["epoch"] for entry in result["history"]] == [1, 2, 3, 4, 5, 6]
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert [entry["train"]["loss"] for entry in summary["history"]] == losses
    assert summary["device"].startswith("cpu") and summary["world_size"] == 1
    assert (tmp_path / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    times = result["history"][0]["time"]
    assert times["epoch_s"] >= times["data_s"] + times["compute_s"] - 1e-3 > 0


def record_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    """The lr of group 0 at every optimizer.step(), as the optimizer actually used it."""
    seen: list[float] = []
    optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"])
    )
    return seen


def test_warmup_lrs_hand_checked_and_composed_with_the_scheduler(tmp_path):
    # 12 items, batch 4 -> 3 steps per epoch; warm-up over 4 steps from 0.2; StepLR halves per epoch.
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    lrs = record_lrs(optimizer)
    loader = engine.make_loader(linear_data(12), 4, shuffle=False, seed=0, workers=0)
    result = quiet_train(
        model,
        loader,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        epochs=3,
        output_dir=tmp_path,
        warmup_iters=4,
        warmup_factor=0.2,
        step_fn=supervised_step(nn.functional.mse_loss),
    )
    # epoch 1: scheduled 1.0 x (0.2, 0.4, 0.6); epoch 2: scheduled 0.5 x (0.8, 1, 1); epoch 3: 0.25
    expected = [0.2, 0.4, 0.6, 0.4, 0.5, 0.5, 0.25, 0.25, 0.25]
    assert lrs == pytest.approx(expected, abs=1e-12)
    assert [entry["lr"] for entry in result["history"]] == pytest.approx([0.6, 0.5, 0.25])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.125)  # the scheduler's own value
    checkpoint = engine.load_checkpoint(tmp_path / "last.pt")
    assert checkpoint["warmup"] == {"iters": 4, "factor": 0.2, "step": 9}


@pytest.mark.parametrize(("iters", "factor"), [(1, 0.5), (7, 0.001), (13, 0.37)])
def test_warmup_law_equals_torch_linear_lr(iters, factor):
    parameter = nn.Parameter(torch.zeros(1))
    reference_optimizer = torch.optim.SGD([parameter], lr=0.3)
    reference = torch.optim.lr_scheduler.LinearLR(
        reference_optimizer, start_factor=factor, total_iters=iters
    )
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.3)
    warmup = Warmup(iters, factor)
    for _ in range(iters + 3):
        scheduled = warmup.apply(optimizer)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(reference.get_last_lr()[0])
        warmup.restore(optimizer, scheduled)
        reference_optimizer.step()
        reference.step()
    assert optimizer.param_groups[0]["lr"] == 0.3


def test_logged_loss_is_the_mean_over_batches(tmp_path):
    # lr 0: the weights stay put, so the epoch's loss is the MSE of the whole set (equal batches).
    model = nn.Linear(2, 1)
    data = linear_data(12)
    with torch.no_grad():
        expected = float(nn.functional.mse_loss(model(data.tensors[0]), data.tensors[1]))
    loader = engine.make_loader(data, 4, shuffle=True, seed=0, workers=0)
    result = quiet_train(
        model,
        loader,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
        epochs=1,
        output_dir=tmp_path,
        step_fn=supervised_step(nn.functional.mse_loss),
    )
    assert result["history"][0]["train"] == pytest.approx({"loss": expected}, rel=1e-6)

    def two_terms_one_named_loss(model, batch, device):
        return {"loss": model(batch[0]).sum(), "aux": model(batch[0]).mean()}

    with pytest.raises(TypeError, match="none may be named 'loss'"):
        quiet_train(
            model,
            loader,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
            epochs=1,
            output_dir=tmp_path,
            step_fn=two_terms_one_named_loss,
        )


def test_per_step_scheduler(tmp_path):
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    lrs = record_lrs(optimizer)
    loader = engine.make_loader(linear_data(8), 4, shuffle=False, seed=0, workers=0)
    quiet_train(
        model,
        loader,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        lr_scheduler_interval="step",
        epochs=2,
        output_dir=tmp_path,
        step_fn=supervised_step(nn.functional.mse_loss),
    )
    assert lrs == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4])


def test_gradient_clipping_is_applied(tmp_path):
    # One SGD step with lr 1: the update is minus the clipped gradient, so its norm is the clip value.
    model = nn.Linear(2, 1)
    before = [p.detach().clone() for p in model.parameters()]
    inputs, targets = torch.tensor([[3.0, -4.0]]), torch.tensor([[10.0]])
    expected_norm = math.sqrt(
        sum(
            float(g.pow(2).sum())
            for g in torch.autograd.grad(
                nn.functional.mse_loss(model(inputs), targets), list(model.parameters())
            )
        )
    )
    loader = engine.make_loader(TensorDataset(inputs, targets), 1, shuffle=False, seed=0, workers=0)
    result = quiet_train(
        model,
        loader,
        optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
        epochs=1,
        output_dir=tmp_path,
        clip_grad_norm=0.01,
        step_fn=supervised_step(nn.functional.mse_loss),
    )
    update = torch.cat([(b - p.detach()).reshape(-1) for b, p in zip(before, model.parameters())])
    assert expected_norm > 1.0
    assert float(update.norm()) == pytest.approx(0.01, rel=1e-4)
    assert result["history"][0]["train"]["grad_norm"] == pytest.approx(expected_norm, rel=1e-5)


class IdDataset(Dataset):
    """Detection-style items ``(image [1, 4, 4], {"image_id": i})`` for the non-finite test."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int):
        return torch.full((1, 4, 4), float(index)), {"image_id": torch.tensor(100 + index)}


def test_nonfinite_loss_stops_with_epoch_batch_and_image_ids(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    calls = []

    def step(model, batch, device):  # NaN on the 3rd batch of epoch 2 (4 batches per epoch)
        images, targets = batch
        calls.append(1)
        loss = model(torch.stack(images)).pow(2).mean()
        return {"loss_a": loss, "loss_b": loss * (math.nan if len(calls) == 7 else 1.0)}

    loader = engine.make_loader(
        IdDataset(),
        2,
        shuffle=False,
        seed=0,
        workers=0,
        collate_fn=lambda items: tuple(zip(*items)),
    )
    with pytest.raises(NonFiniteLossError) as caught:
        quiet_train(
            model,
            loader,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
            epochs=3,
            output_dir=tmp_path,
            step_fn=step,
        )
    message = caught.value.message()
    assert "loss is not finite at epoch 2, batch 3/4 (image ids [104, 105])" in message
    assert "loss_b=nan" in message and "last.pt holds epoch 1" in message
    assert isinstance(caught.value, UserError)
    checkpoint = engine.load_checkpoint(tmp_path / "last.pt")
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())


def test_default_step_is_torchvision_detection_style(tmp_path):
    class FakeDetector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(1))

        def forward(self, images, targets):
            assert isinstance(images, list) and isinstance(targets, list)
            boxes = torch.cat([t["boxes"] for t in targets])
            return {
                "loss_box_reg": (self.weight * boxes).abs().mean(),
                "loss_classifier": self.weight.pow(2).sum() * len(images),
            }

    items = [
        (torch.zeros(3, 4, 4), {"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]]), "image_id": i})
        for i in range(4)
    ]
    loader = engine.make_loader(
        items, 2, shuffle=False, seed=0, workers=0, collate_fn=lambda batch: tuple(zip(*batch))
    )
    model = FakeDetector()
    result = engine.train(
        model,
        loader,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=1,
        output_dir=tmp_path,
        device="cpu",
        progress=False,
    )
    train = result["history"][0]["train"]
    assert set(train) == {"loss", "loss_box_reg", "loss_classifier"}
    assert train["loss"] == pytest.approx(train["loss_box_reg"] + train["loss_classifier"])
    # step 1 at weight 1: 1 + 2; step 2 at weight 1 - 0.1 * (1 + 4) = 0.5: 0.5 + 0.5
    assert train["loss"] == pytest.approx((3.0 + 1.0) / 2)


def test_best_checkpoint_metrics_json_and_csv(tmp_path):
    scores = iter([0.1, 0.5, 0.3])
    model = nn.Linear(2, 1)
    loader = engine.make_loader(linear_data(8), 4, shuffle=True, seed=0, workers=0)
    result = quiet_train(
        model,
        loader,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        epochs=3,
        output_dir=tmp_path,
        step_fn=supervised_step(nn.functional.mse_loss),
        tracker="csv",
        evaluate_fn=lambda model, epoch: {"map": next(scores)},
        best_metric="map",
    )
    assert result["best"] == {"metric": "map", "mode": "max", "value": 0.5, "epoch": 2}
    assert engine.load_checkpoint(tmp_path / "best.pt")["epoch"] == 2
    assert engine.load_checkpoint(tmp_path / "last.pt")["epoch"] == 3
    assert json.loads((tmp_path / "metrics.json").read_text())["best"]["epoch"] == 2
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",")[:4] == ["epoch", "lr", "train/loss", "eval/map"]
    assert [line.split(",")[3] for line in lines[1:]] == ["0.1", "0.5", "0.3"]
    with pytest.raises(UserError, match="best metric 'iou' is not among"):
        quiet_train(
            model,
            loader,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
            epochs=1,
            output_dir=tmp_path / "other",
            step_fn=supervised_step(nn.functional.mse_loss),
            best_metric="iou",
        )


class NoisyDataset(Dataset):
    """Random augmentation in __getitem__ (draws from torch's global generator)."""

    def __init__(self) -> None:
        self.base = left_or_right_images(32, seed=1)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, label = self.base[index]
        return image + 0.05 * torch.randn_like(image), label


def run_toy(output_dir, epochs: int, resume=False) -> tuple[dict, int]:
    """Train the toy run; returns its last.pt and the number of steps THIS call trained."""
    devices.seed_everything(0)
    model = nn.Sequential(tiny_cnn(), nn.Dropout(0.2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    loader = engine.make_loader(NoisyDataset(), 8, shuffle=True, seed=0, workers=0)
    loss_step = supervised_step(nn.functional.cross_entropy)
    steps = 0

    def counting_step(model, batch, device):
        nonlocal steps
        steps += 1
        return loss_step(model, batch, device)

    quiet_train(
        model,
        loader,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        epochs=epochs,
        output_dir=output_dir,
        warmup_iters=6,
        resume=resume,
        step_fn=counting_step,
        config={"epochs": epochs},
    )
    return engine.load_checkpoint(output_dir / "last.pt"), steps


TOY_STEPS = 4  # 32 items, batch 8


def test_resume_in_process_continues_exactly(tmp_path):
    uninterrupted, all_steps = run_toy(tmp_path / "a", epochs=3)
    # stops after epoch 1, warm-up (6 > 4 steps) unfinished
    first_leg, first_steps = run_toy(tmp_path / "b", epochs=1)
    resumed, resumed_steps = run_toy(tmp_path / "b", epochs=3, resume=True)
    assert first_leg["epoch"] == 1 and resumed["epoch"] == 3
    # the resumed process trained epochs 2 and 3 only, not the whole run again
    assert (all_steps, first_steps, resumed_steps) == (3 * TOY_STEPS, TOY_STEPS, 2 * TOY_STEPS)
    # it carries the first leg's history, timings included (a retrain would have measured anew)
    assert resumed["history"][0] == first_leg["history"][0]
    assert resumed["history"][0]["time"] != uninterrupted["history"][0]["time"]
    assert [e["epoch"] for e in resumed["history"]] == [1, 2, 3]
    assert not torch.equal(first_leg["model"]["0.0.weight"], resumed["model"]["0.0.weight"])
    for name, tensor in uninterrupted["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert resumed["warmup"] == uninterrupted["warmup"]
    assert resumed["lr_scheduler"] == uninterrupted["lr_scheduler"]
    losses = [[e["train"]["loss"] for e in c["history"]] for c in (uninterrupted, resumed)]
    assert losses[0] == losses[1]


def _perturb_weights(state):
    state["model"]["0.0.weight"] += 0.01


def _perturb_momentum(state):
    for buffers in state["optimizer"]["state"].values():
        buffers["momentum_buffer"] *= 0.5


def _perturb_lr(state):
    for group in state["optimizer"]["param_groups"]:
        group["lr"] *= 0.5


def _perturb_scheduler(state):
    state["lr_scheduler"]["gamma"] = 0.9


def _perturb_warmup(state):
    state["warmup"]["step"] = 0


def _perturb_rng(state):
    state["rng"]["torch"] = torch.Generator().manual_seed(123).get_state()


PERTURBATIONS = {
    "weights": _perturb_weights,
    "momentum": _perturb_momentum,
    "lr": _perturb_lr,
    "scheduler": _perturb_scheduler,
    "warmup": _perturb_warmup,
    "rng": _perturb_rng,
}


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    """The uninterrupted toy run and the last.pt of a run stopped after epoch 1."""
    root = tmp_path_factory.mktemp("toy")
    uninterrupted, _ = run_toy(root / "a", epochs=3)
    run_toy(root / "b", epochs=1)
    return uninterrupted, root / "b" / "last.pt"


@pytest.mark.parametrize("part", list(PERTURBATIONS))
def test_resume_uses_every_part_of_last_pt(toy_runs, tmp_path, part):
    """Each part of last.pt changed by a little changes the resumed run's result: resume reads it."""
    uninterrupted, stopped = toy_runs
    state = engine.load_checkpoint(stopped)
    PERTURBATIONS[part](state)
    state["history"][0]["train"]["loss"] = 123.0
    engine.save_checkpoint(state, tmp_path / "last.pt")
    resumed, steps = run_toy(tmp_path, epochs=3, resume=True)
    assert steps == 2 * TOY_STEPS
    assert resumed["history"][0]["train"]["loss"] == 123.0  # epoch 1 is the file's, not retrained
    assert not torch.equal(resumed["model"]["0.0.weight"], uninterrupted["model"]["0.0.weight"])


def test_resume_errors(tmp_path):
    model = nn.Linear(2, 1)
    loader = engine.make_loader(linear_data(4), 4, shuffle=False, seed=0, workers=0)
    kwargs = {"epochs": 1, "step_fn": supervised_step(nn.functional.mse_loss)}
    with pytest.raises(UserError, match="checkpoint not found"):
        quiet_train(
            model,
            loader,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            output_dir=tmp_path,
            resume=True,
            **kwargs,
        )
    quiet_train(
        model,
        loader,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        output_dir=tmp_path,
        **kwargs,
    )
    other = nn.Linear(3, 1)
    with pytest.raises(UserError, match="checkpoint does not fit this model"):
        quiet_train(
            other,
            loader,
            optimizer=torch.optim.SGD(other.parameters(), lr=0.1),
            output_dir=tmp_path,
            resume=True,
            **kwargs,
        )


def test_dry_run_steps_and_amp_on_cpu_is_ignored(tmp_path, capsys):
    model = nn.Linear(2, 1)
    loader = engine.make_loader(linear_data(16), 2, shuffle=True, seed=0, workers=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = quiet_train(
            model,
            loader,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=1,
            output_dir=tmp_path,
            max_steps_per_epoch=1,
            amp=True,
            step_fn=supervised_step(nn.functional.mse_loss),
        )
    assert result["history"][0]["steps"] == 1
    assert "--amp works on CUDA only" in capsys.readouterr().err
    # the scaler is built disabled off CUDA, so torch has nothing to warn about (our note says it)
    assert not [w for w in caught if "GradScaler" in str(w.message)]
    assert engine.load_checkpoint(tmp_path / "last.pt")["scaler"] is None


def test_reduce_lr_on_plateau_gets_the_metric(tmp_path):
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=0)
    loader = engine.make_loader(linear_data(4), 4, shuffle=False, seed=0, workers=0)
    quiet_train(
        model,
        loader,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        epochs=3,
        output_dir=tmp_path,
        step_fn=supervised_step(nn.functional.mse_loss),
        best_metric="score",
        evaluate_fn=lambda model, epoch: {"score": 1.0},  # no improvement after epoch 1
    )
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


def test_weights_overflow_stops_naming_the_epoch_still_saved(tmp_path):
    """A finite loss whose step overflows the weights: stop after that epoch, last.pt untouched."""
    model = nn.Linear(2, 1)
    loader = engine.make_loader(linear_data(4), 4, shuffle=False, seed=0, workers=0)
    calls = []

    def step(model, batch, device):
        calls.append(1)
        total = model.weight.sum() + model.bias.sum()
        # loss value 0 (finite); in epoch 2 a gradient of 1e38, a step of 1e39: inf in float32
        return (total - total.detach()) * (1e38 if len(calls) == 2 else 0.0)

    with pytest.raises(NonFiniteLossError) as caught:
        quiet_train(
            model,
            loader,
            optimizer=torch.optim.SGD(model.parameters(), lr=10.0),
            epochs=3,
            output_dir=tmp_path,
            step_fn=step,
        )
    assert "weights became NaN / inf in epoch 2" in caught.value.what
    assert caught.value.fix.endswith("last.pt still holds epoch 1")
    assert engine.load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_an_empty_loader_is_one_clear_error(tmp_path):
    model = nn.Linear(2, 1)
    with pytest.raises(UserError) as caught:
        quiet_train(
            model,
            [],
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=1,
            output_dir=tmp_path,
            step_fn=supervised_step(nn.functional.mse_loss),
        )
    assert caught.value.what == "epoch 1 had no batches"
    assert caught.value.fix == "check that the dataset is not empty"


def test_steps_in_epoch_is_the_loader_length_capped():
    from detseg.engine.loop import _steps_in_epoch

    assert _steps_in_epoch([1, 2, 3], None) == 3
    assert _steps_in_epoch([1, 2, 3], 2) == 2
    assert _steps_in_epoch([1, 2], 5) == 2  # a cap above the length does not add steps
    assert _steps_in_epoch(iter([1, 2]), 5) == 5 and _steps_in_epoch(iter([1]), None) is None


def test_evaluate_gets_the_model_and_result_names_the_folder(tmp_path, capsys):
    model = nn.Linear(2, 1)
    loader = engine.make_loader(linear_data(4), 4, shuffle=False, seed=0, workers=0)
    seen = []

    def evaluate(model, epoch):
        seen.append((epoch, model.training, torch.is_grad_enabled()))
        return {"bias": float(model.bias)}

    kwargs = {"step_fn": supervised_step(nn.functional.mse_loss), "evaluate_fn": evaluate}
    result = quiet_train(
        model,
        loader,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=2,
        output_dir=tmp_path,
        config={"lr": 0.1},
        **kwargs,
    )
    assert seen == [(1, False, False), (2, False, False)]  # eval mode, no gradients
    assert result["history"][-1]["eval"]["bias"] == float(model.bias)
    assert result["output_dir"] == str(tmp_path)
    capsys.readouterr()
    # resuming with the same settings says nothing; with another lr it names the setting
    for lr, epochs, note in [(0.1, 3, None), (0.2, 4, "lr")]:
        quiet_train(
            model,
            loader,
            optimizer=torch.optim.SGD(model.parameters(), lr=lr),
            epochs=epochs,
            output_dir=tmp_path,
            config={"lr": lr},
            resume=True,
            **kwargs,
        )
        notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
        assert notes == ([] if note is None else [f"note: resuming {tmp_path / 'last.pt'} "
                                                  f"with changed settings: {note}"])  # fmt: skip


def test_resume_of_a_checkpoint_without_config(tmp_path):
    """last.pt written by hand without "config" (or by an older version) still resumes."""
    model = nn.Linear(2, 1)
    loader = engine.make_loader(linear_data(4), 4, shuffle=False, seed=0, workers=0)
    kwargs = {"step_fn": supervised_step(nn.functional.mse_loss), "output_dir": tmp_path}
    quiet_train(
        model, loader, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, **kwargs
    )
    state = engine.load_checkpoint(tmp_path / "last.pt")
    del state["config"]
    engine.save_checkpoint(state, tmp_path / "last.pt")
    result = quiet_train(
        model,
        loader,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=2,
        resume=True,
        config={"lr": 0.1},
        **kwargs,
    )
    assert [entry["epoch"] for entry in result["history"]] == [1, 2]


@pytest.mark.parametrize("fails", [False, True])
def test_process_group_made_by_train_ends_with_a_barrier_only_after_success(
    tmp_path, monkeypatch, fails
):
    # under torchrun, train() makes the group and ends it; after an error the other ranks may be
    # gone, so no barrier (it would hang) — the group is faked here, the gloo run is test_engine_ddp
    from detseg.engine import loop

    barriers = []
    monkeypatch.setattr(loop.ddp, "init_distributed", lambda device: (device, True))
    monkeypatch.setattr(
        loop.ddp, "destroy_distributed", lambda *, barrier=True: barriers.append(barrier)
    )
    model = nn.Linear(2, 1)
    loader = engine.make_loader(linear_data(4 * (not fails)), 1, shuffle=False, seed=0, workers=0)
    kwargs = dict(epochs=1, output_dir=tmp_path, step_fn=supervised_step(nn.functional.mse_loss))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    if fails:
        with pytest.raises(UserError, match="had no batches"):
            quiet_train(model, loader, optimizer=optimizer, **kwargs)
    else:
        assert quiet_train(model, loader, optimizer=optimizer, **kwargs)["history"][0]["steps"] == 4
    assert barriers == [not fails]


class _CudaLikeScaler:
    """Stands in for an enabled CUDA GradScaler on a CPU-only machine: passes the loss through,
    steps the optimizer, and counts its updates in its state."""

    made: list[_CudaLikeScaler] = []

    def __init__(self, device: str = "cuda", enabled: bool = False) -> None:
        self.state, self.loaded = {"scale": 1024.0, "updates": 0}, []
        _CudaLikeScaler.made.append(self)

    def is_enabled(self) -> bool:
        return True

    def scale(self, loss):
        return loss

    def unscale_(self, optimizer) -> None:
        pass

    def step(self, optimizer) -> None:
        optimizer.step()

    def update(self) -> None:
        self.state["updates"] += 1

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.loaded.append(dict(state))
        self.state = dict(state)


def test_amp_scaler_state_is_saved_every_epoch_and_restored_on_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.amp, "GradScaler", _CudaLikeScaler)
    monkeypatch.setattr(_CudaLikeScaler, "made", [])
    monkeypatch.setattr(torch, "autocast", lambda *args, **kwargs: contextlib.nullcontext())

    def run(epochs: int, resume: bool) -> None:
        model = nn.Linear(2, 1)
        quiet_train(
            model,
            engine.make_loader(linear_data(8), 2, shuffle=False, seed=0, workers=0),
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=epochs,
            output_dir=tmp_path,
            amp=True,
            resume=resume,
            step_fn=supervised_step(nn.functional.mse_loss),
        )

    run(2, resume=False)
    assert engine.load_checkpoint(tmp_path / "last.pt")["scaler"] == {"scale": 1024.0, "updates": 8}
    run(3, resume=True)
    resumed = _CudaLikeScaler.made[-1]
    assert resumed.loaded == [{"scale": 1024.0, "updates": 8}]  # 2 epochs of 4 steps
    assert engine.load_checkpoint(tmp_path / "last.pt")["scaler"]["updates"] == 12


def test_zero_epochs_is_one_clear_error(tmp_path):
    model = nn.Linear(2, 1)
    with pytest.raises(UserError) as caught:
        quiet_train(model, [], optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=0,
                    output_dir=tmp_path)  # fmt: skip
    assert caught.value.what == "--epochs must be >= 1, got 0"
    assert caught.value.fix == "pass a positive number"


def test_resume_from_a_checkpoint_path_keeps_the_best_epoch_of_the_killed_run(tmp_path):
    """Scripted scores: epoch 1 is the best (0.9) and stays so after a resume from a copy of
    last.pt given by path (epochs 2 and 3 score 0.5 and 0.7)."""
    scores = {1: 0.9, 2: 0.5, 3: 0.7}

    def run(epochs: int, output_dir, resume=False) -> dict:
        model = nn.Linear(2, 1)
        return quiet_train(
            model,
            engine.make_loader(linear_data(4), 2, shuffle=False, seed=0, workers=0),
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=epochs,
            output_dir=output_dir,
            resume=resume,
            evaluate_fn=lambda model, epoch: {"score": scores[epoch]},
            best_metric="score",
            step_fn=supervised_step(nn.functional.mse_loss),
        )

    run(2, tmp_path / "killed")
    saved = tmp_path / "elsewhere" / "epoch2.pt"
    saved.parent.mkdir()
    saved.write_bytes((tmp_path / "killed" / "last.pt").read_bytes())
    result = run(3, tmp_path / "resumed", resume=str(saved))
    assert [entry["epoch"] for entry in result["history"]] == [1, 2, 3]
    assert result["best"] == {"metric": "score", "mode": "max", "value": 0.9, "epoch": 1}
    assert not (tmp_path / "resumed" / "best.pt").exists()  # no epoch of this process beat 0.9


def test_step_function_gets_the_training_device(tmp_path):
    devices_seen = []
    step = supervised_step(nn.functional.mse_loss)

    def recording_step(model, batch, device):
        devices_seen.append(device)
        return step(model, batch, device)

    model = nn.Linear(2, 1)
    loader = engine.make_loader(linear_data(4), 2, shuffle=False, seed=0, workers=0)
    quiet_train(model, loader, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
                output_dir=tmp_path, step_fn=recording_step)  # fmt: skip
    assert devices_seen == [torch.device("cpu")] * 2
