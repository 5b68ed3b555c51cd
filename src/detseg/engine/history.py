"""What the loop records per epoch, and how it reports it: best epoch, summary line, curves.

A history entry (one per epoch, in ``metrics.json`` and checkpoints)::

    {"epoch": 3, "lr": 0.01, "steps": 40,
     "train": {"loss": 0.53, "loss_classifier": 0.21, ..., "grad_norm": 4.2 (with clipping)},
     "eval": {"map": 0.41, ...}, "time": {"epoch_s": 12.3, "data_s": 1.2, "compute_s": 11.1}}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from detseg.engine.steps import image_ids_in_batch
from detseg.engine.trackers import flatten_epoch
from detseg.errors import UserError


def metric_value(entry: Mapping[str, Any], name: str) -> float:
    """Look ``name`` up in an entry: as a flat name (``eval/map``), then ``eval/<name>``, ``train/<name>``.

    Raises:
        UserError: no such number, with the list of the names there are.
    """
    flat = flatten_epoch(entry)
    for key in (name, f"eval/{name}", f"train/{name}"):
        if key in flat:
            return float(flat[key])
    raise UserError(
        f"best metric '{name}' is not among this epoch's numbers",
        fix=f"use one of {', '.join(k for k in flat if k != 'epoch')}",
    )


def update_best(
    best: dict[str, Any] | None, entry: Mapping[str, Any], metric: str | None, mode: str
) -> tuple[dict[str, Any] | None, bool]:
    """``(best, improved)`` after ``entry``; ``best`` is ``{"metric", "mode", "value", "epoch"}``.

    Ties keep the earlier epoch. With ``metric=None`` nothing is tracked: ``(None, False)``.
    """
    if metric is None:
        return None, False
    value = metric_value(entry, metric)
    if best is not None and not (value > best["value"] if mode == "max" else value < best["value"]):
        return best, False
    return {"metric": metric, "mode": mode, "value": value, "epoch": entry["epoch"]}, True


def best_of(history: list[dict[str, Any]], metric: str | None, mode: str) -> dict[str, Any] | None:
    """The best entry of a (resumed) history, as :func:`update_best` would have found it."""
    best = None
    for entry in history:
        best, _ = update_best(best, entry, metric, mode)
    return best


def nonfinite_message(
    losses: Mapping[str, torch.Tensor], epoch: int, index: int, total_steps: int | None, batch: Any
) -> str:
    """Say where a non-finite loss happened: epoch, 1-based batch number, image ids, loss terms."""
    terms = ", ".join(f"{name}={float(value.detach()):.4g}" for name, value in losses.items())
    ids = image_ids_in_batch(batch)
    where = f"epoch {epoch}, batch {index + 1}" + (f"/{total_steps}" if total_steps else "")
    images = f"image ids {ids}" if ids is not None else "no image_id in the targets"
    if all(math.isfinite(float(value.detach())) for value in losses.values()):
        # every term is finite here: another process of a DDP run met the bad batch
        return f"another process met a non-finite loss at {where} (this process had {images})"
    return f"loss is not finite at {where} ({images}): {terms}"


def epoch_line(entry: Mapping[str, Any], epochs: int) -> str:
    """One line summing up an epoch, printed under the progress bar."""
    train = entry["train"]
    parts = [f"epoch {entry['epoch']}/{epochs}", f"loss {train['loss']:.4f}"]
    parts += [f"{name} {value:.4f}" for name, value in train.items() if name != "loss"]
    parts.append(f"lr {entry['lr']:.3g}")
    parts += [f"{name} {value:.4f}" for name, value in (entry.get("eval") or {}).items()]
    times = entry["time"]
    parts.append(
        f"{times['epoch_s']:.1f}s (data {times['data_s']:.1f}s, compute {times['compute_s']:.1f}s)"
    )
    return " | ".join(parts)


CURVES_FILE = "training_curves.png"


def write_training_curves(history: list[dict[str, Any]], output_dir: Path) -> Path:
    """Plot losses, learning rate and evaluation metrics per epoch into ``output_dir/training_curves.png``.

    The one call site of :func:`detseg.viz.plot_history` (matplotlib, imported here only). Times and the
    gradient norm stay in ``metrics.json``; they would only crowd the figure.
    """
    from detseg.viz import plot_history

    rows = [
        {
            k: v
            for k, v in flatten_epoch(entry).items()
            if not k.startswith("time/") and k != "train/grad_norm"
        }
        for entry in history
    ]
    return plot_history(rows, output_dir / CURVES_FILE, title=output_dir.name)
