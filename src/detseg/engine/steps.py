"""What one training step computes, and the learning-rate warm-up around it.

A *step function* ``step_fn(model, batch, device) -> dict[str, Tensor]`` moves a batch to the device,
runs the model and returns named scalar losses; the engine sums them for ``backward``. Two cover the
examples:

- :func:`detection_step` (the default): torchvision detection style. ``batch = (images, targets)``,
  images a list of float ``[3, H, W]`` tensors, targets a list of dicts (``boxes`` xyxy absolute pixels,
  ``labels`` 1..N, ``masks``, ``image_id``); ``model(images, targets)`` returns the loss dict.
- :func:`supervised_step(loss_fn) <supervised_step>`: ``batch = (inputs, targets)`` tensors,
  ``{"loss": loss_fn(model(inputs), targets)}`` (U-Net, FCN, PSPNet, box regression).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

StepFn = Callable[[nn.Module, Any, torch.device], "dict[str, Tensor] | Tensor"]


def move_to_device(value: Any, device: torch.device) -> Any:
    """Move tensors nested in lists / tuples / dicts to ``device`` (other values unchanged)."""
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {key: move_to_device(item, device) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(move_to_device(item, device) for item in value)
    return value


def detection_step(model: nn.Module, batch: Any, device: torch.device) -> dict[str, Tensor]:
    """torchvision detection training step: ``model(images, targets)`` returns the losses.

    Args:
        batch: ``(images, targets)``; images a list of ``Tensor[3, H, W]`` (or a ``[B, 3, H, W]``
            tensor), targets a list of per-image dicts.
    Returns:
        The model's loss dict (``loss_classifier``, ``loss_box_reg``, ``loss_objectness``, ...).
    """
    images, targets = batch
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [move_to_device(dict(target), device) for target in targets]
    return model(images, targets)


def supervised_step(
    loss_fn: Callable[[Tensor, Tensor], Tensor],
) -> Callable[[nn.Module, Any, torch.device], dict[str, Tensor]]:
    """A step function for ``(inputs, targets)`` tensor batches: ``{"loss": loss_fn(model(x), y)}``.

    Example: ``supervised_step(nn.CrossEntropyLoss(ignore_index=255))`` for semantic segmentation with
    inputs ``[B, 3, H, W]`` and targets ``[B, H, W]`` of class indices.
    """

    def step(model: nn.Module, batch: Any, device: torch.device) -> dict[str, Tensor]:
        inputs, targets = batch
        outputs = model(move_to_device(inputs, device))
        return {"loss": loss_fn(outputs, move_to_device(targets, device))}

    return step


def as_loss_dict(losses: Mapping[str, Tensor] | Tensor) -> dict[str, Tensor]:
    """Accept a loss dict or one scalar tensor (named ``"loss"``); check every value is a scalar."""
    if isinstance(losses, Tensor):
        losses = {"loss": losses}
    if not isinstance(losses, Mapping) or not losses:
        raise TypeError(
            f"step_fn must return a non-empty dict of scalar loss tensors, got {type(losses).__name__}"
            " (is the model in train mode?)"
        )
    for name, value in losses.items():
        if not isinstance(value, Tensor) or value.numel() != 1:
            raise TypeError(f"loss '{name}' is not a scalar tensor")
    return dict(losses)


def image_ids_in_batch(batch: Any) -> list[int] | None:
    """The ``image_id`` of each target in a ``(images, targets)`` batch, or None when absent.

    Works for a list of target dicts (detection) and for a dict of batched tensors with an
    ``image_id`` entry.
    """
    if not isinstance(batch, Sequence) or isinstance(batch, str) or len(batch) < 2:
        return None
    targets = batch[1]
    if isinstance(targets, Mapping):
        ids = targets.get("image_id")
        return None if ids is None else [int(i) for i in torch.as_tensor(ids).reshape(-1)]
    if isinstance(targets, Sequence) and targets and all(isinstance(t, Mapping) for t in targets):
        if not all("image_id" in t for t in targets):
            return None
        return [int(torch.as_tensor(t["image_id"]).reshape(-1)[0]) for t in targets]
    return None


@dataclass
class Warmup:
    """Linear learning-rate warm-up, per iteration, multiplied onto whatever the scheduler set.

    During the first ``iters`` optimizer steps the lr of every parameter group is
    ``scheduled_lr * (factor + (1 - factor) * step / iters)`` for ``step = 0, 1, ..., iters - 1``
    (torch's ``LinearLR(start_factor=factor, total_iters=iters)`` law), then exactly the scheduled lr.
    With ``iters`` at most the number of batches per epoch (the usual choice, as in torchvision's
    references) it ends inside the first epoch; a longer warm-up simply runs on. The scheduled lr is put
    back after each step, so the user's scheduler never sees the warm-up. ``step`` counts every
    optimizer step of the run and is saved in checkpoints, so a resumed run continues it.
    """

    iters: int = 0
    factor: float = 0.001
    step: int = 0

    def __post_init__(self) -> None:
        if self.iters < 0:
            raise ValueError(f"warmup_iters must be >= 0, got {self.iters}")
        if not 0.0 < self.factor <= 1.0:
            raise ValueError(f"warmup_factor must be in (0, 1], got {self.factor}")

    def multiplier(self) -> float:
        """The factor applied at the current step (1.0 once warm-up is over)."""
        if self.step >= self.iters:
            return 1.0
        return self.factor + (1.0 - self.factor) * self.step / self.iters

    def apply(self, optimizer: torch.optim.Optimizer) -> list[float]:
        """Scale every group's lr for this step; returns the scheduled lrs for :meth:`restore`."""
        scheduled = [float(group["lr"]) for group in optimizer.param_groups]
        factor = self.multiplier()
        if factor != 1.0:
            for group, lr in zip(optimizer.param_groups, scheduled):
                group["lr"] = lr * factor
        return scheduled

    def restore(self, optimizer: torch.optim.Optimizer, scheduled: Sequence[float]) -> None:
        """Put the scheduled lrs back and count the step."""
        for group, lr in zip(optimizer.param_groups, scheduled):
            group["lr"] = lr
        self.step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"iters": self.iters, "factor": self.factor, "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.iters = int(state["iters"])
        self.factor = float(state["factor"])
        self.step = int(state["step"])
