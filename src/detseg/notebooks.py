"""Notebook harness: the py:percent sources are the truth, the ``.ipynb`` files are generated.

A notebook source is a ``.py`` file whose header holds ``jupytext:`` and ``format_name: percent``, in
``notebooks/`` or any ``0*_*/`` example folder; it pairs with ``<same name>.ipynb`` next to it.

    python -m detseg.notebooks check [PATHS]             # exit 1 if any .ipynb is missing or stale
    python -m detseg.notebooks build [PATHS]             # rewrite the .ipynb cells, keep outputs
    python -m detseg.notebooks build --execute [PATHS]   # rewrite and run (cwd = its folder)

PATHS are notebook sources or folders to search (default: the whole repository). The tests call
:func:`execute_notebook`, which runs a source in smoke mode (``DETSEG_SMOKE=1`` in the kernel).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from detseg.errors import UserError, run_cli

DEFAULT_TIMEOUT_S = 600
KERNEL_NAME = "python3"
_SKIP_DIRS = {"data", "runs", "tests", "__pycache__", ".ipynb_checkpoints", ".venv", "node_modules"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class NotebookError(RuntimeError):
    """A notebook cell raised; the message names the source file, line, cell and traceback."""


def is_notebook_source(path: Path) -> bool:
    """True for a ``.py`` file whose header is a jupytext py:percent header."""
    if path.suffix != ".py" or not path.is_file():
        return False
    with path.open(encoding="utf-8", errors="replace") as handle:
        head = [line for _, line in zip(range(40), handle)]
    if not head or not head[0].startswith("# ---"):
        return False
    text = "".join(head)
    return "jupytext:" in text and "format_name: percent" in text


def _walk_sources(folder: Path) -> Iterator[Path]:
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if is_notebook_source(Path(current) / name):
                yield Path(current) / name


def discover(paths: Sequence[Path] | None = None, *, root: Path | None = None) -> list[Path]:
    """Notebook sources under ``paths`` (files or folders), default ``notebooks/`` and ``0*_*/``.

    Raises:
        UserError: a path that does not exist, or a file that is not a py:percent source.
    """
    if not paths:
        from detseg.bench import repo_root

        root = root or repo_root()
        paths = [root / "notebooks", *sorted(p for p in root.glob("0*_*") if p.is_dir())]
        paths = [p for p in paths if p.is_dir()]
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(_walk_sources(path))
        elif is_notebook_source(path):
            found.append(path)
        else:
            raise UserError(
                "not a notebook source (a .py file with a jupytext py:percent header)",
                path=path,
                fix="pass a notebook .py file or a folder holding some",
            )
    return sorted(dict.fromkeys(found))


def read_source(source: Path) -> Any:
    """The notebook of a py:percent source, with stable cell ids (``cell-0``, ``cell-1`` ...)."""
    import jupytext

    notebook = jupytext.read(source, fmt="py:percent")
    _add_colab_cell(notebook, Path(source))
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index}"
    notebook.metadata.pop("jupytext", None)
    notebook.metadata["kernelspec"] = {
        "name": KERNEL_NAME,
        "display_name": "Python 3",
        "language": "python",
    }
    return notebook


def _add_colab_cell(notebook: Any, source: Path) -> None:
    """Insert :func:`detseg.colab.install_cell_source` after the title (first markdown cell) of a
    lesson inside this repository; sources elsewhere (the harness's own tests) are left as written.
    """
    import nbformat

    from detseg import colab
    from detseg.bench import repo_root

    try:
        folder = source.resolve().parent.relative_to(repo_root().resolve())
    except ValueError:
        return
    cell = nbformat.v4.new_code_cell(colab.install_cell_source(folder.as_posix()))
    cell.metadata["tags"] = [colab.INSTALL_CELL_TAG]
    first_is_title = bool(notebook.cells) and notebook.cells[0]["cell_type"] == "markdown"
    notebook.cells.insert(1 if first_is_title else 0, cell)


def cell_inputs(notebook: Any) -> list[tuple[str, str]]:
    """``[(cell_type, source), ...]``: what ``check`` compares (outputs and metadata ignored)."""
    return [(cell["cell_type"], "".join(cell["source"])) for cell in notebook.cells]


def stale_notebooks(sources: Sequence[Path]) -> list[tuple[Path, str]]:
    """``[(source, reason), ...]`` for each source whose ``.ipynb`` is missing or differs."""
    import nbformat

    problems = []
    for source in sources:
        ipynb = source.with_suffix(".ipynb")
        if not ipynb.is_file():
            problems.append((source, f"{ipynb.name} is missing"))
            continue
        try:
            generated = nbformat.read(ipynb, as_version=4)
        except (OSError, ValueError, json.JSONDecodeError) as err:
            problems.append((source, f"{ipynb.name} cannot be read: {err}"))
            continue
        want, have = cell_inputs(read_source(source)), cell_inputs(generated)
        if want != have:
            first = next(
                (i for i, (w, h) in enumerate(zip(want, have)) if w != h), min(len(want), len(have))
            )
            problems.append(
                (
                    source,
                    f"{ipynb.name} differs from cell {first} on ({len(want)} vs {len(have)} cells)",
                )
            )
    return problems


def sync_notebook(source: Path) -> Path:
    """Rewrite ``<source>.ipynb`` from the source, keeping the outputs of unchanged cells."""
    import nbformat

    notebook = read_source(source)
    ipynb = source.with_suffix(".ipynb")
    if ipynb.is_file():
        old: dict[tuple[str, str], list[Any]] = {}
        for cell in nbformat.read(ipynb, as_version=4).cells:
            old.setdefault((cell["cell_type"], "".join(cell["source"])), []).append(cell)
        for cell in notebook.cells:
            matches = old.get((cell["cell_type"], cell["source"]))
            if cell["cell_type"] == "code" and matches:
                previous = matches.pop(0)
                cell["outputs"] = previous.get("outputs", [])
                cell["execution_count"] = previous.get("execution_count")
    nbformat.write(notebook, ipynb)
    return ipynb


# ---------------------------------------------------------------------------------------- running


@contextlib.contextmanager
def _kernel_for_this_python() -> Iterator[None]:
    """Make the ``python3`` kernelspec run ``sys.executable``.

    jupyter_client runs a spec whose ``argv[0]`` is a bare ``python`` with ``sys.executable``; a
    spec pointing at another interpreter would run the notebook without our packages, so then a
    temporary spec goes first on ``JUPYTER_PATH`` for the duration.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    bare = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    try:
        command = KernelSpecManager().get_kernel_spec(KERNEL_NAME).argv[0]
        fine = command in bare or os.path.abspath(command) == os.path.abspath(sys.executable)
    except NoSuchKernel:
        fine = False
    if fine:
        yield
        return
    previous = os.environ.get("JUPYTER_PATH")
    with tempfile.TemporaryDirectory(prefix="detseg-kernel-") as folder:
        spec_dir = Path(folder) / "kernels" / KERNEL_NAME
        spec_dir.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        spec = {"argv": argv, "display_name": "Python 3", "language": "python"}
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [folder, previous]))
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = previous


