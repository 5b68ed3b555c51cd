"""The examples' statistics table: rendered from results JSON, unmeasured cells never filled, the
README in agreement with benchmarks/results/."""

from __future__ import annotations

import json
import shutil

import pytest

from detseg import bench, bench_summary
from detseg.errors import UserError


def _summary(group, **results):
    return {"group": group, "description": "", "target": "", "results": results, "error": None}


DOCS = [
    {
        "slug": "cpu-a",
        "date": "2026-12-01",
        "machine": {"cpu": "CPU A", "cores": 2},
        "cases": {
            "05-summary": _summary(
                "05_unet_segmentation",
                parameters=490_000,
                train_s=144.0,
                quality=0.949,
                quality_metric="salt IoU",
                quality_bar=0.9,
                eager_ms=3.21,
                onnxruntime_ms=1.05,
            ),
            "05-onnx": _summary("05_unet_segmentation", speedup=3.0),  # not a summary
        },
    },
    {
        "slug": "cpu-a",
        "date": "2026-12-05",  # later: wins for cpu-a
        "machine": {"cpu": "CPU A", "cores": 2},
        "cases": {
            "05-summary": _summary(
                "05_unet_segmentation",
                parameters=490_000,
                train_s=150.0,
                quality=0.85,
                quality_metric="salt IoU",
                quality_bar=0.9,
            ),
        },
    },
    {
        "slug": "gpu-b",
        "date": "2026-12-02",
        "machine": {"cpu": "CPU B", "cores": 8, "gpu": "GPU B"},
        "cases": {
            "01-summary": _summary(
                "01_mask_r_cnn_fine_tuning",
                parameters=3_456_789,
                train_s=41.0,
                quality=0.86,
                quality_metric="segm AP50",
                eager_ms=150.0,
            ),
            "02-summary": {**_summary("02_yolo_v3_darknet"), "error": "RuntimeError: boom"},
        },
    },
]


def test_rows_by_example_and_machine_latest_wins_dash_for_unmeasured():
    table = bench_summary.render_examples_table(DOCS)
    lines = table.splitlines()
    assert lines[0] == (
        "| example | machine | parameters | training to the bar | quality reached | "
        "eager ms / image | ONNX Runtime ms / image |"
    )
    assert lines[2] == (
        "| `01_mask_r_cnn_fine_tuning` | `gpu-b` (2026-12-02) | 3.46 M | 41 s | segm AP50 0.860 "
        "| 150 | - |"
    )
    assert lines[3] == (
        "| `05_unet_segmentation` | `cpu-a` (2026-12-05) | 0.49 M | 2.5 min | "
        "salt IoU 0.850 (bar 0.9: missed) | - | - |"
    )
    assert len([line for line in lines if line.startswith("| `")]) == 2  # the failed 02 is left out


def test_pretraining_is_shown_apart_from_the_training_never_added_in():
    document = {
        "slug": "cpu-a",
        "date": "2026-12-08",
        "machine": {},
        "cases": {
            "02-summary": _summary(
                "02_yolo_v3_darknet",
                train_s=545.0,
                pretrain_s=210.0,
                quality=0.4,
                quality_metric="bbox mAP@0.5",
            ),  # fmt: skip
            "07-summary": _summary(
                "07_bbox_regression_tensorflow",
                train_s=270.0,
                pretrain_s=0.0,
                quality=0.8,
                quality_metric="mean IoU",
            ),  # fmt: skip
        },
    }
    rows = bench_summary.render_examples_table([document]).splitlines()[2:4]
    assert rows[0].split(" | ")[3] == "9.1 min (+ 3.5 min pretraining)"
    assert rows[1].split(" | ")[3] == "4.5 min"  # no pretraining reported: nothing added


def test_no_summary_yet():
    assert "No example has been measured" in bench_summary.render_examples_table(DOCS[2:][:0])


def test_render_readme_fills_both_tables_and_is_idempotent(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for index, document in enumerate(DOCS):
        (results / f"{index}.json").write_text(json.dumps(document))
    readme = tmp_path / "README.md"
    readme.write_text(
        "# T\n<!-- bench:start -->\nold\n<!-- bench:end -->\n\n"
        "<!-- examples:start -->\nold\n<!-- examples:end -->\ntail\n"
    )
    assert bench.render_readme(readme, results) is True
    text = readme.read_text()
    assert "| `05_unet_segmentation` | `cpu-a` (2026-12-05)" in text
    assert text.endswith("<!-- examples:end -->\ntail\n")
    assert bench.render_readme(readme, results) is False

    readme.write_text(text.replace("<!-- examples:end -->", ""))
    with pytest.raises(UserError, match="examples-table markers"):
        bench.render_readme(readme, results)


def test_the_readme_tables_agree_with_the_committed_results(tmp_path):
    root = bench.repo_root()
    copy = tmp_path / "README.md"
    shutil.copyfile(root / "README.md", copy)
    changed = bench.render_readme(copy, root / "benchmarks" / "results")
    assert not changed, "README tables differ from benchmarks/results: run `detseg bench render`"
