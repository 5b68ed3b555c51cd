"""detseg.testing: the shared example fixtures, run in a real pytest session on a made-up folder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CONFTEST = """
from detseg.testing import example_fixtures

_fixtures = example_fixtures(__file__, opencv_threads={cv}, shared_runs={shared})
script = _fixtures.script
shared_data = _fixtures.shared_data
shared_runs = _fixtures.shared_runs
example_env = _fixtures.env
"""

TESTS = """
import os
import sys
from pathlib import Path

import cv2
import torch

FOLDER = Path(__file__).resolve().parents[1]
SEEN = []


def test_first(script, shared_data, tmp_path):
    train = script("train")
    assert train.__name__ == "99_fake_example__train"
    assert train.main() == 42
    assert script("train") is train
    import fake_helper_module  # the folder is importable

    assert fake_helper_module.VALUE == 7
    assert str(FOLDER) in sys.path
    assert os.environ["DETSEG_SMOKE"] == "1"
    assert os.environ["MPLBACKEND"] == "Agg"
    assert os.environ["DETSEG_DATA"] == str(shared_data)
    assert shared_data.name.startswith("ex99-data")
    SEEN.append((os.environ["DETSEG_DATA"], os.environ["DETSEG_RUNS"]))
    assert torch.get_num_threads() == 1
    assert cv2.getNumThreads() == (1 if {cv} else cv2.getNumThreads())
    if {shared}:
        assert Path(os.environ["DETSEG_RUNS"]).name.startswith("ex99-runs")
    else:
        assert os.environ["DETSEG_RUNS"] == str(tmp_path / "runs")


def test_second():
    data, runs = os.environ["DETSEG_DATA"], os.environ["DETSEG_RUNS"]
    assert data == SEEN[0][0]  # one data folder per session
    assert (runs == SEEN[0][1]) == {shared}  # runs: per test, or one per session
"""


def _fake_example(root: Path, cv: bool, shared: bool) -> Path:
    folder = root / "99_fake_example"
    (folder / "tests").mkdir(parents=True)
    (folder / "train.py").write_text("def main():\n    return 42\n")
    (folder / "fake_helper_module.py").write_text("VALUE = 7\n")
    fmt = {"cv": cv, "shared": shared}
    (folder / "tests" / "conftest.py").write_text(textwrap.dedent(CONFTEST.format(**fmt)))
    (folder / "tests" / "test_fake.py").write_text(textwrap.dedent(TESTS.format(**fmt)))
    return folder


@pytest.mark.parametrize(("cv", "shared"), [(False, False), (True, True)])
def test_example_fixtures_in_a_pytest_session(tmp_path: Path, cv: bool, shared: bool) -> None:
    folder = _fake_example(tmp_path, cv, shared)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETSEG_")}
    env["DETSEG_SMOKE"] = "0"  # the fixture must set it
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         str(folder / "tests")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


def test_env_restores_thread_counts(tmp_path: Path) -> None:
    """After each test the torch thread count is the one before it (a fixture that forgot to
    restore would leave later tests of other folders on one thread): an outer autouse fixture sets
    2 threads and checks, after each test, that 2 are back."""
    folder = _fake_example(tmp_path, True, False)
    (folder / "tests" / "test_fake.py").write_text(
        textwrap.dedent(
            """
            import torch

            BEFORE = torch.get_num_threads()

            def test_inside():
                assert torch.get_num_threads() == 1

            def test_second():
                assert torch.get_num_threads() == 1

            def test_third():
                assert torch.get_num_threads() == 1
            """
        )
    )
    (folder / "tests" / "conftest.py").write_text(
        (folder / "tests" / "conftest.py").read_text()
        + textwrap.dedent(
            """
            import pytest
            import torch

            @pytest.fixture(autouse=True)
            def _check_restore(request):
                before = torch.get_num_threads()
                torch.set_num_threads(2)
                yield
                assert torch.get_num_threads() == 2, "thread count not restored"
                torch.set_num_threads(before)
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETSEG_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder / "tests")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout
