"""COCO instances JSON (``instances_*.json``, Roboflow ``_annotations.coco.json``).

File convention -> memory convention, in this module only:

- ``bbox`` is ``[x, y, w, h]`` (top-left corner + size, absolute pixels, continuous coordinates)
  -> float32 xyxy via :func:`detseg.boxes.box_convert`.
- ``category_id`` (any ints, e.g. COCO's 1..90 with gaps) -> contiguous labels ``0..C-1`` in order of
  increasing id; the ids are kept in ``DetectionDataset.category_ids`` for writing back.
- ``segmentation`` (polygons, uncompressed RLE for ``iscrowd=1``, or compressed RLE) is kept as is in
  ``record.segmentations`` (``[]`` for an annotation without one); ``iscrowd`` in ``record.iscrowd``.
- ``area`` written = mask area when a mask exists, else box area (what COCOeval's area ranges use).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from detseg.boxes import box_convert
from detseg.data.formats._common import Problems, collector
from detseg.data.formats.maskpng import mask_to_rle, segmentation_area
from detseg.data.imageio import write_image
from detseg.data.types import DetectionDataset, DetectionRecord
from detseg.errors import UserError

_IMAGE_KEYS = ("id", "file_name", "height", "width")


def load_json(path: Path) -> Any:
    """``json.load`` with a one-line :class:`UserError` (file:line) on malformed JSON."""
    if not path.is_file():
        raise UserError("annotation file not found", path=path, fix="check the path")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(
            f"malformed JSON: {err.msg} (column {err.colno})",
            path=path,
            line=err.lineno,
            fix="repair or re-export the annotation file",
        ) from err
    except UnicodeDecodeError as err:
        raise UserError(
            "not a UTF-8 text file (a COCO file is JSON text)",
            path=path,
            fix="pass the annotation JSON, not an image or archive",
        ) from err


def guess_image_root(json_path: Path, first_file: str | None) -> Path:
    """Where ``file_name`` is relative to: the JSON's folder (Roboflow), ``images/`` beside it,
    or COCO's ``annotations/instances_val2017.json`` -> ``../val2017``. Falls back to the JSON's folder."""
    parent = json_path.parent
    stem = json_path.stem.split("_", 1)[-1]  # instances_val2017 -> val2017
    candidates = [parent, parent / "images", parent.parent / stem, parent.parent / "images"]
    if first_file is not None:
        for candidate in candidates:
            if (candidate / first_file).is_file():
                return candidate
    return parent


def annotation_files(folder: str | Path) -> dict[str, Path]:
    """The COCO layout's ``annotations/instances_<split>.json`` files of ``folder``, by split name."""
    folder = Path(folder)
    files = sorted(folder.glob("annotations/instances_*.json")) or sorted(
        folder.glob("instances_*.json")
    )
    return {path.stem.split("_", 1)[1]: path for path in files}


