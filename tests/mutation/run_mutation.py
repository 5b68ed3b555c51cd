"""``make mutation``: mutmut over four core modules, each run with that module's own tests only.

For each module a work folder ``runs/mutation/<module>/`` gets a copy of ``src/``, the module's test
files (and ``tests/conftest.py``) and a ``pyproject.toml`` whose ``[tool.mutmut]`` names the file(s)
to mutate and the tests to run, so that one run fits on 2 cores. Then ``mutmut run`` there, and a
summary: mutants killed / total per module, and the surviving mutants by name (``mutmut show NAME``
in that folder prints the diff). The survivors found so far and why each is left are listed in
``tests/MUTATION.md``.

Usage: ``python tests/mutation/run_mutation.py [boxes metrics engine validate] [--max-children N]
[--sample N] [--keep]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# module -> (files mutmut mutates, test files that judge them)
MODULES = {
    "boxes": (["src/detseg/boxes.py"], ["tests/test_boxes.py"]),
    "metrics": (
        ["src/detseg/metrics/*"],
        [
            "tests/test_metrics_coco.py",
            "tests/test_metrics_voc.py",
            "tests/test_metrics_segmentation.py",
        ],
    ),
    "engine": (
        ["src/detseg/engine/checkpoint.py", "src/detseg/engine/loop.py"],
        [
            "tests/test_engine.py",
            "tests/test_engine_checkpoint.py",
            "tests/test_engine_log_lines.py",
        ],
    ),
    "validate": (
        ["src/detseg/data/validate.py"],
        ["tests/test_validate.py", "tests/test_cli_data.py"],
    ),
}


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def prepare(module: str, work: Path) -> None:
    """A fresh work folder: src, the module's tests, pyproject with the mutmut section."""
    mutate, tests = MODULES[module]
    if work.exists():
        shutil.rmtree(work)
    (work / "tests").mkdir(parents=True)
    shutil.copytree(ROOT / "src", work / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    for name in ["tests/conftest.py", *tests]:
        shutil.copy2(ROOT / name, work / name)
    # test_metrics_coco loads benchmarks/bench_metrics.py by path
    shutil.copytree(
        ROOT / "benchmarks", work / "benchmarks", ignore=shutil.ignore_patterns("results")
    )
    pyproject = (ROOT / "pyproject.toml").read_text()
    pyproject = re.sub(r"testpaths = \[[^\]]*\]", 'testpaths = ["tests"]', pyproject)
    pyproject += (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        'also_copy = ["benchmarks"]\n'
        f"only_mutate = {_toml_list(mutate)}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n'
        "use_git_change_detection = false\n"
    )
    (work / "pyproject.toml").write_text(pyproject)


def mutant_statuses(work: Path) -> dict[str, str]:
    """``{mutant name: status}`` from ``mutmut results --all true`` (``not checked`` included)."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    statuses = {}
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name.startswith("detseg."):
            statuses[name] = status
    return statuses


def summarise(module: str, work: Path, sample: list[str] | None = None) -> dict[str, object]:
    """Counts by status, over every mutant or over ``sample``."""
    by_name = mutant_statuses(work)
    statuses: dict[str, list[str]] = {}
    for name, status in by_name.items():
        if sample is None or name in sample:
            statuses.setdefault(status, []).append(name)
    counts = {status: len(names) for status, names in statuses.items()}
    judged = sum(n for s, n in counts.items() if s not in ("not checked", "skipped"))
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    return {
        "module": module,
        "mutants": len(by_name),
        "sampled": None if sample is None else len(sample),
        "counts": counts,
        "kill_rate": killed / judged if judged else None,
        "survived": sorted(statuses.get("survived", []) + statuses.get("no tests", [])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=list(MODULES), choices=list(MODULES))
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "runs" / "mutation")
    parser.add_argument(
        "--keep", action="store_true", help="reuse a work folder: resume, or retest with new tests"
    )
    parser.add_argument(
        "--retest", nargs="*", default=None, help="with --keep: mutant names (globs) to test again"
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=None,
        help="test only this many mutants per module, drawn at random (--seed); the kill rate is "
        "then an estimate (2 shared cores test ~5 mutants a minute)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    env = {**os.environ, "DETSEG_SMOKE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    summaries = []
    for module in args.modules:
        work = args.output_dir / module
        if not (args.keep and work.exists()):
            prepare(module, work)
        else:  # the tests may have changed since: mutmut retests what they touch
            for name in ["tests/conftest.py", *MODULES[module][1]]:
                shutil.copy2(ROOT / name, work / name)
        start = time.perf_counter()
        command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)]
        sample, base = None, len(command)
        if args.sample is not None:
            # generate the mutants and the test statistics only (no name matches), then draw
            subprocess.run([*command, "no-such-mutant"], cwd=work, env=env, check=False)
            names = sorted(mutant_statuses(work))
            sample = random.Random(args.seed).sample(names, min(args.sample, len(names)))
            statuses = mutant_statuses(work)
            command += [name for name in sample if statuses[name] == "not checked"]
        if args.retest:
            subprocess.run([*command, *args.retest], cwd=work, env=env, check=False)
        elif sample is None or len(command) > base:
            subprocess.run(command, cwd=work, env=env, check=False)
        summary = summarise(module, work, sample)
        summary["wall_s"] = round(time.perf_counter() - start)
        summaries.append(summary)
        (work / "summary.json").write_text(json.dumps(summary, indent=1))
        rate = summary["kill_rate"]
        print(
            f"{module}: {summary['counts']} kill rate "
            + ("n/a" if rate is None else f"{rate:.1%}")
            + f" ({summary['wall_s']} s)",
            flush=True,
        )
        for name in summary["survived"]:
            print(f"  survived: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
