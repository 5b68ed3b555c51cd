"""CSV boxes in the PyImageSearch bounding-box-regression layout (Caltech-101 subset)::

    root/images/<class>/<filename>.jpg
    root/annotations/<class>.csv     rows, no header: filename,startX,startY,endX,endY,label

Coordinates are absolute pixels, xyxy, taken as continuous (as the lessons use them: divided by the
image size). The image of a row lives in ``images/<label>/``; rows with the same label and filename
are one image with several boxes. The layout has one class per image folder, so the writer stores
an image holding several classes once per class, each copy with that class's boxes, and cannot
store an image without objects.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detseg.data.formats._common import Problems, collector, image_size, require_dir
from detseg.data.imageio import write_image
from detseg.data.types import DetectionDataset, DetectionRecord
from detseg.errors import UserError


@dataclass
class _Image:
    """Rows of one image gathered while reading."""

    source: Path
    boxes: list[list[float]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


def read_rows(csv_path: Path, report: Problems) -> list[tuple[int, str, list[float], str]]:
    """Rows of one CSV -> ``(line, filename, [x1, y1, x2, y2], label)``; bad rows are reported."""
    rows = []
    with csv_path.open(newline="") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 6:
                report.error(
                    f"{len(row)} columns; expected filename,startX,startY,endX,endY,label",
                    csv_path,
                    line,
                )
                continue
            try:
                box = [float(v) for v in row[1:5]]
            except ValueError:
                report.error(f"non-numeric coordinate in {row[1:5]}", csv_path, line)
                continue
            rows.append((line, row[0].strip(), box, row[5].strip()))
    return rows


def read(
    root: str | Path, classes: list[str] | None = None, *, problems: Problems | None = None
) -> DetectionDataset:
    """Read every ``annotations/*.csv``.

    Args:
        classes: class names; default the sorted set of labels in the CSVs.
        problems: collect problems instead of raising (validator).
    Returns:
        :class:`DetectionDataset` (``format="csv"``), ``file_name = "<label>/<filename>"`` relative to
        ``root/images``; ``extra["source"]`` = CSV, ``extra["lines"]`` = row per box.
    """
    root = Path(root)
    report = collector(problems)
    ann_dir = require_dir(root / "annotations", "annotations folder", "expected root/annotations/")
    image_dir = root / "images"
    grouped: dict[str, _Image] = {}
    for csv_path in sorted(ann_dir.glob("*.csv")):
        for line, filename, box, label in read_rows(csv_path, report):
            entry = grouped.setdefault(f"{label}/{filename}", _Image(csv_path))
            entry.boxes.append(box)
            entry.names.append(label)
            entry.lines.append(line)
    if classes is None:
        classes = sorted({name for entry in grouped.values() for name in entry.names})
    label_of = {name: index for index, name in enumerate(classes)}
    records = []
    for key, entry in grouped.items():
        unknown = [name for name in entry.names if name not in label_of]
        if unknown:
            report.error(f"label {unknown[0]!r} not in {classes}", entry.source, entry.lines[0])
            continue
        try:
            height, width = image_size(image_dir / key)
        except UserError as err:
            report.error(f"{err.what} ({image_dir / key})", entry.source, entry.lines[0])
            continue
        records.append(
            DetectionRecord(
                image_id=len(records),
                file_name=key,
                height=height,
                width=width,
                boxes=np.array(entry.boxes, dtype=np.float32),
                labels=np.array([label_of[name] for name in entry.names], dtype=np.int64),
                extra={"source": str(entry.source), "lines": entry.lines},
            )
        )
    if not records and not report.items:
        raise UserError("no annotations found", path=ann_dir, fix="expected <class>.csv files")
    return DetectionDataset(
        root=root, classes=list(classes), records=records, image_root=image_dir, format="csv"
    )


def write(
    root: str | Path,
    samples: Iterable[tuple[DetectionRecord, np.ndarray | None]],
    classes: list[str],
) -> Path:
    """Write ``images/<class>/<basename>`` and ``annotations/<class>.csv`` (integers when the
    coordinates are whole, as in the original CSVs). Returns ``root``."""
    root = Path(root)
    rows: dict[str, list[str]] = {name: [] for name in classes}
    for record, image in samples:
        name = Path(record.file_name).name
        for label in sorted(set(int(v) for v in record.labels)):
            class_name = classes[label]
            if image is not None:
                write_image(root / "images" / class_name / name, image)
            for box in record.boxes[record.labels == label]:
                coords = ",".join(f"{v:g}" for v in box.astype(np.float64))
                rows[class_name].append(f"{name},{coords},{class_name}\n")
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for class_name, lines in rows.items():
        if lines:
            (root / "annotations" / f"{class_name}.csv").write_text("".join(lines))
    return root
