"""Every example's ``*-summary`` benchmark case runs end to end (smoke mode: a dry run) and returns
the keys the examples table renders, each measured (no cell filled by hand)."""

from __future__ import annotations

import math

import pytest

from detseg import bench

SUMMARIES = sorted(name for name in bench.CASES if name.endswith("-summary"))
WITHOUT_ONNX = {"06-summary"}  # examples whose folder has no ONNX export


def test_each_example_folder_has_a_summary_case():
    folders = {case.group for case in bench.CASES.values() if case.group != "core"}
    assert {bench.CASES[name].group for name in SUMMARIES} == folders


@pytest.mark.parametrize("name", SUMMARIES)
def test_summary_case_runs_and_returns_measured_numbers(name, tmp_path, monkeypatch):
    monkeypatch.setenv("DETSEG_SMOKE", "1")
    monkeypatch.setenv("DETSEG_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DETSEG_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    record = bench.run_case(name, bench.CASES[name])
    assert record["error"] is None, record["error"]
    results = record["results"]
    assert record["main"] == "quality" and isinstance(results["quality_metric"], str)
    assert 0.0 <= results["quality"] <= 1.0
    assert isinstance(results["parameters"], int) and results["parameters"] > 1000
    # 06 has no ONNX export: its summary leaves the ONNX Runtime number out instead of filling it
    assert ("onnxruntime_ms" in results) == (name not in WITHOUT_ONNX)
    timed = ("train_s", "eager_ms") + (() if name in WITHOUT_ONNX else ("onnxruntime_ms",))
    for key in timed:
        assert math.isfinite(results[key]) and results[key] > 0, key
