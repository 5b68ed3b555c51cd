"""The engine's progress output: a tqdm bar on a terminal, plain lines in a log (issue 20).

``make demo > demo.log`` used to hold a carriage-return stream of thousands of characters per epoch
on one line. When stderr is not a terminal the loop now prints one line every
``LOG_EVERY_STEPS`` steps and the line that ends each epoch, and no carriage return.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from detseg import engine
from detseg.engine import loop, supervised_step

torch.set_num_threads(1)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _train(tmp_path, epochs: int = 2, steps: int = 7, **kwargs):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(steps * 2, 3), torch.randint(0, 2, (steps * 2,)))
    loader = engine.make_loader(data, 2, shuffle=True, seed=0, workers=0)
    model = nn.Linear(3, 2)
    return engine.train(
        model,
        loader,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=epochs,
        output_dir=tmp_path,
        device="cpu",
        **{"step_fn": supervised_step(nn.functional.cross_entropy), **kwargs},
    )


def test_log_gets_a_line_every_n_steps_and_one_per_epoch(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "LOG_EVERY_STEPS", 3)
    log = io.StringIO()  # a file: isatty() is False
    monkeypatch.setattr("sys.stderr", log)
    result = _train(tmp_path)

    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    steps = [line for line in lines if " step " in line]
    assert [line.split(" loss ")[0] for line in steps] == [
        "epoch 1/2 step 3/7",
        "epoch 1/2 step 6/7",
        "epoch 2/2 step 3/7",
        "epoch 2/2 step 6/7",
    ]
    # the loss shown at step 6 is the mean of the epoch so far: below it, the epoch's line
    assert all(float(line.split(" loss ")[1].split()[0]) > 0 for line in steps)
    others = [line for line in lines if " step " not in line]
    assert len(others) == 2  # one line per epoch (epoch_line), nothing else
    assert [line.split(" | ")[0] for line in others] == ["epoch 1/2", "epoch 2/2"]
    assert [entry["steps"] for entry in result["history"]] == [7, 7]


def test_terminal_gets_the_bar(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "LOG_EVERY_STEPS", 3)
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    _train(tmp_path / "tty")
    text = terminal.getvalue()
    assert "\r" in text and "epoch 2/2" in text  # tqdm redraws its bar in place
    assert " step 3/7 " not in text


@pytest.mark.parametrize("stream_type", [_Terminal, io.StringIO])
def test_progress_false_prints_only_the_epoch_lines(tmp_path, monkeypatch, stream_type):
    # a fresh stream per run: one made at collection would keep the lines of an earlier run in the
    # same process (mutmut's fork server collects once, then runs the test for every mutant)
    stream = stream_type()
    monkeypatch.setattr(loop, "LOG_EVERY_STEPS", 1)
    monkeypatch.setattr("sys.stderr", stream)
    _train(tmp_path, progress=False)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 2


def test_is_terminal_of_odd_streams():
    closed = io.StringIO()
    closed.close()
    assert loop._is_terminal(_Terminal()) is True
    assert loop._is_terminal(io.StringIO()) is False
    assert loop._is_terminal(closed) is False
    assert loop._is_terminal(object()) is False


class _RecordingBar:
    """Stands in for tqdm: how it was built, and the step count at each ``set_postfix``."""

    made: list[_RecordingBar] = []

    def __init__(self, **kwargs) -> None:
        self.kwargs, self.steps, self.postfixes = kwargs, 0, []
        _RecordingBar.made.append(self)

    @staticmethod
    def write(text: str, file) -> None:  # tqdm.write: the line that ends each epoch
        print(text, file=file)

    def update(self, count: int) -> None:
        self.steps += count

    def set_postfix(self, **numbers) -> None:
        self.postfixes.append((self.steps, numbers))

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("progress", "terminal", "disabled"),
    [(True, True, False), (True, False, True), (False, True, True)],
)
def test_bar_numbers_refresh_at_step_1_every_print_freq_and_last(
    tmp_path, monkeypatch, progress, terminal, disabled
):
    monkeypatch.setattr(_RecordingBar, "made", [])
    monkeypatch.setattr(loop, "tqdm", _RecordingBar)
    monkeypatch.setattr("sys.stderr", _Terminal() if terminal else io.StringIO())
    losses = []
    step = supervised_step(nn.functional.cross_entropy)

    def recording_step(model, batch, device):
        losses_of_step = step(model, batch, device)
        losses.append(float(losses_of_step["loss"]))
        return losses_of_step

    _train(tmp_path, epochs=1, steps=12, print_freq=5, progress=progress, step_fn=recording_step)
    (bar,) = _RecordingBar.made
    assert bar.kwargs["disable"] is disabled
    assert bar.kwargs["total"] == 12 and bar.kwargs["desc"] == "epoch 1/1"
    assert [steps for steps, _ in bar.postfixes] == [1, 5, 10, 12]
    for steps, numbers in bar.postfixes:  # the running mean of the epoch's losses so far
        assert numbers["loss"] == f"{sum(losses[:steps]) / steps:.4f}"
        assert numbers["lr"] == "0.1"
