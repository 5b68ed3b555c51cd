"""Plain checkpoints, written atomically, read back with ``torch.load(..., weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values only (STYLE.md #7)::

    {"model": state_dict, "optimizer": state_dict, "lr_scheduler": state_dict | None,
     "scaler": state_dict | None, "epoch": int (epochs completed, 1-based number of the last one),
     "config": dict (plain), "rng": {"python", "numpy", "torch", "cuda"}, "warmup": dict,
     "history": list[dict], "rng_ranks": list[rng] (only under DDP, one per rank)}

Atomic write: the bytes go to a hidden temporary file in the same folder, are flushed and fsync'ed,
then ``os.replace`` swaps it in (atomic on POSIX and Windows within one file system). A crash at any
moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import pickle
import random
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from detseg.errors import UserError

CHECKPOINT_KEYS = (
    "model",
    "optimizer",
    "lr_scheduler",
    "scaler",
    "epoch",
    "config",
    "rng",
    "warmup",
    "history",
)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file so that readers see the old content or the new, never a torn file.

    Args:
        path: destination; its folder must exist.
        write: called with a binary file object open on the temporary file.
    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():  # only when something above failed
            tmp.unlink()
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); folders cannot be opened this way on Windows."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` for UTF-8 text (``metrics.json``, ``metrics.csv``)."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """``torch.save(state)`` to ``path`` atomically."""
    return atomic_write(path, lambda handle: torch.save(dict(state), handle))


def copy_atomic(source: str | Path, destination: str | Path) -> Path:
    """Copy a file (``last.pt`` -> ``best.pt``) with the same all-or-nothing guarantee."""
    data = Path(source).read_bytes()
    return atomic_write(destination, lambda handle: handle.write(data))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary code runs while loading).

    Args:
        path: a ``.pt`` file written by :func:`save_checkpoint` (or any plain dict of tensors).
        map_location: where tensors land (default the CPU; the engine moves them).
    Returns:
        The checkpoint dict.
    Raises:
        UserError: the file is missing, truncated, corrupt, not a dict, or holds pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            "checkpoint not found",
            path=path,
            fix="check the path (a run folder holds last.pt and best.pt), or train without --resume",
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found is None:  # not a pickle stream of ours at all
            raise UserError(
                "checkpoint is corrupt or not a PyTorch file (unreadable pickle stream)",
                path=path,
                fix="delete it and resume from another one (best.pt, or a copy), or train from scratch",
            ) from err
        raise UserError(
            f"checkpoint holds a {found.group(1)} object, not only tensors and plain values",
            path=path,
            fix="save only state_dicts and plain types; load files you trust with "
            "torch.load(path, weights_only=False)",
        ) from err
    except PermissionError as err:
        raise UserError(
            "checkpoint cannot be read (permission denied)",
            path=path,
            fix="check the file's permissions",
        ) from err
    except Exception as err:  # garbage makes torch.load fail in many ways (IndexError, OSError ...)
        raise UserError(
            f"checkpoint is corrupt or truncated ({type(err).__name__})",
            path=path,
            fix="delete it and resume from another one (best.pt, or a copy), or train from scratch",
        ) from err
    if not isinstance(checkpoint, dict):
        raise UserError(
            f"checkpoint is a {type(checkpoint).__name__}, not a dict",
            path=path,
            fix="save a dict such as {'model': model.state_dict()}",
        )
    return checkpoint


def model_state(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint or of a bare ``state_dict`` file (``predict.py``, ``export.py``)."""
    inner = checkpoint.get("model", checkpoint)
    if not isinstance(inner, Mapping):
        raise UserError("checkpoint 'model' entry is not a state_dict", fix="re-save the model")
    return dict(inner)


def load_model_state(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    what: str = "the weights",
    path: str | Path | None = None,
    fix: str = "pass weights saved from the same model and options",
) -> None:
    """``model.load_state_dict(state)`` (strict); a mismatch is one line naming the first problem.

    Raises:
        UserError: missing or unexpected keys, or a tensor of another shape, e.g. ``the weights do
            not fit this model (Missing key(s) in state_dict: "head.weight")``.
    """
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # torch lists every problem on its own line after a header
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        first = lines[1] if len(lines) > 1 else lines[0]
        if len(first) > 200:
            first = first[:200] + "..."
        raise UserError(f"{what} do not fit this model ({first})", path=path, fix=fix) from err


def plain(value: Any) -> Any:
    """A copy of ``value`` made of dict / list / str / int / float / bool / None only.

    Paths become strings, tuples lists, NumPy scalars Python numbers; anything else its ``str()``. Used
    for the ``config`` entry, so that a checkpoint loads with ``weights_only=True`` and reads as JSON.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def rng_state() -> dict[str, Any]:
    """This process's random states as tensors and plain values (loadable with ``weights_only``).

    Returns:
        ``{"python": {"version", "state": int64[625], "gauss"}, "numpy": {"state": int64[624], "pos",
        "has_gauss", "cached_gaussian"}, "torch": uint8 tensor, "cuda": list of uint8 tensors}``.
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (global state)
    if kind != "MT19937":
        raise RuntimeError(f"unexpected NumPy global generator {kind}")
    return {
        "python": {"version": version, "state": torch.tensor(internal), "gauss": gauss},
        "numpy": {
            "state": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only where the device count matches)."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    numpy_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002 (global state)
        (
            "MT19937",
            numpy_state["state"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def restore_training_state(
    checkpoint: Mapping[str, Any],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    path: str | Path | None = None,
) -> None:
    """Load model, optimizer, scheduler and AMP scaler states from a checkpoint, in place.

    Raises:
        UserError: the checkpoint belongs to another model or optimizer (names ``path``).
    """
    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (KeyError, RuntimeError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0][:200]
        raise UserError(
            f"checkpoint does not fit this model / optimizer ({first_line})",
            path=path,
            fix="resume with the same model and settings, or start a new --output-dir",
        ) from err
    if lr_scheduler is not None and checkpoint.get("lr_scheduler") is not None:
        lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    if scaler is not None and scaler.is_enabled() and checkpoint.get("scaler") is not None:
        scaler.load_state_dict(checkpoint["scaler"])
