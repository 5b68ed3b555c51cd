"""Save frames from a webcam, a video or the built-in stream into a folder, ready to label.

    python 03_yolo_v7_tutorial/record_images.py --source 0 --out my_set/images            # SPACE saves
    python 03_yolo_v7_tutorial/record_images.py --source 0 --every 15 --max-images 200    # every 15th
    python 03_yolo_v7_tutorial/record_images.py --source clip.mp4 --every 10 --no-show
    python 03_yolo_v7_tutorial/record_images.py --source synthetic --every 5 --max-images 20 --no-show

Frames are written as ``<prefix>_0001.jpg`` ... (numbering continues after files already there),
the format CVAT, Label Studio and Roboflow import as a plain image folder. With a window, SPACE
saves the current frame and q / Esc stops; ``--every N`` saves every N-th frame without a key
(the only mode with ``--no-show``). The README walks through labelling the folder and checking the
export with ``detseg data validate``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2

from detseg.cli.common import HelpFormatter, positive_int
from detseg.data.imageio import write_image
from detseg.errors import UserError, run_cli
from detseg.video import SOURCE_HELP, open_source

SAVE_KEY, QUIT_KEYS = ord(" "), (ord("q"), 27)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Save webcam / video / synthetic frames as images to label",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--source", default="0", help=SOURCE_HELP)
    parser.add_argument("--out", type=Path, default=Path("recorded/images"), help="folder to write")
    parser.add_argument(
        "--every", type=int, default=None, help="save every N-th frame (no key needed)"
    )
    parser.add_argument("--max-images", type=int, default=None, help="stop after saving this many")
    parser.add_argument("--prefix", default="frame", help="file name prefix")
    parser.add_argument("--no-show", action="store_true", help="no window (needs --every)")
    parser.add_argument(
        "--debug", action="store_true", help="tracebacks instead of one-line errors"
    )
    return parser


def next_number(folder: Path, prefix: str) -> int:
    """1 + the largest ``<prefix>_NNNN.jpg`` number already in ``folder`` (1 when none)."""
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)\.jpg$")
    numbers = [
        int(m.group(1)) for p in folder.glob(f"{prefix}_*.jpg") if (m := pattern.match(p.name))
    ]
    return max(numbers, default=0) + 1


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Record; returns ``{"saved": count, "frames": frames read, "files": [paths]}``."""
    args = get_args_parser().parse_args(argv)
    if args.every is not None:
        positive_int(args.every, "--every")
    if args.max_images is not None:
        positive_int(args.max_images, "--max-images")
    if args.no_show and args.every is None:
        raise UserError("--no-show needs --every N (without a window there is no key to press)",
                        fix="add e.g. --every 10, or drop --no-show")  # fmt: skip
    if not re.fullmatch(r"[\w.-]+", args.prefix):
        raise UserError(
            f"--prefix {args.prefix!r} is not a plain file name", fix="use letters, digits, _ - ."
        )
    files: list[Path] = []
    frames = 0
    with open_source(args.source) as source:
        args.out.mkdir(parents=True, exist_ok=True)  # only once the source opened
        number = next_number(args.out, args.prefix)
        for frame in source:
            frames += 1
            save = args.every is not None and (frame.index % args.every == 0)
            if not args.no_show:
                shown = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
                cv2.putText(shown, f"saved {len(files)}  SPACE: save  q: quit", (8, 20),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
                try:
                    cv2.imshow("record_images", shown)
                    key = cv2.waitKey(1) & 0xFF
                except cv2.error as err:
                    raise UserError("cannot open a window", fix="use --no-show --every N") from err
                if key in QUIT_KEYS:
                    break
                save = save or key == SAVE_KEY
            if save:
                path = args.out / f"{args.prefix}_{number:04d}.jpg"
                write_image(path, frame.image)
                files.append(path)
                number += 1
                if args.max_images is not None and len(files) >= args.max_images:
                    break
    if not args.no_show:
        cv2.destroyAllWindows()
    print(f"saved {len(files)} of {frames} frames to {args.out}")
    return {"saved": len(files), "frames": frames, "files": files}


if __name__ == "__main__":
    sys.exit(run_cli(main))
