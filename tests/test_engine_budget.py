"""detseg.engine.budget: stop before an epoch that would end past the budget; resume the rest."""

from __future__ import annotations

import io

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from detseg.engine import load_checkpoint, loop, supervised_step
from detseg.engine.budget import train_within_budget

torch.set_num_threads(1)


def _run(output_dir, budget_s, resume=False, **kwargs):
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
        step_fn=step,
        output_dir=output_dir,
        **{"progress": False, **kwargs},
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


def test_progress_lines_count_the_whole_schedule(tmp_path, monkeypatch):
    """One engine call per epoch must still print ``epoch k/3``, not ``epoch k/k``."""
    monkeypatch.setattr(loop, "LOG_EVERY_STEPS", 2)
    log = io.StringIO()  # not a terminal: the loop prints plain step lines and epoch lines
    monkeypatch.setattr("sys.stderr", log)
    _run(tmp_path, budget_s=1e9, progress=True)

    lines = [line for line in log.getvalue().splitlines() if line.startswith("epoch ")]
    assert [line.split(" | ")[0].split(" loss ")[0] for line in lines] == [
        "epoch 1/3 step 2/4",
        "epoch 1/3",
        "epoch 2/3 step 2/4",
        "epoch 2/3",
        "epoch 3/3 step 2/4",
        "epoch 3/3",
    ]
    assert (tmp_path / "training_curves.png").exists()
