"""Start weights: our checkpoints, plain state dicts, and the authors' ``yolov7*.pt`` files.

The authors' files (``yolov7-tiny.pt``, ``yolov7.pt`` from their GitHub releases) are pickles of
their own Python objects (``models.yolo.Model``, ``models.common.Conv`` ...): ``torch.load`` would
import and run their code, and ``weights_only=True`` refuses them. :func:`read_foreign_checkpoint`
reads such a file **without running any foreign code**: a restricted unpickler maps every class of
the other codebase to an inert :class:`ForeignObject` (it only records the attributes it is given),
rebuilds tensors itself from the raw storages in the zip archive, and refuses any other global
(``os.system``, ``builtins.eval`` ...). :func:`foreign_state` then walks the module tree in
registration order (parameters, persistent buffers, children), and :func:`map_by_order` pairs
those tensors with ours by order and shape: our layer ``i`` is their layer ``i``.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from detseg.engine.checkpoint import load_checkpoint
from detseg.errors import UserError

SKIPPED_BUFFERS = ("anchors", "anchor_grid", "num_batches_tracked")
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}  # fmt: skip


class ForeignObject:
    """Stands for an instance of a class of another codebase; nothing of that class runs."""

    foreign_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slots state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<foreign {self.foreign_name}>"


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: Tensor, offset: int, size: Any, stride: Any, *_: Any) -> Tensor:
    return storage.as_strided(tuple(size), tuple(stride), offset).clone()


def _rebuild_parameter(data: Tensor, *_: Any) -> Tensor:
    return data


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles use to store bytes (``_codecs.encode(text, "latin1")``), nothing else."""
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"refused codec {encoding!r}")
    return text.encode("latin1")


_ALLOWED = {
    ("_codecs", "encode"): _latin1_bytes,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
}
# modules whose classes may be recorded as inert ForeignObjects (never imported)
_FOREIGN_PREFIXES = ("models.", "utils.", "torch.nn.", "numpy", "argparse", "pathlib", "__main__")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(
            module, module
        )  # protocol 2
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith(_FOREIGN_PREFIXES) or module in ("models", "utils", "numpy"):
            return type(name, (ForeignObject,), {"foreign_name": f"{module}.{name}"})
        raise pickle.UnpicklingError(f"refused global {module}.{name}")

    def persistent_load(self, pid: Any) -> Tensor:
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}/data/{key}")
            flat = (
                torch.frombuffer(bytearray(raw), dtype=storage_type.dtype)
                if raw
                else torch.zeros(0, dtype=storage_type.dtype)
            )
            self.storages[key] = flat[:numel]
        return self.storages[key]


