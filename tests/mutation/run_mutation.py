"""``make mutation``: mutmut over four core modules, each run with that module's own tests only.

For each module a work folder ``runs/mutation/<module>/`` gets a copy of ``src/``, the module's test
files (and ``tests/conftest.py``) and a ``pyproject.toml`` whose ``[tool.mutmut]`` names the file(s)
to mutate and the tests to run, so that one run fits on 2 cores. Then ``mutmut run`` there, and a
summary: mutants killed / total per module, and the surviving mutants by name (``mutmut show NAME``
in that folder prints the diff). The survivors found so far and why each is left are listed in
``tests/MUTATION.md``.

Usage: ``python tests/mutation/run_mutation.py [boxes metrics engine validate] [--max-children N]``
"""

from __future__ import annotations

import argparse
import json
import os
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
        ["tests/test_engine.py", "tests/test_engine_checkpoint.py"],
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
    pyproject = (ROOT / "pyproject.toml").read_text()
    pyproject = re.sub(r"testpaths = \[[^\]]*\]", 'testpaths = ["tests"]', pyproject)
    pyproject += (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = {_toml_list(mutate)}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n'
        "use_git_change_detection = false\n"
    )
    (work / "pyproject.toml").write_text(pyproject)


def summarise(module: str, work: Path) -> dict[str, object]:
    """Counts by status from ``mutmut results --all true``."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    statuses: dict[str, list[str]] = {}
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            statuses.setdefault(status, []).append(name)
    counts = {status: len(names) for status, names in statuses.items()}
    judged = sum(n for s, n in counts.items() if s not in ("not checked", "skipped"))
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    return {
        "module": module,
        "counts": counts,
        "kill_rate": killed / judged if judged else None,
        "survived": sorted(statuses.get("survived", []) + statuses.get("no tests", [])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=list(MODULES), choices=list(MODULES))
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "runs" / "mutation")
    parser.add_argument("--keep", action="store_true", help="reuse a work folder (resume a run)")
    args = parser.parse_args(argv)
    env = {**os.environ, "DETSEG_SMOKE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    summaries = []
    for module in args.modules:
        work = args.output_dir / module
        if not (args.keep and work.exists()):
            prepare(module, work)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)],
            cwd=work,
            env=env,
            check=False,
        )
        summary = summarise(module, work)
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
