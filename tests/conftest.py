"""Shared test setup: headless matplotlib, smoke mode, one compute thread per worker, and data /
runs folders inside tmp."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("DETSEG_SMOKE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# `make test` runs one pytest worker per core: one compute thread each, inherited by the notebook
# kernels and scripts the tests start (two threads each made the kernels spend ~25 % more CPU).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DETSEG_TF_THREADS", "1")


@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch):
    """Point DETSEG_DATA and DETSEG_RUNS into tmp_path so a test never touches the repo's data/."""
    data = tmp_path / "data"
    runs = tmp_path / "runs"
    monkeypatch.setenv("DETSEG_DATA", str(data))
    monkeypatch.setenv("DETSEG_RUNS", str(runs))
    return data, runs
