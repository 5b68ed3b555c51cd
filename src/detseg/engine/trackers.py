"""Where per-epoch numbers go besides ``metrics.json``: nowhere, a CSV file, or Weights & Biases.

``--tracker`` values (a visible dict, :data:`TRACKERS`):

- ``none``: only ``metrics.json`` (always written by the engine).
- ``csv``: ``metrics.csv`` in the run folder, one row per epoch, rewritten whole each epoch (so a
  resumed run never duplicates rows).
- ``wandb``: W&B in *offline* mode, files under ``<run folder>/wandb``; upload later with
  ``wandb sync``. Never asks to log in.
- ``wandb-online``: W&B online; needs ``WANDB_API_KEY`` in the environment (else a UserError, never a
  login prompt).

Trackers get the whole history and log its last entry, flattened by :func:`flatten_epoch`.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from detseg.engine.checkpoint import atomic_write_text
from detseg.errors import UserError


def flatten_epoch(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One history entry as flat ``name -> number`` pairs.

    Names: ``epoch``, ``lr``, ``train/<loss name>`` (``train/loss`` is the summed loss),
    ``train/grad_norm`` (when clipping), ``eval/<metric>``, ``time/<name>`` (seconds).
    """
    flat: dict[str, Any] = {"epoch": entry["epoch"], "lr": entry["lr"]}
    for name, value in entry.get("train", {}).items():
        flat[f"train/{name}"] = value
    for name, value in (entry.get("eval") or {}).items():
        flat[f"eval/{name}"] = value
    for name, value in entry.get("time", {}).items():
        flat[f"time/{name}"] = value
    return flat


class Tracker(Protocol):
    def log_epoch(self, history: Sequence[Mapping[str, Any]]) -> None: ...

    def close(self) -> None: ...


class NoTracker:
    """Logs nothing (``metrics.json`` is still written by the engine)."""

    def log_epoch(self, history: Sequence[Mapping[str, Any]]) -> None:
        return None

    def close(self) -> None:
        return None


class CsvTracker:
    """``metrics.csv``: a header with every column seen so far, one row per epoch."""

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / "metrics.csv"

    def log_epoch(self, history: Sequence[Mapping[str, Any]]) -> None:
        rows = [flatten_epoch(entry) for entry in history]
        columns: dict[str, None] = {}
        for row in rows:
            columns.update(dict.fromkeys(row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buffer.getvalue())

    def close(self) -> None:
        return None


class WandbTracker:
    """Weights & Biases run, offline unless asked online with an API key; resumes the same run id."""

    def __init__(
        self,
        output_dir: str | Path,
        *,
        config: Mapping[str, Any],
        online: bool,
        project: str = "detseg",
        run_name: str | None = None,
    ) -> None:
        try:
            import wandb
        except ModuleNotFoundError as err:
            raise UserError(
                "--tracker wandb needs the wandb package, which is not installed",
                fix="pip install wandb, or use --tracker csv",
            ) from err
        if online and not os.environ.get("WANDB_API_KEY"):
            raise UserError(
                "--tracker wandb-online needs WANDB_API_KEY in the environment",
                fix="export WANDB_API_KEY=<key from wandb.ai/authorize>, "
                "or use --tracker wandb (offline, upload later with 'wandb sync')",
            )
        output_dir = Path(output_dir)
        id_file = output_dir / "wandb-run-id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        atomic_write_text(id_file, run_id + "\n")
        self._run = wandb.init(
            project=project,
            name=run_name or output_dir.name,
            id=run_id,
            resume="allow",
            dir=str(output_dir),
            config=dict(config),
            mode="online" if online else "offline",
        )
        self._logged_epochs: set[int] = set()

    def log_epoch(self, history: Sequence[Mapping[str, Any]]) -> None:
        flat = flatten_epoch(history[-1])
        epoch = int(flat["epoch"])
        if epoch not in self._logged_epochs:
            self._run.log(flat, step=epoch)
            self._logged_epochs.add(epoch)

    def close(self) -> None:
        self._run.finish()


def _wandb(online: bool) -> Callable[..., Tracker]:
    def build(output_dir: str | Path, *, config: Mapping[str, Any]) -> Tracker:
        return WandbTracker(output_dir, config=config, online=online)

    return build


# --tracker value -> builder(output_dir, *, config)
TRACKERS: dict[str, Callable[..., Tracker]] = {
    "none": lambda output_dir, *, config: NoTracker(),
    "csv": lambda output_dir, *, config: CsvTracker(output_dir),
    "wandb": _wandb(online=False),
    "wandb-online": _wandb(online=True),
}


def make_tracker(name: str, output_dir: str | Path, *, config: Mapping[str, Any]) -> Tracker:
    """Build the tracker named by ``--tracker``; an unknown name is a UserError."""
    if name not in TRACKERS:
        raise UserError(f"unknown tracker '{name}'", fix=f"use one of {', '.join(TRACKERS)}")
    return TRACKERS[name](output_dir, config=config)
