"""DDP on the CPU (gloo): two processes started the way torchrun starts them (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT in the environment).

Checks: both ranks end with identical weights; rank 0 alone writes files; evaluation numbers are
averaged over ranks; and the result matches one process trained on the same global batches. That last
match is close, not exact: each rank averages the loss over its half of a batch and DDP averages the
two gradients, which is the same mean as one process over the whole batch, summed in another order
(float rounding, about 1e-7 relative).

This file is also the child program: ``python test_engine_ddp.py OUTPUT_ROOT``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from detseg import devices, engine

SRC = Path(__file__).resolve().parents[1] / "src"
PER_RANK_BATCH = 4
EPOCHS = 2


def toy_dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(24, 1, 6, 6, generator=generator)
    targets = inputs.mean(dim=(1, 2, 3)).unsqueeze(1) * 3.0
    return TensorDataset(inputs, targets)


def toy_model() -> nn.Module:  # no BatchNorm / dropout: per-rank statistics would differ by design
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 1))


def train_toy(output_dir: Path, batch_size: int) -> tuple[nn.Module, dict]:
    torch.set_num_threads(1)
    devices.seed_everything(0)
    model = toy_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = engine.make_loader(toy_dataset(), batch_size, shuffle=True, seed=0, workers=0)
    rank = engine.dist_info().rank
    result = engine.train(
        model,
        loader,
        optimizer=optimizer,
        epochs=EPOCHS,
        output_dir=output_dir,
        device="cpu",
        step_fn=engine.supervised_step(nn.functional.mse_loss),
        evaluate_fn=lambda model, epoch: {"rank": float(rank)},
        warmup_iters=2,
        progress=False,
    )
    return model, result


def child(root: Path) -> None:
    rank = int(os.environ["RANK"])
    model, result = train_toy(root / f"run-rank{rank}", PER_RANK_BATCH)
    # written by the test's child, not by the engine: what each rank ended with
    torch.save(model.state_dict(), root / f"weights-rank{rank}.pt")
    (root / f"result-rank{rank}.json").write_text(json.dumps(result["history"]))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_agree_and_match_one_process(tmp_path):
    port = str(free_port())
    children = []
    for rank in (0, 1):
        env = dict(os.environ)
        env.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            GLOO_SOCKET_IFNAME="lo",
            OMP_NUM_THREADS="1",
            PYTHONPATH=os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]),
        )
        log = tmp_path / f"rank{rank}.log"
        with log.open("w") as output:
            process = subprocess.Popen(
                [sys.executable, __file__, str(tmp_path)], env=env, stdout=output, stderr=output
            )
        children.append((process, log))
    for process, log in children:
        assert process.wait(timeout=180) == 0, log.read_text()

    rank0 = torch.load(tmp_path / "weights-rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "weights-rank1.pt", weights_only=True)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    # rank 0 wrote the run folder; rank 1 wrote nothing at all
    assert {p.name for p in (tmp_path / "run-rank0").iterdir()} == {
        "last.pt",
        "metrics.json",
        "training_curves.png",
    }
    assert not (tmp_path / "run-rank1").exists()
    checkpoint = engine.load_checkpoint(tmp_path / "run-rank0" / "last.pt")
    assert len(checkpoint["rng_ranks"]) == 2 and checkpoint["epoch"] == EPOCHS
    summary = json.loads((tmp_path / "run-rank0" / "metrics.json").read_text())
    assert summary["world_size"] == 2
    histories = [json.loads((tmp_path / f"result-rank{r}.json").read_text()) for r in (0, 1)]
    for entry0, entry1 in zip(*histories):
        assert entry0["eval"] == entry1["eval"] == {"rank": 0.5}  # (0 + 1) / 2
        assert entry0["train"] == entry1["train"]  # averaged over ranks, so the same on both

    # One process, global batch = 2 x per-rank batch, same seed: same batches, same updates.
    single, result = train_toy(tmp_path / "single", 2 * PER_RANK_BATCH)
    devices.seed_everything(0)
    initial = toy_model().state_dict()
    for name, tensor in single.state_dict().items():
        torch.testing.assert_close(rank0[name], tensor, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(initial[name], tensor, atol=1e-3), f"{name} did not train"
    single_losses = [entry["train"]["loss"] for entry in result["history"]]
    ddp_losses = [entry["train"]["loss"] for entry in histories[0]]
    assert ddp_losses == pytest.approx(single_losses, rel=1e-5)


if __name__ == "__main__":
    child(Path(sys.argv[1]))
