"""Benchmark cases of ``detseg.metrics`` and the random COCO cases the tests reuse.

Importing this module has no side effects; the bench harness calls the ``case_*`` functions.

``random_coco_case`` makes a COCO ground-truth dict and a results list with everything the COCO
evaluation has to get right: many categories (non-contiguous ids, some without any object), crowd
regions, images without objects, images without detections, objects in every size class with an
``area`` field that differs from the box area, tied scores, and images with more than 100
detections. With ``masks=True`` objects get polygons (crowds get uncompressed RLE, as in COCO) and
detections get compressed RLE masks.
"""

from __future__ import annotations

import contextlib
import copy
import io
import time
from typing import Any

import numpy as np


def _polygon_in_box(rng: np.random.Generator, x: float, y: float, w: float, h: float) -> list:
    """A convex polygon (6-10 vertices on an ellipse) inscribed in the box, as a COCO polygon."""
    num = int(rng.integers(6, 11))
    angles = np.sort(rng.uniform(0, 2 * np.pi, num))
    px = x + w / 2 + (w / 2) * np.cos(angles)
    py = y + h / 2 + (h / 2) * np.sin(angles)
    return [np.round(np.stack([px, py], axis=1).reshape(-1), 2).tolist()]


def _random_box(rng: np.random.Generator, width: int, height: int) -> list[float]:
    # log-uniform side lengths so that small, medium and large objects all occur
    w = float(np.exp(rng.uniform(np.log(2), np.log(width))))
    h = float(np.exp(rng.uniform(np.log(2), np.log(height))))
    x = float(rng.uniform(0, max(width - w, 1)))
    y = float(rng.uniform(0, max(height - h, 1)))
    return [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]


def _jitter(rng: np.random.Generator, box: list[float], scale: float) -> list[float]:
    x, y, w, h = box
    dx, dy = rng.normal(0, scale, 2) * np.array([w, h])
    dw, dh = np.exp(rng.normal(0, scale, 2))
    return [round(float(x + dx), 2), round(float(y + dy), 2), round(w * dw, 2), round(h * dh, 2)]


