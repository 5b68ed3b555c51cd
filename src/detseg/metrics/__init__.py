"""Detection and segmentation metrics: COCO AP / AR, VOC AP50, IoU / Dice / pixel accuracy.

- :func:`evaluate_coco`: COCO AP / AR (bbox or segm), same numbers as pycocotools' COCOeval.
- :func:`evaluate_voc`: Pascal VOC AP50 per class and mean (all-point or 11-point).
- :class:`SegmentationMeter` and the functions behind it: confusion matrix, IoU, mIoU, Dice, pixel
  accuracy for semantic segmentation.

numpy only at import; ``pycocotools.mask`` is imported when masks are evaluated, torch never.
"""

from detseg.metrics.coco_eval import (
    COCO_AREA_RANGES,
    COCO_IOU_THRESHOLDS,
    STAT_NAMES,
    CocoResult,
    evaluate_coco,
)
from detseg.metrics.segmentation import (
    SegmentationMeter,
    binary_dice,
    confusion_matrix,
    dice_per_class,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)
from detseg.metrics.voc import VocResult, evaluate_voc, voc_ap

__all__ = [
    "COCO_AREA_RANGES",
    "COCO_IOU_THRESHOLDS",
    "STAT_NAMES",
    "CocoResult",
    "SegmentationMeter",
    "VocResult",
    "binary_dice",
    "confusion_matrix",
    "dice_per_class",
    "evaluate_coco",
    "evaluate_voc",
    "iou_per_class",
    "mean_iou",
    "pixel_accuracy",
    "voc_ap",
]
