"""Every detection script's main() on tiny built-in data, and their one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detseg.data import recipes

FOLDER = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained_ssd(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A dry-run SSDlite checkpoint (one batch of the smoke-size built-in shapes)."""
    import os

    import torch

    from detseg.scripts import load_script

    out = tmp_path_factory.mktemp("ssd")
    saved = {k: os.environ.get(k) for k in ("DETSEG_SMOKE", "DETSEG_DATA", "DETSEG_RUNS")}
    os.environ["DETSEG_SMOKE"] = "1"
    os.environ["DETSEG_DATA"] = str(shared_data)
    os.environ["DETSEG_RUNS"] = str(out / "runs")  # the trunk's pretraining is cached there
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = load_script(FOLDER, "train_detector").main(
            ["--dry-run", "--batch-size", "2", "--output-dir", str(out)]
        )
    finally:
        torch.set_num_threads(threads)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert {"bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_AR100"} <= set(result["eval"])
    assert result["epochs_run"] == 1 and result["history"][0]["steps"] == 1
    assert result["backbone_pretraining"]["steps"] >= 1 and result["pretrain_s"] > 0
    assert len(list((out / "runs").rglob("ssdlite-trunk-*-smoke.pt"))) == 1
    return out / "dry-run" / "last.pt"