def resolve_json(path: str | Path, split: str | None = None) -> Path:
    """``path`` itself when it is a file; for a dataset folder, its ``instances_<split>.json``.

    Without ``split`` a folder must hold exactly one annotation file.

    Raises:
        UserError: no annotation file, no file for ``split``, or several and no ``split``.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    files = annotation_files(path)
    if split is not None:
        if split in files:
            return files[split]
        raise UserError(
            f"no annotations/instances_{split}.json in this folder",
            path=path,
            fix=f"use --split with one of {sorted(files)}" if files else "pass the JSON file",
        )
    if len(files) == 1:
        return next(iter(files.values()))
    if not files:
        raise UserError(
            "no COCO annotation file (annotations/instances_*.json) in this folder",
            path=path,
            fix="pass the JSON file itself",
        )
    raise UserError(
        f"several COCO annotation files in this folder ({', '.join(sorted(files))})",
        path=path,
        fix="pass --split NAME or the JSON file itself",
    )


def read(
    json_path: str | Path,
    image_root: str | Path | None = None,
    *,
    split: str | None = None,
    problems: Problems | None = None,
) -> DetectionDataset:
    """Read a COCO instances file.

    Args:
        json_path: the JSON file, or a dataset folder in COCO layout (see :func:`resolve_json`).
        split: with a folder, which ``annotations/instances_<split>.json`` to read.
        image_root: folder of the images; default guessed by :func:`guess_image_root`.
        problems: collect problems instead of raising on the first (used by the validator).
    Returns:
        A :class:`DetectionDataset` (``format="coco"``), records in the file's image order, each with
        ``extra["ann_ids"]`` and ``extra["source"]`` (the JSON path).
    Raises:
        UserError: malformed JSON, missing keys, unknown image / category ids, bad bbox (strict mode).
    """
    json_path = resolve_json(json_path, split)
    report = collector(problems)
    data = load_json(json_path)
    if not isinstance(data, dict) or "images" not in data or "categories" not in data:
        raise UserError(
            "not a COCO instances file (needs 'images' and 'categories' keys)",
            path=json_path,
            fix="pass a COCO instances JSON such as instances_val2017.json",
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise UserError(
                f"'{key}' must be a list, got {type(data[key]).__name__}",
                path=json_path,
                fix="pass a COCO instances JSON such as instances_val2017.json",
            )
    for index, category in enumerate(data["categories"]):
        if not (
            isinstance(category, dict)
            and isinstance(category.get("id"), int)
            and "name" in category
        ):
            raise UserError(
                f"categories[{index}] needs an integer 'id' and a 'name', got {category!r}",
                path=json_path,
                fix="repair the categories list",
            )
    categories = sorted(data["categories"], key=lambda c: int(c["id"]))
    category_ids = [int(c["id"]) for c in categories]
    label_of = {cid: index for index, cid in enumerate(category_ids)}
    if len(label_of) != len(category_ids):
        report.error("duplicate category ids", json_path)

    images: dict[int, dict[str, Any]] = {}
    for index, image in enumerate(data["images"]):
        missing = [k for k in _IMAGE_KEYS if not isinstance(image, dict) or k not in image]
        if missing:
            report.error(f"images[{index}] lacks {missing}", json_path)
            continue
        image_id = int(image["id"])
        if image_id in images:
            report.error(f"duplicate image id {image_id}", json_path)
            continue
        images[image_id] = image
    per_image: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in images}
    seen_ann_ids: set[int] = set()
    for ann in data.get("annotations", []):
        ann_id = ann.get("id")
        where = f"annotation id={ann_id}"
        if ann_id in seen_ann_ids:
            report.error(f"{where}: duplicate annotation id", json_path)
            continue
        seen_ann_ids.add(ann_id)
        if ann.get("image_id") not in per_image:
            report.error(f"{where}: unknown image_id {ann.get('image_id')}", json_path)
            continue
        if ann.get("category_id") not in label_of:
            report.error(
                f"{where}: category_id {ann.get('category_id')} not in categories {category_ids}",
                json_path,
            )
            continue
        bbox = ann.get("bbox")
        if not (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, (int, float)) and np.isfinite(v) for v in bbox)
        ):
            report.error(f"{where}: bbox must be [x, y, w, h], got {bbox!r}", json_path)
            continue
        per_image[ann["image_id"]].append(ann)

    records = []
    for image_id, image in images.items():
        anns = per_image[image_id]
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        has_masks = any(a.get("segmentation") for a in anns)
        records.append(
            DetectionRecord(
                image_id=image_id,
                file_name=str(image["file_name"]),
                height=int(image["height"]),
                width=int(image["width"]),
                boxes=box_convert(xywh, "xywh", "xyxy"),
                labels=np.array([label_of[a["category_id"]] for a in anns], dtype=np.int64),
                iscrowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
                segmentations=[a.get("segmentation") or [] for a in anns] if has_masks else None,
                extra={"ann_ids": [a["id"] for a in anns], "source": str(json_path)},
            )
        )
    first = records[0].file_name if records else None
    root = json_path.parent
    return DetectionDataset(
        root=root,
        classes=[str(c["name"]) for c in categories],
        records=records,
        image_root=Path(image_root)
        if image_root is not None
        else guess_image_root(json_path, first),
        category_ids=category_ids,
        format="coco",
    )


def _segmentation_for_json(segmentation: Any) -> Any:
    """A record's segmentation -> JSON-ready COCO segmentation (bool arrays become RLE)."""
    if isinstance(segmentation, np.ndarray):
        return mask_to_rle(segmentation)
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), bytes):
        return {
            "size": list(segmentation["size"]),
            "counts": segmentation["counts"].decode("ascii"),
        }
    return segmentation


