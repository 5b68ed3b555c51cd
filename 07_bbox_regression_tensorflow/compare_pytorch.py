"""The side-by-side table: this folder's Keras 07b against 04's PyTorch single-object detector.

    python 07_bbox_regression_tensorflow/compare_pytorch.py                 # both defaults, full data
    python 07_bbox_regression_tensorflow/compare_pytorch.py --epochs 10     # the same epoch budget
    python 07_bbox_regression_tensorflow/compare_pytorch.py --dry-run       # one batch each

Both are trained here, one after the other, on the **same files**: the built-in ``single_object``
folder (airplane / face / motorcycle, Caltech-101 CSV layout), passed to each as ``--data-path``. Both use
the **same backbone, layer for layer**: five Conv-BN-ReLU-MaxPool stages (16, 32, 64, 128, 128), 128 x 128
input, frozen after the same kind of pretraining (classify *and locate* the object of 1,200 other
built-in images, data seed 1, with a locating head that is then dropped), and the seed's dense heads
on top. What differs is the framework and each folder's own choices of heads and recipe (each
folder's README): 07's box head reads the map before the last pooling through a 3 x 3 and a 1 x 1
convolution, 04's through a 3 x 3 one; 04 also caches two crop copies of every training image; the
table's trainable parameters show what each head costs. The split differs (each holds out
its own 20 %); both train the heads on cached features by default. 04's script is loaded by file path
(:func:`detseg.scripts.load_script`); the table goes to ``--output-dir`` as ``comparison.md`` and
``comparison.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bbox_cli

from detseg import settings
from detseg.cli.common import HelpFormatter, positive_int
from detseg.data import recipes
from detseg.engine.checkpoint import atomic_write_text
from detseg.errors import UserError, run_cli
from detseg.scripts import load_script

PYTORCH_FOLDER = Path(__file__).resolve().parents[1] / "04_basic_object_detection"
PYTORCH_SCRIPT = "train_single_object"
COLUMNS = ("framework", "trainable parameters", "seconds / epoch", "epochs", "mean IoU", "accuracy")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train 07b (Keras) and 04's single-object detector (PyTorch) on the same data "
        "and backbone size; write one table",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--num-images", type=int, default=None, help="built-in images (default: 2400; 24 smoke)"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="both runs (default: each script's own default)"
    )
    parser.add_argument("--seed", type=int, default=0, help="both runs")
    parser.add_argument(
        "--pytorch-loop",
        choices=("both", "no-cached-features", "cached-features"),
        default="both",
        help="04's loop: the backbone every epoch (as 07 and the seed), its feature cache, or both",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=settings.runs_root() / bbox_cli.EXAMPLE / "comparison",
        help="table and both run folders",
    )
    parser.add_argument("--dry-run", action="store_true", help="one batch of each, end to end")
    parser.add_argument(
        "--debug", action="store_true", help="tracebacks instead of one-line errors"
    )
    return parser


def pytorch_script() -> Any:
    """04's ``train_single_object.py`` as a module.

    Raises:
        UserError: the file is not in this checkout.
    """
    path = PYTORCH_FOLDER / f"{PYTORCH_SCRIPT}.py"
    if not path.is_file():
        raise UserError(
            "04's single-object detector is not in this checkout",
            path=path,
            fix="check out the whole repository (the comparison trains both)",
        )
    return load_script(PYTORCH_FOLDER, PYTORCH_SCRIPT)


def row(framework: str, result: dict[str, Any], epochs: int | None) -> dict[str, Any]:
    """One line of the table from a script's returned metrics."""
    return {
        "framework": framework,
        "trainable parameters": int(result["trainable_parameters"]),
        "seconds / epoch": float(result["seconds_per_epoch"]),
        "epochs": epochs,
        "mean IoU": float(result["mean_iou"]),
        "accuracy": None
        if result.get("class_accuracy") is None
        else float(result["class_accuracy"]),
    }


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}" if value < 10 else f"{value:.1f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train both, write the table; returns ``{"rows", "table", "data_path"}``."""
    args = get_args_parser().parse_args(argv)
    if args.num_images is not None:
        positive_int(args.num_images, "--num-images")
    if args.epochs is not None:
        positive_int(args.epochs, "--epochs")
    torch_train = pytorch_script()  # fail early, before any training
    num_images = args.num_images or (24 if settings.smoke_mode() else 2400)
    data_path = recipes.ensure("single_object", num_images=num_images)
    common = ["--data-path", str(data_path), "--seed", str(args.seed), "--backbone", "small"]
    if args.epochs is not None:
        common += ["--epochs", str(args.epochs)]
    if args.dry_run:
        common.append("--dry-run")
    out = Path(args.output_dir)
    keras_result = bbox_cli.main("multi", [*common, "--output-dir", str(out / "keras-07b")])
    keras_loop = "cached features" if keras_result["cached_features"] else "backbone every epoch"
    rows = [
        row(f"Keras 3 / TensorFlow (07b), {keras_loop}", keras_result, keras_result["epochs_run"])
    ]
    for flag, loop in (("--no-cached-features", "backbone every epoch"),
                       ("--cached-features", "cached features")):  # fmt: skip
        if args.pytorch_loop not in ("both", flag[2:]):
            continue
        folder = out / f"pytorch-04-{flag[2:]}"
        torch_result = torch_train.main([*common, flag, "--output-dir", str(folder)])
        rows.append(row(f"PyTorch (04), {loop}", torch_result, len(torch_result["history"])))
    table = markdown(rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "comparison.md", table)
    document = {"rows": rows, "data_path": str(data_path), "argv": list(argv or sys.argv[1:])}
    atomic_write_text(out / "comparison.json", json.dumps(document, indent=1) + "\n")
    print(table, end="")
    print(f"written: {out / 'comparison.md'}")
    return {"rows": rows, "table": table, "data_path": str(data_path)}


if __name__ == "__main__":
    sys.exit(run_cli(main))
