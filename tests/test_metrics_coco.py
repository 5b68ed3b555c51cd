"""COCO evaluation: hand-computed cases, then parity with pycocotools' COCOeval on random cases."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest

from detseg.errors import UserError
from detseg.metrics import STAT_NAMES, evaluate_coco


def _load_bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_metrics.py"
    spec = importlib.util.spec_from_file_location("bench_metrics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def _gt(annotations, num_images=1, categories=(1,)):
    images = [{"id": i + 1, "width": 200, "height": 200} for i in range(num_images)]
    anns = []
    for index, ann in enumerate(annotations):
        box = ann["bbox"]
        anns.append(
            {
                "id": index + 1,
                "image_id": 1,
                "category_id": 1,
                "area": box[2] * box[3],
                "iscrowd": 0,
                **ann,
            }
        )
    return {"images": images, "annotations": anns, "categories": [{"id": c} for c in categories]}


def _det(bbox, score, image_id=1, category_id=1):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


# --- hand-computed cases --------------------------------------------------------------------------


def test_one_perfect_detection_gives_ap_one():
    gt = _gt([{"bbox": [10, 10, 50, 50]}])  # area 2500: medium
    result = evaluate_coco(gt, [_det([10, 10, 50, 50], 0.9)])
    expected = {"AP": 1, "AP50": 1, "AP75": 1, "APs": -1, "APm": 1, "APl": -1}
    expected.update({"AR1": 1, "AR10": 1, "AR100": 1, "ARs": -1, "ARm": 1, "ARl": -1})
    assert result.stats == pytest.approx(expected)
    assert list(result.stats) == list(STAT_NAMES)
    assert result.per_class_ap[1] == pytest.approx({"AP": 1.0, "AP50": 1.0})


def test_detection_at_iou_062_counts_for_three_of_ten_thresholds():
    gt = _gt([{"bbox": [0, 0, 10, 10]}])
    result = evaluate_coco(gt, [_det([0, 0, 10, 6.2], 0.8)])  # IoU = 62 / 100
    assert result.stats["AP50"] == pytest.approx(1.0)
    assert result.stats["AP75"] == 0.0
    assert result.stats["AP"] == pytest.approx(0.3)  # matched at 0.50, 0.55, 0.60
    assert result.recall[:, 0, 0, 2].tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]


def test_false_positive_between_two_hits_gives_interpolated_precision():
    gt = _gt([{"bbox": [0, 0, 20, 20]}, {"bbox": [100, 100, 20, 20]}])
    dets = [
        _det([0, 0, 20, 20], 0.9),  # TP: recall 0.5, precision 1
        _det([50, 50, 20, 20], 0.8),  # FP
        _det([100, 100, 20, 20], 0.7),  # TP: recall 1, precision 2/3
    ]
    result = evaluate_coco(gt, dets)
    # 101 recall points: 0.00..0.50 (51 points) at precision 1, 0.51..1.00 (50) at 2/3.
    assert result.stats["AP50"] == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)
    recall, precision = result.pr_curve(1, iou_threshold=0.5)
    assert recall[50] == pytest.approx(0.5) and precision[50] == pytest.approx(1.0)
    assert precision[51] == pytest.approx(2 / 3) and precision[100] == pytest.approx(2 / 3)
    # one detection per image finds one of two objects
    assert result.stats["AR1"] == pytest.approx(0.5)
    assert result.stats["AR10"] == pytest.approx(1.0)


def test_detection_inside_crowd_region_is_ignored():
    gt = _gt([{"bbox": [0, 0, 100, 100], "iscrowd": 1}, {"bbox": [150, 150, 30, 30]}])
    dets = [_det([10, 10, 20, 20], 0.95), _det([150, 150, 30, 30], 0.9)]
    assert evaluate_coco(gt, dets).stats["AP"] == pytest.approx(1.0)
    # the same box as an ordinary object would be a miss (IoU 0.04), hence a false positive
    gt["annotations"][0]["iscrowd"] = 0
    assert evaluate_coco(gt, dets).stats["AP"] < 0.7


def test_size_class_comes_from_area_field_not_box():
    gt = _gt([{"bbox": [10, 10, 50, 50], "area": 500}])  # box is medium, 'area' says small
    result = evaluate_coco(gt, [_det([10, 10, 50, 50], 0.9)])
    assert result.stats["APs"] == pytest.approx(1.0)
    assert result.stats["APm"] == -1 and result.stats["APl"] == -1


def test_no_detections_and_detections_on_empty_images():
    gt = _gt([{"bbox": [10, 10, 50, 50]}], num_images=2)
    assert evaluate_coco(gt, []).stats["AP"] == 0.0
    result = evaluate_coco(
        gt, [_det([10, 10, 50, 50], 0.9), _det([1, 1, 50, 50], 0.95, image_id=2)]
    )
    # the false positive (0.95) comes first: precision 1/2 at recall 1, interpolated everywhere
    assert result.stats["AP50"] == pytest.approx(0.5)


def test_category_without_objects_is_minus_one_and_left_out_of_the_mean():
    gt = _gt([{"bbox": [10, 10, 50, 50]}], categories=(1, 2))
    result = evaluate_coco(gt, [_det([10, 10, 50, 50], 0.9), _det([10, 10, 50, 50], 0.9, 1, 2)])
    assert result.per_class_ap[2] == {"AP": -1.0, "AP50": -1.0}
    assert result.stats["AP"] == pytest.approx(1.0)
    assert np.all(result.precision[:, :, 1] == -1)


def test_summary_and_json_match_pycocotools_printout():
    gt, dets = bench.random_coco_case(3, num_images=8)
    result = evaluate_coco(gt, dets)
    reference_lines = _pycocotools_printout(gt, dets)
    assert result.summary_table().splitlines() == reference_lines
    payload = json.loads(json.dumps(result.to_json()))
    assert list(payload["stats"]) == list(STAT_NAMES)
    assert set(payload["per_class"]) == {str(c["id"]) for c in gt["categories"]}


def _pycocotools_printout(gt, dets):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        evaluator.summarize()
    return out.getvalue().splitlines()


# --- parity with pycocotools ----------------------------------------------------------------------


def _assert_same_as_pycocotools(gt, dets, iou_type):
    ours = evaluate_coco(gt, dets, iou_type)
    reference = bench.pycocotools_stats(gt, dets, iou_type)
    stats = np.array([ours.stats[name] for name in STAT_NAMES])
    np.testing.assert_allclose(stats, reference["stats"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.precision, reference["precision"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.recall, reference["recall"], rtol=0, atol=1e-9)
    return stats


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", range(20))
def test_random_cases_match_pycocotools(seed, iou_type):
    rng = np.random.default_rng(1000 + seed)
    gt, dets = bench.random_coco_case(
        seed,
        num_images=int(rng.integers(1, 25)),
        num_categories=int(rng.integers(1, 9)),
        dets_per_image=int(rng.integers(1, 40)),
        masks=iou_type == "segm",
        max_objects=int(rng.integers(1, 30)),
        crowd_fraction=float(rng.uniform(0, 0.3)),
    )
    assert dets, "the generator should give detections for these seeds"
    _assert_same_as_pycocotools(gt, dets, iou_type)


def test_random_case_exercises_the_hard_parts():
    """The generator really produces what the parity tests claim to cover."""
    gt, dets = bench.random_coco_case(8, num_images=40, crowded_image_fraction=0.1)
    anns = gt["annotations"]
    assert any(a["iscrowd"] for a in anns)
    image_ids = {im["id"] for im in gt["images"]}
    assert image_ids - {a["image_id"] for a in anns}, "some images without objects"
    assert image_ids - {d["image_id"] for d in dets}, "some images without detections"
    assert max(np.unique([d["image_id"] for d in dets], return_counts=True)[1]) > 100
    scores = [d["score"] for d in dets]
    assert len(set(scores)) < len(scores), "tied scores"
    # pycocotools overwrites an 'ignore' field with iscrowd; so do we
    for ann in anns[::5]:
        ann["ignore"] = 1
    stats = _assert_same_as_pycocotools(gt, dets, "bbox")
    assert (stats > 0).sum() >= 8


def test_annotation_id_zero_quirk_matches_pycocotools():
    gt, dets = bench.random_coco_case(11, num_images=6)
    gt["annotations"][0]["id"] = 0
    _assert_same_as_pycocotools(gt, dets, "bbox")
    # Two identical objects: the detection takes the later one (IoU ties go to the last object),
    # whose id is 0, so pycocotools counts it as a false positive.
    gt = _gt([{"bbox": [10, 10, 20, 20]}, {"bbox": [10, 10, 20, 20]}])
    gt["annotations"][0]["id"], gt["annotations"][1]["id"] = 5, 0
    stats = _assert_same_as_pycocotools(gt, [_det([10, 10, 20, 20], 0.9)], "bbox")
    assert stats[1] == 0.0  # AP50


def test_segm_results_with_boxes_use_box_area_like_load_res():
    gt, dets = bench.random_coco_case(5, num_images=6, masks=True)
    with_boxes = _assert_same_as_pycocotools(gt, dets, "segm")
    without = [{k: v for k, v in d.items() if k != "bbox"} for d in dets]
    _assert_same_as_pycocotools(gt, without, "segm")
    # bbox evaluation of mask-only results takes the boxes from the masks
    _assert_same_as_pycocotools(gt, without, "bbox")
    assert with_boxes.shape == (12,)


def test_custom_thresholds_areas_and_max_dets_match_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, dets = bench.random_coco_case(4, num_images=12)
    thresholds = [0.3, 0.5, 0.7]
    areas = {"all": (0, 1e10), "small": (0, 400), "medium": (400, 5000), "large": (5000, 1e10)}
    ours = evaluate_coco(
        gt, dets, iou_thresholds=thresholds, area_ranges=areas, max_dets=(2, 5, 20)
    )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        evaluator.params.iouThrs = np.array(thresholds)
        evaluator.params.areaRng = [list(r) for r in areas.values()]
        evaluator.params.maxDets = [2, 5, 20]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    np.testing.assert_allclose(ours.precision, evaluator.eval["precision"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.recall, evaluator.eval["recall"], rtol=0, atol=1e-9)
    stats = np.array(list(ours.stats.values()))
    np.testing.assert_allclose(stats[1:], evaluator.stats[1:], rtol=0, atol=1e-9)
    # pycocotools reads the first line at a hard-coded maxDets=100 (-1 here); we use max_dets[2]
    assert evaluator.stats[0] == -1
    assert ours.stats["AP"] == pytest.approx(
        np.mean(ours.precision[:, :, :, 0, 2][ours.precision[:, :, :, 0, 2] > -1])
    )


# --- bad input ------------------------------------------------------------------------------------


def _write(tmp_path, name, payload):
    path = tmp_path / name
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


@pytest.mark.parametrize(
    ("gt_payload", "dets_payload", "bad_file", "message"),
    [
        ("{not json", [], "gt.json", "not valid JSON"),
        ({"images": [], "categories": []}, [], "gt.json", "missing key 'annotations'"),
        (None, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}], "dt.json", "no 'score'"),
        (None, [_det([0, 0, 1], 0.5)], "dt.json", "'bbox' is not 4 numbers"),
        (None, [_det([0, 0, 1, 1], 0.5, image_id=99)], "dt.json", "unknown image_id 99"),
        (None, [_det([0, 0, 1, 1], 0.5, category_id=7)], "dt.json", "unknown category_id 7"),
        (None, {"image_id": 1}, "dt.json", "expected a JSON list"),
    ],
)
def test_bad_files_raise_user_error_naming_file_and_problem(
    tmp_path, gt_payload, dets_payload, bad_file, message
):
    gt_path = _write(tmp_path, "gt.json", gt_payload or _gt([{"bbox": [0, 0, 5, 5]}]))
    dt_path = _write(tmp_path, "dt.json", dets_payload)
    with pytest.raises(UserError) as info:
        evaluate_coco(gt_path, dt_path)
    assert bad_file in info.value.message()
    assert message in info.value.message()


def test_missing_file_and_duplicate_ids(tmp_path):
    with pytest.raises(UserError, match="nowhere.json: file not found"):
        evaluate_coco(tmp_path / "nowhere.json", [])
    gt = _gt([{"bbox": [0, 0, 5, 5]}, {"bbox": [0, 0, 6, 6]}])
    gt["annotations"][1]["id"] = 1
    with pytest.raises(UserError, match="annotation 1 repeats id 1"):
        evaluate_coco(gt, [])


def test_box_iou_xywh_equals_pycocotools_on_sub_pixel_boxes():
    """Normalised-size boxes (sides < 1): every overlap is under a pixel high or wide."""
    from pycocotools import mask as mask_utils

    from detseg.metrics.coco_match import box_iou_xywh

    rng = np.random.default_rng(5)
    dt = np.concatenate([rng.uniform(0, 1, (30, 2)), rng.uniform(0.05, 0.6, (30, 2))], axis=1)
    gt = np.concatenate([rng.uniform(0, 1, (20, 2)), rng.uniform(0.05, 0.6, (20, 2))], axis=1)
    crowd = rng.random(20) < 0.3
    ours = box_iou_xywh(dt, gt, crowd)
    reference = mask_utils.iou(dt.tolist(), gt.tolist(), crowd.astype(np.uint8).tolist())
    assert (ours > 0).sum() > 50  # many overlaps, all of them sub-pixel
    np.testing.assert_array_equal(ours, reference)


def test_ap_counts_up_to_100_detections_per_image():
    """20 objects found exactly in one image: AP 1 at maxDets 100; recall 1 / 20 and 10 / 20 at
    maxDets 1 and 10."""
    boxes = [[10 * (i % 5) * 4, 40 * (i // 5), 30, 30] for i in range(20)]
    gt = _gt([{"bbox": box} for box in boxes])
    result = evaluate_coco(gt, [_det(box, 1 - i / 100) for i, box in enumerate(boxes)])
    assert result.stats["AP"] == pytest.approx(1.0) and result.stats["AP50"] == pytest.approx(1.0)
    assert result.stats["AR1"] == pytest.approx(0.05) and result.stats["AR10"] == pytest.approx(0.5)
    assert result.stats["AR100"] == pytest.approx(1.0)
    assert result.per_class_ap[1] == pytest.approx({"AP": 1.0, "AP50": 1.0})  # at maxDets 100


def test_objects_tied_for_a_detection_are_tried_in_file_order_within_each_class():
    """A detection overlapping two objects equally takes the later one in the file (pycocotools'
    rule), so a second detection can still take the first. 20 such pairs, with an object of another
    class between the two of each pair: sorting the objects by class must keep the file order."""
    objects, dets = [], []
    for pair in range(20):
        x, y = 40 * (pair % 5), 40 * (pair // 5)
        objects += [
            {"bbox": [x, y, 10, 10]},  # first of the pair
            {"bbox": [x, y + 20, 10, 10], "category_id": 2},
            {"bbox": [x + 4, y, 10, 10]},  # second: IoU 2/3 with the first detection, as the first
        ]
        dets.append(_det([x + 2, y, 10, 10], 0.9 - pair / 100))  # IoU 2/3 with both
        dets.append(_det([x - 2, y, 10, 10], 0.5 - pair / 100))  # 2/3 with the first, 1/4 the other
    gt = _gt(objects, categories=(1, 2))
    stats = _assert_same_as_pycocotools(gt, dets, "bbox")
    result = evaluate_coco(gt, dets)
    # each first detection takes the second object, each second detection the first: 40 hits
    assert result.per_class_ap[1]["AP50"] == pytest.approx(1.0)
    assert stats[1] == pytest.approx(0.5)  # AP50: mean of 1 and class 2's 0 (no detections)
    # the other order in the file: the first detection takes the first object, the second misses
    swapped = copy.deepcopy(gt)
    for pair in range(20):
        first, second = swapped["annotations"][3 * pair], swapped["annotations"][3 * pair + 2]
        first["bbox"], second["bbox"] = second["bbox"], first["bbox"]
    swapped_stats = _assert_same_as_pycocotools(swapped, dets, "bbox")
    assert swapped_stats[1] < 0.6


def test_segm_evaluation_of_box_only_results_uses_box_rectangles_like_load_res():
    gt, dets = bench.random_coco_case(5, num_images=6, masks=True)
    boxes_only = [{k: v for k, v in d.items() if k != "segmentation"} for d in dets]
    assert all("bbox" in d for d in boxes_only)
    stats = _assert_same_as_pycocotools(gt, boxes_only, "segm")
    assert 0.05 < stats[1] < 0.95  # AP50: rectangles against masks, neither none nor all


def test_to_json_names_every_field():
    gt = _gt([{"bbox": [10, 10, 50, 50]}])
    payload = json.loads(json.dumps(evaluate_coco(gt, [_det([10, 10, 50, 50], 0.9)]).to_json()))
    assert payload["iou_type"] == "bbox"
    assert payload["per_class"] == {"1": pytest.approx({"AP": 1.0, "AP50": 1.0})}
    assert payload["iou_thresholds"] == pytest.approx(np.linspace(0.5, 0.95, 10).tolist())
    assert payload["max_dets"] == [1, 10, 100]
    assert payload["area_ranges"]["small"] == [0.0, 32.0**2]
    seg = _gt([{"bbox": [10, 10, 50, 50], "segmentation": [[10, 10, 60, 10, 60, 60, 10, 60]]}])
    assert evaluate_coco(seg, [_det([10, 10, 50, 50], 0.9)], "segm").to_json()["iou_type"] == "segm"


_GT_FIX_START = "a COCO ground-truth file is a JSON object with 'images'"
_DT_FIX_START = "a COCO results file is a JSON list of objects with 'image_id'"


@pytest.mark.parametrize(
    ("gt_payload", "dets_payload", "iou_type", "bad_file", "what"),
    [
        ([{"images": []}], [], "bbox", "gt.json", "expected a JSON object, got list"),
        (None, [_det([0, 0, 1, 1], 0.5, category_id=7)], "bbox", "dt.json",
         "detection 0 has unknown category_id 7"),
        (None, [_det([0, 0, 1, 1], 0.5), {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}],
         "bbox", "dt.json", "detection 1 has no 'score'"),
        (None, [_det([0, 0, 1, 1], float("nan"))], "bbox", "dt.json",
         "detection 0 has a 'score' that is not a finite number (nan)"),
        (None, [_det([0, 0, 1, float("inf")], 0.5)], "bbox", "dt.json",
         "detection 0 'bbox' is not 4 finite numbers"),
        ({"images": [{"id": 1, "width": 9, "height": 9}], "categories": [{"id": 1}],
          "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4}]},
         [], "bbox", "gt.json", "annotation 0 has no 'id'"),
        (None, [{**_det([0, 0, 1, 1], 0.5), "segmentation": {"size": [5, 5], "counts": [25]}}],
         "segm", "dt.json",
         "detection 0 has a bad 'segmentation' (RLE 'size' is [5, 5] but the image is [200, 200])"),
    ],
)  # fmt: skip
def test_bad_input_messages_in_full(tmp_path, gt_payload, dets_payload, iou_type, bad_file, what):
    square = {"bbox": [0, 0, 5, 5], "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]}
    gt_path = _write(tmp_path, "gt.json", gt_payload or _gt([square]))
    dt_path = _write(tmp_path, "dt.json", dets_payload)
    with pytest.raises(UserError) as info:
        evaluate_coco(gt_path, dt_path, iou_type)
    assert info.value.what == what
    assert info.value.path == str(tmp_path / bad_file)
    assert info.value.fix.startswith(_GT_FIX_START if bad_file == "gt.json" else _DT_FIX_START)


def test_prepared_arrays_hold_boxes_for_bbox_and_masks_for_segm():
    from detseg.metrics.coco_io import prepare_arrays

    square = {"bbox": [0, 0, 5, 5], "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]}
    gt, dets = _gt([square]), [_det([0, 0, 5, 5], 0.5)]
    boxes_only = prepare_arrays(gt, dets, "bbox")
    assert boxes_only.gt_rles is None and boxes_only.gt_boxes.tolist() == [[0, 0, 5, 5]]
    masks_only = prepare_arrays(gt, dets, "segm")
    assert masks_only.gt_boxes is None and masks_only.gt_rles[0]["size"] == [200, 200]
