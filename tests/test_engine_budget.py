"""detseg.engine.budget: stop before an epoch that would end past the budget; resume the rest."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from detseg.engine import load_checkpoint, supervised_step
from detseg.engine.budget import train_within_budget

torch.set_num_threads(1)


def _run(output_dir, budget_s, resume=False):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(16, 3, generator=generator)
    loader = DataLoader(TensorDataset(inputs, inputs.sum(1, keepdim=True)), batch_size=4)
    model = nn.Linear(3, 1)
    steps = []

    def step(model, batch, device):
        steps.append(1)
        return supervised_step(nn.functional.mse_loss)(model, batch, device)

    result = train_within_budget(
        model,
        loader,
        epochs=3,
        budget_s=budget_s,
        resume=resume,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        device="cpu",
        progress=False,
        step_fn=step,
        output_dir=output_dir,
    )
    return result, len(steps)


def test_no_budget_pressure_trains_every_epoch(tmp_path):
    result, steps = _run(tmp_path, budget_s=1e9)
    assert steps == 12 and "stopped_early" not in result
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3


def test_a_spent_budget_stops_after_one_epoch_and_resume_finishes_exactly(tmp_path, capsys):
    full, _ = _run(tmp_path / "full", budget_s=1e9)
    stopped, steps = _run(tmp_path / "cut", budget_s=0.0)
    assert stopped["stopped_early"] is True and steps == 4
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    assert "stopped after epoch 1 of 3" in capsys.readouterr().err

    resumed, steps = _run(tmp_path / "cut", budget_s=1e9, resume=True)
    assert steps == 8  # epochs 2 and 3 only
    last = load_checkpoint(tmp_path / "cut" / "last.pt")
    reference = load_checkpoint(tmp_path / "full" / "last.pt")
    for name, tensor in reference["model"].items():
        assert torch.equal(tensor, last["model"][name]), name
