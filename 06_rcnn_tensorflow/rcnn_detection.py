"""Detection the R-CNN way, and its mAP through the core evaluator.

``detect``: proposals -> warped crops -> classifier scores -> keep ``score >= threshold`` -> (box
regression) -> class-wise NMS with :func:`detseg.boxes.batched_nms`. ``evaluate_detections`` writes
the ground truth and the detections as COCO JSON and scores them with
:func:`detseg.metrics.evaluate_coco` (AP50 = mAP@0.5 of the one class, identical to pycocotools).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rcnn_dataset import crop_boxes
from rcnn_models import decode_boxes
from rcnn_training import predict_features

from detseg.boxes import batched_nms, clip_boxes
from detseg.metrics import evaluate_coco


def classify(classifier: Any, crops: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Softmax scores of crops (uint8 [N, S, S, 3]) -> float32 [N, classes]."""
    out = [
        np.asarray(classifier(crops[i : i + batch_size].astype(np.float32), training=False))
        for i in range(0, len(crops), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, classifier.output.shape[-1]), np.float32)


def detect(
    image: np.ndarray,
    proposals: np.ndarray,
    classifier: Any,
    *,
    score_threshold: float = 0.5,
    nms_iou: float = 0.3,
    max_proposals: int = 2000,
    min_size: float = 8.0,
    bbox_head: Any = None,
    target_stats: tuple[Sequence[float], Sequence[float]] | None = None,
) -> dict[str, np.ndarray]:
    """Detect raccoons (class 0 of the detections; class 1 of the classifier's softmax).

    Args:
        image: RGB uint8 [H, W, 3]. proposals: float [P, 4] xyxy, best first.
        classifier: softmax model taking crops of its input size.
        score_threshold: keep proposals whose raccoon probability is at least this.
        nms_iou: NMS suppresses above this IoU.
        max_proposals: use the first this many proposals.
        min_size: drop proposals narrower or lower than this.
        bbox_head: box regressor (optional) with ``target_stats = (mean, std)`` of its targets.
    Returns:
        ``{"boxes" float32 [D, 4], "scores" [D], "labels" int64 [D] (zeros)}``, by decreasing score.
    """
    size = int(classifier.input.shape[1])
    boxes = np.asarray(proposals, np.float32).reshape(-1, 4)[:max_proposals]
    boxes = boxes[(boxes[:, 2] - boxes[:, 0] >= min_size) & (boxes[:, 3] - boxes[:, 1] >= min_size)]
    crops = crop_boxes(image, boxes, size)
    scores = classify(classifier, crops)[:, 1] if len(crops) else np.zeros(0, np.float32)
    keep = scores >= score_threshold
    boxes, scores, crops = boxes[keep], scores[keep], crops[keep]
    if bbox_head is not None and len(boxes):
        mean, std = (np.asarray(v, np.float32) for v in target_stats)
        deltas = np.asarray(bbox_head(predict_features(classifier, crops), training=False))
        boxes = decode_boxes(boxes, deltas[:, :4] * std + mean)
        boxes = clip_boxes(boxes, image.shape[:2])
    labels = np.zeros(len(boxes), np.int64)
    kept = batched_nms(boxes, scores, labels, nms_iou)
    return {
        "boxes": boxes[kept].astype(np.float32),
        "scores": scores[kept].astype(np.float32),
        "labels": labels[kept],
    }


def coco_ground_truth(gt_boxes: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]) -> dict:
    """COCO ground-truth dict of one class (id 1, "raccoon"); image ids 1..N."""
    images, annotations = [], []
    for image_id, (boxes, (height, width)) in enumerate(zip(gt_boxes, sizes), start=1):
        images.append({"id": image_id, "height": int(height), "width": int(width)})
        for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "raccoon"}],
    }


def coco_detections(detections: Sequence[dict[str, np.ndarray]]) -> list[dict]:
    """COCO result list of per-image detections (image ids 1..N, category 1)."""
    out = []
    for image_id, det in enumerate(detections, start=1):
        for (x1, y1, x2, y2), score in zip(np.asarray(det["boxes"], np.float64), det["scores"]):
            out.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    return out


def evaluate_detections(
    detections: Sequence[dict[str, np.ndarray]],
    gt_boxes: Sequence[np.ndarray],
    sizes: Sequence[tuple[int, int]],
    output_dir: str | Path | None = None,
    name: str = "detections",
) -> dict[str, float]:
    """mAP@0.5 (COCO AP50) and COCO AP of ``detections``; with ``output_dir`` writes
    ``gt.json`` and ``<name>.json`` (COCO format) that pycocotools can score independently."""
    gt = coco_ground_truth(gt_boxes, sizes)
    results = coco_detections(detections)
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "gt.json").write_text(json.dumps(gt))
        (Path(output_dir) / f"{name}.json").write_text(json.dumps(results))
    if not results:
        return {"map50": 0.0, "ap": 0.0, "detections": 0}
    stats = evaluate_coco(gt, results, "bbox").stats
    return {"map50": float(stats["AP50"]), "ap": float(stats["AP"]), "detections": len(results)}
