"""Shared test setup: headless matplotlib, smoke mode, and data / runs folders inside tmp."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("DETSEG_SMOKE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch):
    """Point DETSEG_DATA and DETSEG_RUNS into tmp_path so a test never touches the repo's data/."""
    data = tmp_path / "data"
    runs = tmp_path / "runs"
    monkeypatch.setenv("DETSEG_DATA", str(data))
    monkeypatch.setenv("DETSEG_RUNS", str(runs))
    return data, runs
