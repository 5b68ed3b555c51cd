"""YOLO txt labels in the Roboflow "YOLOv5 / YOLOv7 PyTorch" export layout::

    root/data.yaml            train: ../train/images  val: ../valid/images  test: ../test/images
                              nc: 2  names: ['cat', 'dog']
    root/train/images/*.jpg
    root/train/labels/*.txt   one line per object: ``class cx cy w h``, normalised to [0, 1]
    root/valid/...  root/test/...

A label line with ``2k + 1`` numbers, ``k >= 3`` (``class x1 y1 x2 y2 ... xk yk``) is a YOLO
segmentation polygon (normalised); its box is the polygon's extent and the polygon (in pixels) is kept
in ``record.segmentations``. An image without a label file is a background image (no objects).
Class ids are YOLO's ``0..nc-1`` = our labels, unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from detseg.boxes import box_convert
from detseg.data.formats._common import Problems, collector, image_size, list_images
from detseg.data.imageio import write_image
from detseg.data.types import DetectionDataset, DetectionRecord
from detseg.errors import UserError

SPLIT_FOLDERS = {"train": "train", "val": "valid", "valid": "valid", "test": "test"}


def load_data_yaml(data_yaml: Path) -> dict[str, Any]:
    """Parse ``data.yaml``; ``names`` may be a list or ``{id: name}``. Raises :class:`UserError`."""
    if not data_yaml.is_file():
        raise UserError("data.yaml not found", path=data_yaml, fix="pass the dataset's data.yaml")
    try:
        config = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise UserError(
            f"malformed YAML ({getattr(err, 'problem', err)})",
            path=data_yaml,
            line=None if mark is None else mark.line + 1,
            fix="fix the YAML syntax",
        ) from err
    if not isinstance(config, dict) or "names" not in config:
        raise UserError("data.yaml has no 'names' list", path=data_yaml, fix="add names: [...]")
    names = config["names"]
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    config["names"] = [str(n) for n in names]
    if "nc" in config and int(config["nc"]) != len(config["names"]):
        raise UserError(
            f"nc={config['nc']} but {len(config['names'])} names",
            path=data_yaml,
            fix="make nc equal to the number of names",
        )
    return config


def split_image_dir(data_yaml: Path, config: dict[str, Any], split: str) -> Path:
    """The images folder of ``split``: the yaml entry resolved like Roboflow / Ultralytics do
    (``path:`` if given, else relative to the yaml; Roboflow's ``../train/images`` also tried
    without its ``../``), falling back to ``<root>/<split folder>/images``."""
    root = data_yaml.parent
    key = "val" if split in ("val", "valid") else split
    folder = SPLIT_FOLDERS.get(split)
    if folder is None:
        raise UserError(f"unknown split {split!r}", fix=f"use one of {sorted(SPLIT_FOLDERS)}")
    candidates = []
    entry = config.get(key)
    if isinstance(entry, str):
        base = root / config["path"] if isinstance(config.get("path"), str) else root
        candidates += [base / entry, root / entry.removeprefix("../"), root / entry]
    candidates.append(root / folder / "images")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[-1]


def parse_label_file(
    label_path: Path, height: int, width: int, num_classes: int, report: Problems
) -> tuple[np.ndarray, np.ndarray, list[Any] | None, list[int]]:
    """One label file -> ``(boxes xyxy [N, 4] px, labels [N], polygons or None, line numbers [N])``."""
    boxes, labels, polygons, lines = [], [], [], []
    any_polygon = False
    for number, text in enumerate(label_path.read_text().splitlines(), start=1):
        tokens = text.split()
        if not tokens:
            continue
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            report.error(f"not a number in YOLO line {text.strip()!r}", label_path, number)
            continue
        if len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0):
            report.error(
                f"{len(values)} numbers; expected 'class cx cy w h' (5) or a polygon "
                "'class x1 y1 ... xk yk' (k >= 3)",
                label_path,
                number,
            )
            continue
        if not np.isfinite(values).all():
            report.error(f"non-finite value in YOLO line {text.strip()!r}", label_path, number)
            continue
        class_id = values[0]
        if class_id != int(class_id) or not 0 <= class_id < num_classes:
            report.error(
                f"class id {tokens[0]} out of range 0..{num_classes - 1}", label_path, number
            )
            continue
        coords = np.array(values[1:], dtype=np.float64)
        if len(values) == 5:
            xyxy = box_convert(coords, "cxcywh", "xyxy") * [width, height, width, height]
            polygons.append([])
        else:
            points = coords.reshape(-1, 2) * [width, height]
            xyxy = np.concatenate([points.min(axis=0), points.max(axis=0)])
            polygons.append([points.reshape(-1).tolist()])
            any_polygon = True
        boxes.append(xyxy)
        labels.append(int(class_id))
        lines.append(number)
    return (
        np.array(boxes, dtype=np.float32).reshape(-1, 4),
        np.array(labels, dtype=np.int64),
        polygons if any_polygon else None,
        lines,
    )


def read(
    data_yaml: str | Path, split: str = "train", *, problems: Problems | None = None
) -> DetectionDataset:
    """Read one split of a YOLO dataset.

    Args:
        data_yaml: the dataset's ``data.yaml`` (or its folder).
        split: ``"train"``, ``"val"`` (= Roboflow's ``valid/``) or ``"test"``.
        problems: collect problems instead of raising (validator).
    Returns:
        :class:`DetectionDataset` (``format="yolo"``), ``file_name`` relative to the split's image
        folder (= ``image_root``); ``extra["source"]`` = label file, ``extra["lines"]`` = line per box.
    """
    data_yaml = Path(data_yaml)
    if data_yaml.is_dir():
        data_yaml = data_yaml / "data.yaml"
    report = collector(problems)
    config = load_data_yaml(data_yaml)
    classes = config["names"]
    image_dir = split_image_dir(data_yaml, config, split)
    if not image_dir.is_dir():
        raise UserError(
            f"image folder of split {split!r} not found",
            path=image_dir,
            fix="check the train/val/test entries of data.yaml",
        )
    label_dir = image_dir.parent / "labels"
    records = []
    for image_id, image_path in enumerate(list_images(image_dir)):
        try:
            height, width = image_size(image_path)
        except UserError as err:
            report.error(err.what, image_path)
            continue
        label_path = label_dir / f"{image_path.stem}.txt"
        if label_path.is_file():
            boxes, labels, polygons, lines = parse_label_file(
                label_path, height, width, len(classes), report
            )
        else:
            boxes, labels, polygons, lines = np.zeros((0, 4)), np.zeros(0), None, []
        records.append(
            DetectionRecord(
                image_id=image_id,
                file_name=image_path.name,
                height=height,
                width=width,
                boxes=boxes,
                labels=labels,
                segmentations=polygons,
                extra={"source": str(label_path), "lines": lines},
            )
        )
    return DetectionDataset(
        root=data_yaml.parent, classes=classes, records=records, image_root=image_dir, format="yolo"
    )


def format_line(label: int, values: Iterable[float]) -> str:
    """``class v1 v2 ...`` with 6 decimals (normalised values, so the error is < 5e-7)."""
    return " ".join([str(int(label))] + [f"{v:.6f}" for v in values])


def label_lines(record: DetectionRecord, *, polygons: bool = False) -> list[str]:
    """A record -> YOLO label lines (boxes, or polygons where ``polygons`` and the record has them)."""
    scale = np.array([record.width, record.height] * 2, dtype=np.float64)
    cxcywh = box_convert(record.boxes.astype(np.float64), "xyxy", "cxcywh") / scale
    lines = []
    for index, label in enumerate(record.labels):
        segmentation = None if record.segmentations is None else record.segmentations[index]
        if (
            polygons
            and isinstance(segmentation, list)
            and segmentation
            and len(segmentation[0]) >= 6
        ):
            points = np.array(segmentation[0], dtype=np.float64).reshape(-1, 2)
            lines.append(format_line(label, (points / scale[:2]).reshape(-1)))
        else:
            lines.append(format_line(label, cxcywh[index]))
    return lines


def write_data_yaml(out_root: Path, classes: list[str]) -> Path:
    """Roboflow's ``data.yaml`` (paths relative as Roboflow writes them)."""
    config = {
        "train": "../train/images",
        "val": "../valid/images",
        "test": "../test/images",
        "nc": len(classes),
        "names": list(classes),
    }
    path = out_root / "data.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, default_flow_style=None))
    return path


def write(
    out_root: str | Path,
    samples: Iterable[tuple[DetectionRecord, np.ndarray | None]],
    classes: list[str],
    *,
    split: str = "train",
    polygons: bool = False,
) -> Path:
    """Write one split (call again for the others; ``data.yaml`` is rewritten each time).

    Args:
        out_root: dataset root (``data.yaml`` goes here).
        samples: ``(record, image)``; the image (RGB uint8) is written to
            ``<split>/images/<basename of file_name>``, ``None`` = already there.
        classes: names, index = label = YOLO class id.
        split: ``"train"``, ``"val"`` / ``"valid"`` or ``"test"``.
        polygons: write polygon segmentations as YOLO-seg lines instead of boxes.
    Returns:
        path of ``data.yaml``.
    """
    out_root = Path(out_root)
    folder = SPLIT_FOLDERS.get(split)
    if folder is None:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLIT_FOLDERS)}")
    image_dir = out_root / folder / "images"
    label_dir = out_root / folder / "labels"
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    for record, image in samples:
        name = Path(record.file_name).name
        if image is not None:
            write_image(image_dir / name, image)
        lines = label_lines(record, polygons=polygons)
        (label_dir / f"{Path(name).stem}.txt").write_text("".join(f"{line}\n" for line in lines))
    return write_data_yaml(out_root, classes)
