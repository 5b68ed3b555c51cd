"""Hash-checked, resumable downloads of the real datasets that the built-in recipes stand in for.

:data:`DATASETS` is the visible list: URL, size in bytes and a published checksum per archive, and the
built-in recipe that replaces the dataset when it cannot be downloaded. :func:`download` fetches the
archives into ``<root>/downloads/`` (resuming a ``.part`` file with an HTTP ``Range`` request), checks
size and hash, and extracts them atomically into ``<root>/<name>/``, refusing any archive member that
would land outside that folder. A second call finds the verified folder and touches no network.

Checksums are never guessed: where no SHA-256 is published we keep the published MD5 (checked the same
way), and where nothing is published the first download prints the SHA-256 so that it can be pinned
here. The sources of every hash are given next to it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from detseg.data.archives import safe_extract
from detseg.errors import UserError
from detseg.settings import data_root

CHUNK_BYTES = 1 << 20
MARKER = ".detseg-download.json"


@dataclass(frozen=True)
class RemoteFile:
    """One archive to fetch.

    Attributes:
        url: where it is served.
        filename: name under ``<root>/downloads/``.
        size: exact size in bytes, or ``None`` when not published.
        sha256: published SHA-256 (hex), or ``None``.
        md5: published MD5 (hex), used only when no SHA-256 is known.
        hash_source: where the size / hash come from.
    """

    url: str
    filename: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    hash_source: str = ""


@dataclass(frozen=True)
class DatasetSource:
    """A real dataset: where to get it, how it unpacks, and what stands in for it.

    Attributes:
        name: key in :data:`DATASETS` and folder name under the data root.
        title: human name.
        homepage: page describing the dataset and its licence.
        files: archives to fetch (empty for manual datasets).
        recipe: the built-in recipe (``detseg data make <recipe>``) that stands in for it.
        layout: the dataset folder inside ``<root>/<name>/`` that :func:`download` returns.
        nested: archives inside the extracted tree to extract in place as well.
        manual: for datasets behind a login: how to get the files and where to put them.
    """

    name: str
    title: str
    homepage: str
    files: tuple[RemoteFile, ...]
    recipe: str
    layout: str = "."
    nested: tuple[str, ...] = ()
    manual: str | None = None


DATASETS: dict[str, DatasetSource] = {
    "pennfudan": DatasetSource(
        name="pennfudan",
        title="Penn-Fudan pedestrians (170 images, instance masks)",
        homepage="https://www.cis.upenn.edu/~jshi/ped_html/",
        files=(
            RemoteFile(
                url="https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip",
                filename="PennFudanPed.zip",
                md5="5aaa3dee905cef73325923716e38fc6d",
                hash_source="MD5 from ContinualAI/avalanche "
                "avalanche/benchmarks/datasets/penn_fudan/penn_fudan_data.py; no SHA-256 published",
            ),
        ),
        recipe="pedestrians",
        layout="PennFudanPed",
    ),
    "racoon": DatasetSource(
        name="racoon",
        title="Raccoon detection dataset (200 images, Pascal VOC XML + CSV)",
        homepage="https://github.com/datitran/raccoon_dataset",
        files=(
            RemoteFile(
                url="https://github.com/datitran/raccoon_dataset/archive/refs/heads/master.zip",
                filename="raccoon_dataset-master.zip",
                hash_source="none published (a GitHub branch archive is regenerated on demand); "
                "the first download prints its SHA-256",
            ),
        ),
        recipe="racoon",
        layout="raccoon_dataset-master",
    ),
    "caltech101": DatasetSource(
        name="caltech101",
        title="Caltech-101 (the 'airplanes' class and its Annotations boxes)",
        homepage="https://data.caltech.edu/records/mzrjq-6wc02",
        files=(
            RemoteFile(
                url="https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip?download=1",
                filename="caltech-101.zip",
                md5="3138e1922a9193bfa496528edbbc45d0",
                hash_source="MD5 from mlverse/torchvision R/dataset-caltech.R and several other "
                "projects that agree; no SHA-256 published for the CaltechDATA zip",
            ),
        ),
        recipe="single_object",
        layout="caltech-101",
        nested=("caltech-101/101_ObjectCategories.tar.gz", "caltech-101/Annotations.tar"),
    ),
    "coco_val2017": DatasetSource(
        name="coco_val2017",
        title="COCO val2017 (5000 images) + train/val 2017 annotations",
        homepage="https://cocodataset.org/#download",
        files=(
            RemoteFile(
                url="http://images.cocodataset.org/zips/val2017.zip",
                filename="val2017.zip",
                size=815585330,
                sha256="4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05",
                hash_source="tensorflow/datasets tensorflow_datasets/url_checksums/coco2017.txt",
            ),
            RemoteFile(
                url="http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
                filename="annotations_trainval2017.zip",
                size=252907541,
                sha256="113a836d90195ee1f884e704da6304dfaaecff1f023f49b6ca93c4aaae470268",
                hash_source="tensorflow/datasets tensorflow_datasets/url_checksums/coco2017.txt",
            ),
        ),
        recipe="shapes",
    ),
    "kitti_road": DatasetSource(
        name="kitti_road",
        title="KITTI road segmentation (data_road.zip)",
        homepage="https://www.cvlibs.net/datasets/kitti/eval_road.php",
        files=(),
        recipe="road",
        layout="data_road",
        manual="register (free) at https://www.cvlibs.net/datasets/kitti/eval_road.php, download "
        "'base kit with left color images, calibration and training labels' (data_road.zip) and "
        "unzip it so that {target}/data_road/training/image_2 exists",
    ),
    "tgs_salt": DatasetSource(
        name="tgs_salt",
        title="TGS Salt Identification Challenge (Kaggle)",
        homepage="https://www.kaggle.com/c/tgs-salt-identification-challenge",
        files=(),
        recipe="salt",
        layout="train",
        manual="accept the competition rules on Kaggle, then run 'kaggle competitions download -c "
        "tgs-salt-identification-challenge' and unzip its train.zip so that {target}/train/images "
        "and {target}/train/masks exist",
    ),
    "cityscapes_pairs": DatasetSource(
        name="cityscapes_pairs",
        title="Cityscapes image pairs (photo | colour label side by side, Kaggle)",
        homepage="https://www.kaggle.com/datasets/dansbecker/cityscapes-image-pairs",
        files=(),
        recipe="street",
        layout="cityscapes_data",
        manual="sign in to Kaggle, run 'kaggle datasets download -d dansbecker/cityscapes-image-pairs' "
        "and unzip it so that {target}/cityscapes_data/train and {target}/cityscapes_data/val exist",
    ),
}


def dataset_dir(name: str, root: str | Path | None = None) -> Path:
    """Folder that :func:`download` returns for ``name`` (whether or not it exists yet)."""
    source = _source(name)
    return _target(source, root) / source.layout


def download(name: str, root: str | Path | None = None, *, progress: bool = True) -> Path:
    """Fetch, verify and extract a dataset of :data:`DATASETS`; no network if it is already there.

    Args:
        name: a key of :data:`DATASETS`.
        root: data folder (default :func:`detseg.settings.data_root`). Archives go to
            ``<root>/downloads/``, the extracted dataset to ``<root>/<name>/``.
        progress: show a tqdm progress bar per archive.
    Returns:
        The dataset folder ``<root>/<name>/<layout>``, ready for its reader.
    Raises:
        UserError: unknown name; a manual dataset not yet in place; no network (naming the URL, the
            path where to put the file by hand and the built-in recipe); wrong size or hash; an archive
            member that would escape the target folder.
    """
    source = _source(name)
    root = Path(root) if root is not None else data_root()
    target = _target(source, root)
    if source.manual is not None:
        return _manual(source, target)
    if _is_complete(source, target):
        return target / source.layout
    archives = [
        _fetch(file, root / "downloads", source, progress=progress) for file in source.files
    ]
    _extract_atomic(source, archives, target)
    return target / source.layout


def sha256_of(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    return _digest(Path(path), "sha256")


# ---------------------------------------------------------------------------------------------------
# internals


def _source(name: str) -> DatasetSource:
    if name not in DATASETS:
        raise UserError(
            f"unknown dataset {name!r}", fix=f"use one of: {', '.join(sorted(DATASETS))}"
        )
    return DATASETS[name]


def _target(source: DatasetSource, root: str | Path | None) -> Path:
    return (Path(root) if root is not None else data_root()) / source.name


def _stand_in(source: DatasetSource) -> str:
    return f"or use the built-in stand-in: 'detseg data make {source.recipe}'"


def _manual(source: DatasetSource, target: Path) -> Path:
    folder = target / source.layout
    if folder.is_dir() and any(folder.iterdir()):
        return folder
    instructions = (source.manual or "").format(target=target)
    raise UserError(
        f"{source.title} needs a login and cannot be downloaded by script",
        path=folder,
        fix=f"{instructions} ({source.homepage}); {_stand_in(source)}",
    )


def _is_complete(source: DatasetSource, target: Path) -> bool:
    marker = target / MARKER
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    expected = {f.filename: f.sha256 or f.md5 for f in source.files}
    if set(recorded.get("files", {})) != set(expected):
        return False
    for filename, digest in expected.items():
        entry = recorded["files"][filename]
        if digest is not None and digest not in (entry.get("sha256"), entry.get("md5")):
            return False
    return (target / source.layout).is_dir()


def _digest(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _verify(path: Path, file: RemoteFile) -> dict[str, str]:
    """Check size and hash of a complete file; return its digests. Raise UserError on a mismatch."""
    size = path.stat().st_size
    if file.size is not None and size != file.size:
        raise _mismatch(path, file, "size", str(file.size), str(size))
    sha256 = _digest(path, "sha256")
    if file.sha256 is not None and sha256 != file.sha256.lower():
        raise _mismatch(path, file, "SHA-256", file.sha256, sha256)
    digests = {"sha256": sha256}
    if file.sha256 is None and file.md5 is not None:
        md5 = _digest(path, "md5")
        if md5 != file.md5.lower():
            raise _mismatch(path, file, "MD5", file.md5, md5)
        digests["md5"] = md5
    if file.sha256 is None and file.md5 is None:
        print(f"{file.filename}: no published checksum; sha256={sha256} size={size} (pin these)")
    return digests


def _mismatch(path: Path, file: RemoteFile, what: str, expected: str, got: str) -> UserError:
    path.unlink(missing_ok=True)
    return UserError(
        f"{what} mismatch for {file.url}: expected {expected}, got {got}; the file was deleted",
        path=path,
        fix="run again to download it afresh; if it keeps failing the server changed the file",
    )


def _offline(file: RemoteFile, dest: Path, source: DatasetSource, reason: object) -> UserError:
    return UserError(
        f"cannot download {file.url} ({reason})",
        path=dest,
        fix=f"check the network and run again (a partial file resumes), or download it by hand and "
        f"put it at this path, {_stand_in(source)}",
    )


def _fetch(
    file: RemoteFile, folder: Path, source: DatasetSource, *, progress: bool, timeout: float = 30.0
) -> tuple[Path, dict[str, str]]:
    """Download ``file`` into ``folder`` (resuming ``<name>.part``), verify it, return its path."""
    dest = folder / file.filename
    if dest.is_file():  # finished earlier, or put there by hand
        return dest, _verify(dest, file)
    folder.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if file.size is not None and have > file.size:
        part.unlink()
        have = 0
    if file.size is None or have < file.size:
        _stream(file, part, have, source, progress=progress, timeout=timeout)
    digests = _verify(part, file)
    os.replace(part, dest)
    return dest, digests


def _stream(
    file: RemoteFile,
    part: Path,
    have: int,
    source: DatasetSource,
    *,
    progress: bool,
    timeout: float,
) -> None:
    from tqdm.auto import tqdm

    dest = part.with_name(file.filename)  # where a file fetched by hand goes
    request = urllib.request.Request(file.url, headers={"User-Agent": "detseg"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if have and response.status != 206:  # the server ignored Range: start again
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else file.size
            mode = "ab" if have else "wb"
            # a bar only on a terminal: in a log it would be one line of \r updates per chunk
            bar_shown = progress and _is_terminal(sys.stderr)
            if progress and not bar_shown:
                print(f"downloading {file.url} -> {dest}", file=sys.stderr, flush=True)
            with (
                open(part, mode) as out,
                tqdm(
                    total=total,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    desc=file.filename,
                    disable=not bar_shown,
                ) as bar,
            ):
                received = 0
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if progress and not bar_shown:
                print(f"downloaded {have + received} bytes of {file.filename}", file=sys.stderr)
            if length is not None and received < int(length):  # read(n) does not raise on this
                raise http.client.IncompleteRead(b"", int(length) - received)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            return  # nothing left to send: the part file is complete, _verify decides
        raise _offline(file, dest, source, f"HTTP {err.code} {err.reason}") from err
    except (
        urllib.error.URLError,
        http.client.HTTPException,
        ConnectionError,
        TimeoutError,
    ) as err:  # network trouble only: a local disk error is not "offline"
        reason = getattr(err, "reason", None) or err.__class__.__name__
        raise _offline(file, dest, source, reason) from err


def _extract_atomic(
    source: DatasetSource, archives: list[tuple[Path, dict[str, str]]], target: Path
) -> None:
    """Extract into a temporary sibling folder, then rename it to ``target`` in one step."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{source.name}-", dir=target.parent))
    try:
        for archive, _ in archives:
            safe_extract(archive, staging)
        for inner in source.nested:
            nested = staging / inner
            if not nested.is_file():
                raise UserError(
                    f"expected {inner} inside the archive but it is missing",
                    path=archives[0][0],
                    fix="delete the archive and download it again",
                )
            safe_extract(nested, nested.parent)
            nested.unlink()
        record = {"files": {path.name: digests for path, digests in archives}}
        (staging / MARKER).write_text(json.dumps(record, indent=1))
        if target.exists():  # an earlier, unverified attempt
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
