"""Exponential moving average of a model's weights (Polyak averaging), kept inside the trained module.

:class:`WithEMA` wraps the model being trained: ``forward`` is the model's, ``.ema`` is the average.
Because the average is a submodule, the engine's checkpoints hold it and ``--resume`` restores it
exactly; :meth:`WithEMA.attach` updates it after every optimizer step (the AMP scaler's included)::

    trainee = WithEMA(model, decay=0.9999, tau=2000)
    optimizer = torch.optim.SGD(trainee.model.parameters(), lr=0.01)
    trainee.attach(optimizer)
    engine.train(trainee, loader, optimizer=optimizer, ...)   # evaluate trainee.ema
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn


class WithEMA(nn.Module):
    """The model being trained plus its exponential moving average.

    After each optimizer step, for every floating-point entry of the state dict (BatchNorm running
    statistics included; integer counters are left alone)::

        ema = d * ema + (1 - d) * model,   d = decay * (1 - exp(-updates / tau))

    ``d`` starts near 0 and grows to ``decay`` over a few ``tau`` steps, so the average does not
    remember the random start (the ramp of YOLOv5 / YOLOv7's ``ModelEMA``).

    Args:
        model: the module to train; ``forward`` calls it.
        decay: the final decay, in (0, 1).
        tau: steps of the ramp (``d`` reaches 63 % of ``decay`` after ``tau`` updates).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0):
        super().__init__()
        if not 0.0 < decay < 1.0 or tau <= 0:
            raise ValueError(f"need 0 < decay < 1 and tau > 0, got decay {decay}, tau {tau}")
        self.model = model
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau = decay, tau
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def train(self, mode: bool = True) -> WithEMA:
        super().train(mode)
        self.ema.eval()  # the average is never trained: its BatchNorm statistics come from the model
        return self

    def current_decay(self) -> float:
        """The ``d`` the last update used (0 before any)."""
        return self.decay * (1 - math.exp(-float(self.updates) / self.tau))

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average (called by the hook :meth:`attach` installs)."""
        self.updates += 1
        d = self.current_decay()
        source = self.model.state_dict()
        for name, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[name].detach(), alpha=1 - d)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Update after every ``optimizer.step()``."""
        optimizer.register_step_post_hook(lambda *_: self.update())
