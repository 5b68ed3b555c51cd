"""Selective search two ways: OpenCV contrib's, and ours from scratch (Uijlings et al., IJCV 2013).

    python 06_rcnn_tensorflow/selective_search.py                    # compare both on built-in racoon
    python 06_rcnn_tensorflow/selective_search.py --images photos    # ... on skimage.data photographs
    python 06_rcnn_tensorflow/selective_search.py --method ours --mode quality --num-images 5

Our implementation follows the paper:

1. **Initial regions**: Felzenszwalb & Huttenlocher's graph segmentation
   (``skimage.segmentation.felzenszwalb``, scale ``k``, sigma 0.8, minimum size ``k``), run on the
   image in a given colour space.
2. **Hierarchical grouping**: repeatedly merge the two *neighbouring* regions of highest similarity
   until one region is left; every region ever formed is a proposal (its bounding box). Similarity
   is a sum of up to four terms in [0, 1]:

   - colour: intersection of L1-normalised colour histograms, 25 bins per channel;
   - texture: intersection of L1-normalised histograms of Gaussian derivatives (sigma 1) in 8
     orientations, 10 bins each, per channel (240 values for 3 channels);
   - size: ``1 - (size_i + size_j) / size_image`` (small regions merge first);
   - fill: ``1 - (size(BB_ij) - size_i - size_j) / size_image`` (regions that fill each other's gaps).

   A merged region's histograms are the size-weighted means of its parts; nothing is recomputed
   from pixels.
3. **Diversification**: several colour spaces, thresholds ``k`` and similarity combinations
   (:data:`MODES`: the paper's "fast" = 8 strategies, "quality" = 80).
4. **Ranking**: in each hierarchy the region formed last (the whole image) has position 1, the one
   before it 2, and so on; each position is multiplied by a random number in [0, 1] and all
   proposals are sorted by that value, duplicates removed.

Boxes are float xyxy in absolute pixels, ``x2`` = last column + 1 (continuous coordinates).
"""

from __future__ import annotations

import argparse
import heapq
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

COLOUR_BINS = 25
TEXTURE_BINS = 10
TEXTURE_ORIENTATIONS = 8
SIMILARITIES = {  # name -> (colour, texture, size, fill) weights
    "CTSF": (1, 1, 1, 1),
    "TSF": (0, 1, 1, 1),
    "F": (0, 0, 0, 1),
    "S": (0, 0, 1, 0),
}


@dataclass(frozen=True)
class Mode:
    """A diversification setting: every combination of colour space x k x similarity is one
    hierarchy. ``max_side``: the image is shrunk so that its longer side is at most this (0: never)."""

    colour_spaces: tuple[str, ...]
    ks: tuple[int, ...]
    similarities: tuple[str, ...]
    max_side: int = 0

    @property
    def num_strategies(self) -> int:
        return len(self.colour_spaces) * len(self.ks) * len(self.similarities)


MODES: dict[str, Mode] = {
    # the paper's "Selective Search Fast" (section 5.2) and "Quality"
    "fast": Mode(("hsv", "lab"), (50, 100), ("CTSF", "TSF")),
    "quality": Mode(("hsv", "lab", "rgi", "h", "i"), (50, 100, 150, 300), ("CTSF", "TSF", "F", "S")),
    # one hierarchy: the tests and the smoke runs
    "single": Mode(("hsv",), (100,), ("CTSF",)),
}  # fmt: skip


