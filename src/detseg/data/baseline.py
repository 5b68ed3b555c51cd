"""A naive, learning-free detector for the ``shapes`` recipe: the bar a trained model must clear.

It thresholds saturation (Otsu), splits the result into connected components and names each one by
its geometry (holes -> ring, low solidity -> star, round -> circle, three corners -> triangle,
else rectangle). On plain backgrounds that would work; on the built-in scenes (photo and texture
backgrounds, same-coloured clutter, grey objects, occlusion, light jitter) it scores low, which is
what shows that the scenes are not trivial.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from detseg.data.synthetic import SHAPE_CLASSES


def _classify(component: np.ndarray) -> tuple[int, float]:
    """Label index into SHAPE_CLASSES and a confidence for one component mask (uint8 [h, w])."""
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outline = max(contours, key=cv2.contourArea)
    outer_area = max(cv2.contourArea(outline), 1.0)
    area = float(component.sum())
    hull_area = max(cv2.contourArea(cv2.convexHull(outline)), 1.0)
    solidity = outer_area / hull_area
    perimeter = max(cv2.arcLength(outline, True), 1.0)
    circularity = 4 * np.pi * outer_area / perimeter**2
    corners = len(cv2.approxPolyDP(outline, 0.04 * perimeter, True))
    if area < 0.8 * outer_area:
        return SHAPE_CLASSES.index("ring"), 0.9 * solidity
    if solidity < 0.75:
        return SHAPE_CLASSES.index("star"), 1 - solidity
    if circularity > 0.82:
        return SHAPE_CLASSES.index("circle"), circularity
    if corners == 3:
        return SHAPE_CLASSES.index("triangle"), solidity
    return SHAPE_CLASSES.index("rectangle"), 0.8 * solidity


def naive_baseline(
    image: np.ndarray, *, min_area: int = 30, max_fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detect shapes by saturation threshold + connected components + a fill-ratio classifier.

    Args:
        image: RGB uint8 [H, W, 3].
        min_area: smallest component kept, in pixels.
        max_fraction: components larger than this fraction of the image are taken as background.
    Returns:
        boxes float32 [N, 4] xyxy (pixel-edge, absolute), scores float32 [N] in [0, 1],
        labels int64 [N] indexing :data:`~detseg.data.synthetic.SHAPE_CLASSES`.
    """
    height, width = image.shape[:2]
    saturation = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 1]
    saturation = cv2.GaussianBlur(saturation, (5, 5), 0)
    _, foreground = cv2.threshold(saturation, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    foreground = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, ids, stats, _ = cv2.connectedComponentsWithStats(foreground, connectivity=8)
    boxes, scores, labels = [], [], []
    for index in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[index])
        if area < min_area or area > max_fraction * height * width:
            continue
        component = (ids[y : y + h, x : x + w] == index).astype(np.uint8)
        label, score = _classify(component)
        boxes.append((x, y, x + w, y + h))
        scores.append(float(np.clip(score, 0.0, 1.0)))
        labels.append(label)
    return (
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(scores, np.float32),
        np.asarray(labels, np.int64),
    )


def coco_ap50(coco_json: str | Path, image_root: str | Path) -> float:
    """COCO mAP@0.5 (pycocotools ``COCOeval``, bbox) of :func:`naive_baseline` on a COCO file.

    Category ids are taken in increasing order as labels ``0..C-1`` (as :mod:`~detseg.data.formats.coco`
    reads them), which for the ``shapes`` recipe is ``SHAPE_CLASSES`` order.
    """
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from detseg.data.imageio import read_image

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(coco_json))
    category_ids = sorted(truth.getCatIds())
    detections = []
    for image_id in truth.getImgIds():
        info = truth.loadImgs(image_id)[0]
        boxes, scores, labels = naive_baseline(read_image(Path(image_root) / info["file_name"]))
        for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
            xywh = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": category_ids[label],
                    "bbox": xywh,
                    "score": score,
                }
            )
    if not detections:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(truth, truth.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[1])
