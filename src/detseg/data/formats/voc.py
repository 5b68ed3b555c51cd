"""Pascal VOC XML::

    root/JPEGImages/<stem>.jpg
    root/Annotations/<stem>.xml      <annotation><filename/><size><width/><height/><depth/></size>
                                     <object><name/><difficult/><bndbox><xmin/>..</bndbox></object>
    root/ImageSets/Main/<split>.txt  one stem per line (optional; all XMLs are read without a split)

**Coordinates.** VOC ``bndbox`` values are 1-based *pixel indices*, both corners inclusive: a box
covering the top-left pixel only is ``xmin=1, xmax=1``. In continuous 0-based coordinates (ours)
that pixel spans ``[0, 1)``, so ``x1 = xmin - 1``, ``x2 = xmax`` (same for y), as detectron2's VOC
reader does. The writer inverts this: ``xmin = round(x1) + 1``, ``xmax = round(x2)``.

Classes are the object names; by default the sorted set of names found (the 20 VOC classes are
alphabetical: :data:`VOC_CLASSES`). ``difficult`` and ``truncated`` go to ``record.extra``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from xml.parsers import expat

import numpy as np

from detseg.data.formats._common import Problems, collector, require_dir
from detseg.data.imageio import write_image
from detseg.data.types import DetectionDataset, DetectionRecord
from detseg.errors import UserError

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]  # fmt: skip


def parse_xml(path: Path) -> tuple[ET.Element, dict[int, int]]:
    """Parse an XML file keeping each element's line: ``(root, {id(element): line})``.

    Raises:
        UserError: malformed XML, with the line expat reports.
    """
    builder = ET.TreeBuilder()
    lines: dict[int, int] = {}
    parser = expat.ParserCreate()

    def start(tag: str, attrs: dict[str, str]) -> None:
        element = builder.start(tag, attrs)
        lines[id(element)] = parser.CurrentLineNumber

    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(path.read_bytes(), True)
    except expat.ExpatError as err:
        raise UserError(
            f"malformed XML: {expat.ErrorString(err.code)}",
            path=path,
            line=err.lineno,
            fix="repair or re-export the annotation",
        ) from err
    return builder.close(), lines


def _number(element: ET.Element | None, tag: str) -> float:
    child = None if element is None else element.find(tag)
    if child is None or child.text is None:
        raise ValueError(f"missing <{tag}>")
    return float(child.text.strip())


def read_annotation(
    xml_path: Path, report: Problems
) -> tuple[dict[str, object], list[dict[str, object]]] | None:
    """One XML -> ``(image info, objects)``; ``None`` when it cannot be used (problem reported)."""
    root, lines = parse_xml(xml_path)
    size = root.find("size")
    try:
        width, height = int(_number(size, "width")), int(_number(size, "height"))
    except ValueError as err:
        report.error(f"<size>: {err}", xml_path, lines.get(id(size)) if size is not None else None)
        return None
    filename = root.findtext("filename", default=f"{xml_path.stem}.jpg").strip()
    objects = []
    for obj in root.findall("object"):
        line = lines[id(obj)]
        name = (obj.findtext("name") or "").strip()
        if not name:
            report.error("<object> without <name>", xml_path, line)
            continue
        bndbox = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (_number(bndbox, t) for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as err:
            report.error(f"<bndbox>: {err}", xml_path, line)
            continue
        objects.append(
            {
                "name": name,
                "box": [xmin - 1.0, ymin - 1.0, xmax, ymax],  # 1-based inclusive -> continuous
                "difficult": (obj.findtext("difficult") or "0").strip() == "1",
                "truncated": (obj.findtext("truncated") or "0").strip() == "1",
                "line": line,
            }
        )
    return {"filename": filename, "width": width, "height": height}, objects


def read(
    root: str | Path,
    split: str | None = None,
    classes: list[str] | None = None,
    *,
    problems: Problems | None = None,
) -> DetectionDataset:
    """Read a VOC-layout folder.

    Args:
        root: folder holding ``Annotations/`` and ``JPEGImages/`` (e.g. ``VOC2012``).
        split: read the stems listed in ``ImageSets/Main/<split>.txt``; ``None`` = every XML.
        classes: class names (index = label); default the sorted set of object names.
        problems: collect problems instead of raising (validator).
    Returns:
        :class:`DetectionDataset` with ``image_root = root/JPEGImages``; per record
        ``extra["difficult"]``, ``extra["truncated"]`` (bool [N]), ``extra["source"]``, ``extra["lines"]``.
    """
    root = Path(root)
    report = collector(problems)
    ann_dir = require_dir(root / "Annotations", "Annotations folder", "expected a VOC folder")
    if split is None:
        xml_paths = sorted(ann_dir.glob("*.xml"))
    else:
        list_file = root / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            raise UserError("split list not found", path=list_file, fix="pass split=None")
        stems = [s.split()[0] for s in list_file.read_text().splitlines() if s.strip()]
        xml_paths = [ann_dir / f"{stem}.xml" for stem in stems]
    parsed = []
    for xml_path in xml_paths:
        if not xml_path.is_file():
            report.error("annotation listed in the split file is missing", xml_path)
            continue
        try:
            result = read_annotation(xml_path, report)
        except UserError as err:
            if report.strict:
                raise
            report.error(err.what, xml_path, err.line)
            continue
        if result is not None:
            parsed.append((xml_path, *result))
    if classes is None:
        classes = sorted({str(o["name"]) for _, _, objs in parsed for o in objs})
    label_of = {name: index for index, name in enumerate(classes)}
    records = []
    for image_id, (xml_path, info, objects) in enumerate(parsed):
        kept = []
        for obj in objects:
            if obj["name"] not in label_of:
                report.error(f"class {obj['name']!r} not in {classes}", xml_path, obj["line"])
                continue
            kept.append(obj)
        records.append(
            DetectionRecord(
                image_id=image_id,
                file_name=str(info["filename"]),
                height=int(info["height"]),
                width=int(info["width"]),
                boxes=np.array([o["box"] for o in kept], dtype=np.float32).reshape(-1, 4),
                labels=np.array([label_of[o["name"]] for o in kept], dtype=np.int64),
                extra={
                    "difficult": np.array([o["difficult"] for o in kept], dtype=bool),
                    "truncated": np.array([o["truncated"] for o in kept], dtype=bool),
                    "source": str(xml_path),
                    "lines": [o["line"] for o in kept],
                },
            )
        )
    return DetectionDataset(
        root=root,
        classes=list(classes),
        records=records,
        image_root=root / "JPEGImages",
        format="voc",
    )


def to_xml(record: DetectionRecord, classes: list[str], *, folder: str = "VOC") -> str:
    """A record -> VOC XML text (1-based inclusive integer corners, see the module docstring)."""
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "folder").text = folder
    ET.SubElement(annotation, "filename").text = Path(record.file_name).name
    size = ET.SubElement(annotation, "size")
    for tag, value in (("width", record.width), ("height", record.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(int(value))
    ET.SubElement(annotation, "segmented").text = "0"
    difficult = record.extra.get("difficult")
    for index, (box, label) in enumerate(zip(record.boxes, record.labels)):
        obj = ET.SubElement(annotation, "object")
        ET.SubElement(obj, "name").text = classes[int(label)]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        hard = difficult is not None and bool(difficult[index])
        ET.SubElement(obj, "difficult").text = "1" if hard else "0"
        bndbox = ET.SubElement(obj, "bndbox")
        x1, y1, x2, y2 = (float(v) for v in box)
        corners = (round(x1) + 1, round(y1) + 1, round(x2), round(y2))
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), corners):
            ET.SubElement(bndbox, tag).text = str(int(value))
    ET.indent(annotation)
    return ET.tostring(annotation, encoding="unicode") + "\n"


def write(
    root: str | Path,
    samples: Iterable[tuple[DetectionRecord, np.ndarray | None]],
    classes: list[str],
    *,
    split: str | None = None,
) -> Path:
    """Write ``JPEGImages/``, ``Annotations/`` (and ``ImageSets/Main/<split>.txt`` if ``split``).

    Boxes are rounded to whole pixels (VOC stores integers). Returns ``root``.
    """
    root = Path(root)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    stems = []
    for record, image in samples:
        name = Path(record.file_name).name
        if image is not None:
            write_image(root / "JPEGImages" / name, image)
        stem = Path(name).stem
        (root / "Annotations" / f"{stem}.xml").write_text(to_xml(record, classes))
        stems.append(stem)
    if split is not None:
        list_file = root / "ImageSets" / "Main" / f"{split}.txt"
        list_file.parent.mkdir(parents=True, exist_ok=True)
        list_file.write_text("".join(f"{s}\n" for s in stems))
    return root