def test_time_budget_does_not_count_the_cached_trunk_pretraining(
    script, trained_ssd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the trunk's pretraining stands in for ImageNet weights: --time-budget 2 leaves the detector
    # all 120 s, however long the (cached) pretraining took
    monkeypatch.setenv("DETSEG_RUNS", str(trained_ssd.parents[1] / "runs"))  # the fixture's trunk
    module = script("train_detector")
    seen: dict[str, float] = {}

    class Stop(Exception):
        pass

    def fake_budget_run(model, loader, budget_s, kwargs):
        seen["budget_s"] = budget_s
        raise Stop

    monkeypatch.setattr(module, "train_with_budget", fake_budget_run)
    with pytest.raises(Stop):
        module.main(
            ["--time-budget", "2", "--batch-size", "2", "--output-dir", str(trained_ssd.parents[1])]
        )
    assert seen["budget_s"] == 120.0


def test_train_detector_checkpoint_rebuilds_the_model(script, trained_ssd: Path) -> None:
    model, config = script("train_detector").load_detector(trained_ssd)
    assert config["model"] == "ssdlite320" and config["classes"][0] == "circle"
    assert not model.training


def test_checkpoint_holds_batchnorm_statistics_of_the_training_images(
    script, trained_ssd: Path
) -> None:
    """Evaluation (and so the saved model) uses BatchNorm statistics recomputed on training images
    (``--precise-bn``), not the running averages that lag behind in a short run."""
    import torch
    from detection_zoo import recompute_batchnorm
    from detector_data import load_splits

    train_detector = script("train_detector")
    model, config = train_detector.load_detector(trained_ssd)
    assert config["precise_bn"] == 128
    train, _, _ = load_splits(None, num_images=config["data_num_images"])
    saved = {name: b.clone() for name, b in model.named_buffers() if "running_" in name}
    assert len(saved) > 100
    batches = train_detector.precise_bn_batches(train, 128, config["batch_size"])
    assert [len(b) for b in batches()] == [2] * (len(train) // 2)  # the dry run's batch of 2
    recompute_batchnorm(model, batches())
    for name, buffer in model.named_buffers():
        if name in saved:
            torch.testing.assert_close(buffer, saved[name], msg=name)


def test_export_matches_runtimes_on_validation_images(
    script, trained_ssd: Path, tmp_path: Path
) -> None:
    result = script("export_detector").main(
        ["--weights", str(trained_ssd), "--output-dir", str(tmp_path), "--images", "2",
         "--score-threshold", "0.0"]
    )  # fmt: skip
    assert result["max_abs_diff_onnxruntime"] < 1e-3
    # the exported body has the 1 x 1 map's convolutions as 1 x 1 ones (SSDBody.exportable):
    # without that, OpenCV DNN 4.14 differed here by 0.82 and missed some of the 100 detections
    assert result["max_abs_diff_opencv"] < 1e-3
    # every detection (score >= 0: 100 per image) of PyTorch found by both runtimes
    assert len(result["matches"]) == 4
    assert all(m["matched"] == m["count_a"] == m["count_b"] > 0 for m in result["matches"])
    assert set(result["ms_per_frame"]) == {"ssd body, torch", "ssd body, onnxruntime",
                                          "ssd body, opencv"}  # fmt: skip
    decode = json.loads(Path(result["decode"]).read_text())
    assert len(decode["anchors"]) > 1000 and decode["classes"][0] == "__background__"


def test_detect_image_and_video_with_the_trained_checkpoint(
    script, trained_ssd: Path, tmp_path: Path
) -> None:
    folder = recipes.ensure("shapes") / "val"
    results = script("detect_image").main(
        [str(folder), "--weights", str(trained_ssd), "--runtime", "opencv",
         "--score-threshold", "0", "--output-dir", str(tmp_path / "img")]
    )  # fmt: skip
    assert len(results) == len(list(folder.glob("*.jpg"))) >= 1
    assert Path(results[0]["output"]).is_file() and results[0]["ms"] > 0
    video = script("detect_video").main(
        ["--source", "synthetic", "--classic", "hog_people", "--max-frames", "3",
         "--output", str(tmp_path / "out.avi"), "--work-dir", str(tmp_path / "w")]
    )  # fmt: skip
    assert video["frames"] == 3 and video["fps"] > 0 and Path(video["output"]).is_file()


def test_classic_detector_on_an_image(script, tmp_path: Path) -> None:
    import skimage.data

    from detseg.data.imageio import write_image

    path = write_image(tmp_path / "astronaut.png", skimage.data.astronaut())
    results = script("detect_image").main(
        [str(path), "--classic", "haar_face", "--output-dir", str(tmp_path / "out")]
    )
    assert results[0]["names"] == ["face"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [  # as a real process (python script.py ...); every other bad-input row: bad_input_cases.py
        (["detect_image.py", ".", "--runtime", "opencv"], "--runtime opencv needs --weights"),
        (["train_detector.py", "--val-fraction", "1.5"], "--val-fraction"),
    ],
)
def test_bad_input_is_one_line(args: list[str], expected: str, tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(FOLDER / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines


def test_coco_scores_equal_pycocotools_on_fixed_predictions(tmp_path: Path) -> None:
    from detector_data import category_ids, coco_scores, load_splits, to_coco_results
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from detseg.data.formats import coco

    _, val, _ = load_splits(None)
    rng = np.random.default_rng(0)
    outputs, ids = [], []
    for record in val.records:  # ground truth moved a little, some dropped, one false positive
        keep = rng.random(len(record.boxes)) < 0.8
        boxes = record.boxes[keep] + rng.normal(0, 3, (int(keep.sum()), 4)).astype(np.float32)
        boxes = np.vstack([boxes, [[0, 0, 30, 30]]])
        labels = np.append(record.labels[keep] + 1, 1)
        outputs.append({"boxes": boxes, "scores": rng.random(len(boxes)), "labels": labels})
        ids.append(record.image_id)
    results = to_coco_results(outputs, ids, category_ids(val))
    mine = coco_scores(results, val)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(coco.to_dict(val)))
    ground_truth = COCO(str(gt_path))
    evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert 0.1 < mine["bbox_AP50"] < 1.0
    assert mine["bbox_AP"] == pytest.approx(evaluator.stats[0], abs=1e-9)
    assert mine["bbox_AP50"] == pytest.approx(evaluator.stats[1], abs=1e-9)


def test_training_targets_scored_as_detections_give_ap_1_and_shifted_labels_0() -> None:
    """The label and box path end to end: the targets the model trains on (torchvision labels
    1..C, xyxy pixels, from ``DetectionTorchDataset``) fed back as detections through
    ``to_coco_results`` score AP 1.0 against the COCO files; one class off scores 0."""
    from detector_data import category_ids, coco_scores, load_splits, to_coco_results

    from detseg.data.torch_datasets import DetectionTorchDataset

    train, val, _ = load_splits(None)
    dataset = DetectionTorchDataset(val)
    targets = [dataset[i][1] for i in range(len(dataset))]
    assert min(int(t["labels"].min()) for t in targets) == 1  # 0 is the background
    assert max(int(t["labels"].max()) for t in targets) == len(val.classes)
    ids = [t["image_id"] for t in targets]
    for shift, expected in ((0, 1.0), (1, 0.0)):
        outputs = [
            {
                "boxes": t["boxes"].numpy(),
                "scores": np.ones(len(t["labels"])),
                "labels": (t["labels"].numpy() - 1 + shift) % len(val.classes) + 1,
            }
            for t in targets
        ]
        scores = coco_scores(to_coco_results(outputs, ids, category_ids(train)), val)
        assert scores["bbox_AP"] == pytest.approx(expected, abs=1e-9), shift


def test_anchor_scales_reach_the_default_boxes_and_old_checkpoints_keep_the_papers(script) -> None:
    from detection_zoo import build_trainable
    from detector_body import DecodeConfig

    train = script("train_detector")
    sides = {}
    for scales in ([0.05, 0.6], None):  # None: a config saved before --anchor-scales existed
        config = {"model": "ssdlite320", "width_mult": 0.25, "anchor_scales": scales}
        model = build_trainable("ssdlite320", 6, **train.model_options(config)).eval()
        anchors = DecodeConfig.from_ssd(model).anchors
        sides[str(scales)] = float((anchors[:, 2] - anchors[:, 0]).min())
    # smallest box: the first map's scale times 320 px, narrowed by the 3:1 ratio
    assert sides["[0.05, 0.6]"] == pytest.approx(0.05 * 320 / 3**0.5, rel=1e-3)
    assert sides["None"] == pytest.approx(0.2 * 320 / 3**0.5, rel=1e-3)
