"""How good are region proposals? Recall of ground-truth boxes against the number of proposals.

A ground-truth box is *recalled* by the first ``n`` proposals when one of them overlaps it with
IoU >= t. Plotting the fraction recalled against ``n`` (t = 0.5 and 0.7) compares proposal methods
independently of any classifier: the detector can only find what the proposals cover.

Two test sets: the built-in racoon validation images (VOC layout, boxes from the annotations) and
four real photographs shipped with scikit-image, whose boxes were set by hand for this lesson
(:data:`PHOTO_BOXES`, xyxy pixels, drawn in lesson 2).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from detseg import settings
from detseg.boxes import box_iou

# hand-set boxes on skimage.data photographs (xyxy, pixels): name -> {object: box}
PHOTO_BOXES: dict[str, dict[str, list[float]]] = {
    "astronaut": {  # 512 x 512
        "head": [152, 15, 302, 168], "helmet": [276, 342, 512, 512],
        "shuttle model": [352, 0, 472, 282], "mission patch": [133, 350, 211, 425],
    },
    "coffee": {  # 400 x 600
        "cup": [172, 18, 410, 305], "saucer": [75, 60, 480, 390], "spoon": [325, 65, 425, 325],
    },
    "chelsea": {  # 300 x 451
        "face": [30, 0, 400, 300], "left eye": [135, 85, 205, 148], "right eye": [296, 108, 345, 165],
    },
    "rocket": {  # 427 x 640
        "rocket": [300, 125, 340, 410], "left tower": [0, 0, 90, 427],
        "right tower": [555, 0, 640, 427], "left mast": [160, 120, 208, 410],
        "right mast": [435, 120, 480, 427],
    },
}  # fmt: skip


def photo_set() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``[(name, RGB uint8 image, boxes float32 [N, 4]), ...]`` for :data:`PHOTO_BOXES`."""
    import skimage.data

    return [
        (name, getattr(skimage.data, name)(), np.array(list(boxes.values()), np.float32))
        for name, boxes in PHOTO_BOXES.items()
    ]


