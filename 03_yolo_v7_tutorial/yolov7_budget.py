"""Fit the training schedule into a time budget (``train.py --time-budget``).

The core's :func:`detseg.engine.budget.train_within_budget` only stops early: the lr schedule and
the closing of mosaic still count every ``--epochs``, so on a machine too slow for all of them the
run ends mid-schedule, before the cosine has annealed and before the epochs without mosaic. Here the
first epoch is trained and timed (training, evaluation and checkpoint), and the schedule is given the
number of epochs that fit the budget at that pace::

    fitted epochs = min(--epochs, max(1, floor(budget x (1 - MARGIN) / first epoch)))

(with ``--mosaic-size`` smaller than ``--image-size`` the closing epochs are counted dearer, see
:func:`fit_schedule`).

The cosine then ends at the last fitted epoch and the last ``--close-mosaic`` of them see no mosaic.
The first epoch does not depend on the schedule's length (the cosine holds it flat, see
:class:`yolov7_training.CosineFactor`), so a run that fitted E epochs is the run ``--epochs E``
would have been, step for step. The decision is one line on stderr, ``config["schedule"]`` in
every checkpoint from the first one on and in ``metrics.json``; ``--resume`` follows the schedule
a checkpoint holds, with or without a budget.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from detseg.engine import train
from detseg.engine.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint

MARGIN = 0.03  # of the budget, kept for epochs a little slower than the first
clock = time.perf_counter  # seconds; the tests replace it with a fake clock


@dataclass(frozen=True)
class SchedulePlan:
    """What a time budget decided (stored as a plain dict in ``config["schedule"]``).

    Attributes:
        epochs: the schedule's length: the cosine ends here.
        requested_epochs: ``--epochs`` (the most the plan may take).
        first_epoch_s: wall seconds of epoch 1 (training, evaluation, checkpoint).
        budget_s: the budget, in seconds.
        mosaic_epochs: the last epoch with mosaic samples (``epochs - --close-mosaic``, at least 1).
    """

    epochs: int
    requested_epochs: int
    first_epoch_s: float
    budget_s: float
    mosaic_epochs: int

    def describe(self) -> str:
        """The one line ``train.py`` prints."""
        fit = (
            f"all {self.epochs} epochs fit"
            if self.epochs == self.requested_epochs
            else f"{self.epochs} of the {self.requested_epochs} --epochs fit"
        )
        first_closed = self.mosaic_epochs + 1
        closed = (
            "mosaic in every epoch"
            if first_closed > self.epochs
            else f"no mosaic in epoch {first_closed}"
            if first_closed == self.epochs
            else f"no mosaic in epochs {first_closed}-{self.epochs}"
        )
        return (
            f"schedule: epoch 1 took {self.first_epoch_s:.1f} s, so {fit} the budget of "
            f"{self.budget_s / 60:g} min ({MARGIN:.0%} kept spare): cosine lr ends at epoch "
            f"{self.epochs}, {closed}"
        )


def fit_schedule(
    first_epoch_s: float,
    budget_s: float,
    epochs: int,
    close_mosaic: int,
    closing_cost: float = 1.0,
    margin: float = MARGIN,
) -> SchedulePlan:
    """The longest schedule (at most ``epochs``) whose estimated time fits ``budget_s``.

    Every epoch is estimated at ``first_epoch_s``, the closing ones (without mosaic) at
    ``closing_cost`` times that (``train.py --mosaic-size``: they run at a larger side). Epoch 1
    always keeps mosaic, so at most ``E - 1`` of ``E`` epochs close it.

    Args:
        first_epoch_s: measured seconds of the first epoch (> 0).
        budget_s: the whole run's budget, the first epoch included.
        epochs: the requested schedule (upper bound).
        close_mosaic: epochs at the end without mosaic.
        closing_cost: cost of a closing epoch relative to the first.
        margin: fraction of the budget left unplanned.
    """
    allowed = budget_s * (1 - margin) / max(first_epoch_s, 1e-9)  # in first-epoch units
    fitted = 1
    for length in range(epochs, 0, -1):
        closing = min(close_mosaic, length - 1)
        if (length - closing) + closing * closing_cost <= allowed:
            fitted = length
            break
    return SchedulePlan(
        epochs=fitted,
        requested_epochs=epochs,
        first_epoch_s=round(float(first_epoch_s), 3),
        budget_s=float(budget_s),
        mosaic_epochs=max(1, fitted - close_mosaic),
    )


def planned_schedule(resume: bool | str | Path, output_dir: str | Path) -> tuple[int, dict | None]:
    """(epochs done, the checkpoint's ``config["schedule"]`` or None) of the run ``resume`` names."""
    if not resume:
        return 0, None
    path = Path(output_dir) / "last.pt" if resume is True else Path(resume)
    checkpoint = load_checkpoint(path)
    return int(checkpoint["epoch"]), checkpoint.get("config", {}).get("schedule")


def train_fitted(
    model: Any,
    loader: Any,
    *,
    epochs: int,
    budget_s: float | None,
    close_mosaic: int,
    apply_schedule: Callable[[int], None],
    closing_cost: float = 1.0,
    resume: bool | str | Path = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`detseg.engine.train`, with the schedule fitted to ``budget_s`` after epoch 1.

    Without a budget and without a stored plan this is one plain engine call. With a budget: epoch
    1 with the requested schedule, then :func:`fit_schedule`, ``apply_schedule(fitted epochs)``
    (the caller shortens its lr schedule and mosaic epochs), the plan written into ``last.pt`` and
    ``metrics.json``, then one engine call per epoch (resuming exactly from ``last.pt``), stopping
    early only if an epoch would still end past the budget at the mean pace so far. A resumed run
    whose checkpoint holds a plan follows it (a budget given again only stops early).

    Args:
        model, loader, kwargs: as for :func:`detseg.engine.train` (``output_dir``,
            ``lr_scheduler`` and ``config`` (a dict, updated in place) required).
        epochs: ``--epochs``.
        budget_s: wall seconds from this call, or None.
        close_mosaic: ``--close-mosaic``.
        closing_cost: time of a closing epoch relative to the first (see :func:`fit_schedule`).
        apply_schedule: called with the plan's epochs before any epoch trains under it.
        resume: as for :func:`detseg.engine.train`.
    Returns:
        The engine's result plus ``"schedule"`` (the plan's dict, or None) and ``"stopped_early"``
        when the budget cut even the fitted schedule.
    """
    done, plan = planned_schedule(resume, kwargs["output_dir"])
    if plan is None and budget_s is None:
        return {**train(model, loader, epochs=epochs, resume=resume, **kwargs), "schedule": None}
    start, done_at_start = clock(), done
    result: dict[str, Any] = {}
    if plan is not None:
        apply_schedule(int(plan["epochs"]))
        kwargs["config"]["schedule"] = plan
    elif done == 0:
        result = train(model, loader, epochs=epochs, stop_after_epoch=1, resume=resume, **kwargs)
        fitted = fit_schedule(clock() - start, budget_s, epochs, close_mosaic, closing_cost)
        plan = asdict(fitted)
        apply_schedule(fitted.epochs)
        kwargs["config"]["schedule"] = plan
        _record_plan(Path(kwargs["output_dir"]), plan, kwargs["lr_scheduler"])
        print(fitted.describe(), file=sys.stderr)
        done, resume = 1, True
    else:  # the checkpoint of a run without a budget: keep its schedule, only stop early
        print(
            "note: resuming a run whose schedule was not fitted to a budget: --time-budget only "
            "stops it early",
            file=sys.stderr,
        )
    planned = int(plan["epochs"]) if plan is not None else epochs
    for epoch in range(done + 1, planned + 1):
        result = train(
            model, loader, epochs=planned, stop_after_epoch=epoch,
            resume=resume if epoch == done + 1 else True, **kwargs,
        )  # fmt: skip
        elapsed = clock() - start
        pace = elapsed / (epoch - done_at_start)  # mean epoch of this call so far
        if budget_s is not None and epoch < planned and elapsed + pace > budget_s:
            print(
                f"note: stopped after epoch {epoch} of {planned}: the next one would end past "
                f"the time budget of {budget_s / 60:g} min",
                file=sys.stderr,
            )
            result["stopped_early"] = True
            break
    if not result:  # resumed a run that had already finished its schedule
        result = train(model, loader, epochs=planned, resume=resume, **kwargs)
    return {**result, "schedule": plan}


def _record_plan(output_dir: Path, plan: dict[str, Any], lr_scheduler: Any) -> None:
    """Write the plan into epoch 1's ``last.pt`` (config and the shortened scheduler state, so a
    run killed in epoch 2 resumes under the plan) and into ``metrics.json``."""
    path = output_dir / "last.pt"
    checkpoint = load_checkpoint(path)
    checkpoint["config"] = {**checkpoint.get("config", {}), "schedule": plan}
    checkpoint["lr_scheduler"] = lr_scheduler.state_dict()
    save_checkpoint(checkpoint, path)
    metrics_path = output_dir / "metrics.json"
    if metrics_path.is_file():
        summary = json.loads(metrics_path.read_text())
        summary.setdefault("config", {})["schedule"] = plan
        atomic_write_text(metrics_path, json.dumps(summary, indent=1))
