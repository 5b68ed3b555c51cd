"""Read and check COCO ground truth and detection results, and turn them into flat arrays.

This is the boundary of the COCO evaluator (:mod:`detseg.metrics.coco_eval`): everything a user can
get wrong in a ground-truth file or a results file is caught here and raised as a
:class:`~detseg.errors.UserError` that names the file, the entry and the problem.

Conventions follow pycocotools so that the numbers match it exactly:

- Boxes are COCO ``[x, y, w, h]`` in absolute pixels (as in the files; no conversion to xyxy here).
- A ground-truth object's size class (small / medium / large) comes from its ``area`` field, not from
  its box; when ``area`` is missing we fall back to the box area (bbox) or the mask area (segm),
  where pycocotools would fail.
- Detections get ``area = w * h`` from their box, as ``COCO.loadRes`` does, when the *first*
  detection has a non-empty ``bbox``; otherwise their area is the mask area. (This is why segm
  results that also carry boxes get box areas in pycocotools; we do the same.)
- ``iscrowd`` missing means 0; a ground-truth ``ignore`` field is overwritten by ``iscrowd`` in
  pycocotools, so only ``iscrowd`` marks an object as ignored here too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

from detseg.errors import UserError

IOU_TYPES = ("bbox", "segm")

_GT_FIX = "a COCO ground-truth file is a JSON object with 'images', 'annotations' and 'categories'"
_DT_FIX = (
    "a COCO results file is a JSON list of objects with 'image_id', 'category_id', 'score' and "
    "'bbox' [x, y, w, h] (or 'segmentation' as RLE for segm)"
)


@dataclass
class CocoArrays:
    """Ground truth and detections as flat arrays (one row per object), ready to evaluate.

    Attributes:
        image_ids: sorted unique image ids (position = image index).
        category_ids: sorted unique category ids (position = category index).
        gt_image, gt_category: int64 [G], image / category index of each ground-truth object.
        gt_area: float64 [G], the ``area`` field.
        gt_crowd: bool [G], ``iscrowd``.
        gt_id_nonzero: bool [G], ``id != 0`` (pycocotools counts a match to id 0 as no match).
        gt_boxes: float64 [G, 4] xywh (bbox evaluation) or None.
        gt_rles: per object a COCO RLE dict (segm evaluation) or None.
        dt_image, dt_category: int64 [D].
        dt_score, dt_area: float64 [D].
        dt_boxes: float64 [D, 4] xywh or None; dt_rles: list of RLE dicts or None.
    """

    image_ids: list[Any]
    category_ids: list[Any]
    gt_image: np.ndarray
    gt_category: np.ndarray
    gt_area: np.ndarray
    gt_crowd: np.ndarray
    gt_id_nonzero: np.ndarray
    gt_boxes: np.ndarray | None
    gt_rles: list[dict] | None
    dt_image: np.ndarray
    dt_category: np.ndarray
    dt_score: np.ndarray
    dt_area: np.ndarray
    dt_boxes: np.ndarray | None
    dt_rles: list[dict] | None


def load_json(path: str | Path, *, fix: str) -> Any:
    """Read a JSON file; a missing file or invalid JSON raises :class:`UserError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError("file not found", path=path, fix="check the path")
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise UserError(f"not valid JSON ({err.msg})", path=path, line=err.lineno, fix=fix) from err
    except UnicodeDecodeError as err:
        raise UserError("not a UTF-8 text file", path=path, fix=fix) from err


def read_ground_truth(source: dict | str | Path) -> tuple[dict, str | None]:
    """Return ``(gt_dict, path_or_None)``; a path is read with :func:`load_json`."""
    if isinstance(source, dict):
        gt, path = source, None
    else:
        path = str(source)
        gt = load_json(path, fix=_GT_FIX)
    if not isinstance(gt, dict):
        raise UserError(f"expected a JSON object, got {type(gt).__name__}", path=path, fix=_GT_FIX)
    for key in ("images", "annotations", "categories"):
        if key not in gt:
            raise UserError(f"missing key '{key}'", path=path, fix=_GT_FIX)
        if not isinstance(gt[key], list):
            raise UserError(f"'{key}' must be a list", path=path, fix=_GT_FIX)
    return gt, path


def read_detections(source: list | str | Path) -> tuple[list, str | None]:
    """Return ``(detections, path_or_None)``; a path is read with :func:`load_json`."""
    if isinstance(source, (str, Path)):
        path: str | None = str(source)
        dets = load_json(source, fix=_DT_FIX)
    else:
        dets, path = source, None
    if not isinstance(dets, list):
        raise UserError(f"expected a JSON list, got {type(dets).__name__}", path=path, fix=_DT_FIX)
    return dets, path


def _index_of(entries: list, kind: str, path: str | None) -> dict[Any, int]:
    """Map the ``id`` of each image / category entry to its position among the sorted unique ids."""
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry:
            raise UserError(f"{kind} {i} has no 'id'", path=path, fix=_GT_FIX)
    try:
        ids = sorted({entry["id"] for entry in entries})
    except TypeError as err:  # unhashable or mixed str / int ids
        raise UserError(f"{kind} ids must all be integers (or all strings)", path=path) from err
    return {image_id: pos for pos, image_id in enumerate(ids)}


def _first_bad(items: list, check: Any) -> tuple[int, str]:
    """Index and reason of the first item for which ``check(item)`` returns a reason."""
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            return index, f"is a {type(item).__name__}, not an object"
        reason = check(item)
        if reason:
            return index, reason
    return -1, ""


def _box_problem(value: Any) -> str:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return "'bbox' is not 4 numbers"
    if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in value):
        return "'bbox' is not 4 finite numbers"
    return ""


def _score_problem(detection: dict) -> str:
    if "score" not in detection:
        return "has no 'score'"
    score = detection["score"]
    if not isinstance(score, (int, float)) or not np.isfinite(score):
        return f"has a 'score' that is not a finite number ({score!r})"
    return ""


def _column(
    items: list, key: str, what: str, path: str | None, fix: str, check: Any, width: int = 0
) -> np.ndarray:
    """Fast extraction of a numeric field (``width`` > 0: a list of that many numbers).

    On any failure, the items are checked one by one and the first bad one is named.
    """
    try:
        values = np.array([item[key] for item in items])
        expected = (len(items), width) if width else (len(items),)
        if values.size == 0:
            values = values.reshape(expected)
        if values.shape != expected or values.dtype.kind not in "iuf":
            raise ValueError(key)
        if not np.isfinite(values).all():
            raise ValueError(key)
        return values.astype(np.float64)
    except (KeyError, TypeError, ValueError) as err:
        index, reason = _first_bad(items, check)
        if index < 0:  # the fast path failed on something the per-item check accepts
            index, reason = 0, f"'{key}' has an unexpected type"
        raise UserError(f"{what} {index} {reason}", path=path, fix=fix) from err


def _positions(items: list, key: str, index: dict, what: str, path: str | None, fix: str):
    try:
        return np.array([index[item[key]] for item in items], dtype=np.int64).reshape(-1)
    except (KeyError, TypeError) as err:
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise UserError(f"{what} {i} is not an object", path=path, fix=fix) from err
            if key not in item:
                raise UserError(f"{what} {i} has no '{key}'", path=path, fix=fix) from err
            if item[key] not in index:
                raise UserError(
                    f"{what} {i} has unknown {key} {item[key]!r}", path=path, fix=fix
                ) from err
        raise


def _to_rle(segmentation: Any, height: int, width: int) -> dict:
    """Polygon list, uncompressed RLE or compressed RLE -> compressed RLE (as ``COCO.annToRLE``).

    An RLE must be of the image's size, its uncompressed counts whole numbers >= 0 summing to
    height * width; compressed counts are checked by :func:`_check_compressed` (all at once).
    """
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if not isinstance(segmentation, dict) or "counts" not in segmentation:
        raise ValueError("not a polygon list or an RLE dict with 'size' and 'counts'")
    size = segmentation.get("size")
    if not (
        isinstance(size, list | tuple)
        and len(size) == 2
        and all(isinstance(v, Integral) and not isinstance(v, bool) and v >= 0 for v in size)
    ):
        raise ValueError(f"RLE 'size' must be [height, width], got {size!r}")
    if list(size) != [height, width]:
        raise ValueError(f"RLE 'size' is {list(size)} but the image is [{height}, {width}]")
    counts = segmentation["counts"]
    if isinstance(counts, list):
        if not all(isinstance(v, Integral) and not isinstance(v, bool) and v >= 0 for v in counts):
            raise ValueError("uncompressed RLE 'counts' must be whole numbers >= 0")
        if sum(counts) != height * width:
            raise ValueError(
                f"RLE 'counts' sum to {sum(counts)}, not height * width = {height * width}"
            )
        return mask_utils.frPyObjects(segmentation, height, width)
    if not isinstance(counts, str | bytes):
        raise ValueError(f"RLE 'counts' must be a string or a list, got {type(counts).__name__}")
    return segmentation


def _check_compressed(rles: list[dict]) -> np.ndarray:
    """True for each compressed RLE whose ``counts`` string decodes to runs >= 0 that sum to
    height * width.

    pycocotools decodes such a string without checking it (a wrong one gives wrong numbers, or reads
    past the end of its buffer). This decodes every string at once with numpy, as ``rleFrString`` in
    pycocotools' maskApi.c does: each run is a little-endian base-32 number in characters
    ``'0' + 6 bits`` (bit 5: more characters follow; bit 4 of the last: negative), and from the
    fourth run on, each is stored as the difference to the run two places before.
    """
    n = len(rles)
    strings = [
        r["counts"] if isinstance(r["counts"], bytes) else r["counts"].encode() for r in rles
    ]
    totals = np.array([r["size"][0] * r["size"][1] for r in rles], dtype=np.int64)
    lengths = np.array([len(c) for c in strings], dtype=np.int64)
    ok = np.ones(n, dtype=bool)
    if not lengths.sum():
        return totals == 0
    cum = np.cumsum(lengths)

    def owner(positions: np.ndarray) -> np.ndarray:  # string index of character positions
        return np.searchsorted(cum, positions, side="right")

    raw = np.frombuffer(b"".join(strings), dtype=np.uint8)
    ok[owner(np.flatnonzero((raw < 48) | (raw > 111)))] = False
    chars = raw - np.uint8(48)  # a bad character wraps around; its string is already refused
    end = (chars & 0x20) == 0
    last = cum[lengths > 0] - 1
    ok[owner(last[~end[last]])] = False  # the last run is cut short
    end[last] = True
    ends = np.flatnonzero(end)
    starts = np.concatenate([[0], ends[:-1] + 1])
    digits = ends - starts + 1
    ok[owner(starts[digits > 7])] = False  # more than 35 bits: no uint32 run is that long
    value = np.zeros(ends.size, dtype=np.int64)
    for k in range(7):  # little-endian base 32, at most 7 digits
        longer = np.flatnonzero(digits > k)
        if not longer.size:
            break
        value[longer] += (chars[starts[longer] + k] & 0x1F).astype(np.int64) << (5 * k)
    negative = (chars[ends] & 0x10) != 0
    value[negative] -= np.int64(1) << (5 * np.minimum(digits[negative], 7))
    run_owner = np.repeat(np.arange(n), np.bincount(owner(ends), minlength=n))
    first_run = np.concatenate([[0], np.cumsum(np.bincount(run_owner, minlength=n))[:-1]])
    position = np.arange(value.size) - first_run[run_owner]
    runs = value.copy()
    for parity in (0, 1):  # undo the differences: a running sum over every other run
        index = np.flatnonzero((position % 2 == parity) & (position >= 1))
        if index.size:
            sums = np.cumsum(value[index])
            new_group = np.concatenate([[True], run_owner[index][1:] != run_owner[index][:-1]])
            group = np.cumsum(new_group) - 1
            base = (sums - value[index])[np.flatnonzero(new_group)]
            runs[index] = sums - base[group]
    ok[run_owner[(runs < 0) | (runs >= 2**32)]] = False
    ok &= np.bincount(run_owner, weights=runs, minlength=n) == totals
    return ok


def _rles(items, image_pos, sizes, what, path, fix) -> list[dict]:
    rles = []
    for i, item in enumerate(items):
        if "segmentation" not in item:
            raise UserError(f"{what} {i} has no 'segmentation'", path=path, fix=fix)
        height, width = sizes[image_pos[i]]
        try:
            rles.append(_to_rle(item["segmentation"], height, width))
        except Exception as err:  # pycocotools raises bare Exception for unsupported input
            raise UserError(
                f"{what} {i} has a bad 'segmentation' ({err})", path=path, fix=fix
            ) from err
    compressed = [i for i, item in enumerate(items) if _is_compressed(item["segmentation"])]
    if compressed:
        good = _check_compressed([items[i]["segmentation"] for i in compressed])
        if not good.all():
            i = compressed[int(np.flatnonzero(~good)[0])]
            raise UserError(
                f"{what} {i} has a bad 'segmentation' (its RLE 'counts' string does not decode "
                "to runs that cover height * width pixels)",
                path=path,
                fix="write RLEs with pycocotools.mask.encode (counts as a string, utf-8)",
            )
    return rles


def _is_compressed(segmentation: Any) -> bool:
    return isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str | bytes)


def rle_area(rles: list[dict]) -> np.ndarray:
    """``pycocotools.mask.area`` of any number of RLEs (float64 [N]).

    pycocotools (2.0.11 under numpy 2) fails on a list of 256 or more RLEs (``OverflowError: Python
    integer 256 out of bounds for uint8``), so the list goes in slices of 255.
    """
    from pycocotools import mask as mask_utils

    parts = [mask_utils.area(rles[i : i + 255]) for i in range(0, len(rles), 255)]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def _image_sizes(images: list, image_index: dict, path: str | None) -> list[tuple[int, int]]:
    sizes = [(0, 0)] * len(image_index)
    for i, image in enumerate(images):
        if "height" not in image or "width" not in image:
            raise UserError(
                f"image {i} has no 'height' / 'width' (needed for masks)", path=path, fix=_GT_FIX
            )
        sizes[image_index[image["id"]]] = (int(image["height"]), int(image["width"]))
    return sizes


def prepare_arrays(
    gt: dict,
    detections: list,
    iou_type: str,
    *,
    gt_path: str | None = None,
    dt_path: str | None = None,
) -> CocoArrays:
    """Check ``gt`` and ``detections`` and convert them to :class:`CocoArrays`.

    Raises:
        UserError: naming the file (when given), the entry index and the problem.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    image_index = _index_of(gt["images"], "image", gt_path)
    category_index = _index_of(gt["categories"], "category", gt_path)
    anns = gt["annotations"]
    gt_image = _positions(anns, "image_id", image_index, "annotation", gt_path, _GT_FIX)
    gt_category = _positions(anns, "category_id", category_index, "annotation", gt_path, _GT_FIX)
    ann_ids = [ann.get("id") for ann in anns]
    if None in ann_ids:
        raise UserError(f"annotation {ann_ids.index(None)} has no 'id'", path=gt_path, fix=_GT_FIX)
    if len(set(ann_ids)) != len(ann_ids):
        seen: set = set()
        for i, ann_id in enumerate(ann_ids):
            if ann_id in seen:
                raise UserError(
                    f"annotation {i} repeats id {ann_id!r}",
                    path=gt_path,
                    fix="give every annotation a unique id",
                )
            seen.add(ann_id)
    gt_crowd = np.array([bool(ann.get("iscrowd", 0)) for ann in anns], dtype=bool)
    gt_id_nonzero = np.array([a != 0 for a in ann_ids], dtype=bool)

    gt_boxes = gt_rles = None
    sizes = None
    if iou_type == "bbox":
        gt_boxes = _column(
            anns, "bbox", "annotation", gt_path, _GT_FIX, lambda a: _box_problem(a.get("bbox")), 4
        )
    else:
        sizes = _image_sizes(gt["images"], image_index, gt_path)
        gt_rles = _rles(anns, gt_image, sizes, "annotation", gt_path, _GT_FIX)
    gt_area = np.zeros(len(anns), dtype=np.float64)
    for i, ann in enumerate(anns):
        if "area" not in ann:  # pycocotools needs it; we fall back to the box or mask area
            gt_area[i] = _fallback_area(gt_boxes, gt_rles, i)
        elif isinstance(ann["area"], (int, float)):
            gt_area[i] = ann["area"]
        else:
            raise UserError(f"annotation {i} has a non-numeric 'area'", path=gt_path, fix=_GT_FIX)

    dt_image = _positions(detections, "image_id", image_index, "detection", dt_path, _DT_FIX)
    dt_category = _positions(
        detections, "category_id", category_index, "detection", dt_path, _DT_FIX
    )
    dt_score = _column(
        detections,
        "score",
        "detection",
        dt_path,
        _DT_FIX,
        _score_problem,
    )
    has_box = (
        bool(detections) and isinstance(detections[0], dict) and bool(detections[0].get("bbox"))
    )
    if iou_type == "bbox" and detections and not has_box and "segmentation" not in detections[0]:
        raise UserError("detection 0 has no 'bbox'", path=dt_path, fix=_DT_FIX)
    dt_boxes = None
    if has_box:
        dt_boxes = _column(
            detections,
            "bbox",
            "detection",
            dt_path,
            _DT_FIX,
            lambda d: _box_problem(d.get("bbox")),
            4,
        )
    dt_rles = None
    if iou_type == "segm" or not has_box:
        if sizes is None:
            sizes = _image_sizes(gt["images"], image_index, gt_path)
        if iou_type == "segm" and has_box:
            # COCO.loadRes turns a box-only result into a rectangle polygon.
            for_masks = [
                d if "segmentation" in d else {"segmentation": _box_polygon(d["bbox"])}
                for d in detections
            ]
        else:
            for_masks = detections
        dt_rles = _rles(for_masks, dt_image, sizes, "detection", dt_path, _DT_FIX)
    if has_box:
        dt_area = dt_boxes[:, 2] * dt_boxes[:, 3]
    else:
        from pycocotools import mask as mask_utils

        dt_area = rle_area(dt_rles)
        if iou_type == "bbox":
            boxes = mask_utils.toBbox(dt_rles) if dt_rles else np.zeros((0, 4))
            dt_boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return CocoArrays(
        image_ids=list(image_index),
        category_ids=list(category_index),
        gt_image=gt_image,
        gt_category=gt_category,
        gt_area=gt_area,
        gt_crowd=gt_crowd,
        gt_id_nonzero=gt_id_nonzero,
        gt_boxes=gt_boxes,
        gt_rles=gt_rles,
        dt_image=dt_image,
        dt_category=dt_category,
        dt_score=dt_score.reshape(-1),
        dt_area=np.asarray(dt_area, dtype=np.float64).reshape(-1),
        dt_boxes=dt_boxes,
        dt_rles=dt_rles,
    )


def _fallback_area(boxes: np.ndarray | None, rles: list[dict] | None, index: int) -> float:
    if boxes is not None:
        return float(boxes[index, 2] * boxes[index, 3])
    from pycocotools import mask as mask_utils

    return float(mask_utils.area(rles[index]))


def _box_polygon(box: list) -> list[list[float]]:
    x1, y1, w, h = box
    x2, y2 = x1 + w, y1 + h
    return [[x1, y1, x1, y2, x2, y2, x2, y1]]
