"""The pytest fixtures that every example folder's tests share, in one tested copy.

Each example's ``tests/conftest.py`` used to hold its own 60-line copy of the same setup. It now
names the fixtures it takes from here, explicitly::

    from detseg.testing import example_fixtures

    _fixtures = example_fixtures(__file__)
    script = _fixtures.script              # script("train") -> this folder's train.py as a module
    shared_data = _fixtures.shared_data    # one DETSEG_DATA folder per session
    example_env = _fixtures.env            # autouse: smoke mode, tmp folders, one thread

What the autouse fixture does for every test of the folder: ``DETSEG_SMOKE=1``, ``DETSEG_DATA`` on
the session's data folder (the smoke-size built-in datasets are generated once, not once per test),
``DETSEG_RUNS`` inside the test's ``tmp_path`` (or one session folder with ``shared_runs=True``),
headless matplotlib, and one torch thread (also one OpenCV thread with ``opencv_threads=True``, one
TensorFlow thread with ``tf_threads=True``): ``make test`` runs two test processes side by side on
a few cores, where extra threads only wait on each other. The previous values are restored after
each test.

Scripts (``train.py``, ``export.py`` ...) share their names across folders, so they are imported by
path through :func:`detseg.scripts.load_script` as ``<folder name>__<script>``; the folder itself
is put on ``sys.path`` so that its uniquely named modules import normally.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from detseg.scripts import load_script

__all__ = ["ExampleFixtures", "example_fixtures"]


@dataclass(frozen=True)
class ExampleFixtures:
    """What :func:`example_fixtures` makes; assign the fixtures to names in the conftest."""

    folder: Path
    tag: str
    load: Callable[[str], ModuleType]
    script: Any
    shared_data: Any
    shared_runs: Any
    env: Any


def example_fixtures(
    conftest_file: str | Path,
    *,
    opencv_threads: bool = False,
    tf_threads: bool = False,
    shared_runs: bool = False,
) -> ExampleFixtures:
    """Build the fixtures of the example folder that holds ``conftest_file`` (``<folder>/tests/``).

    Args:
        conftest_file: the conftest's ``__file__``.
        opencv_threads: also hold OpenCV to one thread during each test.
        tf_threads: set ``DETSEG_TF_THREADS=1`` (read by :mod:`detseg.tf_import` when TensorFlow is
            first imported, so it is also set for the whole process here).
        shared_runs: ``DETSEG_RUNS`` is one folder for the session instead of one per test, so that
            session-scoped trained runs and the tests that read them see the same place.
    """
    folder = Path(conftest_file).resolve().parents[1]
    tag = "ex" + folder.name.split("_", 1)[0]
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    if tf_threads:
        os.environ.setdefault("DETSEG_TF_THREADS", "1")
    load = functools.partial(load_script, folder)

    @pytest.fixture(name="script")
    def script_fixture() -> Callable[[str], ModuleType]:
        """``script("train")`` -> this folder's train.py as a module."""
        return load

    @pytest.fixture(name="shared_data", scope="session")
    def shared_data_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
        """One DETSEG_DATA folder for this folder's tests."""
        return tmp_path_factory.mktemp(f"{tag}-data")

    @pytest.fixture(name="shared_runs", scope="session")
    def shared_runs_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
        """One DETSEG_RUNS folder for this folder's tests (used with ``shared_runs=True``)."""
        return tmp_path_factory.mktemp(f"{tag}-runs")

    @pytest.fixture(name="example_env", autouse=True)
    def env_fixture(
        shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: Any
    ) -> Iterator[None]:
        """Smoke mode, shared data, runs in tmp, headless plots, one thread per library."""
        import torch

        runs = request.getfixturevalue("shared_runs") if shared_runs else tmp_path / "runs"
        monkeypatch.setenv("DETSEG_SMOKE", "1")
        monkeypatch.setenv("DETSEG_DATA", str(shared_data))
        monkeypatch.setenv("DETSEG_RUNS", str(runs))
        monkeypatch.setenv("MPLBACKEND", "Agg")
        if tf_threads:
            monkeypatch.setenv("DETSEG_TF_THREADS", "1")
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        cv2_threads = None
        if opencv_threads:
            import cv2

            cv2_threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
        try:
            yield
        finally:
            torch.set_num_threads(torch_threads)
            if cv2_threads is not None:
                import cv2

                cv2.setNumThreads(cv2_threads)

    return ExampleFixtures(
        folder=folder,
        tag=tag,
        load=load,
        script=script_fixture,
        shared_data=shared_data_fixture,
        shared_runs=shared_runs_fixture,
        env=env_fixture,
    )
