"""The lesson end to end on tiny built-in data: learning, train / predict / export main(), the
evaluator against pycocotools on this model's predictions, ONNX parity, one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from maskrcnn_data import DataSplits, load_splits, torch_datasets
from maskrcnn_eval import evaluate_outputs, label_to_category, predict_batches, predictions_to_coco
from models_maskrcnn import build_model, load_trained
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from slim_maskrcnn import SlimConfig, slim_config_dict

from detseg.scripts import load_script

FOLDER = Path(__file__).resolve().parents[1]
# every example folder has a train.py: load these by path under unique names
train, predict, export, evaluate = (
    load_script(FOLDER, name) for name in ("train", "predict", "export", "evaluate")
)

from detseg.cli import tour_cmd
from detseg.data.formats import coco
from detseg.data.imageio import read_image, write_image
from detseg.data.torch_datasets import detection_collate
from detseg.engine import load_checkpoint
from detseg.errors import run_cli
from detseg.metrics import STAT_NAMES, evaluate_coco

# a small slim model at 128 px keeps every step well under a second on a CPU
TINY = ["--slim", "fpn_channels=32", "--slim", "mask_layers=[32]", "--slim", "mask_dilations=[1]"]
TINY += ["--image-size", "128", "192"]
TINY += ["--workers", "0", "--device", "cpu"]
# the short run of the `trained` fixture, which the resume test continues with the same flags;
# gradients clipped at norm 10: without, the mask loss diverged (4.4 after 8 steps) and with one
# thread every score underflowed to 0, which left too few detections to compare evaluators on
SHORT_RUN = [*TINY, "--batch-size", "4", "--lr", "0.01", "--warmup-iters", "2", "--lr-steps", "5"]
SHORT_RUN += ["--clip-grad-norm", "10"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Data and runs in tmp, smoke mode (16 built-in images), for the whole module."""
    root = tmp_path_factory.mktemp("ex01")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETSEG_DATA", str(root / "data"))
        patch.setenv("DETSEG_RUNS", str(root / "runs"))
        patch.setenv("DETSEG_SMOKE", "1")
        yield root


@pytest.fixture(scope="module")
def trained(workdir):
    """Two short epochs on built-in pedestrians: the 'trained-ish' model the other tests use."""
    out = workdir / "train"
    result = train.main([*SHORT_RUN, "--epochs", "2", "--output-dir", str(out)])
    return out, result