# ------------------------------------------------------------------------------------ colour spaces
def convert_colour(image: np.ndarray, space: str) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> float32 [H, W, C] with every channel scaled to [0, 1].

    Spaces: ``rgb``, ``hsv``, ``lab``, ``rgi`` (normalised r, g and intensity), ``h`` (hue only),
    ``i`` (intensity only).
    """
    import cv2

    rgb = image.astype(np.float32) / 255.0
    if space == "rgb":
        return rgb
    if space in ("hsv", "h"):
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)  # H in [0, 360), S, V in [0, 1]
        hsv[..., 0] /= 360.0
        return hsv if space == "hsv" else hsv[..., :1]
    if space == "lab":
        lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)  # L in [0, 100], a, b in about [-127, 127]
        return np.stack(
            [lab[..., 0] / 100.0, (lab[..., 1] + 128) / 255.0, (lab[..., 2] + 128) / 255.0], -1
        ).clip(0, 1)
    intensity = rgb.mean(axis=-1, keepdims=True)
    if space == "i":
        return intensity
    if space == "rgi":
        total = rgb.sum(axis=-1, keepdims=True) + 1e-6
        return np.concatenate([rgb[..., :2] / total, intensity], -1).clip(0, 1)
    raise ValueError(f"unknown colour space {space!r}")


def gaussian_derivatives(channels: np.ndarray) -> np.ndarray:
    """Texture responses: Gaussian derivatives (sigma 1) in 8 orientations per channel.

    Four directions (0, 45, 90, 135 degrees) of the first derivative, each split into its positive
    and negative part, give 8 orientations of non-negative responses, each scaled to [0, 1] by its
    maximum over the image.

    Args:
        channels: float32 [H, W, C].
    Returns:
        float32 [H, W, C, 8].
    """
    import cv2

    out = np.empty(channels.shape + (TEXTURE_ORIENTATIONS,), np.float32)
    for c in range(channels.shape[-1]):
        smooth = cv2.GaussianBlur(channels[..., c], (0, 0), 1.0)
        gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
        for d, angle in enumerate(np.deg2rad([0.0, 45.0, 90.0, 135.0])):
            response = np.cos(angle) * gx + np.sin(angle) * gy
            out[..., c, 2 * d] = np.maximum(response, 0)
            out[..., c, 2 * d + 1] = np.maximum(-response, 0)
    peak = out.reshape(-1, channels.shape[-1], TEXTURE_ORIENTATIONS).max(axis=0)
    return out / np.maximum(peak, 1e-6)


# ------------------------------------------------------------------------------- region features
def _histograms(labels: np.ndarray, values: np.ndarray, num_regions: int, bins: int) -> np.ndarray:
    """Per-region L1-normalised histograms of every column of ``values``.

    Args:
        labels: int [P] region of each pixel. values: float [P, D] in [0, 1].
    Returns:
        float32 [num_regions, D * bins], each row summing to 1.
    """
    index = np.minimum((values * bins).astype(np.int64), bins - 1)  # [P, D]
    offsets = np.arange(values.shape[1]) * bins
    flat = labels[:, None] * (values.shape[1] * bins) + offsets + index
    counts = np.bincount(flat.ravel(), minlength=num_regions * values.shape[1] * bins)
    hist = counts.reshape(num_regions, -1).astype(np.float32)
    return hist / np.maximum(hist.sum(axis=1, keepdims=True), 1)


def region_features(
    labels: np.ndarray, colour: np.ndarray, texture: np.ndarray
) -> dict[str, np.ndarray]:
    """Sizes, boxes, colour and texture histograms and neighbour pairs of a segmentation.

    Args:
        labels: int [H, W], regions 0..R-1. colour: float [H, W, C]. texture: float [H, W, C, 8].
    Returns:
        ``{"size": [R], "box": [R, 4] xyxy, "colour": [R, 25 C], "texture": [R, 80 C],
        "pairs": [E, 2] (i < j, 4-neighbours)}``.
    """
    from scipy.ndimage import find_objects

    num = int(labels.max()) + 1
    flat = labels.ravel()
    size = np.bincount(flat, minlength=num).astype(np.float64)
    box = np.array(
        [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in find_objects(labels + 1)],
        dtype=np.float64,
    )  # every label 0..R-1 occurs (felzenszwalb numbers its regions densely)
    colour_hist = _histograms(flat, colour.reshape(flat.size, -1), num, COLOUR_BINS)
    texture_hist = _histograms(flat, texture.reshape(flat.size, -1), num, TEXTURE_BINS)
    pairs = np.concatenate(
        [
            np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
            np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], 1),
        ]
    )
    pairs = pairs[pairs[:, 0] != pairs[:, 1]].astype(np.int64)
    codes = np.unique(pairs.min(axis=1) * num + pairs.max(axis=1))  # one int per unordered pair
    pairs = np.stack([codes // num, codes % num], axis=1)
    return {
        "size": size,
        "box": box,
        "colour": colour_hist,
        "texture": texture_hist,
        "pairs": pairs,
    }


# -------------------------------------------------------------------------- hierarchical grouping
def hierarchical_grouping(
    features: dict[str, np.ndarray], weights: Sequence[float], image_size: float
) -> np.ndarray:
    """Greedy grouping of neighbouring regions by similarity, as in the paper's Algorithm 1.

    Args:
        features: from :func:`region_features` (not modified).
        weights: (colour, texture, size, fill) weights of the similarity terms.
        image_size: number of pixels of the image.
    Returns:
        float64 [2R - 1, 4]: the boxes of every region in the order they were formed (the R initial
        regions first, the whole image last).
    """
    w_colour, w_texture, w_size, w_fill = (float(w) for w in weights)
    num = len(features["size"])
    total = 2 * num - 1  # R initial regions + R - 1 merges (fewer if the graph is disconnected)
    size = np.zeros(total)
    box = np.zeros((total, 4))
    colour = np.zeros((total, features["colour"].shape[1]), np.float32)
    texture = np.zeros((total, features["texture"].shape[1]), np.float32)
    size[:num], box[:num] = features["size"], features["box"]
    colour[:num], texture[:num] = features["colour"], features["texture"]
    neighbours: list[set[int]] = [set() for _ in range(num)]
    for i, j in features["pairs"]:
        neighbours[i].add(int(j))
        neighbours[j].add(int(i))

    def similarity(i: np.ndarray, j: np.ndarray | int) -> np.ndarray:
        """Similarities of regions ``i`` [K] with regions ``j`` ([K] or one), float64 [K]."""
        result = np.zeros(len(i))
        if w_colour:
            result += w_colour * np.minimum(colour[i], colour[j]).sum(axis=-1)
        if w_texture:
            result += w_texture * np.minimum(texture[i], texture[j]).sum(axis=-1)
        if w_size:
            result += w_size * (1.0 - (size[i] + size[j]) / image_size)
        if w_fill:
            low = np.minimum(box[i, :2], box[j, :2])
            high = np.maximum(box[i, 2:], box[j, 2:])
            bbox = np.prod(high - low, axis=-1)
            result += w_fill * (1.0 - (bbox - size[i] - size[j]) / image_size)
        return result

    # max-heap of (-similarity, i, j); entries of merged regions are skipped when popped
    pairs = features["pairs"]
    initial = similarity(pairs[:, 0], pairs[:, 1]) if len(pairs) else np.zeros(0)
    heap = list(zip((-initial).tolist(), pairs[:, 0].tolist(), pairs[:, 1].tolist()))
    heapq.heapify(heap)
    alive = np.zeros(total, bool)
    alive[:num] = True
    new = num
    while heap:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue
        size[new] = size[i] + size[j]
        box[new, :2] = np.minimum(box[i, :2], box[j, :2])
        box[new, 2:] = np.maximum(box[i, 2:], box[j, 2:])
        colour[new] = (size[i] * colour[i] + size[j] * colour[j]) / size[new]
        texture[new] = (size[i] * texture[i] + size[j] * texture[j]) / size[new]
        alive[i] = alive[j] = False
        alive[new] = True
        merged = (neighbours[i] | neighbours[j]) - {i, j}
        neighbours.append(merged)
        for k in merged:
            neighbours[k] -= {i, j}
            neighbours[k].add(new)
        if merged:
            others = np.fromiter(merged, dtype=np.int64, count=len(merged))
            for k, value in zip(others.tolist(), similarity(others, new).tolist()):
                heapq.heappush(heap, (-value, k, new))
        new += 1
    return box[:new]


# ----------------------------------------------------------------------------------- the search
def _shrink(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    import cv2

    longest = max(image.shape[:2])
    if not max_side or longest <= max_side:
        return image, 1.0
    scale = max_side / longest
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def selective_search(
    image: np.ndarray,
    mode: str | Mode = "fast",
    *,
    seed: int = 0,
    min_size: int = 0,
) -> np.ndarray:
    """Our selective search: proposals ranked as in the paper, duplicates removed.

    Args:
        image: RGB uint8 [H, W, 3].
        mode: a key of :data:`MODES` or a :class:`Mode`.
        seed: seeds the random ranking.
        min_size: drop boxes narrower or lower than this many pixels.
    Returns:
        float32 [P, 4] xyxy boxes in the input image's pixels, best first.
    """
    from skimage.segmentation import felzenszwalb

    spec = MODES[mode] if isinstance(mode, str) else mode
    rng = np.random.default_rng(seed)
    small, scale = _shrink(image, spec.max_side)
    image_size = float(small.shape[0] * small.shape[1])
    boxes, priorities = [], []
    for space in spec.colour_spaces:
        colour = convert_colour(small, space)
        texture = gaussian_derivatives(colour)
        for k in spec.ks:
            # felzenszwalb takes 1 or 3 channels; on the colour space's values scaled to 0..255
            segment_input = colour[..., 0] if colour.shape[-1] == 1 else colour
            labels = felzenszwalb(
                segment_input * 255.0, scale=k, sigma=0.8, min_size=k, channel_axis=None
                if colour.shape[-1] == 1 else -1
            )  # fmt: skip
            features = region_features(labels, colour, texture)
            for name in spec.similarities:
                hierarchy = hierarchical_grouping(features, SIMILARITIES[name], image_size)
                position = np.arange(len(hierarchy), 0, -1, dtype=np.float64)  # whole image: 1
                boxes.append(hierarchy)
                priorities.append(position * rng.random(len(hierarchy)))
    all_boxes = np.concatenate(boxes) / scale
    order = np.argsort(np.concatenate(priorities), kind="stable")
    ranked = np.round(all_boxes[order], 3)
    _, first = np.unique(ranked, axis=0, return_index=True)
    ranked = ranked[np.sort(first)]  # duplicates removed, best rank kept
    if min_size:
        keep = (ranked[:, 2] - ranked[:, 0] >= min_size) & (ranked[:, 3] - ranked[:, 1] >= min_size)
        ranked = ranked[keep]
    return ranked.astype(np.float32)


def opencv_selective_search(
    image: np.ndarray, mode: str = "fast", *, threads: int | None = None
) -> np.ndarray:
    """OpenCV contrib's selective search (``cv2.ximgproc.segmentation``), boxes as xyxy float32.

    Args:
        image: RGB uint8 [H, W, 3].
        mode: ``"fast"`` (``switchToSelectiveSearchFast``), ``"quality"``
            (``switchToSelectiveSearchQuality``) or ``"single"`` (``switchToSingleStrategy``).
        threads: ``cv2.setNumThreads`` while it runs (default: leave as set).
    Returns:
        float32 [P, 4] xyxy, in OpenCV's ranking order.
    """
    import cv2

    if not hasattr(cv2, "ximgproc"):
        from detseg.errors import UserError

        raise UserError(
            "cv2.ximgproc is missing: this OpenCV wheel has no contrib modules",
            fix="pip uninstall opencv-python opencv-python-headless; "
            "pip install 'opencv-contrib-python>=4.8,<5'",
        )
    previous = cv2.getNumThreads()
    if threads is not None:
        cv2.setNumThreads(threads)
    try:
        search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        search.setBaseImage(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        {
            "fast": search.switchToSelectiveSearchFast,
            "quality": search.switchToSelectiveSearchQuality,
            "single": search.switchToSingleStrategy,
        }[mode]()
        rects = np.asarray(search.process(), dtype=np.float32).reshape(-1, 4)  # x, y, w, h
    finally:
        cv2.setNumThreads(previous)
    rects[:, 2:] += rects[:, :2]
    return rects


METHODS = {"ours": selective_search, "opencv": opencv_selective_search}


def propose(image: np.ndarray, method: str = "ours", mode: str = "fast") -> np.ndarray:
    """Proposals of ``method`` (``"ours"`` / ``"opencv"``) in ``mode``: float32 [P, 4] xyxy."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {sorted(METHODS)}")
    return METHODS[method](image, mode)


