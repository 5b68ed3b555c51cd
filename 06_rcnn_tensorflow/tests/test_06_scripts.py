"""Every script's main() on tiny built-in data (smoke mode), the tour step and the bench case."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from detseg.boxes import box_iou
from detseg.data import recipes
from detseg.errors import run_cli

FOLDER = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dry_run(shared_data, tmp_path_factory):
    """build_dataset.py + train_rcnn.py --dry-run (4 train, 2 val images; one step), once."""
    from detseg.scripts import load_script

    out = tmp_path_factory.mktemp("ex06-dry-run")
    argv = ["--dry-run", "--mode", "single", "--workers", "0", "--head-epochs", "2"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETSEG_SMOKE", "1")
        patch.setenv("DETSEG_DATA", str(shared_data))
        patch.setenv("DETSEG_RUNS", str(out / "runs"))
        began = time.perf_counter()
        metrics = load_script(FOLDER, "train_rcnn").main([*argv, "--output-dir", str(out / "run")])
        metrics["wall_seconds"] = time.perf_counter() - began  # what the test measured
    return out / "run" / "dry-run", metrics


def test_build_and_train_dry_run(dry_run):
    folder, metrics = dry_run
    data = np.load(folder / "rcnn_dataset" / "samples.npz")
    labels, ious = data["labels"], data["ious"]
    assert (ious[labels == 1] >= 0.7).all() and (ious[labels == 0] < 0.3).all()
    assert ((ious[labels == -1] >= 0.6) & (ious[labels == -1] < 0.7)).all()
    # the default rules are R-CNN's: part negatives (0.05 <= IoU < 0.3), at most 10 per image
    assert metrics["dataset"]["rules"]["max_part_negative"] == 10
    part = (labels == 0) & (ious >= 0.05)
    image = data["split"] * 1000 + data["image_index"]
    assert part.sum() > 0 and np.bincount(image[part]).max() <= 10
    assert np.bincount(image[(labels == 0) & ~part]).max() <= 10
    np.testing.assert_allclose(
        ious, np.diag(box_iou(data["boxes"], data["gt_boxes"])), atol=1e-5
    )  # each sample keeps the ground-truth box it was labelled by
    assert metrics["dataset"]["images"] == {"train": 4, "val": 2}
    assert metrics["steps_trained"] == 1 and metrics["epochs_trained"] == 1
    # the pipeline's time counts the dataset built in this run once
    parts = metrics["dataset_seconds"] + metrics["train_seconds"]
    assert metrics["dataset_seconds"] > 0 and parts < metrics["total_seconds"]
    assert metrics["total_seconds"] <= metrics["wall_seconds"]
    for key in ("map50_before", "map50_after"):
        assert 0.0 <= metrics[key] <= 1.0
    for name in ("last.keras", "best.keras", "bbox_head.keras", "head.json", "detections.png"):
        assert (folder / name).is_file()
    assert json.loads((folder / "gt.json").read_text())["categories"][0]["name"] == "raccoon"


def test_seed_rules_relabel_the_dataset_without_searching_again(
    script, dry_run, tmp_path, monkeypatch
):
    import shutil

    import build_dataset

    folder, _ = dry_run
    copy = shutil.copytree(folder / "rcnn_dataset", tmp_path / "rcnn_dataset")
    train = script("train_rcnn")
    argv = ["--dry-run", "--mode", "single", "--workers", "0", "--dataset-dir", str(copy)]

    def no_build(argv):
        raise AssertionError("the dataset has the rules asked for: it must be reused")

    with monkeypatch.context() as patch:
        patch.setattr(build_dataset, "main", no_build)
        same = train.ensure_dataset(train.get_args_parser().parse_args(argv))
    assert same["rules"]["max_part_negative"] == 10

    def no_search(*args):
        raise AssertionError("same images and search: the proposals must be reused")

    monkeypatch.setattr(build_dataset, "search_all", no_search)
    seed = train.ensure_dataset(
        train.get_args_parser().parse_args([*argv, "--max-part-negative", "0"])
    )
    assert seed["rules"]["max_part_negative"] == 0
    before, after = np.load(folder / "rcnn_dataset" / "samples.npz"), np.load(copy / "samples.npz")
    # the same draws without the part negatives (they are picked after positives and negatives)
    kept = ~((before["labels"] == 0) & (before["ious"] >= 0.05))
    assert 0 < kept.sum() < len(kept)
    for key in ("labels", "ious", "boxes", "image_index", "split", "crops"):
        np.testing.assert_array_equal(after[key], before[key][kept])


def test_search_in_worker_processes_when_loaded_by_path(script):
    """build_dataset.py loaded by path under a name no worker can import (as here and in the
    lessons, through ``load_script``) still searches in spawned workers, with the same proposals."""
    build = script("build_dataset")
    assert build.__name__ == "06_rcnn_tensorflow__build_dataset"
    paths = sorted((recipes.ensure("racoon") / "JPEGImages").iterdir())[:2]
    spawned, cpu_seconds = build.search_all(paths, "ours", "single", workers=2)
    inline, _ = build.search_all(paths, "ours", "single", workers=0)
    assert cpu_seconds > 0 and [len(b) for b in spawned] == [len(b) for b in inline]
    for mine, theirs in zip(spawned, inline):
        np.testing.assert_array_equal(mine, theirs)


def test_resume_after_the_last_epoch_trains_nothing(script, dry_run):
    folder, _ = dry_run
    argv = ["--dry-run", "--mode", "single", "--workers", "0", "--head-epochs", "1", "--resume"]
    again = script("train_rcnn").main([*argv, "--output-dir", str(folder.parent)])
    assert again["steps_trained"] == 0 and again["epochs_trained"] == 0
    assert len(again["history"]) == 1  # the first run's epoch, carried over


def test_detect_on_an_image_and_a_folder(script, dry_run, tmp_path):
    folder, _ = dry_run
    images = recipes.ensure("racoon") / "JPEGImages"
    first = sorted(images.iterdir())[0]
    detect = script("detect")
    argv = ["--weights", str(folder / "best.keras"), "--mode", "single", "--max-proposals", "50"]
    one = detect.main([*argv, "--source", str(first), "--output-dir", str(tmp_path / "d")])
    assert one["images"] == 1 and one["bbox_regression"] is True
    assert (tmp_path / "d" / f"{first.stem}_detections.png").is_file()
    written = json.loads((tmp_path / "d" / "detections.json").read_text())
    assert list(written) == [first.name]


def test_scripts_bad_input_is_one_line_exit_2(script, tmp_path, capsys):
    detect = script("detect")
    assert run_cli(detect.main, ["--source", str(tmp_path / "none.jpg")]) == 2
    (tmp_path / "w.keras").write_text("text")
    image = sorted((recipes.ensure("racoon") / "JPEGImages").iterdir())[0]
    assert (
        run_cli(detect.main, ["--source", str(image), "--weights", str(tmp_path / "w.keras")]) == 2
    )
    assert run_cli(script("build_dataset").main, ["--crop-size", "0"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
    assert "none.jpg" in errors[0] and "w.keras" in errors[1] and "--crop-size" in errors[2]


def test_selective_search_script_on_a_photo(script, tmp_path):
    result = script("selective_search").main(
        ["--images", "photos", "--num-images", "1", "--mode", "single",
         "--output-dir", str(tmp_path)]
    )  # fmt: skip
    assert result["images"] == 1
    for method in ("ours", "opencv"):
        assert result[method]["proposals"] > 10 and 0 <= result[method]["recall@0.7"] <= 1
        curve = result["curves"][method][0.5]
        assert (np.diff(curve) >= 0).all()  # recall never falls with more proposals
    assert result["time_ratio"] > 0 and (tmp_path / "recall_photos_single.png").is_file()


def test_bench_case_runs_in_smoke_mode(script):
    result = script("bench_cases").case_selective_search()
    assert result["main"] == "ratio" and result["ratio"] > 0 and result["ours_proposals"] > 0


def test_tour_quick_path(script, tmp_path):
    result = script("tour").run(tmp_path)
    assert result["ours_recall@0.5"] > 0.5 and result["opencv_recall@0.5"] > 0.5
    assert result["time_ratio_ours_vs_opencv"] > 0 and 0 <= result["map50_after"] <= 1
    assert all(path.is_file() for path in result["pictures"])