def racoon_set(
    num_images: int | None = None, data_path: str | Path | None = None
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The racoon validation images as ``[(file name, image, boxes), ...]`` (first ``num_images``)."""
    from racoon_data import load_image, load_racoon

    _, val = load_racoon(data_path=data_path)
    count = len(val) if num_images is None else min(num_images, len(val))
    return [(val.records[i].file_name, *load_image(val, i)) for i in range(count)]


def best_iou_curve(proposals: np.ndarray, gt_boxes: np.ndarray, max_proposals: int) -> np.ndarray:
    """Best IoU of each ground-truth box among the first ``n`` proposals, for n = 1..max_proposals.

    Args:
        proposals: float [P, 4] xyxy, best first. gt_boxes: float [G, 4].
    Returns:
        float64 [max_proposals, G]; rows past P repeat the last one (no more proposals).
    """
    out = np.zeros((max_proposals, len(gt_boxes)))
    if len(proposals) and len(gt_boxes):
        iou = box_iou(
            np.asarray(proposals[:max_proposals], np.float64), gt_boxes.astype(np.float64)
        )
        best = np.maximum.accumulate(iou, axis=0)  # [min(P, max), G]
        out[: len(best)] = best
        out[len(best) :] = best[-1]
    return out


def recall_curves(
    proposals: Sequence[np.ndarray],
    gt_boxes: Sequence[np.ndarray],
    *,
    max_proposals: int = 2000,
    thresholds: Sequence[float] = (0.5, 0.7),
) -> dict[float, np.ndarray]:
    """Recall (fraction of all ground-truth boxes) against the number of proposals per image.

    Returns:
        ``{t: float64 [max_proposals]}``: entry ``n - 1`` is the recall at IoU >= t with the first
        ``n`` proposals of every image.
    """
    curves = [best_iou_curve(p, g, max_proposals) for p, g in zip(proposals, gt_boxes)]
    best = np.concatenate(curves, axis=1)  # [max_proposals, all objects]
    return {t: (best >= t).mean(axis=1) for t in thresholds}


def _timed(method: str, mode: str, image: np.ndarray) -> tuple[np.ndarray, float]:
    from selective_search import propose

    start = time.process_time()  # CPU time of this process: fair under a shared machine
    boxes = propose(image, method, mode)
    return boxes, time.process_time() - start


def run_proposals(
    images: Sequence[np.ndarray], method: str, mode: str, *, workers: int = 1
) -> tuple[list[np.ndarray], list[float]]:
    """Proposals of ``method`` for each image, and the CPU seconds each took (one OpenCV thread)."""
    import cv2

    cv2.setNumThreads(1)
    if workers <= 1:
        results = [_timed(method, mode, image) for image in images]
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_timed, [method] * len(images), [mode] * len(images), images))
    return [r[0] for r in results], [r[1] for r in results]


def plot_recall(
    curves: dict[str, dict[float, np.ndarray]], path: str | Path, title: str = ""
) -> Path:
    """One line per (method, IoU threshold): recall against proposals per image (log x); PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for (method, per_threshold), colour in zip(
        curves.items(), ["tab:blue", "tab:orange", "tab:green"]
    ):
        for threshold, curve in per_threshold.items():
            style = "-" if threshold == 0.5 else "--"
            x = np.arange(1, len(curve) + 1)
            axis.plot(x, curve, style, color=colour, label=f"{method}, IoU >= {threshold}")
    axis.set_xscale("log")
    axis.set_xlabel("proposals per image")
    axis.set_ylabel("recall of ground-truth boxes")
    axis.set_ylim(0, 1.01)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title(title)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def compare_methods(
    images: str,
    methods: Sequence[str],
    mode: str = "fast",
    *,
    num_images: int | None = None,
    data_path: str | Path | None = None,
    output_dir: str | Path | None = None,
    max_proposals: int = 2000,
    workers: int | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Recall curves and CPU time of each method on ``images`` ("racoon" or "photos").

    Returns:
        ``{method: {"recall@0.5", "recall@0.7" (all proposals), "recall@0.5_top100",
        "proposals" (mean per image), "cpu_s_per_image"}, "time_ratio" (ours / opencv, when both
        ran), "images", "plot", "curves"}``; writes ``recall.png`` and ``metrics.json``.
    """
    if settings.smoke_mode() and num_images is None:
        num_images = 2
    data = photo_set()[:num_images] if images == "photos" else racoon_set(num_images, data_path)
    out = Path(output_dir or settings.runs_root() / "06_rcnn_tensorflow" / "selective_search")
    workers = workers or min(2, os.cpu_count() or 1)
    result: dict[str, Any] = {"images": len(data), "mode": mode, "curves": {}}
    for method in methods:
        boxes, seconds = run_proposals([d[1] for d in data], method, mode, workers=workers)
        curves = recall_curves(boxes, [d[2] for d in data], max_proposals=max_proposals)
        result["curves"][method] = curves
        result[method] = {
            "recall@0.5": float(curves[0.5][-1]),
            "recall@0.7": float(curves[0.7][-1]),
            "recall@0.5_top100": float(curves[0.5][99]),
            "proposals": float(np.mean([len(b) for b in boxes])),
            "cpu_s_per_image": float(np.mean(seconds)),
        }
        progress(f"{method:<7} {mode}: {json.dumps(result[method])}")
    if "ours" in result and "opencv" in result:
        result["time_ratio"] = (
            result["ours"]["cpu_s_per_image"] / result["opencv"]["cpu_s_per_image"]
        )
    title = f"selective search ({mode}) on {len(data)} {images} images"
    result["plot"] = str(plot_recall(result["curves"], out / f"recall_{images}_{mode}.png", title))
    plain = {k: v for k, v in result.items() if k != "curves"}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"metrics_{images}_{mode}.json").write_text(json.dumps(plain, indent=2))
    return result
