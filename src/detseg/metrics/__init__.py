"""Detection and segmentation metrics: COCO AP / AR, VOC AP50, IoU / Dice / pixel accuracy.

numpy only at import; pycocotools (``pycocotools.mask``) is imported when masks are evaluated.
"""

from detseg.metrics.coco_eval import (
    COCO_AREA_RANGES,
    COCO_IOU_THRESHOLDS,
    STAT_NAMES,
    CocoResult,
    evaluate_coco,
)

__all__ = [
    "COCO_AREA_RANGES",
    "COCO_IOU_THRESHOLDS",
    "STAT_NAMES",
    "CocoResult",
    "evaluate_coco",
]
