"""detseg.engine.WithEMA: the average by hand, what it averages and skips, the hook, the engine's
checkpoints and an exact resume."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from detseg import engine  # noqa: E402
from detseg.engine import WithEMA  # noqa: E402


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_update_is_the_ramped_average_by_hand():
    trainee = WithEMA(_net(), decay=0.9, tau=2.0)
    start = {k: v.clone() for k, v in trainee.ema.state_dict().items()}
    with torch.no_grad():
        for p in trainee.model.parameters():
            p.add_(1.0)  # the model moves by exactly 1 everywhere
    trainee.update()
    d1 = 0.9 * (1 - math.exp(-1 / 2.0))
    assert trainee.current_decay() == pytest.approx(d1) and int(trainee.updates) == 1
    for name, value in trainee.ema.named_parameters():
        torch.testing.assert_close(value, start[name] + (1 - d1))  # d * old + (1 - d) * (old + 1)
    trainee.update()  # the model did not move: the average closes (1 - d2) of the remaining gap
    d2 = 0.9 * (1 - math.exp(-2 / 2.0))
    gap = 1 - (1 - d1)
    for name, value in trainee.ema.named_parameters():
        torch.testing.assert_close(value, start[name] + 1 - d2 * gap)


def test_buffers_float_averaged_counters_untouched_and_ema_never_trains():
    trainee = WithEMA(_net(), decay=0.5, tau=1e-9)  # d = 0.5 from the first update
    trainee.train()
    assert trainee.model.training and not trainee.ema.training
    trainee(torch.randn(16, 3))  # the model's BatchNorm statistics move, the average's do not
    assert int(trainee.ema[1].num_batches_tracked) == 0
    trainee.update()
    model_bn, ema_bn = trainee.model[1], trainee.ema[1]
    torch.testing.assert_close(ema_bn.running_mean, 0.5 * model_bn.running_mean)  # from 0
    torch.testing.assert_close(ema_bn.running_var, 0.5 + 0.5 * model_bn.running_var)  # from 1
    assert int(ema_bn.num_batches_tracked) == 0 and int(model_bn.num_batches_tracked) == 1
    assert not any(p.requires_grad for p in trainee.ema.parameters())
    with pytest.raises(ValueError, match="decay"):
        WithEMA(_net(), decay=1.0)


def test_attach_updates_after_every_optimizer_step():
    trainee = WithEMA(_net(), decay=0.99, tau=10.0)
    optimizer = torch.optim.SGD(trainee.model.parameters(), lr=0.1)
    trainee.attach(optimizer)
    for _ in range(3):
        optimizer.zero_grad()
        trainee(torch.randn(8, 3)).pow(2).mean().backward()
        optimizer.step()
    assert int(trainee.updates) == 3
    moved = [not torch.equal(a, b) for a, b in zip(trainee.ema.parameters(), _net().parameters())]
    assert all(moved)


def _train(tmp_path, epochs, resume=False, stop_after_epoch=None):
    torch.manual_seed(1)
    inputs, targets = torch.randn(32, 3), torch.randn(32, 2)
    dataset = torch.utils.data.TensorDataset(inputs, targets)
    loader = engine.make_loader(dataset, 8, shuffle=True, seed=0, workers=0)
    trainee = WithEMA(_net(), decay=0.9, tau=3.0)
    optimizer = torch.optim.SGD(trainee.model.parameters(), lr=0.05, momentum=0.9)
    trainee.attach(optimizer)
    engine.train(
        trainee, loader, optimizer=optimizer, device=torch.device("cpu"), epochs=epochs,
        step_fn=engine.supervised_step(nn.MSELoss()), output_dir=tmp_path, resume=resume,
        stop_after_epoch=stop_after_epoch,
    )  # fmt: skip
    return trainee


def test_engine_checkpoints_hold_the_average_and_resume_continues_it_exactly(tmp_path):
    full = _train(tmp_path / "full", epochs=3)
    assert int(full.updates) == 12
    _train(tmp_path / "split", epochs=3, stop_after_epoch=1)
    resumed = _train(tmp_path / "split", epochs=3, resume=True)
    assert int(resumed.updates) == 12
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    saved = engine.load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    assert int(saved["updates"]) == 12 and any(k.startswith("ema.") for k in saved)