def _kernel_env(smoke: bool) -> dict[str, str]:
    """The kernel's environment: ours, with detseg importable from any cwd and inline plots.

    ``DETSEG_DATA`` / ``DETSEG_RUNS`` are made absolute against the repository root, so a
    notebook running in its own folder still uses (and shares) the top-level ``data/`` and ``runs/``.
    """
    import detseg
    from detseg.bench import repo_root

    env = dict(os.environ)
    for name, default in (("DETSEG_DATA", "data"), ("DETSEG_RUNS", "runs")):
        env[name] = str((repo_root() / env.get(name, default)).resolve())
    package_parent = str(Path(detseg.__file__).resolve().parents[1])
    entries = [str(Path(p).resolve()) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([package_parent, *entries]))
    env.pop("MPLBACKEND", None)  # Agg (set by the tests) would hide the figures
    env["DETSEG_SMOKE"] = "1" if smoke else "0"
    return env


def _source_line(source: Path, notebook: Any, cell_index: int) -> int | None:
    """1-based line of the ``# %%`` marker that opens cell ``cell_index`` in the source (None for
    the generated Colab install cell, which has no line)."""
    from detseg.colab import INSTALL_CELL_TAG

    lines = source.read_text(encoding="utf-8").splitlines()
    markers = [number for number, line in enumerate(lines, 1) if line.startswith("# %%")]
    added = [
        index
        for index, cell in enumerate(notebook.cells)
        if INSTALL_CELL_TAG in cell.get("metadata", {}).get("tags", [])
    ]
    if cell_index in added or len(markers) != len(notebook.cells) - len(added):
        return None
    return markers[cell_index - sum(1 for index in added if index < cell_index)]


