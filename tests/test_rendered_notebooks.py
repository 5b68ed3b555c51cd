"""The rendered notebooks (.ipynb) a learner reads: executed, machine-neutral and short.

For every notebook source found by ``detseg.notebooks.discover`` (``notebooks/`` and every
``0*_*/`` folder, so a new example's lesson is checked without editing this file), its committed
``.ipynb`` must have every code cell executed (the file comes from ``make notebooks`` /
``python -m detseg.notebooks build --execute``), no error output, no absolute path of the machine
that built it in any output (``/work``, ``/tmp``, ``/root``, ``/home``, ``/Users``), and no cell whose
text output runs past :data:`MAX_OUTPUT_LINES` lines (a progress bar's ``\\r`` updates count as
lines: a saved notebook shows every one of them). The checker is tested on hand-made notebooks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from detseg import notebooks
from detseg.bench import repo_root

ROOT = repo_root()
SOURCES = notebooks.discover(root=ROOT)
IDS = [str(source.relative_to(ROOT)) for source in SOURCES]
MAX_OUTPUT_LINES = 50
ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/(?:work|tmp|root|home|Users)/")


def _output_text(output: dict[str, Any]) -> str:
    """The text a reader sees of one output: stream text, text/plain or HTML, or a traceback."""
    if output.get("output_type") == "stream":
        text = output.get("text", "")
    elif output.get("output_type") == "error":
        text = "\n".join(output.get("traceback", []))
    else:
        data = output.get("data", {})
        text = data.get("text/plain", "") if "image/png" not in data else ""
        text = (text if isinstance(text, str) else "".join(text)) + "".join(
            data.get("text/html", "")
        )
    return text if isinstance(text, str) else "".join(text)


def rendered_problems(document: dict[str, Any], max_lines: int = MAX_OUTPUT_LINES) -> list[str]:
    """Every problem of a rendered notebook (nbformat 4 JSON), as ``cell N: what``; [] if none."""
    problems = []
    for index, cell in enumerate(document.get("cells", [])):
        if cell.get("cell_type") != "code" or not "".join(cell.get("source", "")).strip():
            continue
        if cell.get("execution_count") is None:
            problems.append(f"cell {index}: not executed")
        outputs = cell.get("outputs", [])
        if any(output.get("output_type") == "error" for output in outputs):
            problems.append(f"cell {index}: error output")
        text = "".join(_output_text(output) for output in outputs)
        for path in sorted(set(ABSOLUTE_PATH.findall(text))):
            problems.append(f"cell {index}: absolute path {path}... in the output")
        lines = len([line for line in re.split(r"\r\n|\r|\n", text) if line.strip()])
        if lines > max_lines:
            problems.append(f"cell {index}: {lines} output lines (at most {max_lines})")
    return problems


# Lessons of the examples that landed on 2026-12-07 while 2 CPU cores were shared by 9 sessions:
# their .ipynb files are in sync with the sources (and run in smoke mode in test_notebooks.py) but
# were not yet executed with a full run. Strict: once one is rebuilt, it must leave this list.
# Empty since the fourth session of 2026-12-07: every lesson is rendered from a full run.
NOT_YET_RENDERED: set[str] = set()
RENDER_CASES = [
    pytest.param(
        source,
        id=name,
        marks=[pytest.mark.xfail(strict=True, reason="not yet rendered with a full run")]
        if name in NOT_YET_RENDERED
        else [],
    )
    for source, name in zip(SOURCES, IDS)
]


def test_not_yet_rendered_names_existing_lessons() -> None:
    assert set(IDS) >= NOT_YET_RENDERED


@pytest.mark.parametrize("source", RENDER_CASES)
def test_rendered_notebook_is_readable(source: Path) -> None:
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.is_file(), (
        f"{ipynb.name} is missing; run: python -m detseg.notebooks build --execute"
    )
    problems = rendered_problems(json.loads(ipynb.read_text(encoding="utf-8")))
    assert problems == [], (
        f"{ipynb.relative_to(ROOT)}: rebuild it with outputs of a full run "
        f"(python -m detseg.notebooks build --execute {source.relative_to(ROOT)}):\n"
        + "\n".join(problems)
    )


def _notebook(*cells: dict[str, Any]) -> dict[str, Any]:
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _code(source: str, outputs: list[dict[str, Any]], count: int | None = 1) -> dict[str, Any]:
    return {"cell_type": "code", "source": source, "outputs": outputs, "execution_count": count}


def _stream(text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_checker_accepts_a_clean_notebook() -> None:
    document = _notebook(
        {"cell_type": "markdown", "source": "# Title /home/in/prose/is/fine"},
        _code("print(1)", [_stream("1\n~/.cache/torch/file.pth\nruns/01/lesson\n")]),
        _code("def f():\n    pass", [], count=2),  # executed, no output
        _code("", [], count=None),  # an empty cell needs no run
        _code(
            "x", [{"output_type": "execute_result", "data": {"text/plain": "3"}, "metadata": {}}]
        ),
    )
    assert rendered_problems(document) == []


def test_checker_finds_each_problem() -> None:
    progress = "".join(f"\repoch 1/4: {step}/34" for step in range(60))  # tqdm's \r updates
    document = _notebook(
        _code("train()", [], count=None),
        _code("print(path)", [_stream("data: /work/main/data/pedestrians-0\n")]),
        _code("x", [{"output_type": "execute_result", "data": {"text/plain": "'/tmp/abc'"}}]),
        _code("fit()", [{"output_type": "stream", "name": "stderr", "text": progress}]),
        _code("print(many)", [_stream("\n".join(map(str, range(51))))]),
        _code("print(some)", [_stream("\n".join(map(str, range(50))))]),  # 50 lines: fine
        _code("1 / 0", [{"output_type": "error", "ename": "ZeroDivisionError", "traceback": []}]),
    )
    assert rendered_problems(document) == [
        "cell 0: not executed",
        "cell 1: absolute path /work/... in the output",
        "cell 2: absolute path /tmp/... in the output",
        "cell 3: 60 output lines (at most 50)",
        "cell 4: 51 output lines (at most 50)",
        "cell 6: error output",
    ]
