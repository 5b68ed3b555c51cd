"""The ``detseg`` command.

Each subcommand lives in its own module with ``register(subparsers)``, which adds a parser and sets
``func`` to a callable ``(args) -> int``. Heavy libraries are imported inside those callables, so
``detseg --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from detseg.errors import run_cli

# name -> module holding register(); a visible dict, no plugin magic.
SUBCOMMANDS = {
    "data": "detseg.cli.data_cmd",
    "eval": "detseg.cli.eval_cmd",
    "bench": "detseg.cli.bench_cmd",
    "tour": "detseg.cli.tour_cmd",
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detseg",
        description="Core tools of the detection and segmentation examples: built-in datasets, "
        "COCO evaluation, benchmarks and a guided tour.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:  # a subcommand not built yet must not break the others
            if err.name != module_name:
                raise
            continue
        module.register(subparsers)
    return parser


def _main(argv: Sequence[str] | None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    return int(args.func(args) or 0)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``detseg`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    codes: list[int] = []
    status = run_cli(lambda a: codes.append(_main(a)), args)
    sys.exit(status if status else (codes[0] if codes else 0))


if __name__ == "__main__":
    main()
