"""``detseg data``: make a built-in dataset, validate, convert, and show a dataset.

::

    detseg data make --recipe R --out DIR --num-images N --seed S
    detseg data validate PATH --format F [--split S] [--no-decode]    exit 2 on errors, 0 otherwise
    detseg data convert --from F --to G SRC DST [--split S]
    detseg data show PATH --format F [--out grid.png] [--num 16] [--split S]

Formats are the keys of :data:`detseg.data.formats.FORMATS`; PATH is what that format's reader
takes (COCO JSON, YOLO data.yaml, or the dataset folder).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from detseg.cli.common import positive_int
from detseg.errors import EXIT_USER_ERROR, UserError


def register(subparsers: Any) -> None:
    """Add ``data`` and its subcommands to the ``detseg`` parser."""
    parser = subparsers.add_parser("data", help="make, validate, convert and show datasets")
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: _help(parser))

    make = commands.add_parser("make", help="generate a built-in dataset in its real layout")
    make.add_argument("--recipe", required=True, help="recipe name (see detseg.data.recipes)")
    make.add_argument("--out", required=True, type=Path, help="output folder")
    make.add_argument("--num-images", type=int, default=None, help="images to generate")
    make.add_argument("--seed", type=int, default=0, help="random seed")
    make.set_defaults(func=cmd_make)

    validate = commands.add_parser("validate", help="summary and every problem, file[:line]")
    validate.add_argument("path", type=Path, help="COCO JSON, YOLO data.yaml or dataset folder")
    validate.add_argument("--format", required=True, help="dataset format, e.g. coco, yolo, voc")
    validate.add_argument("--split", default=None, help="split to check (default: all / reader's)")
    validate.add_argument(
        "--no-decode", action="store_true", help="do not decode every image (faster)"
    )
    validate.set_defaults(func=cmd_validate)

    convert = commands.add_parser("convert", help="convert a detection dataset to another format")
    convert.add_argument("--from", dest="src_format", required=True, help="source format")
    convert.add_argument("--to", dest="dst_format", required=True, help="target format")
    convert.add_argument("src", type=Path, help="source (what its reader takes)")
    convert.add_argument("dst", type=Path, help="target folder (or .json for coco)")
    convert.add_argument("--split", default=None, help="source split (yolo / voc / coco folder)")
    convert.set_defaults(func=cmd_convert)

    show = commands.add_parser("show", help="PNG grid of images with boxes, masks and labels")
    show.add_argument("path", type=Path, help="COCO JSON, YOLO data.yaml or dataset folder")
    show.add_argument("--format", required=True, help="dataset format")
    show.add_argument("--out", type=Path, default=Path("grid.png"), help="PNG to write")
    show.add_argument("--num", type=int, default=16, help="images in the grid")
    show.add_argument("--split", default=None, help="split to show")
    show.set_defaults(func=cmd_show)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USER_ERROR


def _check_format(name: str) -> None:
    from detseg.data.formats import FORMATS

    if name not in FORMATS:
        raise UserError(f"unknown format {name!r}", fix=f"use one of: {', '.join(FORMATS)}")


def cmd_make(args: argparse.Namespace) -> int:
    try:
        from detseg.data import recipes
    except ModuleNotFoundError as err:
        if err.name != "detseg.data.recipes":
            raise
        raise UserError("built-in recipes are not available in this build") from err
    kwargs: dict[str, Any] = {"seed": args.seed}
    if args.num_images is not None:
        kwargs["num_images"] = positive_int(args.num_images, "--num-images")
    _check_output_folder(args.out, "--out")
    path = recipes.make(args.recipe, args.out, **kwargs)
    print(f"wrote {path}")
    return 0


def _check_output_folder(path: Path, flag: str) -> None:
    """A UserError when ``path``, or the nearest of its parents that exists, is not a folder."""
    for place in (path, *path.parents):
        if place.exists():
            if not place.is_dir():
                raise UserError(
                    f"{flag}: {place} is a file, not a folder",
                    path=path,
                    fix=f"pass a new or existing folder to {flag}",
                )
            return


def cmd_validate(args: argparse.Namespace) -> int:
    from detseg.data.validate import validate

    _check_format(args.format)
    if not args.path.exists():
        raise UserError(
            "no such file or folder", path=args.path, fix="check the path (PATH of 'data validate')"
        )
    report = validate(args.path, args.format, split=args.split, check_images=not args.no_decode)
    print(report.summary())
    for problem in report.problems:
        print(problem)
    return 0 if report.ok else EXIT_USER_ERROR


def cmd_convert(args: argparse.Namespace) -> int:
    from detseg.data.convert import convert

    _check_format(args.src_format)
    _check_format(args.dst_format)
    # DST is a folder, or a .json file (COCO) whose folder must be one
    _check_output_folder(args.dst if args.dst.suffix.lower() != ".json" else args.dst.parent, "DST")
    out = convert(args.src, args.src_format, args.dst, args.dst_format, split=args.split)
    print(f"wrote {out}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import numpy as np

    from detseg.data.formats import FORMATS
    from detseg.data.formats.maskpng import segmentation_to_mask
    from detseg.data.imageio import read_image

    _check_format(args.format)
    if args.num < 1:
        raise UserError(f"--num must be at least 1, got {args.num}", fix="e.g. --num 16")
    _check_output_folder(args.out.parent, "--out")
    try:
        from detseg import viz
    except ModuleNotFoundError as err:
        raise UserError("detseg.viz is not available in this build") from err
    spec = FORMATS[args.format]
    dataset = spec.read(args.path, split=args.split) if args.split else spec.read(args.path)
    records = dataset.records[: args.num]
    if not records:
        raise UserError("the dataset has no images", path=args.path)
    pictures, titles = [], []
    for record in records:
        if spec.kind == "detection":
            image = read_image(dataset.image_path(record))
            if image.shape[:2] != (record.height, record.width):
                raise UserError(
                    f"image is {image.shape[1]}x{image.shape[0]} but its annotation says "
                    f"{record.width}x{record.height} (width x height)",
                    path=dataset.image_path(record),
                    fix=f"correct the size in the annotations, or run 'detseg data validate "
                    f"{args.path} --format {args.format}' to list every such problem",
                )
            masks = None
            shapes = record.segmentations or []
            if shapes and all(len(s) for s in shapes):  # every instance has a mask
                masks = np.stack(
                    [segmentation_to_mask(s, record.height, record.width) for s in shapes]
                )
            pictures.append(
                viz.draw_detections(
                    image, record.boxes, record.labels, masks=masks, class_names=dataset.classes
                )
            )
            titles.append(f"{Path(record.file_name).name} ({len(record.labels)})")
        else:
            image, mask = dataset.load(record)
            # with a dataset palette every class is drawn (Cityscapes' road is class 0)
            background = None if dataset.palette is not None else 0
            pictures.append(
                viz.draw_segmentation(image, mask, dataset.palette, background=background)
            )
            titles.append(Path(record.file_name).name)
    out = viz.save_grid(pictures, args.out, titles)
    print(f"wrote {out} ({len(pictures)} images)")
    return 0
