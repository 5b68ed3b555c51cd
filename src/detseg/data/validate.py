"""Dataset validation: a summary and every problem as ``file[:line]: severity: what``.

``validate(path, format)`` reads the dataset with the format's reader in collecting mode (every
problem is recorded instead of raising on the first) and then checks what a reader cannot see:

errors (training would fail or learn garbage)
    unparsable files (malformed JSON / XML / YAML / CSV rows / YOLO lines), class ids out of range,
    boxes of zero or negative size, boxes outside the image (by more than :data:`BOX_TOLERANCE` px),
    annotations whose image is missing, unreadable or of another size than annotated, label files
    without an image, duplicate ids or two annotations for the same image, masks that do not match
    their box (IoU of mask extent and box below :data:`MASK_BOX_MIN_IOU`), empty masks, mask values
    outside ``0..C-1`` / ``ignore_index``.
warnings (legal but worth a look)
    images without any label file (background images), PennFudan text boxes that differ from the
    masks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detseg.data.formats import FORMATS
from detseg.data.formats._common import Problem, Problems, list_images
from detseg.data.formats.maskpng import segmentation_to_mask
from detseg.data.imageio import read_image
from detseg.data.types import DetectionDataset, SegmentationDataset
from detseg.errors import UserError

BOX_TOLERANCE = 1.0  # px a box may stick out of the image (rounding) before it is an error
MASK_BOX_MIN_IOU = 0.9
SMALL, MEDIUM = 32**2, 96**2  # COCO area ranges (box area in px^2)


@dataclass
class Report:
    """What :func:`validate` found. ``problems`` keep file order; ``ok`` means no errors."""

    path: str
    format: str
    kind: str
    num_images: int = 0
    instances_per_class: dict[str, int] = field(default_factory=dict)
    box_sizes: dict[str, int] = field(default_factory=lambda: {"small": 0, "medium": 0, "large": 0})
    empty_images: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        """A few human-readable lines (no problems; print ``problems`` for those)."""
        label = "instances" if self.kind == "detection" else "pixels"
        per_class = ", ".join(f"{k}={v}" for k, v in self.instances_per_class.items()) or "none"
        lines = [f"{self.path} ({self.format}): {self.num_images} images"]
        lines.append(f"  {label} per class: {per_class}")
        if self.kind == "detection":
            sizes = ", ".join(f"{k}={v}" for k, v in self.box_sizes.items())
            lines.append(f"  box sizes (COCO areas, <32^2 / <96^2 / larger): {sizes}")
            lines.append(f"  images without objects: {self.empty_images}")
        lines.append(f"  {len(self.errors)} errors, {len(self.warnings)} warnings")
        return "\n".join(lines)


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(width, 0.0) * max(height, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def mask_box_iou(mask: np.ndarray, box: np.ndarray) -> float:
    """IoU of a box and the extent of a bool [H, W] mask, under the better of the two conventions
    in use: max corner = last pixel index (torchvision ``masks_to_boxes``) or one past it (COCO)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return 0.0
    inclusive = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)
    exclusive = inclusive + [0, 0, 1, 1]
    box = np.asarray(box, dtype=np.float64)
    return max(_box_iou(inclusive, box), _box_iou(exclusive, box))


def _where(dataset: DetectionDataset, record, index: int | None) -> tuple[str, int | None, str]:
    """``(file, line, prefix)`` naming an instance (or the image when ``index`` is None)."""
    source = str(record.extra.get("source", dataset.root))
    lines = record.extra.get("lines")
    ann_ids = record.extra.get("ann_ids")
    if index is None:
        return source, None, f"image {record.file_name}: "
    if lines is not None and index < len(lines):
        return source, lines[index], ""
    if ann_ids is not None and index < len(ann_ids):
        return source, None, f"annotation id={ann_ids[index]} (image {record.file_name}): "
    return source, None, f"image {record.file_name}, object {index}: "


