"""Kill and resume: a run killed with SIGKILL in epoch 2 and resumed ends bit-identical to one never
interrupted (CPU, deterministic algorithms, shuffling, a loader worker, dropout, noise augmentation,
momentum, a scheduler and a warm-up that spans the kill), and the resumed process trained only the
epochs the killed one had not finished, carrying the killed run's history.

This file is also the child program: ``python test_engine_resume.py OUTPUT_DIR [--resume]
[--hang-at-step N]`` trains the toy run; with ``--hang-at-step`` it writes ``OUTPUT_DIR/hanging`` at that
global step and sleeps until it is killed; a run that ends writes the number of steps this process
trained to ``OUTPUT_DIR/steps-<pid>.txt``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from detseg import devices, engine

SRC = Path(__file__).resolve().parents[1] / "src"
STEPS_PER_EPOCH = 4  # 32 items, batch 8


class NoisyImages(Dataset):
    """1x8x8 images of two classes plus per-item random noise drawn in the (worker) process."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(1)
        self.images = torch.rand(32, 1, 8, 8, generator=generator)
        self.labels = (
            self.images[:, 0, :, :4].mean((1, 2)) > self.images[:, 0, :, 4:].mean((1, 2))
        ).long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index] + 0.1 * torch.randn(1, 8, 8), self.labels[index]


def child(output_dir: Path, resume: bool, hang_at_step: int | None) -> None:
    torch.set_num_threads(1)
    devices.seed_everything(0)
    devices.set_deterministic(True)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.2), nn.Flatten(), nn.Linear(256, 2)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    loader = engine.make_loader(NoisyImages(), 8, shuffle=True, seed=0, workers=1)
    loss_step = engine.supervised_step(nn.functional.cross_entropy)
    steps = 0

    def step(model: nn.Module, batch, device: torch.device):
        nonlocal steps
        steps += 1
        if steps == hang_at_step:
            (output_dir / "hanging").write_text(str(steps))
            time.sleep(600)
        return loss_step(model, batch, device)

    engine.train(
        model,
        loader,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        epochs=3,
        output_dir=output_dir,
        device="cpu",
        step_fn=step,
        warmup_iters=6,  # ends in epoch 2, after the kill point
        resume=resume,
        tracker="csv",
        progress=False,
        config={"lr": 0.05},
    )
    (output_dir / f"steps-{os.getpid()}.txt").write_text(str(steps))


def command(output_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), str(output_dir), *extra]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def start(tmp_path: Path, name: str, *extra: str, new_group: bool = False) -> subprocess.Popen:
    """Start a child training into ``tmp_path/<name>``, its output in ``tmp_path/<name>.log``."""
    log = tmp_path / f"{name}{'-'.join(('',) + extra)}.log"
    with log.open("w") as output:  # the child keeps its own copy of the handle
        return subprocess.Popen(
            command(tmp_path / name, *extra),
            env=child_env(),
            stdout=output,
            stderr=output,
            start_new_session=new_group,
        )


def logs(tmp_path: Path) -> str:
    return "\n".join(f"== {p.name}\n{p.read_text()}" for p in sorted(tmp_path.glob("*.log")))


@pytest.mark.slow
def test_kill_in_epoch_2_then_resume_equals_uninterrupted(tmp_path):
    uninterrupted = start(tmp_path, "a")
    # epoch 2, batch 3; its own process group so that the kill reaches its loader worker too
    victim = start(tmp_path, "b", "--hang-at-step", str(STEPS_PER_EPOCH + 3), new_group=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "b" / "hanging").exists():
            assert victim.poll() is None, logs(tmp_path)
            assert time.monotonic() < deadline, "the child never reached epoch 2"
            time.sleep(0.05)
        killed = engine.load_checkpoint(tmp_path / "b" / "last.pt")
        assert killed["epoch"] == 1
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    resumed = start(tmp_path, "b", "--resume")
    assert resumed.wait(timeout=120) == 0, logs(tmp_path)
    assert uninterrupted.wait(timeout=120) == 0, logs(tmp_path)
    # steps trained by each process: the resumed one did epochs 2 and 3 only
    assert (tmp_path / "a" / f"steps-{uninterrupted.pid}.txt").read_text() == str(
        3 * STEPS_PER_EPOCH
    )
    assert (tmp_path / "b" / f"steps-{resumed.pid}.txt").read_text() == str(2 * STEPS_PER_EPOCH)

    expected = engine.load_checkpoint(tmp_path / "a" / "last.pt")
    actual = engine.load_checkpoint(tmp_path / "b" / "last.pt")
    assert actual["epoch"] == expected["epoch"] == 3
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, actual["model"][name]), name
    for index, state in expected["optimizer"]["state"].items():
        assert torch.equal(
            state["momentum_buffer"], actual["optimizer"]["state"][index]["momentum_buffer"]
        )
    assert actual["lr_scheduler"] == expected["lr_scheduler"]
    assert actual["warmup"] == expected["warmup"] == {"iters": 6, "factor": 0.001, "step": 12}
    assert len(actual["history"]) == len(expected["history"]) == 3
    for before, after in zip(expected["history"], actual["history"]):
        assert before["train"] == after["train"] and before["lr"] == after["lr"]
    # epoch 1 is the killed process's entry, its measured times included, not a retrained one
    assert actual["history"][0] == killed["history"][0]
    assert actual["history"][0]["time"] != expected["history"][0]["time"]
    rows = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["epoch", "1", "2", "3"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--hang-at-step", type=int, default=None)
    args = parser.parse_args()
    child(args.output_dir, args.resume, args.hang_at_step)
