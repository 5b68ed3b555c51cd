"""Timing of ``detseg.boxes`` against ``torchvision.ops``: IoU matrix and NMS on 10k random boxes.

Plain functions, no side effects at import; the benchmark harness registers ``case_iou`` and
``case_nms``. Each returns ``{"ours_ms", "torchvision_ms", "ratio"}`` (ratio = ours / torchvision,
below 1 means we are faster): medians of ``repeats`` runs after one warm-up, ours and torchvision
timed alternately so that a noisy machine slows both alike.

    PYTHONPATH=src python benchmarks/bench_boxes.py            # every case, as a table
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import numpy as np

BOX_KINDS = ("uniform", "clustered", "sparse")


def random_boxes(n: int, kind: str = "uniform", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random float32 ``xyxy`` boxes in a 1000 x 1000 image, and scores.

    Args:
        n: number of boxes.
        kind: ``"uniform"`` (corners uniform, sides 10-200 px), ``"clustered"`` (like a detector's
            raw output: 100 objects, each box a jittered copy of one), or ``"sparse"`` (sides 1-10 px,
            so boxes rarely overlap and NMS keeps almost all: its worst case).
        seed: random seed.
    Returns:
        boxes float32 [n, 4], scores float32 [n] in [0, 1).
    """
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        corner, size = rng.uniform(0, 1000, (n, 2)), rng.uniform(10, 200, (n, 2))
    elif kind == "sparse":
        corner, size = rng.uniform(0, 1000, (n, 2)), rng.uniform(1, 10, (n, 2))
    elif kind == "clustered":
        centres, sizes = rng.uniform(0, 1000, (100, 2)), rng.uniform(20, 200, (100, 2))
        owner = rng.integers(0, 100, n)
        size = sizes[owner] * np.exp(rng.normal(0, 0.15, (n, 2)))
        corner = centres[owner] + rng.normal(0, 0.1, (n, 2)) * sizes[owner] - size / 2
    else:
        raise ValueError(f"unknown kind {kind!r}; use one of {BOX_KINDS}")
    boxes = np.concatenate([corner, corner + size], axis=1).astype(np.float32)
    return boxes, rng.random(n).astype(np.float32)


@contextmanager
def _torch_threads(threads: int | None):
    """Run with ``threads`` torch CPU threads (None: leave the setting alone), then restore it."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _compare(ours: Callable[[], Any], reference: Callable[[], Any], repeats: int) -> dict:
    """Median wall time in ms of both callables (one warm-up each, then alternating runs)."""
    ours(), reference()
    times: dict[str, list[float]] = {"ours": [], "torchvision": []}
    for _ in range(repeats):
        for name, fn in (("ours", ours), ("torchvision", reference)):
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    ours_ms, torchvision_ms = (
        float(np.median(times["ours"])),
        float(np.median(times["torchvision"])),
    )
    return {"ours_ms": ours_ms, "torchvision_ms": torchvision_ms, "ratio": ours_ms / torchvision_ms}


def case_iou(
    n: int = 10000, backend: str = "numpy", repeats: int = 5, threads: int | None = None
) -> dict:
    """``box_iou`` of n uniform boxes with themselves ([n, n] matrix) vs ``torchvision.ops.box_iou``.

    Args:
        n: number of boxes (the result has n * n entries: 10k -> 400 MB of float32).
        backend: ``"numpy"`` (our numpy path, torchvision on tensors) or ``"torch"`` (both on tensors).
        repeats: timed runs of each.
        threads: torch CPU threads during the run (None: as configured).
    Returns:
        ``{"ours_ms", "torchvision_ms", "ratio"}``.
    """
    import torch
    import torchvision

    from detseg.boxes import box_iou

    boxes, _ = random_boxes(n)
    tensor = torch.from_numpy(boxes)
    ours_input = tensor if backend == "torch" else boxes
    with _torch_threads(threads):
        return _compare(
            lambda: box_iou(ours_input, ours_input),
            lambda: torchvision.ops.box_iou(tensor, tensor),
            repeats,
        )


def case_nms(
    n: int = 10000,
    backend: str = "numpy",
    kind: str = "uniform",
    iou_threshold: float = 0.5,
    repeats: int = 7,
    threads: int | None = None,
) -> dict:
    """``nms`` of n random boxes vs ``torchvision.ops.nms`` (its C++ CPU kernel), same result checked.

    Args:
        n: number of boxes.
        backend: ``"numpy"`` or ``"torch"`` (our input type; torchvision always gets tensors).
        kind: box distribution, see :func:`random_boxes`.
        iou_threshold: NMS threshold.
        repeats: timed runs of each.
        threads: torch CPU threads during the run (None: as configured).
    Returns:
        ``{"ours_ms", "torchvision_ms", "ratio"}``.
    """
    import torch
    import torchvision

    from detseg.boxes import nms

    boxes, scores = random_boxes(n, kind)
    tensors = torch.from_numpy(boxes), torch.from_numpy(scores)
    ours_input = tensors if backend == "torch" else (boxes, scores)
    expected = torchvision.ops.nms(*tensors, iou_threshold).numpy()
    kept = nms(*ours_input, iou_threshold)
    if not np.array_equal(np.asarray(kept), expected):
        raise AssertionError("detseg.boxes.nms differs from torchvision.ops.nms")
    with _torch_threads(threads):
        return _compare(
            lambda: nms(*ours_input, iou_threshold),
            lambda: torchvision.ops.nms(*tensors, iou_threshold),
            repeats,
        )


def main() -> None:
    """Print every case: IoU and NMS, numpy and torch inputs, each box kind for NMS."""
    import torch

    print(f"torch threads: {torch.get_num_threads()}")
    print(f"{'case':<34} {'ours ms':>10} {'torchvision ms':>15} {'ratio':>7}")
    rows = [(f"iou n=10000 {b}", lambda b=b: case_iou(backend=b)) for b in ("numpy", "torch")]
    for kind in BOX_KINDS:
        for backend in ("numpy", "torch"):
            rows.append(
                (
                    f"nms n=10000 {kind} {backend}",
                    lambda k=kind, b=backend: case_nms(kind=k, backend=b),
                )
            )
    for name, run in rows:
        result = run()
        print(
            f"{name:<34} {result['ours_ms']:>10.1f} {result['torchvision_ms']:>15.1f}"
            f" {result['ratio']:>7.2f}"
        )


if __name__ == "__main__":
    main()
