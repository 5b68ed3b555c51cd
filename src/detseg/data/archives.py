"""Safe extraction of zip and tar archives: nothing may land outside the target folder.

Every member is checked before anything is written (zip-slip / tar-slip): absolute paths, ``..``
components, symlinks or hard links pointing outside, and device / fifo entries are refused with a
:class:`~detseg.errors.UserError`. Tar archives are extracted with Python's ``"data"`` filter as well.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from detseg.errors import UserError


def _inside(root: Path, relative: str) -> bool:
    """True when ``root/relative`` (no symlinks followed outside) stays within ``root``."""
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", relative) or ".." in pure.parts:
        return False
    resolved = (root / pure).resolve()
    return resolved == root.resolve() or root.resolve() in resolved.parents


def _refuse(archive: Path, member: str, why: str) -> UserError:
    return UserError(
        f"archive member {member!r} {why}; refusing to extract",
        path=archive,
        fix="the archive is corrupt or malicious: delete it and download it again from the source",
    )


def _link_escapes(root: Path, member: str, link_target: str) -> bool:
    if link_target.startswith(("/", "\\")):
        return True
    base = PurePosixPath(member.replace("\\", "/")).parent
    joined = PurePosixPath(os.path.normpath(str(base / link_target.replace("\\", "/"))))
    return joined.parts[:1] == ("..",) or not _inside(root, str(joined))


def safe_extract(archive: str | Path, dest: str | Path) -> None:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into ``dest``, refusing escaping members.

    Every member is checked before anything is written: absolute paths, ``..`` components, symlinks
    or hard links pointing outside ``dest``, and device / fifo entries raise :class:`UserError`.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not _inside(dest, info.filename):
                    raise _refuse(archive, info.filename, "escapes the target folder")
                if stat.S_ISLNK(info.external_attr >> 16):
                    target = zf.read(info).decode("utf-8", "replace")
                    if _link_escapes(dest, info.filename, target):
                        raise _refuse(archive, info.filename, f"is a symlink to {target!r} outside")
            zf.extractall(dest)
        return
    if not tarfile.is_tarfile(archive):
        raise UserError(
            "not a zip or tar archive", path=archive, fix="delete it and download it again"
        )
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for member in members:
            if not _inside(dest, member.name):
                raise _refuse(archive, member.name, "escapes the target folder")
            if member.issym() and _link_escapes(dest, member.name, member.linkname):
                raise _refuse(archive, member.name, f"is a symlink to {member.linkname!r} outside")
            if member.islnk() and not _inside(dest, member.linkname):
                raise _refuse(
                    archive, member.name, f"is a hard link to {member.linkname!r} outside"
                )
            if member.isdev():
                raise _refuse(archive, member.name, "is a device or fifo")
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - Python < 3.11.4; every member was checked above
            tf.extractall(dest, members=members)
