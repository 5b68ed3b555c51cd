"""Files and calls with 256 or more masks (issue 20), and the checks on RLEs in results files.

pycocotools 2.0.11 under numpy 2 fails in ``mask.area`` on a list of 256 or more RLEs (it builds an
array with the number of RLEs as a uint8). ``detseg eval --iou-type segm`` called it on every
detection of a results file at once. Here: whole files of 1,000+ masks (polygons, compressed and
uncompressed RLE) scored by ``detseg eval`` and by pycocotools' COCOeval, and each project function
that hands a list to ``pycocotools.mask`` (area, toBbox, iou, merge, frPyObjects, encode, decode),
called with 256 or more items and checked item by item.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detseg.cli import main as detseg_main
from detseg.errors import UserError
from detseg.metrics import STAT_NAMES, evaluate_coco
from detseg.metrics.coco_io import _check_compressed, prepare_arrays, rle_area

H, W = 48, 64


def _encode(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _uncompressed(mask: np.ndarray) -> dict:
    """Runs of 0s and 1s in column-major order, starting with 0s (COCO's uncompressed RLE)."""
    flat = mask.astype(np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0, *runs]
    return {"size": [H, W], "counts": runs}


def _blob(rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """A random ellipse mask and a polygon (octagon) of about the same place."""
    cy, cx = rng.uniform(6, H - 6), rng.uniform(6, W - 6)
    ry, rx = rng.uniform(3, 14), rng.uniform(3, 18)
    yy, xx = np.mgrid[:H, :W]
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    if not mask.any():
        mask[int(cy), int(cx)] = True
    angles = np.arange(8) * np.pi / 4
    polygon = np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], 1)
    polygon = np.clip(polygon, 0, [W, H])
    return mask, polygon.ravel().round(2).tolist()


