"""Several processes, one model: DistributedDataParallel under ``torchrun``.

``torchrun --nproc_per_node=N train.py ...`` starts N copies of the script with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment. The engine
then: initialises the process group (``gloo`` on CPU, ``nccl`` on CUDA, one GPU per process at
``cuda:LOCAL_RANK``), wraps the model in DDP (gradients are averaged across processes during
``backward``), gives each process its own slice of every epoch (:func:`make_loader` builds a
``DistributedSampler``), averages the logged numbers, lets rank 0 alone print and write files, and
destroys the group at the end. Without those variables everything below is a no-op for one process.

Global batch size = ``--batch-size`` x number of processes (the examples' ``--batch-size`` is per
process, as in torchvision's references).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from detseg.errors import UserError

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` in ``0..world_size-1``, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on the process that prints and writes files (rank 0)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when ``RANK`` and ``WORLD_SIZE`` are in the environment (``torchrun`` sets them)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def dist_info() -> DistInfo:
    """Rank and world size: from the process group if it exists, else from the environment."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local)
    if launched_by_torchrun():
        try:
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            local = int(os.environ.get("LOCAL_RANK", rank))
        except ValueError as err:
            raise UserError(
                f"RANK / WORLD_SIZE / LOCAL_RANK are not integers ({err})",
                fix="launch with torchrun, which sets them",
            ) from err
        return DistInfo(rank, world, local)
    return DistInfo()


def init_distributed(device: torch.device) -> tuple[torch.device, bool]:
    """Join the process group when launched by ``torchrun``; a no-op otherwise.

    Args:
        device: the device chosen by ``--device``; on CUDA each process takes ``cuda:LOCAL_RANK``.
    Returns:
        ``(device, created)``: the device this process uses, and whether this call created the
        group (then :func:`destroy_distributed` should end it).
    """
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        info = dist_info()
        if info.enabled and device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
        return device, False
    info = dist_info()
    if device.type == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise UserError(
                f"process with LOCAL_RANK {info.local_rank} has no GPU "
                f"({torch.cuda.device_count()} visible)",
                fix="use --nproc_per_node at most the number of GPUs, or --device cpu",
            )
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", device_id=device)
    elif device.type == "cpu":
        dist.init_process_group(backend="gloo")
    else:
        raise UserError(
            f"multi-process training on {device.type} is not supported",
            fix="use --device cuda or cpu with torchrun, or run one process",
        )
    return device, True


def destroy_distributed(*, barrier: bool = True) -> None:
    """Leave the process group; ``barrier`` first waits for every rank (skip it after an error)."""
    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP-wrap ``model`` (already on ``device``) when several processes train; else return it."""
    if not dist_info().enabled:
        return model
    if device.type == "cuda":
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return nn.parallel.DistributedDataParallel(model)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper (what checkpoints and ``evaluate_fn`` see)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _reduce_device(device: torch.device) -> torch.device:
    # nccl reduces CUDA tensors only; gloo CPU tensors.
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_mean(values: Mapping[str, float], device: torch.device) -> dict[str, float]:
    """Average each number over all processes (identity for one process).

    Every rank must pass the same keys in the same order.
    """
    if not dist_info().enabled or not values:
        return dict(values)
    keys = list(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    tensor = tensor.to(_reduce_device(device))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor /= dist.get_world_size()
    return dict(zip(keys, tensor.cpu().tolist()))


def all_ranks_true(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` holds on every process (so all take the same branch and none hangs)."""
    if not dist_info().enabled:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=_reduce_device(device))
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return bool(tensor.item() > 0.5)


def all_gather_objects(value: Any) -> list[Any]:
    """Gather one picklable value from every process, in rank order (``[value]`` for one process)."""
    if not dist_info().enabled:
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    workers: int,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    *,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose order depends only on ``(seed, epoch)``, in one process or many.

    It always uses a ``DistributedSampler`` (with ``num_replicas=1`` in one process): the permutation of
    epoch ``e`` is ``randperm(len(dataset), generator seeded with seed + e)``, and process ``r`` of
    ``W`` takes items ``r, r + W, r + 2W, ...`` of it (padded by repeating the first items so every
    process gets the same count). The engine calls ``sampler.set_epoch(epoch)`` at the start of every
    epoch, which is what makes ``--resume`` continue the shuffling exactly. Worker processes are seeded by
    PyTorch from the global torch generator, which checkpoints save and restore.

    Args:
        dataset: a map-style dataset (``__len__`` and ``__getitem__``).
        batch_size: items per batch *per process*.
        shuffle: reshuffle every epoch (training) or keep the dataset order (evaluation).
        seed: base seed of the shuffling (use ``--seed``).
        workers: loader worker processes (0 loads in the main process).
        collate_fn: how items become a batch; detection uses ``lambda items: tuple(zip(*items))``.
        drop_last: drop the last incomplete batch (and, under DDP, the tail that does not divide).
            Without it, DDP pads with up to ``W - 1`` repeated items: fine for training, but an
            evaluation that needs each item exactly once should run on one process.
        pin_memory: page-locked host memory for faster copies to a CUDA device.
    """
    for name, value, least in (("batch size", batch_size, 1), ("workers", workers, 0)):
        if value < least:
            raise UserError(f"{name} must be >= {least}, got {value}", fix="pass a valid number")
    info = dist_info()
    sampler = DistributedSampler(
        dataset,
        num_replicas=info.world_size,
        rank=info.rank,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        drop_last=drop_last,
        pin_memory=pin_memory,
    )


def set_loader_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the loader's sampler (or batch sampler's sampler) if it has one,
    and on its dataset (or the dataset under a ``Subset``) if that has one, so that per-epoch random
    augmentations (:class:`~detseg.data.torch_datasets.DetectionTorchDataset`) change every epoch."""
    for owner in (loader, getattr(loader, "batch_sampler", None)):
        sampler = getattr(owner, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
            break
    dataset = getattr(loader, "dataset", None)
    while dataset is not None and not hasattr(dataset, "set_epoch"):
        dataset = getattr(dataset, "dataset", None)  # torch.utils.data.Subset wraps .dataset
    if dataset is not None:
        dataset.set_epoch(epoch)