def check_detection(
    dataset: DetectionDataset, report: Problems, *, check_images: bool = True
) -> None:
    """Record-level checks shared by every detection format (see the module docstring)."""
    seen_files: dict[str, str] = {}
    for record in dataset.records:
        file, _, prefix = _where(dataset, record, None)
        key = str(dataset.image_path(record))
        if key in seen_files:
            report.error(f"{prefix}annotated twice (also in {seen_files[key]})", file)
        seen_files[key] = file
        if check_images:
            image_path = dataset.image_path(record)
            if not image_path.is_file():
                report.error(f"{prefix}image file missing: {image_path}", file)
            else:
                try:
                    shape = read_image(image_path).shape
                except UserError as err:
                    report.error(f"{err.what}", image_path)
                else:
                    if shape[:2] != (record.height, record.width):
                        report.error(
                            f"{prefix}annotated as {record.width}x{record.height} but the image is "
                            f"{shape[1]}x{shape[0]}",
                            file,
                        )
        masks = record.segmentations
        for index, (box, label) in enumerate(zip(record.boxes, record.labels)):
            file, line, prefix = _where(dataset, record, index)
            x1, y1, x2, y2 = (float(v) for v in box)
            if not 0 <= label < dataset.num_classes:
                report.error(
                    f"{prefix}class {label} out of range 0..{dataset.num_classes - 1}", file, line
                )
            if x2 <= x1 or y2 <= y1:
                report.error(f"{prefix}box {_fmt(box)} has zero or negative size", file, line)
            elif (
                min(x1, y1) < -BOX_TOLERANCE
                or x2 > record.width + BOX_TOLERANCE
                or y2 > record.height + BOX_TOLERANCE
            ):
                report.error(
                    f"{prefix}box {_fmt(box)} outside the {record.width}x{record.height} image",
                    file,
                    line,
                )
            segmentation = None if masks is None else masks[index]
            if segmentation is None or not len(segmentation) or record.iscrowd[index]:
                continue
            mask = segmentation_to_mask(segmentation, record.height, record.width)
            iou = mask_box_iou(mask, box)
            if not mask.any():
                report.error(f"{prefix}mask is empty", file, line)
            elif iou < MASK_BOX_MIN_IOU:
                report.error(
                    f"{prefix}mask extent does not match box {_fmt(box)} (IoU {iou:.2f})",
                    file,
                    line,
                )


def _fmt(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in box) + "]"


def check_files(dataset: DetectionDataset, report: Problems) -> None:
    """Format-specific pairing of files: label files without images, images without labels."""
    if dataset.format == "yolo":
        image_dir = Path(dataset.image_root)
        label_dir = image_dir.parent / "labels"
        stems = Counter(p.stem for p in list_images(image_dir))
        for stem, count in stems.items():
            if count > 1:
                report.error(
                    f"{count} images share the stem {stem!r} (and so one label file)", image_dir
                )
            if not (label_dir / f"{stem}.txt").is_file():
                report.warning(f"image {stem} has no label file (treated as background)", image_dir)
        for label_path in sorted(label_dir.glob("*.txt")):
            if label_path.stem not in stems:
                report.error("label file without an image", label_path)
    elif dataset.format in ("voc", "csv", "coco"):
        listed = {str(dataset.image_path(r)) for r in dataset.records}
        folders = {dataset.image_path(r).parent for r in dataset.records} | {
            Path(dataset.image_root)
        }
        for folder in sorted(folders):
            for image_path in list_images(folder):
                if str(image_path) not in listed:
                    report.warning("image without annotation", image_path)
    elif dataset.format == "pennfudan":
        for mask_path in sorted((dataset.root / "PedMasks").glob("*_mask.png")):
            stem = mask_path.name.removesuffix("_mask.png")
            if not (dataset.root / "PNGImages" / f"{stem}.png").is_file():
                report.error("mask without an image", mask_path)
        for record in dataset.records:
            _check_pennfudan_text(record, report)


def _check_pennfudan_text(record, report: Problems) -> None:
    annotation = record.extra.get("annotation")
    if annotation is None:
        return
    source = record.extra["source"]
    objects = annotation["objects"]
    if len(objects) != len(record.boxes):
        report.warning(
            f"{len(objects)} objects in the text, {len(record.boxes)} in the mask", source
        )
        return
    for obj, box in zip(objects, record.boxes):
        text_box = np.array(obj["box"], dtype=np.float64) - [
            1,
            1,
            1,
            1,
        ]  # 1-based -> mask convention
        if _box_iou(text_box + [0, 0, 1, 1], np.asarray(box) + [0, 0, 1, 1]) < MASK_BOX_MIN_IOU:
            report.warning(
                f"text box {obj['box']} differs from the mask extent", source, obj["line"]
            )