def test_loss_falls_on_a_tiny_set(workdir):
    torch.manual_seed(0)
    splits = load_splits("pedestrians")
    dataset, _ = torch_datasets(splits, hflip=False)
    images, targets = detection_collate([dataset[i] for i in range(2)])
    model = build_model(
        "maskrcnn_slim", num_classes=2, image_size=(128, 192), slim={"fpn_channels": 32}
    ).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    # 20 steps: the summed loss is noisy step to step (its box term grows with the positives
    # sampled), so 12 fell by 25 % with a quarter of the RoIs positive but not with half
    for _ in range(20):
        loss = sum(model(list(images), list(targets)).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.75 * np.mean(losses[:3]), losses


def test_train_main_returns_the_metrics_it_wrote(trained):
    out, result = trained
    assert [entry["epoch"] for entry in result["history"]] == [1, 2]
    for name in ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50"):
        assert 0.0 <= result["eval"][name] <= 1.0
    assert result["final"]["eval/bbox_AP50"] == result["eval"]["bbox_AP50"]
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    assert (out / "metrics.json").is_file() and (out / "predictions.png").is_file()
    # best.pt by the mask AP unless --best-metric says otherwise
    scores = [entry["eval"]["segm_AP"] for entry in result["history"]]
    assert result["best"]["metric"] == "segm_AP"
    assert result["best"]["epoch"] == 1 + scores.index(max(scores))
    model, config = load_trained(out / "last.pt")
    assert config["model"] == "maskrcnn_slim" and config["classes"] == ["person"]
    assert model.backbone.out_channels == 32 and model.transform.min_size == (128,)
    # the checkpoint holds every slim field, so a later change of a default cannot change it
    assert config["slim"] == json.loads(json.dumps(slim_config_dict(SlimConfig(
        fpn_channels=32, mask_layers=(32,), mask_dilations=(1,)
    ))))  # fmt: skip


def test_train_on_multiclass_coco_json_dry_run(workdir):
    result = train.main(
        [*TINY, "--data", "shapes", "--dry-run", "--output-dir", str(workdir / "s")]
    )
    # --dry-run writes into <output-dir>/dry-run so it never overwrites a real run
    config = result["history"] and load_trained(workdir / "s" / "dry-run" / "last.pt")[1]
    assert config["num_classes"] == len(config["classes"]) + 1 > 2
    assert result["history"][0]["steps"] == 1
    assert {"bbox_AP50", "segm_AP50"} <= set(result["eval"])


def count_steps(monkeypatch) -> list[int]:
    """Make train.py count the steps it trains in this process (``calls[0]``)."""
    calls, weighted = [0], train.weighted_step

    def counting_weighted_step(weight):
        step = weighted(weight)

        def counting(model, batch, device):
            calls[0] += 1
            return step(model, batch, device)

        return counting

    monkeypatch.setattr(train, "weighted_step", counting_weighted_step)
    return calls


def test_resume_continues_the_run(trained, workdir, monkeypatch):
    out, first = trained
    copy = workdir / "resumed"
    shutil.copytree(out, copy)
    calls = count_steps(monkeypatch)
    # epoch 3 is scored with scripted numbers: the best mask AP of the run and the worst box AP,
    # so best.pt moves to epoch 3 only if it is chosen by segm_AP (the default for Mask R-CNN)
    scripted = {"bbox_AP": -1.0, "bbox_AP50": -1.0, "segm_AP": 0.9, "segm_AP50": 0.95}
    monkeypatch.setattr(train, "evaluate_model", lambda *args, **kwargs: dict(scripted))
    result = train.main([*SHORT_RUN, "--epochs", "3", "--output-dir", str(copy), "--resume"])
    assert [entry["epoch"] for entry in result["history"]] == [1, 2, 3]
    # this process trained epoch 3 only, and carries epochs 1-2 as the first run measured them
    assert calls[0] == result["history"][2]["steps"] == first["history"][1]["steps"] > 0
    assert result["history"][:2] == first["history"]
    assert max(entry["eval"]["segm_AP"] for entry in first["history"]) < 0.9
    assert result["best"] == {"metric": "segm_AP", "mode": "max", "value": 0.9, "epoch": 3}
    assert load_checkpoint(copy / "best.pt")["epoch"] == 3


def test_evaluator_equals_pycocotools_on_this_models_predictions(trained):
    out, _ = trained
    model, _ = load_trained(out / "last.pt")
    model.roi_heads.score_thresh = 0.0  # keep every candidate: many detections, a real ranking
    splits = load_splits("pedestrians")
    dataset = splits.train  # more images and objects than the 3 validation ones
    loader = torch.utils.data.DataLoader(
        torch_datasets(splits, hflip=False)[0], batch_size=4, collate_fn=detection_collate
    )
    outputs, image_ids = predict_batches(model, loader, "cpu")
    results = predictions_to_coco(outputs, image_ids, label_to_category(dataset))
    assert len(results) > 100
    gt = coco.to_dict(dataset)
    for iou_type in ("bbox", "segm"):
        ours = evaluate_coco(gt, results, iou_type).stats
        with contextlib.redirect_stdout(io.StringIO()):
            reference = COCO()
            reference.dataset = gt
            reference.createIndex()
            evaluator = COCOeval(reference, reference.loadRes(results), iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        np.testing.assert_allclose([ours[n] for n in STAT_NAMES], evaluator.stats, atol=1e-9)
    assert evaluate_outputs(outputs, image_ids, dataset)["bbox_AP"] == pytest.approx(
        evaluate_coco(gt, results, "bbox").stats["AP"]
    )


def test_evaluate_main_on_the_val_split_and_on_fresh_scenes(trained, workdir, capsys):
    out, result = trained
    weights = ["--weights", str(out / "last.pt"), "--output-dir", str(workdir / "eval")]
    own = evaluate.main(weights)
    assert own["images"] == len(load_splits("pedestrians").val)
    people = own["people"]
    assert sum(group["objects"] for group in people.values()) == sum(
        len(record.boxes) for record in load_splits("pedestrians").val.records
    )
    assert all(0 <= group["found"] <= group["objects"] for group in people.values())
    fresh = evaluate.main([*weights, "--data-seed", "3", "--num-images", "4", "--split", "all"])
    assert fresh["images"] == 4 and "pedestrians-3-n4" in fresh["data"]
    assert (workdir / "eval" / "eval.json").is_file()
    capsys.readouterr()
    # every image of the training data would include the images it was trained on
    assert run_cli(evaluate.main, [*weights, "--split", "all"]) == 2
    assert "would score images the model was trained on" in capsys.readouterr().err


def test_predict_main_on_an_image_and_a_video(trained, workdir):
    out, _ = trained
    images = load_splits("pedestrians").val
    image_path = images.image_path(images.records[0])
    result = predict.main(
        ["--weights", str(out / "last.pt"), "--source", str(image_path), "--device", "cpu"]
        + ["--output-dir", str(workdir / "pred"), "--score-threshold", "0.0"]
    )
    assert result["images"] == 1 and result["detections"] > 0
    assert (workdir / "pred" / f"{image_path.stem}.png").is_file()
    assert (workdir / "pred" / "detections.json").is_file()
    video = predict.main(
        ["--weights", str(out / "last.pt"), "--source", "synthetic", "--dry-run"]
        + ["--output-dir", str(workdir / "pred"), "--device", "cpu"]
    )
    assert video["images"] == 1 and video["outputs"][0].endswith((".mp4", ".avi"))


def test_export_onnx_matches_eager(trained, workdir, monkeypatch):
    out, _ = trained

    def keep_all_candidates(*args, **kwargs):  # a barely trained model scores most boxes < 0.05
        model, config = load_trained(*args, **kwargs)
        model.roi_heads.score_thresh = 0.0
        return model, config

    monkeypatch.setattr(export, "load_trained", keep_all_candidates)
    # traced on the first image; then compared on two others, one of them of another size
    val = load_splits("pedestrians").val
    source = workdir / "onnx-images"
    source.mkdir()
    for index, record in enumerate(val.records[:3]):
        image = read_image(val.image_path(record))
        write_image(source / f"{index}.png", image[:200] if index == 2 else image)
    argv = ["--weights", str(out / "last.pt"), "--output-dir", str(workdir / "onnx")]
    result = export.main([*argv, "--source", str(source), "--num-images", "3", "--repeats", "1"])
    assert result["images"] == 3 and result["detections_eager"] > 3
    assert result["matched"] == result["detections_eager"] == result["detections_onnx"]
    assert result["max_box_err"] < 1e-2  # pixels
    assert result["max_score_err"] < 1e-4
    assert result["max_mask_err"] < 1e-3
    assert result["eager_ms"] > 0 and result["ort_ms"] > 0


def test_mask_loss_weight_scales_only_the_mask_loss(workdir):
    torch.manual_seed(0)
    model = build_model("maskrcnn_slim", num_classes=2, weights="none", image_size=(128, 192))
    splits = load_splits("pedestrians", None, val_fraction=0.5, seed=0, num_images=4)
    batch = detection_collate([torch_datasets(splits, seed=0)[0][i] for i in range(2)])
    model.train()
    losses = {}
    for weight in (1.0, 3.0):
        torch.manual_seed(1)  # the same RoI sampling both times
        losses[weight] = train.weighted_step(weight)(model, batch, torch.device("cpu"))
    for name, value in losses[1.0].items():
        factor = 3.0 if name == "loss_mask" else 1.0
        torch.testing.assert_close(losses[3.0][name], value * factor)


def test_copy_paste_draws_people_from_the_training_split_only(workdir):
    splits = load_splits("pedestrians")
    plain, _ = torch_datasets(splits, hflip=False)
    pasted, val = torch_datasets(splits, hflip=False, copy_paste=1.0)
    copy_paste = pasted.transforms.transforms[0]
    assert copy_paste.source.args == (splits.train,) and copy_paste.depth == "box_bottom"
    assert val.transforms is None
    counts = [(len(plain[i][1]["boxes"]), len(pasted[i][1]["boxes"])) for i in range(len(plain))]
    assert all(after >= before for before, after in counts)
    assert sum(after - before for before, after in counts) >= len(counts) // 2, counts
    image, target = pasted[0]
    assert target["masks"].shape[1:] == image.shape[1:] and target["masks"].sum(0).max() <= 1


@pytest.mark.parametrize(
    ("script", "argv", "expected"),
    [
        (train, ["--data-path", "no/such/folder"], "--data-path: no such file or folder"),
        (train, ["--weights", "coco", "--dry-run"], "maskrcnn_slim has no COCO weights"),
        (train, ["--slim", "fpn_chanels=3", "--dry-run"], "unknown slim model options"),
        (train, ["--slim", "fpn_channels=abc", "--dry-run"], "fpn_channels='abc' is not like"),
        (train, ["--slim", "box_positive_fraction=2"], "box_positive_fraction must be in (0, 1]"),
        (train, ["--epochs", "0"], "--epochs must be a positive integer"),
        (train, ["--mask-loss-weight", "0"], "--mask-loss-weight must be > 0"),
        (train, ["--copy-paste", "1.5"], "--copy-paste must be in [0, 1]"),
        (predict, ["--source", "x.png", "--weights", "no/such.pt"], "checkpoint not found"),
        (export, ["--weights", "no/such.pt"], "checkpoint not found"),
        (evaluate, ["--weights", "no/such.pt"], "checkpoint not found"),
    ],
)
def test_bad_input_exits_2_with_one_line(workdir, capsys, script, argv, expected):
    assert run_cli(script.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err


def test_tour_quick_path_in_smoke_mode(workdir, tmp_path):
    tour = load_script(FOLDER, "tour")
    assert tour_cmd.TOUR["01_mask_r_cnn"] == "01_mask_r_cnn_fine_tuning/tour.py:run"
    result = tour.run(tmp_path)
    assert set(result) >= {"bbox_AP50", "segm_AP50", "bbox_AP", "train_s", "pictures"}
    assert 0.0 <= result["bbox_AP50"] <= 1.0 and result["train_s"] > 0
    assert all(Path(picture).is_file() for picture in result["pictures"])


# --- fixed predictions derived from the ground truth: known, non-zero AP ---


def perturbed_outputs(items, *, seed=0, keep=0.8, jitter=4, false_positives=2):
    """Detections in torchvision's output format made from ``(image, target)`` items: each object
    kept with probability ``keep``, its box moved by up to ``jitter`` px per side, its mask rolled by
    as much, a score in [0.3, 1); plus ``false_positives`` random boxes with rectangle masks per
    image, scored in [0, 0.6): the rankings interleave, as a real model's do."""
    rng = np.random.default_rng(seed)
    outputs, image_ids = [], []
    for image, target in items:
        height, width = image.shape[1:]
        boxes, masks, labels, scores = [], [], [], []
        for box, mask, label in zip(target["boxes"], target["masks"], target["labels"]):
            if rng.random() > keep:
                continue
            shift = rng.integers(-jitter, jitter + 1, 4)
            boxes.append(box.numpy() + shift)
            rolled = np.roll(mask.numpy(), tuple(shift[:2]), axis=(1, 0)).astype(np.float32)
            # soft, as a model's: 0.7 on the object, + 0.3 on a copy 3 px lower (dropped at 0.5)
            masks.append(0.7 * rolled + 0.3 * np.roll(rolled, 3, axis=0))
            labels.append(int(label))
            scores.append(rng.uniform(0.3, 1.0))
        for _ in range(false_positives):
            x, y = rng.integers(0, width - 20), rng.integers(0, height - 20)
            w, h = rng.integers(5, 20, 2)
            boxes.append(np.array([x, y, x + w, y + h]))
            rectangle = np.zeros((height, width), np.uint8)
            rectangle[y : y + h, x : x + w] = 1
            masks.append(rectangle)
            labels.append(1)
            scores.append(rng.uniform(0.0, 0.6))
        outputs.append(
            {
                "boxes": torch.tensor(np.array(boxes), dtype=torch.float32),
                "labels": torch.tensor(labels, dtype=torch.int64),
                "scores": torch.tensor(scores, dtype=torch.float32),
                "masks": torch.tensor(np.array(masks), dtype=torch.float32)[:, None],
            }
        )
        image_ids.append(int(target["image_id"]))
    return outputs, image_ids


def test_evaluator_equals_pycocotools_on_saved_fixed_predictions(workdir, tmp_path):
    """Perturbed ground truth as predictions (AP well above 0), written to a COCO results file:
    pycocotools, reading that file, and our evaluator give the same 12 numbers, box and mask."""
    splits = load_splits("pedestrians")
    dataset = splits.train
    items = list(torch_datasets(splits, hflip=False)[0])
    outputs, image_ids = perturbed_outputs(items)
    results = predictions_to_coco(outputs, image_ids, label_to_category(dataset))
    saved = tmp_path / "predictions.json"
    saved.write_text(json.dumps(results))
    # each result: its detection's box as [x, y, w, h], its mask thresholded at 0.5
    first = outputs[0]
    for index, result in enumerate(results[: len(first["boxes"])]):
        x1, y1, x2, y2 = first["boxes"][index].tolist()
        np.testing.assert_allclose(result["bbox"], [x1, y1, x2 - x1, y2 - y1], rtol=1e-6)
        decoded = mask_utils.decode(
            {**result["segmentation"], "counts": result["segmentation"]["counts"].encode()}
        )
        np.testing.assert_array_equal(decoded, first["masks"][index, 0].numpy() > 0.5)
    gt = coco.to_dict(dataset)
    ours = evaluate_outputs(outputs, image_ids, dataset, stat_names=STAT_NAMES)
    for iou_type in ("bbox", "segm"):
        with contextlib.redirect_stdout(io.StringIO()):
            reference = COCO()
            reference.dataset = gt
            reference.createIndex()
            evaluator = COCOeval(reference, reference.loadRes(str(saved)), iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        np.testing.assert_allclose(
            [ours[f"{iou_type}_{name}"] for name in STAT_NAMES], evaluator.stats, atol=1e-9
        )
        # jitter of a few px at this size: most objects match at IoU 0.5, few at 0.95
        assert 0.5 < ours[f"{iou_type}_AP50"] < 1.0 and 0.2 < ours[f"{iou_type}_AP"] < 0.8, ours


def expected_ap(kept: int, total: int) -> float:
    """COCO AP when ``kept`` of ``total`` objects are found exactly, above every false positive:
    precision 1 up to recall kept / total, 0 beyond, read at the 101 recall points 0, 0.01 .. 1."""
    return float(np.mean(np.linspace(0, 1, 101) <= kept / total + 1e-12))


class OracleModel(torch.nn.Module):
    """Looks each image up among known items and returns every other object of its target exactly
    (box, mask), scored above one false positive: a model whose AP is known in advance."""

    def __init__(self, items):
        super().__init__()
        self.items = items
        self.roi_heads = torch.nn.Module()
        self.roi_heads.mask_predictor = torch.nn.Identity()  # has_masks(model) -> True
        self.kept = 0

    def forward(self, images):
        outputs = []
        for image in images:
            [target] = [t for im, t in self.items if torch.equal(im, image)]
            keep = torch.arange(0, len(target["boxes"]), 2)
            self.kept += len(keep)
            false_box = torch.tensor([[0.0, 0.0, 6.0, 6.0]])
            false_mask = torch.zeros((1, 1, *image.shape[1:]))
            false_mask[..., :6, :6] = 1.0
            outputs.append(
                {
                    "boxes": torch.cat([target["boxes"][keep], false_box]),
                    "labels": torch.cat([target["labels"][keep], torch.tensor([1])]),
                    "scores": torch.cat([0.9 - 0.01 * keep.float(), torch.tensor([0.05])]),
                    "masks": torch.cat([target["masks"][keep, None].float(), false_mask]),
                }
            )
        return outputs


def test_evaluate_main_scores_known_predictions_exactly(trained, workdir, monkeypatch):
    out, _ = trained
    argv = ["--weights", str(out / "last.pt"), "--output-dir", str(workdir / "oracle")]
    _, config = load_trained(out / "last.pt")
    dataset = evaluate.evaluation_data(evaluate.get_args_parser().parse_args(argv), config)
    items = list(torch_datasets(DataSplits(dataset, dataset, "oracle"))[1])
    oracle = OracleModel(items)
    monkeypatch.setattr(evaluate, "load_trained", lambda *args, **kwargs: (oracle, config))
    result = evaluate.main(argv)
    total = sum(len(target["boxes"]) for _, target in items)
    assert 0 < oracle.kept < total
    expected = expected_ap(oracle.kept, total)
    assert expected > 0.3
    for name in ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50"):
        assert result["metrics"][name] == pytest.approx(expected, abs=1e-12), name
    saved = json.loads((workdir / "oracle" / "eval.json").read_text())
    assert saved["metrics"] == result["metrics"]
    people = result["people"]
    assert sum(group["objects"] for group in people.values()) == total
    assert sum(group["found"] for group in people.values()) == oracle.kept
