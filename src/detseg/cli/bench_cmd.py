"""``detseg bench run|list|render``: run benchmark cases, list them, render the README table.

Examples::

    detseg bench list
    detseg bench run --case boxes-iou --case boxes-nms
    detseg bench render --readme README.md
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench`` and its three actions to the ``detseg`` parser."""
    parser = subparsers.add_parser(
        "bench",
        help="run benchmark cases and render the README table",
        description="Benchmark harness: results go to benchmarks/results/<machine>-<date>.json and "
        "the README table is generated from all of them.",
    )
    actions = parser.add_subparsers(dest="bench_action", metavar="ACTION", required=True)

    run = actions.add_parser("run", help="run cases (all by default) and write a results JSON")
    run.add_argument(
        "--case", action="append", default=[], metavar="NAME", help="a case to run (repeatable)"
    )
    run.add_argument(
        "--out", type=Path, default=None, help="results folder (default benchmarks/results)"
    )
    run.set_defaults(func=_run)

    listing = actions.add_parser("list", help="list the registered cases")
    listing.set_defaults(func=_list)

    render = actions.add_parser("render", help="rebuild the README table from all results")
    render.add_argument("--readme", type=Path, default=None, help="default: the repo's README.md")
    render.add_argument(
        "--results", type=Path, default=None, help="results folder (default benchmarks/results)"
    )
    render.set_defaults(func=_render)


def _run(args: argparse.Namespace) -> int:
    from detseg import bench

    bench.check_case_names(args.case, bench.CASES)  # before the slow fingerprint
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        from detseg.errors import UserError

        raise UserError(
            "--out is a file, not a folder", path=args.out, fix="pass a folder to --out"
        )

    def progress(name: str, record: dict) -> None:
        if record["error"]:
            print(f"{name:<24} FAILED  {record['error']}", flush=True)
            return
        main = record["main"]
        shown = bench.format_value(main, record["results"][main]) if main else "(no number)"
        print(
            f"{name:<24} {main or '':<20} {shown:>12}   ({record['elapsed_s']:.1f} s)", flush=True
        )

    path, document = bench.run_cases(args.case or None, out_dir=args.out, progress=progress)
    print(f"wrote {path}")
    ran = args.case or list(bench.CASES)
    failed = [name for name in ran if document["cases"][name]["error"]]
    return 1 if failed else 0


def _list(args: argparse.Namespace) -> int:
    from detseg import bench

    for name, case in bench.CASES.items():
        print(f"{name:<24} {case.group:<28} {case.description}")
    return 0


def _render(args: argparse.Namespace) -> int:
    from detseg import bench

    root = bench.repo_root()
    readme = args.readme or root / "README.md"
    results = args.results or root / "benchmarks" / "results"
    changed = bench.render_readme(readme, results)
    print(f"{'updated' if changed else 'unchanged'}: {readme}")
    return 0