def propose_file(path: str, method: str, mode: str) -> tuple[np.ndarray, float]:
    """:func:`propose` on the image file ``path`` with one OpenCV thread; returns the proposals
    and the search's CPU seconds. A module-level function of an importable module, so that a
    spawned worker process can run it whatever name its caller was imported under."""
    import time

    import cv2

    from detseg.data.imageio import read_image

    cv2.setNumThreads(1)
    image = read_image(path)
    start = time.process_time()
    boxes = propose(image, method, mode)
    return boxes, time.process_time() - start


# ----------------------------------------------------------------------------------------- CLI
def get_args_parser() -> argparse.ArgumentParser:
    from detseg.cli.common import HelpFormatter

    parser = argparse.ArgumentParser(
        description="Selective search: ours (from scratch) vs OpenCV contrib; recall of the "
        "ground-truth boxes at IoU 0.5 / 0.7 vs number of proposals, and time per image",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--images",
        default="racoon",
        choices=["racoon", "photos"],
        help="built-in racoon validation images (VOC layout) or the skimage.data photographs with "
        "hand-set boxes (proposal_recall.PHOTO_BOXES)",
    )
    parser.add_argument(
        "--method", default="both", choices=["both", "ours", "opencv"], help="which to run"
    )
    parser.add_argument("--mode", default="fast", choices=list(MODES), help="strategies")
    parser.add_argument(
        "--num-images", type=int, default=None, help="first N images (default: all 40 val images)"
    )
    parser.add_argument(
        "--data-path", type=Path, default=None, help="a racoon dataset folder (VOC or datitran)"
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where recall.png and metrics.json go (default runs/06_rcnn_tensorflow/selective_search)",
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one line")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the comparison; returns ``{method: {"recall@0.5", "recall@0.7", "proposals",
    "seconds_per_image", "curve_0.5", "curve_0.7"}, "time_ratio" (ours / OpenCV), "plot"}``."""
    from proposal_recall import compare_methods

    from detseg.cli.common import positive_int

    args = get_args_parser().parse_args(argv)
    if args.num_images is not None:
        positive_int(args.num_images, "--num-images")
    methods = ["ours", "opencv"] if args.method == "both" else [args.method]
    return compare_methods(
        args.images,
        methods,
        args.mode,
        num_images=args.num_images,
        data_path=args.data_path,
        output_dir=args.output_dir,
    )


if __name__ == "__main__":
    from detseg.errors import run_cli

    sys.exit(run_cli(main))
