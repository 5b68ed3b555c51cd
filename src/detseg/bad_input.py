"""Rows of the project's bad-input suite (``tests/test_bad_input.py``) and the bad files they need.

Every entry point (each ``detseg`` command, each example script) must answer bad input with exit
status 2 and one line ``error: <file or flag>: <what is wrong>; <how to fix>`` on stderr, no traceback,
and must write nothing. The suite checks that on a table of :class:`Case` rows. The core's rows live
in ``tests/test_bad_input.py``; an example folder adds its own in ``NN_name/tests/bad_input_cases.py``::

    from detseg.bad_input import Case

    S = "05_unet_segmentation"
    CASES = [
        Case("05-train-negative-epochs", f"{S}/train.py", ["--epochs", "-1"], "--epochs"),
        Case(
            "05-predict-text-checkpoint",
            f"{S}/predict.py",
            ["--weights", "{tmp}/bad.pt", "--source", "{tmp}/a.png"],
            ["{tmp}/bad.pt", "checkpoint"],
            files={"bad.pt": "text", "a.png": "png"},
        ),
    ]

A row:

- ``id``: unique name of the case (the pytest id).
- ``entry``: ``"detseg"`` (``argv`` goes to the ``detseg`` command) or ``"NN_folder/script.py"``
  (loaded by path with :func:`detseg.scripts.load_script` and run as its ``__main__`` does:
  ``run_cli(main, argv)``).
- ``argv``: the arguments; ``{tmp}`` stands for the case's empty temporary folder (also the current
  folder; ``DETSEG_RUNS`` is ``{tmp}/runs``; ``DETSEG_DATA`` is a cache shared by all cases).
- ``expect``: a text, or a list of texts, that the error line must contain (``{tmp}`` allowed): name
  the flag or the file at fault.
- ``files``: what to create in ``{tmp}`` before the run, ``{relative path: content}``; a content is a
  name from :data:`MAKERS` (``"text"``, ``"empty"``, ``"binary"``, ``"png"``, ``"truncated png"``,
  ``"empty folder"``, ``"text checkpoint"``, ``"truncated checkpoint"``, ``"foreign checkpoint"``,
  ``"unsafe checkpoint"`` ...), literal ``bytes``, or a function ``f(path)`` that writes ``path``.
- ``unreadable``: relative paths to ``chmod 000`` after creating them (the case is skipped when run as
  root, who can read anything).

The harness asserts for each row: exit status 2; stderr is exactly one line, starting ``error:``,
containing every ``expect`` text and a ``"; "`` before the fix; no ``Traceback`` anywhere; and no file
under ``{tmp}`` created, changed or removed.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

Content = str | bytes | Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    """One bad-input case: see the module docstring."""

    id: str
    entry: str
    argv: Sequence[str]
    expect: str | Sequence[str]
    files: dict[str, Content] = field(default_factory=dict)
    unreadable: Sequence[str] = ()

    def expected(self) -> list[str]:
        return [self.expect] if isinstance(self.expect, str) else list(self.expect)


def png_bytes(height: int = 16, width: int = 16) -> bytes:
    """A valid RGB PNG (a gradient) built with zlib only."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 15 % 256, y * 15 % 256, 128)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes((8, 2, 0, 0, 0))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _torch_bytes(obj: object) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _foreign_checkpoint() -> bytes:
    """A real state dict, of a model no example trains (a 3 -> 2 linear layer)."""
    import torch

    return _torch_bytes(torch.nn.Linear(3, 2).state_dict())


def _unsafe_checkpoint() -> bytes:
    """A checkpoint holding a pickled Python object, which ``weights_only=True`` must refuse."""
    import argparse

    import torch

    return _torch_bytes({"model": {"w": torch.zeros(1)}, "args": argparse.Namespace(epochs=1)})


def _truncated_checkpoint() -> bytes:
    import torch

    data = _torch_bytes({"model": {"w": torch.zeros(64, 64)}, "epoch": 1})
    return data[: len(data) // 2]


MAKERS: dict[str, Callable[[], bytes] | None] = {
    "text": lambda: b"this is not the file you are looking for\n",
    "empty": lambda: b"",
    "binary": lambda: bytes(range(256)) * 8,
    "png": png_bytes,
    "truncated png": lambda: png_bytes()[:60],
    "text checkpoint": lambda: b"epoch=3 loss=0.1\n",
    "truncated checkpoint": _truncated_checkpoint,
    "foreign checkpoint": _foreign_checkpoint,
    "unsafe checkpoint": _unsafe_checkpoint,
    "empty folder": None,  # a folder, made by make_file
}


def make_file(path: Path, content: Content) -> None:
    """Create ``path`` with ``content`` (a :data:`MAKERS` name, bytes, or a writer function)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if callable(content):
        content(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "empty folder":
        path.mkdir(parents=True, exist_ok=True)
    elif content in MAKERS:
        maker = MAKERS[content]
        assert maker is not None
        path.write_bytes(maker())
    else:
        raise ValueError(f"unknown bad-file kind {content!r}; use bytes or one of {list(MAKERS)}")