def execute_notebook(
    path: Path, *, smoke: bool = True, timeout: int = DEFAULT_TIMEOUT_S, write: bool = False
) -> Any:
    """Run a notebook source top to bottom in a fresh ``python3`` kernel, cwd = its folder.

    Args:
        path: the py:percent source (its ``.ipynb`` is not read).
        smoke: set ``DETSEG_SMOKE=1`` in the kernel (tiny data, few steps).
        timeout: seconds allowed per cell.
        write: also write the executed notebook, with outputs, to ``<path>.ipynb``.
    Returns:
        The executed ``nbformat.NotebookNode``.
    Raises:
        NotebookError: a cell raised or timed out; the message names file, line, cell and error.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    path = Path(path).resolve()
    notebook = read_source(path)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name=KERNEL_NAME,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        with _kernel_for_this_python():
            client.execute(env=_kernel_env(smoke), cwd=str(path.parent))
    except (CellExecutionError, CellTimeoutError) as err:
        raise _cell_error(path, notebook, err) from None
    if write:
        from detseg.bench import repo_root

        relative_outputs(notebook, repo_root())
        nbformat.write(notebook, path.with_suffix(".ipynb"))
    return notebook


def relative_outputs(notebook: Any, root: Path) -> int:
    """Rewrite ``<root>/...`` in the text outputs of ``notebook`` as paths relative to ``root``.

    Scripts print where they wrote (``"dataset": "/home/me/repo/data/racoon-0"``); a committed
    notebook shows ``data/racoon-0`` instead, the same on every machine. Only text is touched
    (stream text and ``text/plain``), in place.

    Returns:
        How many outputs changed.
    """
    prefix = str(Path(root).resolve()) + "/"
    changed = 0
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            holders = [(output, "text")]
            if isinstance(output.get("data"), dict):
                holders.append((output["data"], "text/plain"))
            for holder, key in holders:
                value = holder.get(key)
                text = "".join(value) if isinstance(value, list) else value
                if isinstance(text, str) and prefix in text:
                    holder[key] = text.replace(prefix, "")
                    changed += 1
    return changed


def _cell_error(path: Path, notebook: Any, err: Exception) -> NotebookError:
    failing, detail = None, str(err)
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                failing = index
                detail = "\n".join(output.get("traceback", [])) or output.get("evalue", "")
    if failing is None:  # a timeout leaves no error output: take the last cell that started
        started = [i for i, c in enumerate(notebook.cells) if c.get("execution_count")]
        failing = started[-1] if started else 0
    line = _source_line(path, notebook, failing)
    where = f"{path}:{line}" if line else str(path)
    source = notebook.cells[failing]["source"]
    return NotebookError(
        f"{where}: cell {failing} failed\n--- cell source ---\n{source}\n"
        f"--- error ---\n{_ANSI.sub('', detail)}"
    )


# ---------------------------------------------------------------------------------------- command


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m detseg.notebooks",
        description="Check or build the .ipynb files generated from the py:percent notebook sources.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="exit 1 if an .ipynb is missing or out of sync")
    check.add_argument("paths", nargs="*", type=Path, help="sources or folders (default: all)")
    build = actions.add_parser("build", help="regenerate .ipynb files (and run them)")
    build.add_argument("paths", nargs="*", type=Path, help="sources or folders (default: all)")
    build.add_argument("--execute", action="store_true", help="run each notebook, keep outputs")
    build.add_argument("--smoke", action="store_true", help="run with DETSEG_SMOKE=1")
    build.add_argument(
        "--timeout", type=int, default=DEFAULT_TIMEOUT_S, help="seconds per cell (default 600)"
    )
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = get_args_parser().parse_args(argv)
    sources = discover(args.paths)
    if args.action == "check":
        problems = stale_notebooks(sources)
        for source, reason in problems:
            print(f"{source}: {reason}", file=sys.stderr)
        if problems:
            print(f"{len(problems)} notebook(s) out of sync; fix: make notebooks", file=sys.stderr)
            return 1
        print(f"{len(sources)} notebook(s) in sync")
        return 0
    failed = 0
    for source in sources:
        if not args.execute:
            print(f"synced {sync_notebook(source)}")
            continue
        print(f"running {source} ...", flush=True)
        try:
            execute_notebook(source, smoke=args.smoke, timeout=args.timeout, write=True)
        except NotebookError as err:
            failed += 1
            print(err, file=sys.stderr)
            continue
        print(f"wrote {source.with_suffix('.ipynb')}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m detseg.notebooks``."""
    codes: list[int] = []
    status = run_cli(lambda a: codes.append(_main(a)), argv)
    sys.exit(status or (codes[0] if codes else 0))


if __name__ == "__main__":
    main()