def _summarise_detection(dataset: DetectionDataset, result: Report) -> None:
    result.num_images += len(dataset)
    counts = Counter(int(v) for r in dataset.records for v in r.labels)
    for index, name in enumerate(dataset.classes):
        result.instances_per_class[name] = result.instances_per_class.get(name, 0) + counts[index]
    for record in dataset.records:
        result.empty_images += int(len(record.labels) == 0)
        areas = np.clip(record.boxes[:, 2] - record.boxes[:, 0], 0, None) * np.clip(
            record.boxes[:, 3] - record.boxes[:, 1], 0, None
        )
        result.box_sizes["small"] += int((areas < SMALL).sum())
        result.box_sizes["medium"] += int(((areas >= SMALL) & (areas < MEDIUM)).sum())
        result.box_sizes["large"] += int((areas >= MEDIUM).sum())


def check_segmentation(dataset: SegmentationDataset, report: Problems, result: Report) -> None:
    """Load every pair: readable, same size, values in ``0..C-1`` or ``ignore_index``."""
    counts = np.zeros(dataset.num_classes, dtype=np.int64)
    for record in dataset.records:
        try:
            image, mask = dataset.load(record)
        except UserError as err:
            report.error(err.what, err.path or record.file_name, err.line)
            continue
        where = dataset.root / (record.mask_name or record.file_name)
        if image.shape[:2] != mask.shape:
            report.error(f"mask {mask.shape} and image {image.shape[:2]} differ in size", where)
            continue
        bad = (mask != dataset.ignore_index) & ((mask < 0) | (mask >= dataset.num_classes))
        if bad.any():
            values = sorted(set(np.unique(mask[bad]).tolist()))[:5]
            report.error(
                f"{int(bad.sum())} pixels with values {values} outside 0..{dataset.num_classes - 1} "
                f"and ignore {dataset.ignore_index}",
                where,
            )
        counts += np.bincount(
            mask[~bad & (mask != dataset.ignore_index)].ravel(), minlength=dataset.num_classes
        )[: dataset.num_classes]
    result.num_images += len(dataset)
    result.instances_per_class = {name: int(c) for name, c in zip(dataset.classes, counts)}


def validate(
    path: str | Path, format: str, *, split: str | None = None, check_images: bool = True
) -> Report:
    """Validate a dataset on disk.

    Args:
        path: what the format's reader takes (COCO JSON, YOLO ``data.yaml``, a dataset folder).
        format: a key of :data:`detseg.data.formats.FORMATS`.
        split: the split to read (YOLO: every split present when None; VOC: ``ImageSets/Main``
            list; TGS / Cityscapes / KITTI: the reader's default when None).
        check_images: decode every image (slower; finds unreadable files and size mismatches).
    Returns:
        a :class:`Report`; ``report.ok`` is False when there are errors.
    """
    if format not in FORMATS:
        raise UserError(f"unknown format {format!r}", fix=f"use one of {', '.join(FORMATS)}")
    spec = FORMATS[format]
    path = Path(path)
    result = Report(path=str(path), format=format, kind=spec.kind)
    report = Problems()
    splits: list[str | None] = [split]
    if format == "yolo" and split is None:
        root = path if path.is_dir() else path.parent
        splits = [
            s
            for s, folder in (("train", "train"), ("val", "valid"), ("test", "test"))
            if (root / folder).is_dir()
        ] or ["train"]
    for one_split in splits:
        kwargs = {} if one_split is None else {"split": one_split}
        try:
            dataset = spec.read(path, problems=report, **kwargs)
        except UserError as err:
            report.error(err.what, err.path or path, err.line)
            continue
        if spec.kind == "detection":
            check_detection(dataset, report, check_images=check_images)
            check_files(dataset, report)
            _summarise_detection(dataset, result)
        else:
            check_segmentation(dataset, report, result)
    result.problems = report.items
    return result
