"""Penn-Fudan pedestrians (Wang et al., ACCV 2007), the torchvision Mask R-CNN tutorial's dataset::

    PennFudanPed/PNGImages/FudanPed00001.png
    PennFudanPed/PedMasks/FudanPed00001_mask.png    instance ids: 0 = background, 1..N = pedestrians
    PennFudanPed/Annotation/FudanPed00001.txt       PASCAL Annotation Version 1.00 text (below)

The reader derives boxes and masks from the mask PNG as the torchvision tutorial does: one binary mask
per id != 0, box = ``torchvision.ops.masks_to_boxes`` (max corner = index of the last pixel). The
text annotation, when present, is parsed too (``record.extra["annotation"]``). Its boxes are 1-based
inclusive pixel indices, ``Top left pixel co-ordinates : (1, 1)``; the writer derives them from the
masks, so ``text box - 1 == mask box`` for the files written here. Excerpt of a real file::

    # Compatible with PASCAL Annotation Version 1.00
    Image filename : "PennFudanPed/PNGImages/FudanPed00001.png"
    Image size (X x Y x C) : 559 x 536 x 3
    Database : "The Penn-Fudan-Pedestrian Database"
    Objects with ground truth : 2 { "PASpersonWalking" "PASpersonWalking" }
    ...
    Bounding box for object 1 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : (160, 182) - (302, 431)
    Pixel mask for object 1 "PASpersonWalking" : "PennFudanPed/PedMasks/FudanPed00001_mask.png"
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from detseg.data.formats._common import Problems, collector, list_images, require_dir
from detseg.data.formats.maskpng import (
    instance_map_to_masks,
    mask_to_rle,
    masks_to_boxes,
    masks_to_instance_map,
    segmentation_to_mask,
)
from detseg.data.imageio import read_label_png, write_image
from detseg.data.types import DetectionDataset, DetectionRecord
from detseg.errors import UserError

CLASSES = ["person"]
DEFAULT_POSE = "PASpersonWalking"
_SIZE = re.compile(r"^Image size \(X x Y x C\) : (\d+) x (\d+) x (\d+)")
_FILENAME = re.compile(r'^Image filename : "([^"]*)"')
_BOX = re.compile(
    r'^Bounding box for object (\d+) "([^"]*)" \(Xmin, Ymin\) - \(Xmax, Ymax\) : '
    r"\((-?\d+), (-?\d+)\) - \((-?\d+), (-?\d+)\)"
)
# palette of the written mask PNGs: black background, a distinct colour per instance id
_PALETTE = [0, 0, 0] + [c for i in range(1, 256) for c in ((i * 67) % 256, (i * 131) % 256, 255)]
_MASK = re.compile(r'^Pixel mask for object (\d+) "[^"]*" : "([^"]*)"')


def parse_annotation(path: Path) -> dict[str, Any]:
    """Parse one ``Annotation/*.txt``.

    Returns:
        ``{"filename", "width", "height", "channels", "objects": [{"index", "name", "box", "mask",
        "line"}]}`` with ``box`` the file's 1-based inclusive ``(Xmin, Ymin, Xmax, Ymax)`` and
        ``line`` the line of the bounding-box entry.
    Raises:
        UserError: a ``Bounding box`` line that does not parse, or no image size (file:line).
    """
    result: dict[str, Any] = {"filename": None, "width": None, "height": None, "objects": []}
    masks: dict[int, str] = {}
    for number, raw in enumerate(path.read_text(encoding="latin-1").splitlines(), start=1):
        line = raw.strip()
        if match := _FILENAME.match(line):
            result["filename"] = match.group(1)
        elif match := _SIZE.match(line):
            result["width"], result["height"], result["channels"] = map(int, match.groups())
        elif line.startswith("Bounding box for object"):
            match = _BOX.match(line)
            if match is None:
                raise UserError(
                    "malformed bounding box line; expected "
                    "'Bounding box for object N \"NAME\" (Xmin, Ymin) - (Xmax, Ymax) : (a, b) - (c, d)'",
                    path=path,
                    line=number,
                    fix="repair the annotation or delete it (boxes are derived from PedMasks)",
                )
            index, name, *box = match.groups()
            result["objects"].append(
                {"index": int(index), "name": name, "box": tuple(map(int, box)), "line": number}
            )
        elif match := _MASK.match(line):
            masks[int(match.group(1))] = match.group(2)
    if result["width"] is None:
        raise UserError("no 'Image size (X x Y x C)' line", path=path, fix="repair the annotation")
    for obj in result["objects"]:
        obj["mask"] = masks.get(obj["index"])
    return result


def format_annotation(
    stem: str, height: int, width: int, boxes_1based: np.ndarray, names: list[str]
) -> str:
    """The text of ``Annotation/<stem>.txt`` for integer 1-based inclusive boxes [N, 4]."""
    quoted = " ".join(f'"{n}"' for n in names)
    lines = [
        "# Compatible with PASCAL Annotation Version 1.00",
        f'Image filename : "PennFudanPed/PNGImages/{stem}.png"',
        f"Image size (X x Y x C) : {width} x {height} x 3",
        'Database : "The Penn-Fudan-Pedestrian Database"',
        f"Objects with ground truth : {len(names)} {{ {quoted} }}",
        "# Note there may be some objects not included in the ground truth list for they are "
        "severe-occluded",
        "# or have very small size.",
        "# Top left pixel co-ordinates : (1, 1)",
    ]
    for index, (box, name) in enumerate(zip(boxes_1based, names), start=1):
        xmin, ymin, xmax, ymax = (int(v) for v in box)
        lines += [
            f'# Details for pedestrian {index} ("{name}")',
            f'Original label for object {index} "{name}" : "PennFudanPed"',
            f'Bounding box for object {index} "{name}" (Xmin, Ymin) - (Xmax, Ymax) : '
            f"({xmin}, {ymin}) - ({xmax}, {ymax})",
            f'Pixel mask for object {index} "{name}" : "PennFudanPed/PedMasks/{stem}_mask.png"',
            "",
        ]
    return "\n".join(lines) + "\n"


def dataset_root(root: str | Path) -> Path:
    """``root`` itself or ``root/PennFudanPed``, whichever holds ``PNGImages/``."""
    root = Path(root)
    if not (root / "PNGImages").is_dir() and (root / "PennFudanPed" / "PNGImages").is_dir():
        root = root / "PennFudanPed"
    return root


def read(root: str | Path, *, problems: Problems | None = None) -> DetectionDataset:
    """Read PennFudanPed; boxes and RLE masks come from ``PedMasks`` (see module docstring).

    Returns:
        :class:`DetectionDataset` (``format="pennfudan"``, one class ``"person"``), ``file_name``
        ``PNGImages/<stem>.png``; ``extra["mask_file"]``, ``extra["instance_ids"]`` and, when the
        text file exists, ``extra["annotation"]`` (its parse) and ``extra["source"]`` (its path).
    """
    root = dataset_root(root)
    report = collector(problems)
    image_dir = require_dir(root / "PNGImages", "PNGImages folder", "expected PennFudanPed/")
    records = []
    for image_path in list_images(image_dir):
        stem = image_path.stem
        mask_path = root / "PedMasks" / f"{stem}_mask.png"
        if not mask_path.is_file():
            report.error(f"image has no mask {mask_path.name}", image_path)
            continue
        try:
            id_map = read_label_png(mask_path)
        except UserError as err:
            report.error(err.what, mask_path)
            continue
        if id_map.ndim != 2:
            report.error(f"mask must be single-channel, got shape {id_map.shape}", mask_path)
            continue
        ids, masks = instance_map_to_masks(id_map)
        extra: dict[str, Any] = {"mask_file": str(mask_path), "instance_ids": ids.tolist()}
        text_path = root / "Annotation" / f"{stem}.txt"
        if text_path.is_file():
            try:
                extra["annotation"] = parse_annotation(text_path)
                extra["source"] = str(text_path)
            except UserError as err:
                report.error(err.what, text_path, err.line)
        records.append(
            DetectionRecord(
                image_id=len(records),
                file_name=f"PNGImages/{image_path.name}",
                height=id_map.shape[0],
                width=id_map.shape[1],
                boxes=masks_to_boxes(masks),
                labels=np.zeros(len(ids), dtype=np.int64),
                segmentations=[mask_to_rle(m) for m in masks],
                extra=extra,
            )
        )
    return DetectionDataset(
        root=root, classes=list(CLASSES), records=records, image_root=root, format="pennfudan"
    )


def write(root: str | Path, samples: Iterable[tuple[DetectionRecord, np.ndarray | None]]) -> Path:
    """Write PennFudan's three folders into ``root`` (= the ``PennFudanPed`` folder).

    Args:
        samples: ``(record, image)``; ``record.segmentations`` must hold one mask per instance
            (RLE, polygons or bool [H, W]); instance ``i`` gets id ``i + 1`` in the mask PNG (a palette
            PNG, like the originals). Pose names come from ``record.extra["poses"]`` if present.
    Returns:
        ``root``.
    """
    from PIL import Image

    root = Path(root)
    for folder in ("PNGImages", "PedMasks", "Annotation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for record, image in samples:
        stem = Path(record.file_name).stem
        if record.segmentations is None:
            raise ValueError(f"{record.file_name}: PennFudan needs instance masks")
        masks = (
            np.stack(
                [segmentation_to_mask(s, record.height, record.width) for s in record.segmentations]
            )
            if len(record.segmentations)
            else np.zeros((0, record.height, record.width), dtype=bool)
        )
        if image is not None:
            write_image(root / "PNGImages" / f"{stem}.png", image)
        ids = masks_to_instance_map(masks)
        id_map = Image.frombytes("P", (ids.shape[1], ids.shape[0]), ids.tobytes())
        id_map.putpalette(_PALETTE)
        id_map.save(root / "PedMasks" / f"{stem}_mask.png")
        names = list(record.extra.get("poses", [DEFAULT_POSE] * len(masks)))
        boxes_1based = masks_to_boxes(masks).astype(np.int64) + 1
        text = format_annotation(stem, record.height, record.width, boxes_1based, names)
        (root / "Annotation" / f"{stem}.txt").write_text(text)
    return root
