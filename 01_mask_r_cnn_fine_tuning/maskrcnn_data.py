"""Where this lesson's images come from: built-in data, the real PennFudanPed, or any COCO JSON.

Every source ends as a :class:`~detseg.data.types.DetectionDataset` read by the core's readers, so the
built-in ``pedestrians`` (written in PennFudan's layout) and the real download go through the *same*
:func:`detseg.data.formats.pennfudan.read`: one binary mask per instance id of ``PedMasks/*_mask.png``,
box = the mask's extent, label "person".

==============================  ===========================================================
``--data`` / ``--data-path``    what is read
==============================  ===========================================================
``--data pedestrians``          built-in Penn-Fudan stand-in (``data/pedestrians-0/PennFudanPed``)
``--data shapes``               built-in COCO-layout set, several classes, train / val JSON
``--data pennfudan``            the real PennFudanPed.zip (downloaded once, MD5 checked)
``--data-path DIR``             a PennFudan folder (``PNGImages/`` + ``PedMasks/``), or a folder
                                with ``annotations/instances_{train,val}.json``
``--data-path FILE.json``       any COCO instances JSON (images found next to it or in
                                ``images/``); split into train / val with ``--val-fraction``
==============================  ===========================================================
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

from torch.utils.data import Dataset

from detseg.data import download, recipes
from detseg.data.copy_paste import CopyPaste
from detseg.data.formats import coco, pennfudan
from detseg.data.samples import SampleTransform, detection_sample
from detseg.data.torch_datasets import DetectionTorchDataset, split_indices
from detseg.data.transforms import Compose, HorizontalFlip
from detseg.data.types import DetectionDataset
from detseg.errors import UserError

DATA_CHOICES = ("pedestrians", "shapes", "pennfudan")


@dataclass
class DataSplits:
    """Train and validation parts of one dataset (same ``classes`` / ``category_ids``).

    Attributes:
        train, val: datasets holding disjoint records.
        source: one line saying what was read (for logs and ``metrics.json``).
    """

    train: DetectionDataset
    val: DetectionDataset
    source: str

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def num_classes(self) -> int:
        """Object classes + 1 (background), as torchvision's detectors count them."""
        return len(self.train.classes) + 1


def split_dataset(dataset: DetectionDataset, *, val_fraction: float, seed: int) -> DataSplits:
    """Cut one dataset into train / val records with :func:`detseg.data.torch_datasets.split_indices`."""
    if len(dataset) < 2:
        raise UserError(
            f"the dataset has {len(dataset)} image(s); need 2 or more to split into train and val",
            path=dataset.root,
            fix="add images, or give a folder with separate train / val annotations",
        )
    train_idx, val_idx = split_indices(len(dataset), val_fraction=val_fraction, seed=seed)
    pick = lambda idx: replace(dataset, records=[dataset.records[i] for i in idx])  # noqa: E731
    return DataSplits(pick(train_idx), pick(val_idx), f"{dataset.format}: {dataset.root}")


def _read_path(path: Path, *, val_fraction: float, seed: int) -> DataSplits:
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise UserError(
                "--data-path file is not a COCO .json",
                path=path,
                fix="pass a COCO instances JSON or a PennFudan folder",
            )
        return split_dataset(coco.read(path), val_fraction=val_fraction, seed=seed)
    train_json = path / "annotations" / "instances_train.json"
    val_json = path / "annotations" / "instances_val.json"
    if train_json.is_file() and val_json.is_file():
        train, val = coco.read(train_json), coco.read(val_json)
        if train.classes != val.classes:
            raise UserError(
                "train and val annotations list different categories",
                path=val_json,
                fix="export both splits with the same categories",
            )
        return DataSplits(train, val, f"coco: {path}")
    root = pennfudan.dataset_root(path)
    if (root / "PNGImages").is_dir():
        return split_dataset(pennfudan.read(root), val_fraction=val_fraction, seed=seed)
    raise UserError(
        "--data-path is neither a PennFudan folder (PNGImages/, PedMasks/) nor a COCO layout "
        "(annotations/instances_train.json and instances_val.json)",
        path=path,
        fix="point it at PennFudanPed/, a COCO JSON file, or a folder holding annotations/",
    )


def load_splits(
    data: str = "pedestrians",
    data_path: str | Path | None = None,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    num_images: int | None = None,
    data_seed: int = 0,
) -> DataSplits:
    """Read the dataset chosen by ``--data`` / ``--data-path`` and split it into train / val.

    Args:
        data: one of :data:`DATA_CHOICES` (ignored when ``data_path`` is given).
        data_path: a PennFudan folder, a COCO JSON, or a folder with ``annotations/``.
        val_fraction: share of images held out when the source has no split of its own.
        seed: seed of that split.
        num_images: size of a built-in dataset (default: the recipe's, 16 in smoke mode).
        data_seed: seed a built-in dataset is drawn with (0 for training; another seed gives
            fresh scenes that no model trained on seed 0 has seen, e.g. for ``evaluate.py``).
    Raises:
        UserError: an unknown name, an unreadable path, a dataset too small to split; offline, the
            real download names its URL and the built-in stand-in.
    """
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in (0, 1), got {val_fraction}", fix="e.g. 0.2")
    if data_path is not None:
        return _read_path(Path(data_path), val_fraction=val_fraction, seed=seed)
    if data == "pedestrians":
        folder = recipes.ensure("pedestrians", seed=data_seed, num_images=num_images)
        dataset = pennfudan.read(folder / "PennFudanPed")
        return split_dataset(dataset, val_fraction=val_fraction, seed=seed)
    if data == "shapes":
        folder = recipes.ensure("shapes", seed=data_seed, num_images=num_images)
        return _read_path(folder, val_fraction=val_fraction, seed=seed)
    if data == "pennfudan":
        folder = download.download("pennfudan")
        return split_dataset(pennfudan.read(folder), val_fraction=val_fraction, seed=seed)
    raise UserError(f"unknown --data {data!r}", fix=f"use one of {', '.join(DATA_CHOICES)}")


def torch_datasets(
    splits: DataSplits,
    *,
    seed: int = 0,
    hflip: bool = True,
    copy_paste: float = 0.0,
    copy_paste_depth: str = "box_bottom",
) -> tuple[Dataset, Dataset]:
    """torchvision-style datasets: train with augmentation, val as it is.

    Train: with probability ``copy_paste``, 1-2 people (objects) of another *training* image pasted
    in (:class:`detseg.data.copy_paste.CopyPaste`, depth order ``copy_paste_depth``), then a random
    horizontal flip (``hflip``).
    Items are ``(image float32 [3, H, W] in [0, 1], target)`` with ``boxes`` xyxy pixels, ``labels``
    ``1..C``, ``masks`` uint8 ``[N, H, W]`` (see :class:`~detseg.data.torch_datasets.DetectionTorchDataset`).
    Resizing and normalisation are the model's own (``GeneralizedRCNNTransform``).
    """
    steps: list[SampleTransform] = []
    if copy_paste > 0:
        source = functools.partial(detection_sample, splits.train)
        steps.append(CopyPaste(source, len(splits.train), p=copy_paste, depth=copy_paste_depth))
    if hflip:
        steps.append(HorizontalFlip(0.5))
    train = DetectionTorchDataset(splits.train, Compose(steps) if steps else None, seed=seed)
    val = DetectionTorchDataset(splits.val, None, seed=seed)
    return train, val
