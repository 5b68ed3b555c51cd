"""07a: regress the box of the one airplane in each image, in Keras, with a frozen backbone.

    python 07_bbox_regression_tensorflow/train_bbox.py --backbone small     # offline, measured
    python 07_bbox_regression_tensorflow/train_bbox.py --backbone vgg16     # the seed: ImageNet VGG16
    python 07_bbox_regression_tensorflow/train_bbox.py --resume             # continue the last run
    python 07_bbox_regression_tensorflow/train_bbox.py --dry-run            # one batch end to end

Run from the repository root. Without ``--data-path`` the built-in ``single_object`` data (the
Caltech-101 CSV layout) is generated on first use; with it, a folder in that layout is read by the
same reader. The run folder (``runs/07_bbox_regression_tensorflow/bbox-<backbone>``) gets
``last.keras`` / ``best.keras`` (+ ``.json``), ``history.csv``, ``metrics.json`` and
``training_curves.png``. Every flag: ``--help``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import bbox_cli

from detseg.errors import run_cli


def get_args_parser() -> Any:
    return bbox_cli.get_args_parser("single")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train 07a; returns the test metrics (``mean_iou`` ...) and the run's numbers."""
    return bbox_cli.main("single", argv)


if __name__ == "__main__":
    sys.exit(run_cli(main))
