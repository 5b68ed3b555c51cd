"""Shared by the readers: problem collection (strict vs lenient), image listing, image sizes.

A reader called normally is *strict*: the first fatal problem raises :class:`~detseg.errors.UserError`
naming ``file[:line]``. The validator passes a :class:`Problems` collector instead; the reader then
records the problem, skips the offending item and goes on, so one run lists every problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from detseg.data.imageio import IMAGE_SUFFIXES
from detseg.errors import UserError

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One finding: ``path[:line]: severity: what``."""

    path: str
    line: int | None
    what: str
    severity: str = ERROR

    def where(self) -> str:
        return self.path if self.line is None else f"{self.path}:{self.line}"

    def __str__(self) -> str:
        return f"{self.where()}: {self.severity}: {self.what}"


@dataclass
class Problems:
    """Collector of problems. ``strict=True`` turns every *error* into a raised :class:`UserError`."""

    strict: bool = False
    items: list[Problem] = field(default_factory=list)

    def error(
        self, what: str, path: str | Path, line: int | None = None, fix: str | None = None
    ) -> None:
        if self.strict:
            raise UserError(
                what,
                path=path,
                line=line,
                fix=fix or "run 'detseg data validate' on the dataset to list every problem",
            )
        self.items.append(Problem(str(path), line, what, ERROR))

    def warning(self, what: str, path: str | Path, line: int | None = None) -> None:
        self.items.append(Problem(str(path), line, what, WARNING))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.items if p.severity == WARNING]


def collector(problems: Problems | None) -> Problems:
    """The collector a reader uses: the caller's, or a strict one that raises."""
    return Problems(strict=True) if problems is None else problems


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (empty list if the folder is missing)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from the file header only (PIL opens lazily, no decoding).

    Raises:
        UserError: missing or unreadable file.
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UserError("image file not found", path=path, fix="check the dataset layout")
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(
            "not a readable image", path=path, fix="replace or delete the file"
        ) from err
    return int(height), int(width)


def checked_size(path: Path, report: Problems) -> tuple[int, int] | None:
    """:func:`image_size`, or ``None`` after reporting the problem when ``report`` is lenient."""
    try:
        return image_size(path)
    except UserError as err:
        if report.strict:
            raise
        report.error(err.what, path)
        return None


def require_dir(path: Path, what: str, fix: str) -> Path:
    """Raise a clear :class:`UserError` when a dataset folder is missing."""
    if not path.is_dir():
        raise UserError(f"{what} not found", path=path, fix=fix)
    return path
