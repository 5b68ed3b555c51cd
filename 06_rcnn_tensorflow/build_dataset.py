"""Build R-CNN's training set: selective search on every image, proposals labelled by IoU.

    python 06_rcnn_tensorflow/build_dataset.py                       # built-in racoon, our search
    python 06_rcnn_tensorflow/build_dataset.py --proposals opencv    # OpenCV contrib's instead
    python 06_rcnn_tensorflow/build_dataset.py --download            # the real raccoon dataset

Writes into ``--output-dir`` (default ``runs/06_rcnn_tensorflow/rcnn_dataset``):

- ``proposals.npz``: every train and val image's proposals (``boxes`` [sum P, 4], ``counts``,
  ``split``), so that detection never runs the search twice;
- ``samples.npz``: the labelled, warped crops (see :mod:`rcnn_dataset`);
- ``dataset.json``: counts per label and split, rules, the search used and its CPU time.

Positives IoU >= 0.7 (at most 30 per image, plus the ground truth), negatives IoU < 0.05 (at most
10): the seed notebook's rules; R-CNN's part negatives 0.05 <= IoU < 0.3 (at most 10;
``--max-part-negative 0`` gives the seed's rules) and its regression-only samples 0.6 <= IoU < 0.7
(at most 10). Images are searched in ``--workers`` processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from racoon_data import load_racoon
from rcnn_dataset import LabelRules, rules_dict, samples_of_image, save_npz
from selective_search import MODES, propose_file

from detseg import settings
from detseg.cli.common import HelpFormatter, non_negative_int, positive_int
from detseg.data.imageio import read_image
from detseg.errors import UserError, run_cli

EXAMPLE = "06_rcnn_tensorflow"


def default_dataset_dir() -> Path:
    return settings.runs_root() / EXAMPLE / "rcnn_dataset"


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """The flags that choose the data and the proposals (shared with train_rcnn.py)."""
    group = parser.add_argument_group("data and proposals")
    group.add_argument(
        "--data-path",
        type=Path,
        default=None,
        help="racoon folder: VOC layout or github.com/datitran/raccoon_dataset (default: built-in)",
    )
    group.add_argument(
        "--download",
        action="store_true",
        help="download the real raccoon dataset (detseg.data.download; internet needed once)",
    )
    group.add_argument(
        "--num-images", type=int, default=None, help="built-in dataset size (default 200)"
    )
    group.add_argument(
        "--proposals", default="ours", choices=["ours", "opencv"], help="selective search to use"
    )
    group.add_argument("--mode", default="fast", choices=list(MODES), help="its strategies")
    group.add_argument(
        "--crop-size", type=int, default=64, help="crops are warped to this square side"
    )
    group.add_argument(
        "--max-positive", type=int, default=30, help="positives (IoU >= 0.7) per image"
    )
    group.add_argument(
        "--max-negative", type=int, default=10, help="negatives (IoU < 0.05) per image"
    )
    group.add_argument(
        "--max-part-negative",
        type=int,
        default=10,
        help="R-CNN's part negatives (0.05 <= IoU < 0.3) per image; 0 gives the seed's rules",
    )
    group.add_argument(
        "--workers", type=int, default=2, help="processes running the search (0: in this one)"
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Build R-CNN's region dataset: selective search + IoU labelling",
        formatter_class=HelpFormatter,
    )
    add_data_args(parser)
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="default runs/06_rcnn_tensorflow/rcnn_dataset"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-image sampling")
    parser.add_argument(
        "--dry-run", action="store_true", help="4 training and 2 validation images only"
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one line")
    return parser


def search_all(
    paths: Sequence[Path], method: str, mode: str, workers: int
) -> tuple[list[np.ndarray], float]:
    """Proposals for every image (in ``workers`` spawned processes) and their total CPU seconds."""
    args = ([str(p) for p in paths], [method] * len(paths), [mode] * len(paths))
    if workers <= 1:
        results = list(map(propose_file, *args))
    else:
        context = multiprocessing.get_context("spawn")  # safe after TensorFlow was imported
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            results = list(pool.map(propose_file, *args))
    return [r[0] for r in results], float(sum(r[1] for r in results))


def check_args(args: argparse.Namespace) -> argparse.Namespace:
    for flag in ("crop_size", "max_positive"):
        positive_int(getattr(args, flag), f"--{flag.replace('_', '-')}")
    non_negative_int(args.max_negative, "--max-negative")
    non_negative_int(args.max_part_negative, "--max-part-negative")
    non_negative_int(args.workers, "--workers")
    if args.num_images is not None:
        positive_int(args.num_images, "--num-images")
        if args.num_images < 2:
            raise UserError("--num-images must be at least 2", fix="pass 2 or more")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Build the dataset; returns the summary written to ``dataset.json``."""
    args = check_args(get_args_parser().parse_args(argv))
    out = Path(args.output_dir or default_dataset_dir())
    began = time.perf_counter()
    train, val = load_racoon(
        data_path=args.data_path, download=args.download, num_images=args.num_images
    )
    if args.dry_run:
        train.records, val.records = train.records[:4], val.records[:2]
    records = [(0, train, i) for i in range(len(train))] + [(1, val, i) for i in range(len(val))]
    paths = [ds.image_path(ds.records[i]) for _, ds, i in records]
    cached = cached_proposals(out, args, paths)
    if cached is None:
        proposals, cpu_seconds = search_all(paths, args.proposals, args.mode, args.workers)
    else:  # same images, same search: relabel without searching again
        proposals, cpu_seconds = cached
    rules = LabelRules(
        max_positive=args.max_positive,
        max_negative=args.max_negative,
        max_part_negative=args.max_part_negative,
    )
    parts: list[dict[str, np.ndarray]] = []
    for n, ((split, dataset, i), boxes) in enumerate(zip(records, proposals)):
        record = dataset.records[i]
        if not len(record.boxes):
            continue
        image = read_image(dataset.image_path(record))
        part = samples_of_image(
            image, boxes, record.boxes, rules, args.crop_size, args.seed * 100003 + n
        )
        part["image_index"] = np.full(len(part["labels"]), i, np.int64)
        part["split"] = np.full(len(part["labels"]), split, np.int64)
        parts.append(part)
    samples = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    save_npz(out / "samples.npz", samples)
    save_npz(
        out / "proposals.npz",
        {
            "boxes": np.concatenate(proposals).astype(np.float32),
            "counts": np.array([len(b) for b in proposals], np.int64),
            "split": np.array([s for s, _, _ in records], np.int64),
            "image_index": np.array([i for _, _, i in records], np.int64),
            "key": np.array(json.dumps(search_key(args, paths))),
            "search_cpu_s": np.array(cpu_seconds),
        },
    )
    summary: dict[str, Any] = {
        "dataset": str(train.root),
        "images": {"train": len(train), "val": len(val)},
        "proposals": args.proposals,
        "mode": args.mode,
        "proposals_per_image": float(np.mean([len(b) for b in proposals])),
        "search_cpu_s": cpu_seconds,
        "crop_size": args.crop_size,
        "rules": rules_dict(rules),
        "seconds": time.perf_counter() - began,
        "output_dir": str(out),
    }
    for split_name, split in (("train", 0), ("val", 1)):
        labels = samples["labels"][samples["split"] == split]
        summary[split_name] = {
            "positive": int((labels == 1).sum()),
            "negative": int((labels == 0).sum()),
            "regression_only": int((labels == -1).sum()),
        }
    (out / "dataset.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


def search_key(args: argparse.Namespace, paths: Sequence[Path]) -> list[Any]:
    """What the proposals depend on: the search, its mode and the image files."""
    return [args.proposals, args.mode, [str(p) for p in paths]]


def cached_proposals(
    out: Path, args: argparse.Namespace, paths: Sequence[Path]
) -> tuple[list[np.ndarray], float] | None:
    """The proposals of an earlier run into ``out`` with the same :func:`search_key`, else None."""
    path = out / "proposals.npz"
    if not path.is_file():
        return None
    data = np.load(path)
    if "key" not in data or json.loads(str(data["key"])) != search_key(args, paths):
        return None
    return np.split(data["boxes"], np.cumsum(data["counts"])[:-1]), float(data["search_cpu_s"])


def load_proposals(dataset_dir: str | Path, split: int) -> list[np.ndarray]:
    """The proposals that :func:`main` saved for ``split`` (0 train, 1 val), in image order."""
    path = Path(dataset_dir) / "proposals.npz"
    if not path.is_file():
        raise UserError("no proposals.npz", path=path, fix="run build_dataset.py first")
    data = np.load(path)
    chunks = np.split(data["boxes"], np.cumsum(data["counts"])[:-1])
    return [c for c, s in zip(chunks, data["split"]) if s == split]


if __name__ == "__main__":
    sys.exit(run_cli(main))
