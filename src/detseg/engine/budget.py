"""Training within a wall-clock budget: one engine call per epoch, each resuming exactly from
``last.pt``, stopping before an epoch that would end past the budget.

The quality bars of the examples are stated in minutes on 2 CPU cores. :func:`train_within_budget`
runs the same schedule as without a budget (the lr schedule still counts all ``epochs``) and only
stops early, so a budgeted run is a prefix of the full one (02, 04, 05). 03 fits its schedule
to the budget instead (``03_yolo_v7_tutorial/yolov7_budget.py``: epoch 1 is timed, then the cosine
ends at the last epoch that fits).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from detseg.engine.checkpoint import load_checkpoint
from detseg.engine.loop import train


def train_within_budget(
    model: Any,
    loader: Any,
    *,
    epochs: int,
    budget_s: float,
    resume: bool | str | Path = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """Call :func:`detseg.engine.train` once per epoch (``stop_after_epoch=1, 2, ...`` of the
    ``epochs``-epoch run, so progress lines read ``epoch k/epochs``; resuming from
    ``<output_dir>/last.pt``) until the next epoch would end past ``budget_s`` seconds, estimated
    at the mean epoch time so far, evaluation included.

    Args:
        model, loader, kwargs: as for :func:`detseg.engine.train` (``output_dir`` required).
        epochs: the full schedule's length.
        budget_s: wall-clock seconds allowed, from this call.
        resume: as for :func:`detseg.engine.train`: continue a stopped run first.
    Returns:
        The last engine result, with ``"stopped_early": True`` when the budget cut the schedule.
    """
    done = 0
    if resume:
        path = Path(kwargs["output_dir"]) / "last.pt" if resume is True else Path(resume)
        done = int(load_checkpoint(path)["epoch"])
    start = time.perf_counter()
    result: dict[str, Any] = {}
    for epoch in range(done + 1, epochs + 1):
        first = epoch == done + 1
        result = train(
            model,
            loader,
            epochs=epochs,
            stop_after_epoch=epoch,
            resume=resume if first else True,
            **kwargs,
        )
        elapsed = time.perf_counter() - start
        if epoch < epochs and elapsed + elapsed / (epoch - done) > budget_s:
            print(
                f"note: stopped after epoch {epoch} of {epochs}: the next one would end past the "
                f"time budget of {budget_s / 60:g} min",
                file=sys.stderr,
            )
            result["stopped_early"] = True
            break
    return result