def _build(
    records: Iterable[DetectionRecord], classes: list[str], category_ids: list[int] | None
) -> dict[str, Any]:
    if category_ids is None:
        category_ids = list(range(1, len(classes) + 1))
    if len(category_ids) != len(classes):
        raise ValueError(f"{len(category_ids)} category ids for {len(classes)} classes")
    out: dict[str, Any] = {
        "info": {"description": "written by detseg.data.formats.coco"},
        "licenses": [],
        "images": [],
        "annotations": [],
        "categories": [
            {"id": int(cid), "name": name, "supercategory": "none"}
            for cid, name in zip(category_ids, classes)
        ],
    }
    ann_id = 1
    for record in records:
        out["images"].append(
            {
                "id": int(record.image_id),
                "file_name": record.file_name,
                "height": int(record.height),
                "width": int(record.width),
            }
        )
        xywh = box_convert(record.boxes.astype(np.float64), "xyxy", "xywh")
        for index in range(len(record.labels)):
            bbox = [round(float(v), 4) for v in xywh[index]]
            ann: dict[str, Any] = {
                "id": ann_id,
                "image_id": int(record.image_id),
                "category_id": int(category_ids[int(record.labels[index])]),
                "bbox": bbox,
                "area": round(bbox[2] * bbox[3], 4),
                "iscrowd": int(bool(record.iscrowd[index])),
                "segmentation": [],
            }
            segmentation = None if record.segmentations is None else record.segmentations[index]
            if segmentation is not None and len(segmentation):
                ann["segmentation"] = _segmentation_for_json(segmentation)
                ann["area"] = segmentation_area(ann["segmentation"], record.height, record.width)
            out["annotations"].append(ann)
            ann_id += 1
    return out


def to_dict(dataset: DetectionDataset) -> dict[str, Any]:
    """A :class:`DetectionDataset` -> COCO instances dict (category ids kept when the dataset has them,
    else ``1..C``); annotation ids are renumbered ``1..``."""
    return _build(dataset.records, dataset.classes, dataset.category_ids)


def write(
    out_json: str | Path,
    samples: Iterable[tuple[DetectionRecord, np.ndarray | None]],
    classes: list[str],
    *,
    image_dir: str | Path | None = None,
    category_ids: list[int] | None = None,
) -> Path:
    """Write a COCO instances JSON (and the images).

    Args:
        out_json: the JSON file to write (parents created).
        samples: ``(record, image)`` pairs; ``image`` is RGB uint8 [H, W, 3] written to
            ``image_dir / record.file_name``, or ``None`` when the file is already there.
            ``record.segmentations`` items may be polygons, RLE dicts or bool [H, W] arrays (-> RLE).
        classes: class names, index = record label.
        image_dir: folder of the images; default the JSON's folder (Roboflow layout).
        category_ids: COCO id per class; default ``1..C``.
    Returns:
        ``out_json`` as a Path.
    """
    out_json = Path(out_json)
    image_dir = out_json.parent if image_dir is None else Path(image_dir)
    records = []
    for record, image in samples:
        if image is not None:
            write_image(image_dir / record.file_name, image)
        records.append(record)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(_build(records, classes, category_ids)))
    return out_json