def _files(tmp_path, kind: str, seed: int = 0, images: int = 60, per_image: int = 18):
    """A ground-truth file and a results file of ``images * per_image`` segm-only detections."""
    rng = np.random.default_rng(seed)
    gt = {"images": [], "annotations": [], "categories": [{"id": 1}, {"id": 2}]}
    dets = []
    for image_id in range(1, images + 1):
        gt["images"].append({"id": image_id, "height": H, "width": W})
        objects = []
        for _ in range(int(rng.integers(3, 9))):
            mask, _ = _blob(rng)
            category = int(rng.integers(1, 3))
            objects.append((mask, category))
            ys, xs = np.nonzero(mask)
            box = [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)]
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "segmentation": _encode(mask),
                    "area": int(mask.sum()),
                    "bbox": box,
                    "iscrowd": int(rng.random() < 0.05),
                }
            )
        for k in range(per_image):
            near = k < len(objects) and rng.random() < 0.8
            score = float(rng.uniform(0.4, 1.0) if near else rng.uniform(0.0, 0.7))
            if near:  # a shifted copy of an object, scored higher than the misses on average
                mask, category = objects[k]
                mask = np.roll(mask, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
                polygon = _box_polygon(mask)
            else:
                mask, octagon = _blob(rng)
                polygon = [octagon]
                category = int(rng.integers(1, 3))
            if kind == "polygon":
                segmentation = polygon
            elif kind == "rle":
                segmentation = _encode(mask)
            else:
                segmentation = _uncompressed(mask)
            dets.append(
                {
                    "image_id": image_id,
                    "category_id": category,
                    "segmentation": segmentation,
                    "score": round(score, 4),
                }
            )
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / f"dt_{kind}.json"
    gt_path.write_text(json.dumps(gt))
    dt_path.write_text(json.dumps(dets))
    return gt_path, dt_path, len(dets)


def _box_polygon(mask: np.ndarray) -> list[list[float]]:
    """The mask's bounding box as a polygon."""
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _pycocotools(gt_path, dt_path, iou_type: str) -> dict:
    """COCOeval's 12 numbers. ``COCO.loadRes`` takes only compressed RLEs (it calls ``mask.area`` on
    each segmentation), so polygons and uncompressed RLEs go through pycocotools' own ``annToRLE``
    first, as ``COCOeval`` does for ground truth."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        dets = json.loads(dt_path.read_text())
        for det in dets:
            if not isinstance(
                det["segmentation"].get("counts")
                if isinstance(det["segmentation"], dict)
                else None,
                str,
            ):
                det["segmentation"] = coco.annToRLE(det)
        result = coco.loadRes(dets)
        evaluator = COCOeval(coco, result, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(STAT_NAMES, evaluator.stats.tolist(), strict=True))


def _detseg_eval(gt_path, dt_path, iou_type: str, capsys) -> dict:
    capsys.readouterr()
    argv = ["eval", "--gt", str(gt_path), "--pred", str(dt_path), "--iou-type", iou_type, "--json"]
    with pytest.raises(SystemExit) as info:
        detseg_main(argv)
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("kind", ["polygon", "rle", "uncompressed"])
def test_segm_file_of_1000_masks_matches_pycocotools(tmp_path, capsys, kind):
    gt_path, dt_path, count = _files(tmp_path, kind)
    assert count >= 1000
    ours = _detseg_eval(gt_path, dt_path, "segm", capsys)
    reference = _pycocotools(gt_path, dt_path, "segm")
    assert 0.2 < reference["AP50"] < 0.95  # hits and misses: not a degenerate case
    assert max(abs(ours[name] - reference[name]) for name in STAT_NAMES) <= 1e-9, (ours, reference)


def test_bbox_of_1000_mask_only_results_matches_pycocotools(tmp_path, capsys):
    """Mask-only results scored by box: boxes come from ``toBbox`` of 1,000+ RLEs, as in loadRes."""
    gt_path, dt_path, _ = _files(tmp_path, "rle", seed=1)
    ours = _detseg_eval(gt_path, dt_path, "bbox", capsys)
    reference = _pycocotools(gt_path, dt_path, "bbox")
    assert 0.2 < reference["AP50"] < 0.95
    assert max(abs(ours[name] - reference[name]) for name in STAT_NAMES) <= 1e-9, (ours, reference)


def _random_rles(count: int, seed: int = 0) -> tuple[list[dict], np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.stack([_blob(rng)[0] for _ in range(count)])
    return [_encode(m) for m in masks], masks


def test_rle_area_and_tobbox_of_1000_rles_item_by_item():
    rles, masks = _random_rles(1000)
    assert rle_area(rles).tolist() == masks.sum(axis=(1, 2)).tolist()
    assert rle_area([]).shape == (0,)
    gt = {
        "images": [{"id": 1, "height": H, "width": W}],
        "annotations": [],
        "categories": [{"id": 1}],
    }
    dets = [{"image_id": 1, "category_id": 1, "segmentation": r, "score": 0.5} for r in rles]
    arrays = prepare_arrays(gt, dets, "bbox")  # no 'bbox' in the results: toBbox of every mask
    assert arrays.dt_area.tolist() == masks.sum(axis=(1, 2)).tolist()
    for index in (0, 255, 256, 999):
        assert arrays.dt_boxes[index].tolist() == mask_utils.toBbox(rles[index]).tolist()


def test_mask_iou_of_300_detections_in_one_image_matches_pycocotools(tmp_path):
    """``pycocotools.mask.iou`` of 300 detections against the ground truth of one image."""
    rles, masks = _random_rles(320, seed=2)
    gt = {
        "images": [{"id": 1, "height": H, "width": W}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1, "segmentation": r, "area": 1.0 + i}
            for i, r in enumerate(rles[:20])
        ],
        "categories": [{"id": 1}],
    }
    for ann, mask in zip(gt["annotations"], masks, strict=False):
        ann["area"] = int(mask.sum())
        ann["iscrowd"] = 0
    dets = [
        {"image_id": 1, "category_id": 1, "segmentation": r, "score": 1 - i / 400}
        for i, r in enumerate(rles[20:])
    ]
    ours = evaluate_coco(gt, dets, "segm", max_dets=(1, 10, 300))
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "gt.json"))
        evaluator = COCOeval(coco, coco.loadRes(str(tmp_path / "dt.json")), "segm")
        evaluator.params.maxDets = [1, 10, 300]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert len(evaluator.evalImgs[0]["dtIds"]) == 300
    # pycocotools' summary reads maxDets=100 for AP (-1 here), so compare the full arrays instead
    assert ours.precision.shape == evaluator.eval["precision"].shape
    assert np.abs(ours.precision - evaluator.eval["precision"]).max() <= 1e-9
    assert np.abs(ours.recall - evaluator.eval["recall"]).max() <= 1e-9
    assert evaluator.eval["recall"][0, 0, 0, 2] > evaluator.eval["recall"][0, 0, 0, 1] > 0


def test_one_object_of_300_polygons_merges_like_their_union():
    """frPyObjects of 300 polygons and merge of the 300 RLEs, in each project converter."""
    from detseg.data.formats.maskpng import segmentation_to_mask
    from detseg.data.samples import decode_segmentation
    from detseg.metrics.coco_io import _to_rle

    rng = np.random.default_rng(3)
    polygons = [_blob(rng)[1] for _ in range(300)]
    union = np.zeros((H, W), dtype=bool)
    for polygon in polygons:
        union |= mask_utils.decode(mask_utils.frPyObjects([polygon], H, W)[0]).astype(bool)
    assert 0 < union.sum() < H * W
    assert np.array_equal(mask_utils.decode(_to_rle(polygons, H, W)).astype(bool), union)
    assert np.array_equal(segmentation_to_mask(polygons, H, W), union)
    assert np.array_equal(decode_segmentation(polygons, H, W).astype(bool), union)


def test_decode_of_300_segmentations_and_encode_of_300_masks():
    from detseg.data.recipe_writers import detection_record
    from detseg.data.samples import decode_segmentations
    from detseg.data.synthetic import Scene

    rles, masks = _random_rles(300, seed=4)
    mixed = [r if i % 3 else _uncompressed(m) for i, (r, m) in enumerate(zip(rles, masks))]
    decoded = decode_segmentations(mixed, H, W)
    assert decoded.shape == (300, H, W) and np.array_equal(decoded.astype(bool), masks)

    scene = Scene(
        image=np.zeros((H, W, 3), np.uint8),
        masks=masks,
        labels=np.zeros(300, np.int64),
        boxes=np.zeros((300, 4), np.float32),
        classes=("blob",),
    )
    record = detection_record(scene, 1, "a.png")  # encodes the 300 masks in one call
    assert len(record.segmentations) == 300
    for index in (0, 255, 256, 299):
        assert np.array_equal(
            mask_utils.decode(record.segmentations[index]).astype(bool), masks[index]
        )


# --- checks on RLEs in results files ---------------------------------------------------------------


def _runs_reference(counts: bytes) -> list[int] | None:
    """A plain loop over the characters, as pycocotools' rleFrString; None for a bad character or an
    unfinished run."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts):
                return None
            c = counts[p] - 48
            if not 0 <= c <= 63:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x -= 1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def test_compressed_counts_check_agrees_with_a_plain_decoder():
    rng = np.random.default_rng(5)
    rles, masks = _random_rles(200, seed=5)
    assert _check_compressed(rles).all()  # every real encoding passes
    cases = []
    for rle in rles:  # damaged copies: a character changed, cut short, or one added
        text = bytearray(rle["counts"].encode())
        where = int(rng.integers(len(text)))
        choice = rng.integers(3)
        if choice == 0:
            text[where] = int(rng.integers(40, 120))
        elif choice == 1:
            text = text[:where]
        else:
            text.insert(where, int(rng.integers(48, 112)))
        cases.append({"size": [H, W], "counts": bytes(text)})
    cases += rles[:50]
    got = _check_compressed(cases)
    expected = []
    for case in cases:
        counts = case["counts"]
        runs = _runs_reference(counts.encode() if isinstance(counts, str) else counts)
        expected.append(runs is not None and min(runs, default=0) >= 0 and sum(runs) == H * W)
    assert got.tolist() == expected
    assert 50 <= sum(expected) < len(cases)  # both kinds occur


@pytest.mark.parametrize(
    ("segmentation", "fragment"),
    [
        ({"size": [64], "counts": 5}, "'size' must be [height, width]"),
        ({"size": [H, W], "counts": 5}, "'counts' must be a string or a list, got int"),
        ({"size": [10, 10], "counts": "0`1"}, f"is [10, 10] but the image is [{H}, {W}]"),
        ({"size": [H, W], "counts": "0`1"}, "does not decode"),
        ({"size": [H, W], "counts": [5, -1]}, "whole numbers >= 0"),
        ({"size": [H, W], "counts": [5, 6]}, f"sum to 11, not height * width = {H * W}"),
        ({"size": [H, W]}, "not a polygon list or an RLE dict"),
    ],
)
def test_malformed_rle_names_the_file_and_detection(tmp_path, segmentation, fragment):
    gt = {
        "images": [{"id": 1, "height": H, "width": W}],
        "annotations": [],
        "categories": [{"id": 1}],
    }
    good = {"image_id": 1, "category_id": 1, "segmentation": _encode(np.ones((H, W))), "score": 1}
    path = tmp_path / "dt.json"
    path.write_text(json.dumps([good, good, {**good, "segmentation": segmentation}]))
    with pytest.raises(UserError) as info:
        evaluate_coco(gt, path, "segm")
    message = info.value.message()
    assert message.startswith(f"{path}: detection 2 has a bad 'segmentation'")
    assert fragment in message and "; " in message
