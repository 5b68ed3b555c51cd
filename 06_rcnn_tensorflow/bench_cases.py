"""Benchmark cases of this folder (``detseg bench``; registered in :data:`detseg.bench.CASES`).

"06-selective-search": Case("06_rcnn_tensorflow/bench_cases.py:case_selective_search",
                            "06_rcnn_tensorflow", "selective search (fast): ours vs OpenCV contrib")
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent


def case_selective_search() -> dict[str, Any]:
    """Both selective searches in "fast" mode (8 strategies each) on built-in racoon validation
    images (4, or 1 in smoke mode), one OpenCV thread, CPU time per image.

    Returns:
        ``{"ours_s", "opencv_s" (CPU seconds per image), "ratio" (ours / OpenCV),
        "ours_proposals", "opencv_proposals", "main": "ratio"}``.
    """
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    from proposal_recall import racoon_set, run_proposals

    from detseg import settings

    images = [image for _, image, _ in racoon_set(1 if settings.smoke_mode() else 4)]
    mode = "single" if settings.smoke_mode() else "fast"
    ours, ours_s = run_proposals(images, "ours", mode)
    theirs, theirs_s = run_proposals(images, "opencv", mode)
    return {
        "ours_s": sum(ours_s) / len(images),
        "opencv_s": sum(theirs_s) / len(images),
        "ratio": sum(ours_s) / sum(theirs_s),
        "ours_proposals": sum(map(len, ours)) / len(images),
        "opencv_proposals": sum(map(len, theirs)) / len(images),
        "main": "ratio",
    }
