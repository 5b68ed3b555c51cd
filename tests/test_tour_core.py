"""The core tour steps, end to end on the smoke-size built-in dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detseg import tour_core
from detseg.cli import main as detseg_main
from detseg.cli import tour_cmd
from detseg.metrics import evaluate_coco


def _tiny_gt() -> dict:
    images = [{"id": i, "width": 100, "height": 80, "file_name": f"{i}.png"} for i in (1, 2)]
    boxes = [(1, 1, [10, 10, 30, 20]), (1, 2, [50, 40, 20, 30]), (2, 1, [5, 5, 60, 60])]
    annotations = [
        {"id": n, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
        for n, (i, c, b) in enumerate(boxes, 1)
    ]
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def test_perturbed_detections_without_noise_find_every_object_exactly():
    gt = _tiny_gt()

    detections = tour_core.perturbed_detections(gt, recall=1.0, jitter=0.0)

    # one exact copy per object, one false alarm per image
    assert len(detections) == len(gt["annotations"]) + len(gt["images"])
    copies = [(d["image_id"], d["category_id"], d["bbox"]) for d in detections[:3]]
    assert copies == [(a["image_id"], a["category_id"], a["bbox"]) for a in gt["annotations"]]
    assert all(0.3 <= d["score"] < 1 for d in detections[:3])
    assert all(0 <= d["score"] < 0.6 for d in detections[3:])
    assert evaluate_coco(gt, detections, "bbox").stats["AR100"] == pytest.approx(1.0)
    noisy = tour_core.perturbed_detections(gt, recall=1.0, jitter=0.3)
    assert evaluate_coco(gt, noisy, "bbox").stats["AP"] < 1.0


def test_core_tour_steps_run_on_smoke_data(isolated_dirs, tmp_path, capsys):
    """The core's four steps through the CLI (each example's tests run its own step)."""
    out = tmp_path / "tour"
    core = [name for name in tour_cmd.TOUR if name.startswith("core-")]
    assert len(core) == 4
    with pytest.raises(SystemExit) as exit_info:
        detseg_main(["tour", "--out", str(out), *(f"--only={name}" for name in core)])
    assert exit_info.value.code == 0, capsys.readouterr()

    steps = json.loads((out / "results.json").read_text())["steps"]
    assert list(steps) == core
    data = steps["core-data"]["metrics"]
    assert data["train_images"] + data["val_images"] == 16 and data["classes"] == 5
    assert steps["core-validate"]["metrics"]["coco_errors"] == 0
    assert steps["core-validate"]["metrics"]["yolo_errors"] == 0
    evaluation = steps["core-eval"]["metrics"]
    assert 0.3 < evaluation["fake_AP"] < evaluation["fake_AP50"] < 1.0
    assert 0.0 <= evaluation["baseline_AP50"] < evaluation["fake_AP50"]
    export = steps["core-export"]["metrics"]
    assert export["max_abs_diff"] < 1e-4 and export["max_abs_diff_fresh"] < 1e-4
    assert export["fresh_classes_matched"] == export["fresh_images"] == 5
    for step in steps.values():
        for picture in step["pictures"]:
            assert Path(picture).is_file() and Path(picture).stat().st_size > 0


def test_export_step_checks_onnx_on_two_fresh_batches(tmp_path, monkeypatch):
    """Parity is checked on the traced input and on two batches it never saw, every top class equal."""
    import torch

    from detseg import export

    seen = []
    check = export.check_parity
    monkeypatch.setattr(
        export, "check_parity", lambda model, session, x: seen.append(x) or check(model, session, x)
    )
    result = tour_core.run_export(tmp_path)
    assert [tuple(batch.shape) for batch in seen] == [
        (1, 3, 64, 64),
        (3, 3, 64, 64),
        (2, 3, 64, 64),
    ]
    assert not torch.equal(seen[1][:1], seen[0]) and seen[2].max() > 1.5  # not the traced input
    assert result["max_abs_diff"] < 1e-4 and result["max_abs_diff_fresh"] < 1e-4
    assert result["fresh_images"] == result["fresh_classes_matched"] == 5


def test_every_example_step_points_at_a_tour_run_function_tested_in_its_folder():
    """``detseg tour`` with no ``--only`` runs every step: each example's target file exists, defines
    ``run(out_dir)``, and its folder's tests run it (so this suite need not run them twice)."""
    root = Path(__file__).resolve().parents[1]
    examples = {k: v for k, v in tour_cmd.TOUR.items() if not k.startswith("core-")}
    assert len(examples) == 7
    for name, target in examples.items():
        path, _, function = target.partition(":")
        assert function == "run" and (root / path).is_file(), name
        assert "\ndef run(out_dir: Path)" in (root / path).read_text(), name
        folder_tests = "".join(p.read_text() for p in (root / path).parent.glob("tests/test_*.py"))
        assert (
            f'tour_cmd.TOUR["{name}"]' in folder_tests or 'script("tour").run(' in folder_tests
        ), name
