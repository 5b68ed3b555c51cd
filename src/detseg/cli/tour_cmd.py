"""``detseg tour``: run the quick path of each lesson and print one table of what came out.

A *step* is a function ``run(out_dir: Path) -> dict``: metric name -> value, plus an optional
``"pictures"`` list of the image files it wrote (inside ``out_dir``). It must be quick (seconds to a
minute on a CPU) and use the built-in data. Steps are named in :data:`TOUR` as
``"module:function"`` (core) or ``"NN_folder/tour.py:run"`` (an example, loaded by file path so the
core never imports an example folder).

    detseg tour                       # every step; results in runs/tour/results.json
    detseg tour --only core-eval      # one step
    detseg tour --list

A failing step prints its error and the tour goes on; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path
from typing import Any

# step name -> target; a visible dict. Examples add "NN_name": "NN_folder/tour.py:run".
TOUR: dict[str, str] = {
    "core-data": "detseg.tour_core:run_data",
    "core-validate": "detseg.tour_core:run_validate",
    "core-eval": "detseg.tour_core:run_eval",
    "core-export": "detseg.tour_core:run_export",
    "01_mask_r_cnn": "01_mask_r_cnn_fine_tuning/tour.py:run",
    "02_yolo_v3_darknet": "02_yolo_v3_darknet/tour.py:run",
    "03_yolo_v7_tutorial": "03_yolo_v7_tutorial/tour.py:run",
    "04_basic_object_detection": "04_basic_object_detection/tour.py:run",
    "05_unet_segmentation": "05_unet_segmentation/tour.py:run",
    "06_rcnn_tensorflow": "06_rcnn_tensorflow/tour.py:run",
    "07_bbox_regression_tensorflow": "07_bbox_regression_tensorflow/tour.py:run",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tour`` to the ``detseg`` parser."""
    parser = subparsers.add_parser(
        "tour",
        help="run the quick path of every lesson and print a results table",
        description="Run each step of the tour (built-in data, seconds each), print a table of "
        "metrics and the pictures written, and save them in <out>/results.json.",
    )
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="run this step (repeatable)"
    )
    parser.add_argument("--list", action="store_true", help="list the steps and exit")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default <DETSEG_RUNS>/tour)"
    )
    parser.set_defaults(func=_tour)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run_step(name: str, target: str, out_dir: Path) -> dict[str, Any]:
    """Run one step into ``out_dir``; an exception is recorded in ``"error"``, not raised.

    Returns:
        ``{"target", "metrics": dict, "pictures": [str], "time_s", "error": str | None}``.
    """
    from detseg.bench import load_target
    from detseg.errors import UserError

    record: dict[str, Any] = {
        "target": target,
        "metrics": {},
        "pictures": [],
        "time_s": 0.0,
        "error": None,
    }
    start = time.perf_counter()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        results = dict(load_target(target)(out_dir))
        record["pictures"] = [str(p) for p in results.pop("pictures", [])]
        record["metrics"] = results
    except Exception as err:  # a failing step must not stop the tour
        message = err.message() if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
        record["error"] = message
        record["traceback"] = traceback.format_exc()
    record["time_s"] = round(time.perf_counter() - start, 2)
    return record


def _tour(args: argparse.Namespace) -> int:
    from detseg import settings
    from detseg.errors import UserError

    if args.list:
        for name, target in TOUR.items():
            print(f"{name:<28} {target}")
        return 0
    for name in args.only:
        if name not in TOUR:
            raise UserError(
                f"unknown tour step {name!r}", fix="run 'detseg tour --list' to see them"
            )
    out = args.out or settings.runs_root() / "tour"
    if out.exists() and not out.is_dir():
        raise UserError("--out is a file, not a folder", path=out, fix="pass a folder to --out")
    names = args.only or list(TOUR)
    records: dict[str, dict[str, Any]] = {}
    print(f"{'step':<24} {'metric':<28} {'value':>12} {'time':>8}")
    for name in names:
        record = records[name] = run_step(name, TOUR[name], out / name)
        seconds = f"{record['time_s']:.1f} s"
        if record["error"]:
            print(f"{name:<24} {'FAILED':<28} {'':>12} {seconds:>8}  {record['error']}", flush=True)
            if getattr(args, "debug", False):
                print(record["traceback"])
            continue
        rows = list(record["metrics"].items()) or [("(no metrics)", "")]
        for index, (metric, value) in enumerate(rows):
            first = index == 0
            print(
                f"{name if first else '':<24} {metric:<28} {_format(value):>12} "
                f"{seconds if first else '':>8}",
                flush=True,
            )
    pictures = [p for r in records.values() for p in r["pictures"]]
    if pictures:
        print("pictures:")
        for picture in pictures:
            print(f"  {picture}")
    failed = [name for name, record in records.items() if record["error"]]
    for record in records.values():
        record.pop("traceback", None)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    document = {"steps": records, "failed": failed}
    results_path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"results: {results_path}")
    if failed:
        print(f"{len(failed)} step(s) failed: {', '.join(failed)}")
        return 1
    return 0
