"""Benchmark of the built-in datasets: how long generating a recipe takes, files included.

Importing this module has no side effects. ``case_generate`` writes into a temporary folder that
it deletes, on one OpenCV thread (the generator is single-threaded numpy otherwise), and reports
both wall time and process CPU time (the CPU time is the fair number on a busy machine).

Run every recipe and print a Markdown table::

    PYTHONPATH=src python benchmarks/bench_data.py            # 1000 images each
    PYTHONPATH=src python benchmarks/bench_data.py 200 shapes # 200 images of shapes only
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def case_generate(recipe: str = "shapes", num_images: int | None = None) -> dict[str, Any]:
    """Time ``recipes.make(recipe, ..., num_images)`` (default 1000, 16 in smoke mode).

    Returns:
        ``num_images``, ``wall_s``, ``cpu_s``, ``cpu_per_image_ms``, ``disk_mb`` and ``main``
        (the headline key, ``cpu_s``).
    """
    import cv2

    from detseg import settings
    from detseg.data import recipes

    if num_images is None:
        num_images = 16 if settings.smoke_mode() else 1000
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            recipes.make(recipe, Path(tmp) / "warm-up", num_images=1)  # imports and caches
            wall, cpu = time.perf_counter(), time.process_time()
            out = recipes.make(recipe, Path(tmp) / recipe, num_images=num_images, seed=0)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    finally:
        cv2.setNumThreads(threads)
    return {
        "num_images": num_images,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "cpu_per_image_ms": round(1000 * cpu / num_images, 2),
        "disk_mb": round(disk / 2**20, 1),
        "main": "cpu_s",
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Print a Markdown table of :func:`case_generate` for the given (default: every) recipe."""
    from detseg.data import recipes

    args = sys.argv[1:] if argv is None else argv
    num_images = int(args[0]) if args else 1000
    names = args[1:] or list(recipes.RECIPES)
    rows = []
    print("| recipe | images | wall s | CPU s | CPU ms / image | disk MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        row = {"recipe": name, **case_generate(name, num_images)}
        rows.append(row)
        print(
            f"| {name} | {row['num_images']} | {row['wall_s']} | {row['cpu_s']} | "
            f"{row['cpu_per_image_ms']} | {row['disk_mb']} |",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
