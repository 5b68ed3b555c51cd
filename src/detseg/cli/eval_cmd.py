"""``detseg eval``: COCO evaluation of a results file against a ground-truth file.

Example::

    detseg eval --gt instances_val.json --pred detections.json --iou-type segm
    detseg eval --gt instances_val.json --pred detections.json --json

Prints the 12 lines of the COCO summary, or with ``--json`` one JSON object holding the 12 stats by
name in pycocotools' order (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl).
A missing or malformed file ends with one line naming the file and the problem, exit status 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` subcommand to the ``detseg`` parser."""
    parser = subparsers.add_parser(
        "eval",
        help="COCO AP / AR of a results file against ground truth",
        description="COCO-style evaluation (same numbers as pycocotools' COCOeval) of a results "
        "file (a JSON list of {image_id, category_id, score, bbox | segmentation}) against a COCO "
        "ground-truth file.",
    )
    parser.add_argument("--gt", type=Path, required=True, help="COCO ground-truth JSON file")
    parser.add_argument("--pred", type=Path, required=True, help="COCO results JSON file")
    parser.add_argument(
        "--iou-type",
        choices=("bbox", "segm"),
        default="bbox",
        help="box IoU or mask IoU (default: bbox)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the 12 stats as one JSON object instead"
    )
    # accepted here too (``detseg eval ... --debug``); run_cli reads it from argv
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate and print; returns the exit status (0)."""
    from detseg.metrics.coco_eval import evaluate_coco

    result = evaluate_coco(args.gt, args.pred, args.iou_type)
    if args.json:
        print(json.dumps(result.stats))
    else:
        print(result.summary_table())
    return 0
