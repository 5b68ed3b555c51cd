"""``detseg tour`` step of this folder: selective search and a small R-CNN on built-in racoon.

Runs our selective search and OpenCV's ("single" strategy, to stay quick) on 4 racoon validation
images and reports recall at IoU 0.5 and the CPU-time ratio; then builds an R-CNN region dataset
from a 40-image built-in racoon (32 train, 8 validation; OpenCV's fast search, 2 processes), trains the small classifier for 3
epochs and detects on the 8 validation images, mAP@0.5 before and after box regression. About 2
minutes of CPU on 2 cores; seconds in smoke mode.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent


def run(out_dir: Path) -> dict[str, Any]:
    """Run the quick path into ``out_dir``.

    Returns:
        ``{"ours_recall@0.5", "opencv_recall@0.5", "time_ratio_ours_vs_opencv", "map50_before",
        "map50_after", "pictures": [recall png, detections png]}``.
    """
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    from proposal_recall import compare_methods

    from detseg import settings
    from detseg.scripts import load_script

    smoke = settings.smoke_mode()
    search = compare_methods(
        "racoon", ["ours", "opencv"], "single", num_images=2 if smoke else 4,
        output_dir=out_dir / "selective_search", progress=lambda text: None,
    )  # fmt: skip
    train = load_script(FOLDER, "train_rcnn")
    argv = ["--output-dir", str(out_dir / "rcnn"), "--dataset-dir", str(out_dir / "dataset"),
            "--proposals", "opencv", "--epochs", "1" if smoke else "3", "--max-proposals", "300",
            "--head-epochs", "10"]  # fmt: skip
    if smoke:
        argv.append("--dry-run")
    else:
        argv += ["--num-images", "40"]
    metrics = train.main(argv)
    return {
        "ours_recall@0.5": search["ours"]["recall@0.5"],
        "opencv_recall@0.5": search["opencv"]["recall@0.5"],
        "time_ratio_ours_vs_opencv": search["time_ratio"],
        "map50_before": metrics["map50_before"],
        "map50_after": metrics["map50_after"],
        "pictures": [Path(search["plot"]), Path(metrics["picture"])],
    }
