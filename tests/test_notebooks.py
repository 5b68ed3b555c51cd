"""Every notebook source: its .ipynb is in sync, and it runs top to bottom in smoke mode.

The parametrisation discovers sources in notebooks/ and every 0*_*/ folder, so a new example's
notebook is tested without editing this file. The harness itself is tested on tiny notebooks in tmp.
"""

from __future__ import annotations

import json

import pytest

from detseg import notebooks
from detseg.bench import repo_root

ROOT = repo_root()
SOURCES = notebooks.discover(root=ROOT)
IDS = [str(source.relative_to(ROOT)) for source in SOURCES]


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_notebook_in_sync(source):
    assert notebooks.stale_notebooks([source]) == [], "run: make notebooks"


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_notebook_runs_in_smoke_mode(source, tmp_path, monkeypatch):
    # runs in tmp: a smoke run must never overwrite the checkpoints a full render is using
    monkeypatch.setenv("DETSEG_RUNS", str(tmp_path / "runs"))
    notebooks.execute_notebook(source, smoke=True, timeout=300)


HEADER = """# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---
"""


def _write_source(folder, name, body):
    path = folder / name
    path.write_text(HEADER + body)
    return path


def test_discover_finds_only_percent_sources(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "01_demo" / "tests").mkdir(parents=True)
    lesson = _write_source(tmp_path / "01_demo", "lesson.py", "# %%\nx = 1\n")
    core = _write_source(tmp_path / "notebooks", "core.py", "# %%\nx = 1\n")
    _write_source(tmp_path / "01_demo" / "tests", "test_x.py", "# %%\n")  # tests/ is skipped
    (tmp_path / "01_demo" / "train.py").write_text("print('not a notebook')\n")
    (tmp_path / "other").mkdir()
    _write_source(tmp_path / "other", "elsewhere.py", "# %%\n")  # not an example folder

    assert notebooks.discover(root=tmp_path) == [lesson, core]
    with pytest.raises(notebooks.UserError, match="not a notebook source"):
        notebooks.discover([tmp_path / "01_demo" / "train.py"])


def test_check_reports_missing_and_stale_then_sync_keeps_outputs(tmp_path, capsys):
    source = _write_source(tmp_path, "lesson.py", "# %% [markdown]\n# Prose.\n\n# %%\nx = 1\nx\n")
    assert notebooks.stale_notebooks([source]) == [(source, "lesson.ipynb is missing")]

    ipynb = notebooks.sync_notebook(source)
    assert notebooks.stale_notebooks([source]) == []
    # give the code cell an output, as an executed build would
    document = json.loads(ipynb.read_text())
    output = {"output_type": "execute_result", "data": {"text/plain": "1"}, "metadata": {}}
    document["cells"][1]["outputs"] = [{**output, "execution_count": 1}]
    ipynb.write_text(json.dumps(document))

    source.write_text(source.read_text() + "\n# %%\ny = 2\n")
    [(stale, reason)] = notebooks.stale_notebooks([source])
    assert stale == source and "from cell 2 on (3 vs 2 cells)" in reason
    with pytest.raises(SystemExit) as exit_info:
        notebooks.main(["check", str(source)])
    assert exit_info.value.code == 1
    assert "make notebooks" in capsys.readouterr().err

    notebooks.sync_notebook(source)
    cells = json.loads(ipynb.read_text())["cells"]
    assert [c["cell_type"] for c in cells] == ["markdown", "code", "code"]
    assert cells[1]["outputs"][0]["data"]["text/plain"] in ("1", ["1"])  # kept its output
    assert cells[2]["outputs"] == []
    with pytest.raises(SystemExit) as exit_info:
        notebooks.main(["check", str(source)])
    assert exit_info.value.code == 0


def test_execute_names_the_failing_cell_even_with_a_foreign_kernelspec(tmp_path, monkeypatch):
    # a python3 kernelspec pointing at another interpreter must not be used
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    argv = ["/nonexistent/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec_dir / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    body = (
        "# %%\nimport os\nprint(os.environ['DETSEG_SMOKE'], os.getcwd())\n\n"
        "# %%\nraise ValueError('broken on purpose')\n"
    )
    source = _write_source(tmp_path, "lesson.py", body)

    with pytest.raises(notebooks.NotebookError) as error:
        notebooks.execute_notebook(source, smoke=True, timeout=60)

    message = str(error.value)
    assert message.startswith(f"{source}:12: cell 1 failed")
    assert "raise ValueError('broken on purpose')" in message
    assert "ValueError: broken on purpose" in message
    assert "\x1b[" not in message


def test_execute_runs_in_the_notebooks_folder_with_smoke_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("DETSEG_RUNS", "relative/runs")
    monkeypatch.delenv("DETSEG_DATA", raising=False)
    body = (
        "# %%\nimport os\nfrom detseg import settings\n"
        "print(settings.smoke_mode(), os.getcwd(), settings.runs_root(), settings.data_root())\n"
    )
    source = _write_source(tmp_path, "lesson.py", body)

    executed = notebooks.execute_notebook(source, smoke=True, timeout=60, write=True)

    # cwd = the notebook's folder; data/ and runs/ stay at the repository root, and the written
    # notebook shows them relative to it (tmp_path lies outside the repository: kept as it is)
    expected = f"True {tmp_path} relative/runs data\n"
    assert executed.cells[0]["outputs"][0]["text"] == expected
    assert notebooks.stale_notebooks([source]) == []  # written with outputs, still in sync


def test_relative_outputs_rewrites_the_repository_root_in_text_outputs(tmp_path):
    import nbformat

    from detseg.notebooks import relative_outputs

    root = tmp_path / "repo"
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f'{{"dataset": "{root}/data/x"}}\n'),
        nbformat.v4.new_output("execute_result", data={"text/plain": f"'{root}/runs/a.pt'"}),
        nbformat.v4.new_output("stream", name="stdout", text="/elsewhere/data/x\n"),
    ]
    notebook = nbformat.v4.new_notebook(cells=[cell])
    assert relative_outputs(notebook, root) == 2
    texts = [o.get("text") or o["data"]["text/plain"] for o in cell.outputs]
    assert texts == ['{"dataset": "data/x"}\n', "'runs/a.pt'", "/elsewhere/data/x\n"]
