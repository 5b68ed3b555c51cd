"""The Colab install cell: one URL, a local branch that does nothing, a Colab branch that clones,
installs and moves into the lesson's folder; every generated notebook starts with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import nbformat

from detseg import colab, notebooks
from detseg.bench import repo_root

ROOT = repo_root()


def _run_cell(source: str, monkeypatch, folder: str = "") -> list[list[str]]:
    """Execute a cell's source with subprocess.run recorded and faked (a fake ``git clone``
    creates the checkout and ``folder`` in it); return the commands."""
    calls: list[list[str]] = []

    def fake_run(command, check=False, **kwargs):
        calls.append([str(part) for part in command])
        if command[:2] == ["git", "clone"]:
            os.makedirs(os.path.join(command[-1], folder))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    exec(compile(source, "<colab cell>", "exec"), {})
    return calls


def test_local_branch_does_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    path_before = list(sys.path)

    calls = _run_cell(colab.install_cell_source("05_unet_segmentation"), monkeypatch)

    assert calls == []
    assert os.getcwd() == str(tmp_path)
    assert sys.path == path_before


def test_colab_branch_clones_installs_and_enters_the_folder(tmp_path, monkeypatch):
    checkout = tmp_path / "content" / "repo"
    folder = "05_unet_segmentation"
    monkeypatch.setattr(colab, "COLAB_CHECKOUT", str(checkout))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))

    calls = _run_cell(colab.install_cell_source(folder), monkeypatch, folder)

    clone = next(call for call in calls if call[:2] == ["git", "clone"])
    assert clone[-2:] == [colab.REPO_URL, str(checkout)]
    assert clone[clone.index("-b") + 1] == colab.BRANCH
    assert any(call[-2:] == ["-r", f"{checkout}/requirements.txt"] for call in calls)
    assert any(call[-2:] == ["-e", str(checkout)] for call in calls)
    assert any("uninstall" in call and "opencv-python" in call for call in calls)
    assert os.getcwd() == str(checkout / folder)
    assert sys.path[:2] == [str(checkout / folder), f"{checkout}/src"]

    # a second run (the checkout exists) installs nothing again, and still enters the folder
    monkeypatch.chdir(tmp_path)
    assert _run_cell(colab.install_cell_source(folder), monkeypatch) == []
    assert os.getcwd() == str(checkout / folder)


def test_links_are_built_from_the_one_url():
    owner_name = colab.REPO_URL.split("github.com/")[1]
    url = colab.colab_url("05_unet_segmentation/1_unet_salt.ipynb")
    assert url == (
        f"https://colab.research.google.com/github/{owner_name}/blob/{colab.BRANCH}/"
        "05_unet_segmentation/1_unet_salt.ipynb"
    )
    assert colab.badge("notebooks/00_boxes_and_map.ipynb").endswith(
        f"({colab.colab_url('notebooks/00_boxes_and_map.ipynb')})"
    )


def test_every_lesson_starts_with_the_install_cell_of_its_folder():
    sources = notebooks.discover(root=ROOT)
    assert sources
    for source in sources:
        folder = source.parent.relative_to(ROOT).as_posix()
        cells = json.loads(source.with_suffix(".ipynb").read_text())["cells"]
        code = [cell for cell in cells if cell["cell_type"] == "code"]
        assert "".join(code[0]["source"]) == colab.install_cell_source(folder), source
        assert cells.index(code[0]) <= 1, source  # right after the title


def test_a_failing_cell_is_located_past_the_install_cell(tmp_path):
    source = tmp_path / "lesson.py"
    source.write_text("# %% [markdown]\n# Title\n\n# %%\nx = 1\n\n# %%\nraise ValueError\n")
    notebook = nbformat.v4.new_notebook()
    installed = nbformat.v4.new_code_cell("pass")
    installed.metadata["tags"] = [colab.INSTALL_CELL_TAG]
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Title"),
        installed,
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("raise ValueError"),
    ]
    assert notebooks._source_line(source, notebook, 3) == 7
    assert notebooks._source_line(source, notebook, 2) == 4
    assert notebooks._source_line(source, notebook, 0) == 1
    assert notebooks._source_line(source, notebook, 1) is None


def test_lessons_table_reading_order_titles_and_badges(tmp_path):
    for folder, name, title in [
        ("notebooks", "00_intro.py", "Intro"),
        ("02_demo", "2_second.py", "Second part"),
        ("02_demo", "1_first.py", "First part"),
    ]:
        (tmp_path / folder).mkdir(exist_ok=True)
        header = "# ---\n# jupyter:\n#   jupytext:\n#     text_representation:\n"
        header += "#       format_name: percent\n# ---\n\n"
        (tmp_path / folder / name).write_text(f"{header}# %% [markdown]\n# # {title}\n")
    lines = colab.lessons_table(tmp_path).splitlines()
    assert [line.split(" | ")[1] for line in lines[2:]] == ["Intro", "First part", "Second part"]
    assert lines[3] == (
        "| 2 | First part | [`02_demo/1_first.ipynb`](02_demo/1_first.ipynb) | "
        f"{colab.badge('02_demo/1_first.ipynb')} |"
    )

    readme = tmp_path / "README.md"
    readme.write_text(f"# R\n{colab.LESSONS_START}\nold\n{colab.LESSONS_END}\nrest\n")
    assert colab.render_readme(readme, tmp_path) is True
    assert colab.render_readme(readme, tmp_path) is False
    assert readme.read_text().endswith(f"{colab.LESSONS_END}\nrest\n")


def test_the_readme_lessons_table_is_up_to_date(tmp_path):
    copy = tmp_path / "README.md"
    copy.write_text((ROOT / "README.md").read_text())
    assert not colab.render_readme(copy, ROOT), "run: python -m detseg.colab"
