"""The racoon data of this folder: the built-in stand-in or the real download, one VOC reader.

    train, val = load_racoon()                       # built-in data/racoon-0/ (VOC layout), generated once
    train, val = load_racoon(data_path=folder)       # a VOC folder, or the datitran repository layout
    train, val = load_racoon(download=True)          # the real dataset through detseg.data.download

The real raccoon dataset (github.com/datitran/raccoon_dataset) keeps its Pascal VOC XML files in
``annotations/`` and its JPEGs in ``images/``, and lists its split in ``data/train_labels.csv`` and
``data/test_labels.csv``. :func:`voc_view` lays a VOC folder over it (``Annotations``,
``JPEGImages``, ``ImageSets/Main/{train,val}.txt``, links to the real files), so that the same
reader (:func:`detseg.data.formats.voc.read`) reads both.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np

from detseg.data import recipes
from detseg.data.formats import voc
from detseg.data.imageio import read_image
from detseg.data.types import DetectionDataset
from detseg.errors import UserError

CLASSES = ["raccoon"]


def voc_view(folder: Path) -> Path:
    """A VOC-layout folder for ``folder``: itself if it has ``Annotations/``, else (datitran layout:
    ``annotations/`` + ``images/``) a sibling ``<name>-voc/`` of links to its files.

    Raises:
        UserError: neither layout.
    """
    folder = Path(folder)
    if (folder / "Annotations").is_dir():
        return folder
    if not ((folder / "annotations").is_dir() and (folder / "images").is_dir()):
        raise UserError(
            "not a racoon dataset folder: expected Annotations/ + JPEGImages/ (VOC) or "
            "annotations/ + images/ (github.com/datitran/raccoon_dataset)",
            path=folder,
            fix="pass the folder that holds them, or leave --data-path out for the built-in data",
        )
    view = folder.parent / f"{folder.name}-voc"
    (view / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for name, source in (("Annotations", "annotations"), ("JPEGImages", "images")):
        link = view / name
        if not link.exists():
            try:
                link.symlink_to((folder / source).resolve(), target_is_directory=True)
            except OSError:  # no symlinks (Windows without developer mode): copy
                shutil.copytree(folder / source, link)
    stems = sorted(p.stem for p in (folder / "annotations").glob("*.xml"))
    splits = {}
    for split, csv_name in (("train", "train_labels.csv"), ("val", "test_labels.csv")):
        path = folder / "data" / csv_name
        if path.is_file():
            with open(path, newline="") as handle:
                names = {Path(row["filename"]).stem for row in csv.DictReader(handle)}
            splits[split] = [s for s in stems if s in names]
    if not splits.get("train") or not splits.get("val"):  # no split files: the last 20 % validate
        cut = len(stems) - max(1, len(stems) // 5)
        splits = {"train": stems[:cut], "val": stems[cut:]}
    for split, names in splits.items():
        (view / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in names))
    return view


def _fix_file_names(dataset: DetectionDataset) -> DetectionDataset:
    """Records whose ``<filename>`` names no file get ``<xml stem>.jpg`` (a few real XMLs are off)."""
    for record in dataset.records:
        if not dataset.image_path(record).is_file():
            stem = Path(record.extra.get("source", record.file_name)).stem
            record.file_name = f"{stem}.jpg"
    return dataset


def load_racoon(
    *,
    data_path: str | Path | None = None,
    download: bool = False,
    num_images: int | None = None,
    seed: int = 0,
) -> tuple[DetectionDataset, DetectionDataset]:
    """``(train, val)`` racoon datasets, read by the VOC reader.

    Args:
        data_path: a VOC or datitran-layout folder; ``None`` = the built-in data.
        download: fetch the real dataset (``detseg.data.download``, needs internet once).
        num_images: size of the built-in dataset (default 200, 16 in smoke mode).
        seed: seed of the built-in dataset.
    Raises:
        UserError: a missing or foreign folder; offline download (naming the URL, where to put the
            archive and the built-in alternative).
    """
    if data_path is not None and download:
        raise UserError("--data-path and --download both given", fix="pass one of them")
    if download:
        from detseg.data.download import download as fetch

        data_path = fetch("racoon")
    if data_path is None:
        folder = recipes.ensure("racoon", seed=seed, num_images=num_images)
    else:
        if not Path(data_path).is_dir():
            raise UserError(
                "--data-path: no such folder",
                path=data_path,
                fix="check the path, or leave --data-path out to use the built-in data",
            )
        folder = voc_view(Path(data_path))
    train, val = (
        _fix_file_names(voc.read(folder, split=split, classes=CLASSES))
        for split in ("train", "val")
    )
    if not len(train) or not len(val):
        raise UserError(
            "the racoon dataset has an empty train or val split",
            path=folder,
            fix="check ImageSets/Main/train.txt and val.txt",
        )
    return train, val


def load_image(dataset: DetectionDataset, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` (RGB uint8 [H, W, 3]) and its raccoon boxes (float32 [N, 4] xyxy)."""
    record = dataset.records[index]
    return read_image(dataset.image_path(record)), record.boxes.astype(np.float32)


def ensure_folder(path: Path) -> Path:
    """``path`` created (with parents); returns it."""
    os.makedirs(path, exist_ok=True)
    return Path(path)
