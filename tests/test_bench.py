"""Benchmark harness: timing, fingerprint, results JSON, README table, CLI errors."""

from __future__ import annotations

import json
import time

import pytest

from detseg import bench
from detseg.cli import main as detseg_main

FAKE_CASES = """
def case_fast():
    return {"ours_ms": 2.0, "ref_ms": 4.0, "ratio": 0.5, "main": "ratio"}

def case_plain():
    return 7.25

def case_no_main():
    return {"num_images": 10, "ours_s": 0.5, "ratio": 1.25}

def case_broken():
    raise RuntimeError("boom")
"""


@pytest.fixture
def fake_repo(tmp_path):
    """A repo root with one benchmark file and a registry pointing into it by path."""
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench_fake.py").write_text(FAKE_CASES)
    cases = {
        "fake-fast": bench.Case("benchmarks/bench_fake.py:case_fast", "core", "a fast fake"),
        "fake-plain": bench.Case("benchmarks/bench_fake.py:case_plain", "core", "returns a float"),
        "fake-broken": bench.Case("benchmarks/bench_fake.py:case_broken", "core", "raises"),
        "fake-no-main": bench.Case("benchmarks/bench_fake.py:case_no_main", "core", "no main"),
    }
    return tmp_path, cases


def test_time_it_statistics():
    sleeps = iter([0.0, 0.0, 0.01, 0.03, 0.02, 0.05, 0.04])  # 2 warm-up calls, then 5 timed

    result = bench.time_it(lambda: time.sleep(next(sleeps)), warmup=2, repeats=5)

    assert set(result) == {"median_s", "min_s", "max_s", "iqr_s", "repeats"}
    assert result["repeats"] == 5
    assert 0.01 <= result["min_s"] < result["median_s"] < result["max_s"]
    assert result["median_s"] == pytest.approx(0.03, abs=0.015)
    # inclusive quartiles of (0.01, 0.02, 0.03, 0.04, 0.05) are 0.02 and 0.04
    assert result["iqr_s"] == pytest.approx(0.02, abs=0.015)
    calls = []
    bench.time_it(lambda: calls.append(1), warmup=3, repeats=4)
    assert len(calls) == 7


def test_fingerprint_keys_and_slug():
    fingerprint = bench.machine_fingerprint()
    assert set(fingerprint) == {"cpu", "cores", "ram_gb", "gpu", "os", "python", "versions"}
    assert set(fingerprint["versions"]) >= {
        "torch",
        "torchvision",
        "tensorflow",
        "onnxruntime",
        "opencv",
    }
    assert fingerprint["cores"] >= 1
    assert fingerprint["python"].count(".") == 2
    json.dumps(fingerprint)  # serialisable as is
    assert bench.machine_slug({"cpu": "Intel(R) Xeon(R) CPU @ 2.20GHz", "cores": 8}) == (
        "intel-xeon-8cpu"
    )
    assert bench.machine_slug({"cpu": "x", "cores": 4, "gpu": "NVIDIA H100 80GB HBM3"}) == (
        "nvidia-h100-80gb-hbm3"
    )


def test_run_writes_json_and_records_failures(fake_repo):
    root, cases = fake_repo
    out = root / "benchmarks" / "results"

    path, document = bench.run_cases(out_dir=out, cases=cases, root=root, date="2025-01-02")

    assert path.parent == out and path.name.endswith("-2025-01-02.json")
    assert json.loads(path.read_text()) == document
    fast = document["cases"]["fake-fast"]
    assert fast["main"] == "ratio" and fast["results"]["ratio"] == 0.5 and fast["error"] is None
    assert document["cases"]["fake-plain"]["results"] == {"value": 7.25}
    assert document["cases"]["fake-plain"]["main"] == "value"
    assert document["cases"]["fake-broken"]["error"] == "RuntimeError: boom"
    assert document["cases"]["fake-no-main"]["main"] == "ratio"  # preferred over the first number
    # a later run on the same day with one case keeps the others
    _, again = bench.run_cases(
        ["fake-plain"], out_dir=out, cases=cases, root=root, date="2025-01-02"
    )
    assert set(again["cases"]) == set(cases)


README = (
    "# Title\r\n\r\nsome text, kept byte for byte  \n\n## Benchmarks\n"
    "<!-- bench:start -->\nold table\n<!-- bench:end -->\ntrailing text\n\n"
)


def _result(slug: str, date: str, ratio: float, gpu: str | None = None) -> dict:
    machine = {"cpu": "CPU", "cores": 2, "ram_gb": 8, "gpu": gpu, "os": "Linux", "python": "3.11.7"}
    case = {
        "description": "a fast fake",
        "results": {"ratio": ratio},
        "main": "ratio",
        "error": None,
    }
    broken = {"description": "raises", "results": {}, "main": None, "error": "RuntimeError: x"}
    return {
        "slug": slug,
        "date": date,
        "machine": {**machine, "versions": {"torch": "2.4"}},
        "cases": {"fake-fast": case, "fake-broken": broken},
    }


def test_render_readme_between_markers_is_idempotent(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for slug, date, ratio in [("cpu-a", "2025-01-01", 3.0), ("cpu-a", "2025-02-01", 1.5)]:
        (results / f"{slug}-{date}.json").write_text(json.dumps(_result(slug, date, ratio)))
    (results / "gpu-b-2025-01-01.json").write_text(
        json.dumps(_result("gpu-b", "2025-01-01", 0.25, gpu="NVIDIA X"))
    )
    readme = tmp_path / "README.md"
    readme.write_bytes(README.encode())

    assert bench.render_readme(readme, results) is True
    first = readme.read_bytes()
    assert bench.render_readme(readme, results) is False
    assert readme.read_bytes() == first

    text = first.decode()
    head, rest = text.split("<!-- bench:start -->")
    table, tail = rest.split("<!-- bench:end -->")
    assert head == README.split("<!-- bench:start -->")[0]
    assert tail == README.split("<!-- bench:end -->")[1]
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert rows[0] == "| case | what | number | `cpu-a` | `gpu-b` |"
    # cases not in the registry come in name order; the latest date of a machine wins
    assert rows[2] == "| `fake-broken` | raises |  | failed | failed |"
    assert rows[3] == "| `fake-fast` | a fast fake | ratio | 1.50x | 0.25x |"
    assert "NVIDIA X" in table and "old table" not in table


def test_render_readme_without_markers_is_a_user_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(bench.UserError, match="markers"):
        bench.render_readme(readme, tmp_path)
    assert readme.read_text() == "# no markers\n"


def test_format_value_units():
    assert bench.format_value("ours_ms", 12.345) == "12.3 ms"
    assert bench.format_value("epoch_s", 250.4) == "250 s"
    assert bench.format_value("speedup", 1.849) == "1.85x"
    assert bench.format_value("map", 0.51234) == "0.5123"


def test_cli_unknown_case_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        detseg_main(["bench", "run", "--case", "no-such-case"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: unknown benchmark case 'no-such-case'; run 'detseg bench list'")


def test_cli_list_names_every_core_case(capsys):
    with pytest.raises(SystemExit) as exit_info:
        detseg_main(["bench", "list"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in bench.CASES:
        assert name in out


def test_load_target_by_module_and_errors(tmp_path):
    assert bench.load_target("detseg.bench:time_it") is bench.time_it
    with pytest.raises(bench.UserError, match="file not found"):
        bench.load_target("nowhere/bench_x.py:case", root=tmp_path)
    with pytest.raises(bench.UserError, match="bad target"):
        bench.load_target("no_colon_here")