def read_foreign_checkpoint(path: str | Path) -> Any:
    """Unpickle a torch zip checkpoint with foreign classes as inert :class:`ForeignObject`.

    Raises:
        UserError: not a torch zip file, or it references a global outside the allowed set.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise UserError(
            "not a PyTorch zip checkpoint (the authors' .pt files are)", path=path,
            fix="pass yolov7-tiny.pt / yolov7.pt from the authors' releases, or a train.py checkpoint",
        ) from err  # fmt: skip
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if not pickles:
            raise UserError("zip file without data.pkl", path=path, fix="pass a torch.save file")
        prefix = pickles[0][: -len("/data.pkl")]
        with archive.open(pickles[0]) as handle:
            try:
                return _RestrictedUnpickler(handle, archive, prefix).load()
            except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as err:
                raise UserError(
                    f"refused to read it: {err}", path=path,
                    fix="only checkpoints made of modules, tensors and plain values are read",
                ) from err  # fmt: skip


def foreign_state(module: Any, prefix: str = "") -> list[tuple[str, Tensor]]:
    """Tensors of a (foreign) module tree in ``state_dict`` order: own parameters, persistent
    buffers, then each child; ``None`` entries skipped."""
    out: list[tuple[str, Tensor]] = []
    attrs = module.__dict__
    skip = set(attrs.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for name, value in (attrs.get(group) or {}).items():
            if isinstance(value, Tensor) and name not in skip:
                out.append((prefix + name, value))
    for name, child in (attrs.get("_modules") or {}).items():
        if child is not None:
            out += foreign_state(child, f"{prefix}{name}.")
    return out


def _usable(items: list[tuple[str, Tensor]]) -> list[tuple[str, Tensor]]:
    return [(k, v) for k, v in items if k.rsplit(".", 1)[-1] not in SKIPPED_BUFFERS]


def map_by_order(
    model: nn.Module, theirs: list[tuple[str, Tensor]], *, path: str | Path = "?"
) -> dict[str, Any]:
    """Copy ``theirs`` into ``model`` pairing tensors by order; a pair whose shapes differ (the
    head's class convolutions when the number of classes differs) is skipped.

    Returns:
        ``{"loaded": n, "skipped": [our names]}``.
    Raises:
        UserError: the counts differ (another architecture or variant).
    """
    # our auxiliary head (--aux-head) has no counterpart in the authors' P5 files: left as initialised
    ours = _usable([(k, v) for k, v in model.state_dict().items() if not k.startswith("aux.")])
    theirs = _usable(theirs)
    if len(ours) != len(theirs):
        raise UserError(
            f"{len(theirs)} weight tensors, but this model has {len(ours)}", path=path,
            fix="pass the checkpoint of the same variant (--variant tiny: yolov7-tiny.pt, "
            "--variant base: yolov7.pt, training form, not a re-parameterised deploy file)",
        )  # fmt: skip
    state, skipped = {}, []
    for (name, mine), (_, value) in zip(ours, theirs):
        if tuple(mine.shape) == tuple(value.shape):
            state[name] = value.to(mine.dtype)
        else:
            skipped.append(name)
    model.load_state_dict(state, strict=False)
    return {"loaded": len(state), "skipped": skipped}


def load_authors_checkpoint(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load the authors' ``yolov7*.pt`` (its ``ema`` if present, else ``model``) into ``model``."""
    checkpoint = read_foreign_checkpoint(path)
    source = (
        checkpoint.get("ema") or checkpoint.get("model")
        if isinstance(checkpoint, dict)
        else checkpoint
    )
    if not isinstance(source, ForeignObject):
        raise UserError(
            "no model object in this checkpoint", path=path, fix="pass yolov7-tiny.pt or yolov7.pt"
        )
    return map_by_order(model, foreign_state(source), path=path)


def load_start_weights(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """``--weights``: a ``train.py`` checkpoint (its EMA), a plain state dict, or the authors' file.

    Tensors whose shape differs from the model's (another number of classes) are left as
    initialised. Returns ``{"loaded", "skipped", "source"}``.
    """
    try:
        checkpoint = load_checkpoint(path)
    except UserError as err:
        if "object, not only tensors" not in err.what:
            raise
        return {**load_authors_checkpoint(model, path), "source": "authors"}
    state = checkpoint.get("model", checkpoint)
    if any(k.startswith("ema.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(
            "no state dict of tensors in this file", path=path, fix="pass a train.py checkpoint"
        )
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise UserError(
            "none of its tensors fits this model", path=path,
            fix="pass a checkpoint of the same --variant",
        )  # fmt: skip
    model.load_state_dict(usable, strict=False)
    return {
        "loaded": len(usable),
        "skipped": sorted(set(own) - set(usable)),
        "source": "state_dict",
    }


def load_trained(path: str | Path, *, use_ema: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The model a ``train.py`` checkpoint describes (variant and classes from its config), with
    its EMA weights (the ones evaluated each epoch), in eval mode. Returns ``(model, config)``."""
    from yolov7 import build_model

    checkpoint = load_checkpoint(path)
    config = checkpoint.get("config") or {}
    if "variant" not in config or "num_classes" not in config:
        raise UserError(
            "not a checkpoint written by this folder's train.py (no variant / num_classes in it)",
            path=path, fix="pass last.pt or best.pt of a 03_yolo_v7_tutorial run",
        )  # fmt: skip
    model = build_model(
        config["variant"], int(config["num_classes"]), aux_head=bool(config.get("aux_head"))
    )
    prefix = "ema." if use_ema else "model."
    state = {k[len(prefix) :]: v for k, v in checkpoint["model"].items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(
            f"its weights do not fit a {config['variant']} model ({str(err).splitlines()[0]})",
            path=path, fix="pass an unmodified train.py checkpoint",
        ) from err  # fmt: skip
    return model.eval(), config