def random_coco_case(
    seed: int = 0,
    num_images: int = 20,
    num_categories: int = 6,
    dets_per_image: int = 20,
    *,
    masks: bool = False,
    max_objects: int = 12,
    crowd_fraction: float = 0.08,
    empty_image_fraction: float = 0.15,
    undetected_image_fraction: float = 0.1,
    crowded_image_fraction: float = 0.05,
) -> tuple[dict, list[dict]]:
    """Random COCO ground truth and detections (see the module docstring).

    Returns:
        ``(gt, detections)``: a COCO dict (images, annotations, categories) and a results list
        (``image_id``, ``category_id``, ``bbox`` xywh, ``score``, plus ``segmentation`` RLE when
        ``masks``), both plain JSON-serialisable Python objects.
    """
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    category_ids = sorted(rng.choice(np.arange(1, 4 * num_categories + 1), num_categories, False))
    categories = [{"id": int(c), "name": f"class_{c}"} for c in category_ids]
    # the last category never has objects, so its AP is -1 (unless a detection claims it)
    object_categories = category_ids[:-1] if num_categories > 1 else category_ids
    images, annotations, detections = [], [], []
    ann_id = 1
    for image_id in rng.permutation(np.arange(1, num_images + 1) * 3):
        width, height = int(rng.integers(48, 640)), int(rng.integers(48, 640))
        images.append({"id": int(image_id), "width": width, "height": height})
        objects = []
        if rng.random() >= empty_image_fraction:
            for _ in range(int(rng.integers(1, max_objects + 1))):
                box = _random_box(rng, width, height)
                crowd = int(rng.random() < crowd_fraction)
                ann = {
                    "id": ann_id,
                    "image_id": int(image_id),
                    "category_id": int(rng.choice(object_categories)),
                    "bbox": box,
                    # like a mask area: smaller than the box, so size classes differ from w * h
                    "area": round(box[2] * box[3] * float(rng.uniform(0.5, 1.0)), 2),
                    "iscrowd": crowd,
                }
                if masks:
                    polygon = _polygon_in_box(rng, *box)
                    if crowd:  # COCO crowds are uncompressed RLE
                        rle = mask_utils.merge(mask_utils.frPyObjects(polygon, height, width))
                        binary = mask_utils.decode(rle)
                        counts = _uncompressed_counts(binary)
                        ann["segmentation"] = {"size": [height, width], "counts": counts}
                    else:
                        ann["segmentation"] = polygon
                objects.append(ann)
                annotations.append(ann)
                ann_id += 1
        if rng.random() < undetected_image_fraction:
            continue
        num_dets = int(rng.poisson(dets_per_image))
        if rng.random() < crowded_image_fraction:
            num_dets = int(rng.integers(101, 160))
        for _ in range(num_dets):
            if objects and rng.random() < 0.6:
                source = objects[int(rng.integers(len(objects)))]
                box = _jitter(rng, source["bbox"], float(rng.choice([0.02, 0.08, 0.2])))
                category = (
                    source["category_id"] if rng.random() < 0.85 else int(rng.choice(category_ids))
                )
            else:
                box = _random_box(rng, width, height)
                category = int(rng.choice(category_ids))
            box[2], box[3] = max(box[2], 1.0), max(box[3], 1.0)
            # two decimals make ties common, within and across images
            det = {
                "image_id": int(image_id),
                "category_id": int(category),
                "bbox": box,
                "score": round(float(rng.random()), 2),
            }
            if masks:
                rle = mask_utils.merge(
                    mask_utils.frPyObjects(_polygon_in_box(rng, *box), height, width)
                )
                det["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            detections.append(det)
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return gt, detections


def _uncompressed_counts(binary: np.ndarray) -> list[int]:
    """Column-major run lengths of a binary mask, starting with a run of zeros (COCO RLE)."""
    flat = binary.reshape(-1, order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.r_[0, changes, flat.size]
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return [int(c) for c in counts]


def pycocotools_stats(gt: dict, detections: list[dict], iou_type: str = "bbox") -> dict[str, Any]:
    """Run pycocotools' COCOeval quietly on copies of the inputs.

    Returns:
        ``{"stats": ndarray [12], "precision": [T,R,K,A,M], "recall": [T,K,A,M],
        "eval_s": evaluate+accumulate+summarize seconds, "total_s": with index and loadRes}``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, detections = copy.deepcopy(gt), copy.deepcopy(detections)
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        start_eval = time.perf_counter()
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        end = time.perf_counter()
    return {
        "stats": np.asarray(evaluator.stats, dtype=np.float64),
        "precision": evaluator.eval["precision"],
        "recall": evaluator.eval["recall"],
        "eval_s": end - start_eval,
        "total_s": end - start,
    }


def case_coco_eval(num_images: int = 5000, dets_per_image: int = 20, seed: int = 0) -> dict:
    """Time ``detseg.metrics.evaluate_coco`` (bbox) against pycocotools on one random case.

    ``ours_s`` is our whole call from the dicts (checking, matching, tables, stats);
    ``pycocotools_s`` is COCOeval's evaluate + accumulate + summarize (its index and ``loadRes``
    not counted, which favours pycocotools). ``max_abs_diff`` is over the 12 stats.
    """
    from detseg.metrics import evaluate_coco

    gt, detections = random_coco_case(
        seed, num_images=num_images, num_categories=20, dets_per_image=dets_per_image
    )
    start = time.perf_counter()
    ours = evaluate_coco(gt, detections, "bbox")
    ours_s = time.perf_counter() - start
    reference = pycocotools_stats(gt, detections, "bbox")
    ours_stats = np.array(list(ours.stats.values()))
    return {
        "num_images": num_images,
        "num_detections": len(detections),
        "ours_s": ours_s,
        "pycocotools_s": reference["eval_s"],
        "pycocotools_with_load_s": reference["total_s"],
        "ratio": ours_s / reference["eval_s"],
        "max_abs_diff": float(np.max(np.abs(ours_stats - reference["stats"]))),
    }
