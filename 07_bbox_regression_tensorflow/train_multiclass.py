"""07b: regress the box and classify the object (airplane, face, motorcycle): two heads, one backbone.

    python 07_bbox_regression_tensorflow/train_multiclass.py --backbone small     # offline, measured
    python 07_bbox_regression_tensorflow/train_multiclass.py --backbone vgg16     # the seed: ImageNet VGG16
    python 07_bbox_regression_tensorflow/train_multiclass.py --resume             # continue the last run
    python 07_bbox_regression_tensorflow/train_multiclass.py --dry-run            # one batch end to end

Run from the repository root. Without ``--data-path`` the built-in ``single_object`` data (the
Caltech-101 CSV layout) is generated on first use; with it, a folder in that layout is read by the
same reader. The run folder (``runs/07_bbox_regression_tensorflow/multiclass-<backbone>``) gets
``last.keras`` / ``best.keras`` (+ ``.json``), ``history.csv``, ``metrics.json`` and
``training_curves.png``, ``confusion_matrix.png``. Every flag: ``--help``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import bbox_cli

from detseg.errors import run_cli


def get_args_parser() -> Any:
    return bbox_cli.get_args_parser("multi")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train 07b; returns the test metrics (``mean_iou``, ``class_accuracy`` ...) and the run's numbers."""
    return bbox_cli.main("multi", argv)


if __name__ == "__main__":
    sys.exit(run_cli(main))
