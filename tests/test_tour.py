"""``detseg tour``: the step runner on fake steps (table, pictures, results.json, failures)."""

from __future__ import annotations

import json

import pytest

from detseg.cli import main as detseg_main
from detseg.cli import tour_cmd

FAKE_STEPS = """
from pathlib import Path


def run_ok(out_dir: Path) -> dict:
    picture = out_dir / "picture.png"
    picture.write_bytes(b"png")
    return {"mAP": 0.123456, "images": 8, "pictures": [picture]}


def run_broken(out_dir: Path) -> dict:
    raise RuntimeError("step exploded")
"""


@pytest.fixture
def fake_tour(tmp_path, monkeypatch):
    steps_file = tmp_path / "fake_tour.py"
    steps_file.write_text(FAKE_STEPS)
    steps = {"ok": f"{steps_file}:run_ok", "broken": f"{steps_file}:run_broken"}
    monkeypatch.setattr(tour_cmd, "TOUR", steps)
    return tmp_path / "out"


def _run(argv):
    with pytest.raises(SystemExit) as exit_info:
        detseg_main(argv)
    return exit_info.value.code


def test_tour_runs_every_step_and_a_failure_gives_exit_1(fake_tour, capsys):
    code = _run(["tour", "--out", str(fake_tour)])

    out = capsys.readouterr().out
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["step", "metric", "value", "time"]
    assert lines[1].split()[:3] == ["ok", "mAP", "0.1235"]
    assert lines[2].split() == ["images", "8"]
    assert (
        lines[3].split()[:2] == ["broken", "FAILED"] and "RuntimeError: step exploded" in lines[3]
    )
    assert f"  {fake_tour / 'ok' / 'picture.png'}" in lines
    results = json.loads((fake_tour / "results.json").read_text())
    assert results["failed"] == ["broken"]
    assert results["steps"]["ok"]["metrics"] == {"mAP": 0.123456, "images": 8}
    assert results["steps"]["ok"]["pictures"] == [str(fake_tour / "ok" / "picture.png")]
    assert results["steps"]["broken"]["error"] == "RuntimeError: step exploded"


def test_tour_only_one_step_exits_0(fake_tour, capsys):
    assert _run(["tour", "--only", "ok", "--out", str(fake_tour)]) == 0
    results = json.loads((fake_tour / "results.json").read_text())
    assert list(results["steps"]) == ["ok"] and results["failed"] == []


def test_tour_unknown_step_is_one_line_exit_2(fake_tour, capsys):
    assert _run(["tour", "--only", "nope"]) == 2
    err = capsys.readouterr().err
    assert err == "error: unknown tour step 'nope'; run 'detseg tour --list' to see them\n"


def test_tour_list_names_the_core_steps(capsys):
    assert _run(["tour", "--list"]) == 0
    out = capsys.readouterr().out
    for name, target in tour_cmd.TOUR.items():
        assert name in out and target in out
    assert {"core-data", "core-validate", "core-eval", "core-export"} <= set(tour_cmd.TOUR)


def test_every_tour_target_is_a_function_of_out_dir_returning_a_dict():
    import inspect

    from detseg.bench import load_target
    from detseg.errors import UserError

    for name, target in tour_cmd.TOUR.items():
        function = load_target(target)
        assert function.__name__ == target.rpartition(":")[2], name
        signature = inspect.signature(function)
        assert list(signature.parameters) == ["out_dir"], name  # run(out_dir) -> dict
        assert str(signature.return_annotation).startswith("dict"), name
    with pytest.raises(UserError, match="no function .no_such_step. in detseg.tour_core"):
        load_target("detseg.tour_core:no_such_step")
