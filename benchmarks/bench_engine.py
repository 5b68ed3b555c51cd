"""Benchmark cases of ``detseg.engine``: DDP vs one process, and the size of a checkpoint.

Importing this module has no side effects; the bench harness calls the ``case_*`` functions. Run one
by hand with::

    PYTHONPATH=src python -c "import runpy; print(runpy.run_path('benchmarks/bench_engine.py')['case_ddp_vs_single']())"

The file is also the DDP worker that ``case_ddp_vs_single`` starts through ``torchrun``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
IMAGES, IMAGE_SIZE, GLOBAL_BATCH, EPOCHS = 2048, 32, 64, 3
SMOKE_IMAGES, SMOKE_EPOCHS = 128, 2


def _workload(images: int) -> tuple[Any, Any]:
    """A small CNN (about 25k parameters) and random 3x32x32 images of 10 classes."""
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(images, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    labels = torch.randint(0, 10, (images,), generator=generator)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip
    return model, TensorDataset(inputs, labels)


def _train(output_dir: Path, images: int, epochs: int, batch_size: int) -> None:
    """Train the workload with the engine (one process, or one rank under torchrun)."""
    import torch
    from torch import nn

    from detseg import devices, engine

    devices.seed_everything(0)
    model, dataset = _workload(images)
    loader = engine.make_loader(dataset, batch_size, shuffle=True, seed=0, workers=0)
    engine.train(
        model,
        loader,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        epochs=epochs,
        output_dir=output_dir,
        device="cpu",
        step_fn=engine.supervised_step(nn.functional.cross_entropy),
        progress=False,
    )


def _epoch_seconds(output_dir: Path) -> float:
    """Median epoch time after the first epoch (which pays for allocator and kernel warm-up)."""
    history = json.loads((output_dir / "metrics.json").read_text())["history"]
    times = sorted(entry["time"]["epoch_s"] for entry in history[1:])
    return times[len(times) // 2]


def _run_worker(
    output_dir: Path, images: int, epochs: int, batch: int, *, threads: int, processes: int
) -> float:
    """Train in fresh processes (``torchrun`` when ``processes`` > 1); returns wall seconds."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(threads)
    if sys.platform.startswith("linux"):  # gloo on the loopback device, whatever the hostname says
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [*launcher, str(Path(__file__).resolve()), str(output_dir), str(images), str(epochs),
               str(batch)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def case_ddp_vs_single() -> dict[str, Any]:
    """Seconds per epoch of the same data and global batch: one process vs 2 DDP processes (gloo).

    Three fresh runs of the same engine training: one process with 1 thread, one process with 2
    threads, and ``torchrun --standalone --nproc_per_node=2`` with 1 thread per process, each taking
    half of every global batch (gradients all-reduced by gloo). ``speedup`` is the best single-process
    epoch time over the DDP epoch time (> 1: DDP is faster). ``*_wall_s`` include process start and
    imports.
    """
    from detseg.settings import smoke_mode

    images, epochs = (SMOKE_IMAGES, SMOKE_EPOCHS) if smoke_mode() else (IMAGES, EPOCHS)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, threads, processes in (("single_1t", 1, 1), ("single_2t", 2, 1), ("ddp2", 1, 2)):
            batch = GLOBAL_BATCH // processes
            wall = _run_worker(
                root / name, images, epochs, batch, threads=threads, processes=processes
            )
            result[f"{name}_epoch_s"] = _epoch_seconds(root / name)
            result[f"{name}_wall_s"] = wall
    best_single = min(result["single_1t_epoch_s"], result["single_2t_epoch_s"])
    result.update(
        speedup=best_single / result["ddp2_epoch_s"],
        images_per_epoch=images,
        global_batch=GLOBAL_BATCH,
        cpu_count=os.cpu_count(),
        main="speedup",
    )
    return result


def case_checkpoint_size() -> dict[str, Any]:
    """Size of ``last.pt`` for Mask R-CNN R50-FPN fine-tuned on 2 classes (example 01's setting).

    The structure torchvision builds for COCO-pretrained ``maskrcnn_resnet50_fpn`` (frozen batch norm,
    3 trainable backbone stages) with 2-class heads, made here without downloading weights (the size
    does not depend on their values), plus SGD momentum buffers for every trainable parameter as after
    the first step, written by the engine's ``save_checkpoint``.
    """
    import torch
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import FrozenBatchNorm2d

    from detseg.engine.checkpoint import rng_state, save_checkpoint

    backbone = resnet_fpn_backbone(
        backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=3
    )
    model = MaskRCNN(backbone, num_classes=2)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.005, momentum=0.9, weight_decay=0.0005)
    for parameter in trainable:
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()  # creates the momentum buffers
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": None,
        "scaler": None,
        "epoch": 1,
        "config": {"model": "maskrcnn_resnet50_fpn", "num_classes": 2},
        "rng": rng_state(),
        "warmup": {"iters": 0, "factor": 0.001, "step": 0},
        "history": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint_mb = save_checkpoint(state, Path(tmp) / "last.pt").stat().st_size / 2**20
        model_path = Path(tmp) / "model.pt"
        torch.save(model.state_dict(), model_path)
        model_mb = model_path.stat().st_size / 2**20
    return {
        "checkpoint_mb": checkpoint_mb,
        "model_only_mb": model_mb,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "trainable_params_m": sum(p.numel() for p in trainable) / 1e6,
        "main": "checkpoint_mb",
    }


if __name__ == "__main__":  # DDP worker: OUTPUT_DIR IMAGES EPOCHS PER_RANK_BATCH
    _train(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
