"""Convert a detection dataset between formats: ``coco <-> yolo <-> voc <-> csv``, ``pennfudan -> *``.

Class ids are handled in one place: every reader maps its file convention (COCO category ids, YOLO
ids, VOC / CSV names) to contiguous labels ``0..C-1`` with ``dataset.classes``; every writer maps
them back. COCO category ids survive a COCO -> COCO trip (``dataset.category_ids``); from any other
source they become ``1..C``. Images are decoded and re-encoded by the writer (JPEG quality 95);
a file name is reduced to its base name unless two images would then collide, in which case the
folder is kept in the name (``airplane/image_0001.jpg`` -> ``airplane_image_0001.jpg``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from detseg.data.formats import FORMATS, coco, csvboxes, pennfudan, voc, yolo
from detseg.data.imageio import read_image
from detseg.data.types import DetectionDataset, DetectionRecord
from detseg.errors import UserError

DETECTION_TARGETS = ("coco", "yolo", "voc", "csv", "pennfudan")


def output_names(records: list[DetectionRecord]) -> list[str]:
    """Base names, or the relative path flattened with ``_`` where base names would collide."""
    bases = [Path(r.file_name).name for r in records]
    counts = Counter(bases)
    return [
        base if counts[base] == 1 else r.file_name.replace("/", "_").replace("\\", "_")
        for base, r in zip(bases, records)
    ]


def samples(dataset: DetectionDataset) -> Iterator[tuple[DetectionRecord, np.ndarray]]:
    """``(record renamed for the target, RGB image)`` for every record, images read lazily."""
    for record, name in zip(dataset.records, output_names(dataset.records)):
        yield replace(record, file_name=name), read_image(dataset.image_path(record))


def coco_json_path(dst: Path) -> Path:
    """``dst`` if it names a ``.json`` file, else Roboflow's ``dst/_annotations.coco.json``."""
    return dst if dst.suffix == ".json" else dst / "_annotations.coco.json"


def _check_boxes(dataset: DetectionDataset, src: Path, src_format: str) -> None:
    """A UserError at the first box that is not finite or has no area (``x2 <= x1`` or
    ``y2 <= y1``): written as is, it would make a broken file in the target format."""
    for record in dataset.records:
        boxes = np.asarray(record.boxes, dtype=np.float64).reshape(-1, 4)
        bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] <= boxes[:, 0])
        bad |= boxes[:, 3] <= boxes[:, 1]
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            lines = record.extra.get("lines")
            raise UserError(
                f"box {index} of {record.file_name} is empty, inverted or not finite "
                f"(x1, y1, x2, y2 = {[round(float(v), 2) for v in boxes[index]]})",
                path=record.extra.get("source", src),
                line=lines[index] if lines and index < len(lines) else None,
                fix=f"correct it; 'detseg data validate {src} --format {src_format}' lists every "
                "such problem",
            )


def convert(
    src: str | Path,
    src_format: str,
    dst: str | Path,
    dst_format: str,
    *,
    split: str | None = None,
) -> Path:
    """Read ``src`` as ``src_format`` and write it to ``dst`` as ``dst_format``.

    Args:
        src: what the source reader takes (COCO JSON, YOLO ``data.yaml``, VOC / CSV / PennFudan folder).
        dst: COCO: a ``.json`` path or a folder (``_annotations.coco.json`` + images inside);
            others: the dataset folder to create.
        split: source split (YOLO ``train`` / ``val`` / ``test``, VOC ``ImageSets/Main`` list, COCO
            ``annotations/instances_<split>.json`` of a dataset folder), also
            the YOLO target split; default ``train`` for YOLO, everything otherwise.
    Returns:
        what the target reader takes (JSON path, ``data.yaml``, or the folder).
    Raises:
        UserError: unknown or non-detection formats; a box with no area; PennFudan target without
            masks.
    """
    for name in (src_format, dst_format):
        if name not in FORMATS or FORMATS[name].kind != "detection":
            detection = [k for k, v in FORMATS.items() if v.kind == "detection"]
            raise UserError(f"cannot convert format {name!r}", fix=f"use one of {detection}")
    src, dst = Path(src), Path(dst)
    reader = FORMATS[src_format].read
    dataset = (
        reader(src, split=split) if split and src_format in ("yolo", "voc", "coco") else reader(src)
    )
    _check_boxes(dataset, src, src_format)
    if dst_format == "pennfudan" and any(r.segmentations is None for r in dataset.records):
        raise UserError(
            "PennFudan needs instance masks and the source has none",
            path=src,
            fix="convert to coco, yolo, voc or csv instead",
        )
    if dst_format == "coco":
        out_json = coco_json_path(dst)
        category_ids = dataset.category_ids if src_format == "coco" else None
        return _all_or_nothing(
            out_json.parent,
            lambda folder: coco.write(
                folder / out_json.name,
                samples(dataset),
                dataset.classes,
                image_dir=folder,
                category_ids=category_ids,
            ),
        )
    if dst_format == "yolo":
        return _all_or_nothing(
            dst,
            lambda folder: yolo.write(
                folder, samples(dataset), dataset.classes, split=split or "train"
            ),
        )
    if dst_format == "voc":
        return _all_or_nothing(dst, lambda f: voc.write(f, samples(dataset), dataset.classes))
    if dst_format == "csv":
        return _all_or_nothing(dst, lambda f: csvboxes.write(f, samples(dataset), dataset.classes))
    return _all_or_nothing(dst, lambda folder: pennfudan.write(folder, samples(dataset)))


def _all_or_nothing(folder: Path, write: Callable[[Path], Path]) -> Path:
    """``write(folder)``; when ``folder`` does not exist yet, into a hidden sibling renamed to it at the
    end, so that a failure half-way (a corrupt image) leaves nothing behind. Into an existing folder
    it writes in place."""
    if folder.exists():
        return write(folder)
    missing = [p for p in folder.parents if not p.exists()]
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.parent / f".{folder.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        out = Path(write(partial)).resolve()
        inside = (
            out.relative_to(partial.resolve()) if out.is_relative_to(partial.resolve()) else None
        )
        os.replace(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        for parent in missing:  # the folders made for it, innermost first
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise
    return out if inside is None else folder / inside
