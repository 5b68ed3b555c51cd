"""Draw every figure of the READMEs and lessons into ``assets/`` (``make assets``).

    python assets/make_assets.py            # write assets/<name>.png for every diagram
    python assets/make_assets.py --check    # exit 1, naming the files, if a PNG differs

The drawings live in :mod:`detseg.viz.diagrams` (the lessons call the same functions); the PNGs
are byte-identical from run to run on one matplotlib version.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from detseg.viz.diagrams import DIAGRAMS, save_figure  # noqa: E402
from detseg.viz.diagrams_detection import DETECTION_DIAGRAMS  # noqa: E402

# the detection figures (methods, sliding windows, R-CNN family, anchors, YOLO, AP) live there
DIAGRAMS = {**DIAGRAMS, **DETECTION_DIAGRAMS}

ASSETS = Path(__file__).resolve().parent


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Draw the diagrams of detseg.viz.diagrams as PNG")
    parser.add_argument("--out", type=Path, default=ASSETS, help="folder (default: assets/)")
    parser.add_argument(
        "--check", action="store_true", help="draw into a temporary folder and compare with --out"
    )
    parser.add_argument("--only", nargs="*", choices=list(DIAGRAMS), help="draw only these")
    return parser


def draw_all(out: Path, names: Sequence[str] | None = None) -> list[Path]:
    """Write ``<out>/<name>.png`` for each diagram; returns the paths."""
    return [save_figure(DIAGRAMS[name](), out / f"{name}.png") for name in names or DIAGRAMS]


def main(argv: Sequence[str] | None = None) -> list[str]:
    """Draw (or with --check compare); returns the names whose PNG differs (empty when drawing)."""
    args = get_args_parser().parse_args(argv)
    if not args.check:
        for path in draw_all(args.out, args.only):
            print(f"wrote {path.relative_to(path.parents[1])}")
        return []
    changed = []
    with tempfile.TemporaryDirectory() as folder:
        for path in draw_all(Path(folder), args.only):
            committed = args.out / path.name
            if not committed.is_file() or committed.read_bytes() != path.read_bytes():
                changed.append(path.stem)
    for name in changed:
        print(f"assets/{name}.png differs from its code; run: make assets", file=sys.stderr)
    return changed


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
