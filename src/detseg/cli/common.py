"""The flags every example script shares, and checks that turn bad values into one-line errors.

Each ``train.py`` does::

    def get_args_parser() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(description="Fine-tune Mask R-CNN on PennFudan")
        add_standard_args(parser, example="01_mask_r_cnn_fine_tuning", epochs=10, batch_size=2, lr=0.005)
        parser.add_argument("--model", choices=MODELS, default="maskrcnn_r50")  # its own flags
        return parser

    def main(argv=None) -> dict:
        args = validate_standard_args(get_args_parser().parse_args(argv))
        ...
        return engine.train(model, loader, optimizer=..., device=device, **train_kwargs(args))

Argparse itself rejects text that is not a number; :func:`validate_standard_args` rejects numbers out
of range and paths that do not exist with a :class:`~detseg.errors.UserError` (one line, exit 2 under
``run_cli``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from detseg.errors import UserError
from detseg.settings import runs_root

TRACKER_CHOICES = ("none", "csv", "wandb", "wandb-online")  # detseg.engine.trackers.TRACKERS


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each flag's default, as ``argparse.ArgumentDefaultsHelpFormatter``, except
    where the default says nothing: ``None`` ("chosen per model / dataset": the help text says
    how), ``False`` of an on/off flag, or a help text that already says "(default ...)". Every
    example script's parser uses it (``formatter_class=HelpFormatter``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or "(default" in text:
            return action.help
        return super()._get_help_string(action)


def add_standard_args(
    parser: argparse.ArgumentParser,
    *,
    example: str,
    epochs: int,
    batch_size: int,
    lr: float,
    workers: int = 2,
    seed: int = 0,
    data_path: str | Path | None = None,
    output_dir: str | Path | None = None,
    weights: str | Path | None = None,
    device: str = "auto",
    tracker: str = "none",
) -> argparse.ArgumentParser:
    """Add ``--data-path --output-dir --device --seed --epochs --batch-size --lr --workers --resume
    --weights --dry-run --tracker --amp --debug`` with this example's defaults (``--help`` shows
    them through :class:`HelpFormatter`; a script may set some to ``None``, "per model", and say so).

    Args:
        parser: the script's parser (returned, for chaining).
        example: folder name, for the default output folder ``<DETSEG_RUNS>/<example>/train``.
        epochs, batch_size, lr, workers, seed: defaults that suit this example.
        data_path: default dataset folder; None means "the built-in dataset".
        output_dir: default run folder (overrides the one derived from ``example``).
        weights: default weights file; None means "the model's own initialisation".
        device: default ``--device``.
        tracker: default ``--tracker``.
    """
    default_output = Path(output_dir) if output_dir is not None else runs_root() / example / "train"
    group = parser.add_argument_group("standard options (the same in every example)")
    group.add_argument(
        "--data-path",
        type=Path,
        default=None if data_path is None else Path(data_path),
        help="dataset folder in its native layout (default: "
        + ("the built-in dataset, generated on first use" if data_path is None else str(data_path))
        + ")",
    )
    group.add_argument(
        "--output-dir",
        type=Path,
        default=default_output,
        help="run folder for checkpoints (last.pt, best.pt), metrics.json and plots",
    )
    group.add_argument(
        "--device",
        default=device,
        help="auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:<index> or mps",
    )
    group.add_argument("--seed", type=int, default=seed, help="random seed")
    group.add_argument("--epochs", type=int, default=epochs, help="number of epochs")
    group.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        help="images per batch, per process under torchrun",
    )
    group.add_argument("--lr", type=float, default=lr, help="base learning rate")
    group.add_argument(
        "--workers",
        type=int,
        default=workers,
        help="data loading worker processes; 0 loads in the main process",
    )
    group.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="continue a run exactly: alone, from <output-dir>/last.pt; or from the given file",
    )
    group.add_argument(
        "--weights",
        type=Path,
        default=None if weights is None else Path(weights),
        help="weights file to start from (a checkpoint or a state_dict)",
    )
    group.add_argument(
        "--dry-run",
        action="store_true",
        help="one epoch of one batch end to end, to check that everything runs "
        "(writes into <output-dir>/dry-run)",
    )
    group.add_argument(
        "--tracker",
        choices=TRACKER_CHOICES,
        default=tracker,
        help="where to log metrics besides metrics.json: none, csv (metrics.csv), wandb (offline), "
        "wandb-online (needs WANDB_API_KEY)",
    )
    group.add_argument(
        "--amp", action="store_true", help="mixed precision on CUDA (ignored on CPU and MPS)"
    )
    group.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
    return parser


def add_checkpoint_arg(
    parser: argparse.ArgumentParser, *, example: str, run: str = "train"
) -> argparse.ArgumentParser:
    """Add ``--weights``: the checkpoint that a predict / export / evaluate script loads.

    Its default is ``<DETSEG_RUNS>/<example>/<run>/best.pt``, where that example's ``train.py``
    writes by default (``run``: the run folder's name, ``train`` unless the example names its runs).
    """
    parser.add_argument(
        "--weights",
        type=Path,
        default=runs_root() / example / run / "best.pt",
        help="checkpoint written by train.py",
    )
    return parser


def positive_int(value: int, flag: str) -> int:
    """``value`` if it is >= 1, else a UserError naming ``flag``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(
            f"{flag} must be a positive integer, got {value}", fix=f"pass {flag} 1 or more"
        )
    return value


def non_negative_int(value: int, flag: str) -> int:
    """``value`` if it is >= 0, else a UserError naming ``flag``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{flag} must be 0 or more, got {value}", fix=f"pass {flag} 0 or more")
    return value


def positive_float(value: float, flag: str) -> float:
    """``value`` if it is a finite number > 0, else a UserError naming ``flag``."""
    if not isinstance(value, int | float) or not 0 < float(value) < float("inf"):
        raise UserError(
            f"{flag} must be a positive number, got {value}", fix=f"pass e.g. {flag} 0.01"
        )
    return float(value)


def existing_path(path: str | Path, flag: str, *, kind: str = "any") -> Path:
    """``Path(path)`` if it exists (as a file for ``kind="file"``, a folder for ``kind="dir"``).

    Raises:
        UserError: it does not exist, or is the wrong kind; the message names the flag.
    """
    if kind not in ("any", "file", "dir"):
        raise ValueError(f"kind must be 'any', 'file' or 'dir', got {kind!r}")
    path = Path(path)
    if not path.exists():
        raise UserError(
            f"{flag}: no such {({'dir': 'folder', 'file': 'file'}).get(kind, 'file or folder')}",
            path=path,
            fix="check the path"
            + (" or leave the flag out to use the built-in data" if flag == "--data-path" else ""),
        )
    if kind == "file" and not path.is_file():
        raise UserError(
            f"{flag}: expected a file, found a folder", path=path, fix="name the file itself"
        )
    if kind == "dir" and not path.is_dir():
        raise UserError(
            f"{flag}: expected a folder, found a file", path=path, fix="name its folder"
        )
    return path


def validate_standard_args(args: argparse.Namespace) -> argparse.Namespace:
    """Check the standard flags' values; returns ``args`` unchanged when they are fine.

    Raises:
        UserError: a count out of range, a non-positive lr, a seed out of range, or a ``--data-path``,
            ``--weights`` or ``--resume CHECKPOINT`` that does not exist.
    """
    positive_int(args.epochs, "--epochs")
    positive_int(args.batch_size, "--batch-size")
    non_negative_int(args.workers, "--workers")
    positive_float(args.lr, "--lr")
    if not 0 <= args.seed < 2**32:
        raise UserError(f"--seed must be in [0, 2**32), got {args.seed}", fix="pass e.g. --seed 0")
    if args.data_path is not None:
        existing_path(args.data_path, "--data-path")
    if args.weights is not None:
        existing_path(args.weights, "--weights", kind="file")
    if args.resume is True:
        last = Path(args.output_dir) / "last.pt"
        if not last.is_file():
            raise UserError(
                "--resume: no last.pt in the output folder",
                path=last,
                fix="pass --resume CHECKPOINT, the --output-dir of the run to continue, or drop --resume",
            )
    elif args.resume:
        existing_path(args.resume, "--resume", kind="file")
    return args


def train_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`detseg.engine.train` keywords that come straight from the standard flags.

    ``--dry-run`` becomes one epoch of one batch, written to ``<output-dir>/dry-run`` so that it never
    replaces a real run's ``last.pt``. ``config`` is ``vars(args)`` (made plain by the engine), stored
    in every checkpoint.
    """
    return {
        "epochs": 1 if args.dry_run else args.epochs,
        "max_steps_per_epoch": 1 if args.dry_run else None,
        "output_dir": Path(args.output_dir) / "dry-run" if args.dry_run else args.output_dir,
        "amp": args.amp,
        "tracker": args.tracker,
        "resume": args.resume
        if args.resume is True
        else (Path(args.resume) if args.resume else False),
        "config": vars(args),
    }
