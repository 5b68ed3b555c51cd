"""TGS Salt Identification (Kaggle 2018)::

    root/train/images/<id>.png    101 x 101 seismic slices (grey, often stored as 3 equal channels)
    root/train/masks/<id>.png     101 x 101 grey, 0 = sediment, 255 = salt
    root/test/images/<id>.png     no masks
    root/depths.csv               id,z (depth in feet of every train and test image)
    root/train.csv                id,rle_mask (Kaggle RLE, see :func:`rle_decode`), optional

Classes ``["sediment", "salt"]``: mask values > 127 -> 1, else 0. When a mask PNG is missing the
RLE of ``train.csv`` is used. Test images load with an all-``ignore_index`` mask.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from detseg.data.formats._common import Problems, checked_size, collector, list_images, require_dir
from detseg.data.imageio import read_image, write_image
from detseg.data.types import SegmentationDataset, SegmentationRecord
from detseg.errors import UserError

CLASSES = ["sediment", "salt"]
IGNORE_INDEX = 255


def rle_encode(mask: np.ndarray) -> str:
    """Binary [H, W] -> Kaggle RLE: 1-based start / length pairs, pixels numbered top to bottom,
    then left to right (column-major). Empty mask -> ``""``."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F").astype(np.int8)
    edges = np.diff(np.concatenate([[0], flat, [0]]))
    starts = np.nonzero(edges == 1)[0]
    ends = np.nonzero(edges == -1)[0]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends))


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rle_encode` -> bool [H, W]. Raises ValueError on odd token count / overflow."""
    tokens = [int(t) for t in rle.split()]
    if len(tokens) % 2:
        raise ValueError("RLE needs start/length pairs")
    flat = np.zeros(shape[0] * shape[1], dtype=bool)
    for start, length in zip(tokens[0::2], tokens[1::2]):
        if start < 1 or start - 1 + length > flat.size:
            raise ValueError(f"run {start} {length} outside a {shape} image")
        flat[start - 1 : start - 1 + length] = True
    return flat.reshape(shape, order="F")


def _read_csv(path: Path, columns: tuple[str, str]) -> dict[str, str]:
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
            raise UserError(
                f"expected columns {columns}", path=path, line=1, fix="check the header"
            )
        return {row[columns[0]]: row[columns[1]] or "" for row in reader}


def read(
    root: str | Path, split: str = "train", *, problems: Problems | None = None
) -> SegmentationDataset:
    """Read ``split`` (``"train"`` or ``"test"``) of a TGS salt folder.

    Returns:
        :class:`SegmentationDataset` (``format="tgs"``); ``extra["depth"]`` (float or None) and, for
        images whose mask comes from ``train.csv``, ``extra["rle"]``.
    """
    root = Path(root)
    report = collector(problems)
    image_dir = require_dir(root / split / "images", "image folder", "expected train/images/")
    depths = _read_csv(root / "depths.csv", ("id", "z"))
    rles = _read_csv(root / "train.csv", ("id", "rle_mask")) if split == "train" else {}
    records = []
    for image_path in list_images(image_dir):
        stem = image_path.stem
        mask_path = root / split / "masks" / f"{stem}.png"
        extra: dict[str, object] = {"depth": float(depths[stem]) if stem in depths else None}
        mask_name = None
        if mask_path.is_file():
            mask_name = f"{split}/masks/{mask_path.name}"
        elif stem in rles:
            extra["rle"] = rles[stem]
        elif split == "train":
            report.error(
                "train image has neither a mask PNG nor a train.csv row",
                image_path,
                fix="restore train/masks/ or train.csv",
            )
            continue
        size = checked_size(image_path, report)
        if size is None:
            continue
        height, width = size
        records.append(
            SegmentationRecord(
                image_id=len(records),
                file_name=f"{split}/images/{image_path.name}",
                mask_name=mask_name,
                height=height,
                width=width,
                extra=extra,
            )
        )
    return SegmentationDataset(
        root=root,
        classes=list(CLASSES),
        records=records,
        loader=load_pair,
        ignore_index=IGNORE_INDEX,
        format="tgs",
    )


def load_pair(root: Path, record: SegmentationRecord) -> tuple[np.ndarray, np.ndarray]:
    """``(RGB uint8 [101, 101, 3], int64 [101, 101] in {0, 1})``; test images: all ``ignore_index``."""
    image = read_image(root / record.file_name)
    shape = (record.height, record.width)
    if record.mask_name is not None:
        mask = read_image(root / record.mask_name, grey=True) > 127
    elif "rle" in record.extra:
        try:
            mask = rle_decode(str(record.extra["rle"]), shape)
        except ValueError as err:
            raise UserError(
                f"bad RLE for {record.file_name}: {err}", path=root / "train.csv"
            ) from err
    else:
        return image, np.full(shape, IGNORE_INDEX, dtype=np.int64)
    return image, mask.astype(np.int64)


def write(
    root: str | Path,
    samples: Iterable[tuple[str, np.ndarray, np.ndarray | None]],
    *,
    split: str = "train",
    depths: dict[str, float] | None = None,
    write_csv: bool = True,
) -> Path:
    """Write ``(id, image uint8 [H, W(, 3)], mask [H, W] in {0, 1} or None)`` samples.

    Masks go to ``<split>/masks/<id>.png`` as 0 / 255; ``write_csv`` also writes ``train.csv``
    (RLE) for the train split; ``depths`` (``id -> z``) go to ``depths.csv`` (merged with an
    existing one). Returns ``root``.
    """
    root = Path(root)
    rows = []
    for stem, image, mask in samples:
        write_image(root / split / "images" / f"{stem}.png", image)
        if mask is not None:
            binary = np.asarray(mask) > 0
            write_image(root / split / "masks" / f"{stem}.png", binary.astype(np.uint8) * 255)
            rows.append((stem, rle_encode(binary)))
    if write_csv and split == "train":
        lines = ["id,rle_mask"] + [f"{stem},{rle}" for stem, rle in rows]
        (root / "train.csv").write_text("\n".join(lines) + "\n")
    if depths:
        merged = _read_csv(root / "depths.csv", ("id", "z"))
        merged.update({k: f"{v:g}" for k, v in depths.items()})
        lines = ["id,z"] + [f"{k},{v}" for k, v in merged.items()]
        (root / "depths.csv").write_text("\n".join(lines) + "\n")
    return root
