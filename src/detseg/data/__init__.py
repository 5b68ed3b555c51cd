"""Datasets: built-in recipes in the real layouts, readers / writers, validation, downloads, adapters.

Import the submodules you need (``detseg.data.synthetic``, ``detseg.data.formats.coco``, ...).
"""

from detseg.data.types import (
    DetectionDataset,
    DetectionRecord,
    SegmentationDataset,
    SegmentationRecord,
    from_torchvision_labels,
    to_torchvision_labels,
)

__all__ = [
    "DetectionDataset",
    "DetectionRecord",
    "SegmentationDataset",
    "SegmentationRecord",
    "from_torchvision_labels",
    "to_torchvision_labels",
]
