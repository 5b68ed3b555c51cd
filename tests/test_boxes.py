"""Tests of detseg.boxes: hand-computed cases first, then randomised parity with torchvision.ops
(numpy and torch inputs) and with tf.image.non_max_suppression.

The random boxes live on a small integer grid, so zero-area boxes, touching boxes, identical boxes
and equal (quantised) scores are common: the edge cases where implementations usually disagree.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detseg import boxes as B

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

KINDS = ["numpy", "torch"]
SRC = Path(B.__file__).resolve().parents[1]


def as_kind(array, kind: str):
    array = np.asarray(array)
    return torch.from_numpy(array) if kind == "torch" else array


def to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def random_boxes(rng: np.random.Generator, n: int, grid: bool, dtype=np.float32) -> np.ndarray:
    """[n, 4] xyxy boxes: integer corners 0..11 and sides 0..6, or floats (corners 0..100, sides 0..40)."""
    if grid:
        corner, size = rng.integers(0, 12, (n, 2)), rng.integers(0, 7, (n, 2))
    else:
        corner, size = rng.uniform(0, 100, (n, 2)), rng.uniform(0, 40, (n, 2))
    return np.concatenate([corner, corner + size], axis=1).astype(dtype)


def random_scores(rng: np.random.Generator, n: int, dtype=np.float32) -> np.ndarray:
    """Scores quantised to quarters, so that ties are frequent."""
    return (rng.integers(0, 5, n) / 4).astype(dtype)


THRESHOLDS = [0.0, 0.1, 0.3, 0.5, 0.7, 1.0]


@pytest.fixture(params=["default", "tiny"])
def nms_work_sizes(request, monkeypatch):
    """Run the NMS tests twice: with the real block sizes, and with tiny ones so that small inputs
    already cross many greedy blocks and many vectorised suppression steps."""
    if request.param == "tiny":
        monkeypatch.setattr(B, "_NMS_BLOCK", 3)
        monkeypatch.setattr(B, "_NMS_ROWS", 2)
    return request.param


# ---------------------------------------------------------------- hand-computed cases


@pytest.mark.parametrize("kind", KINDS)
def test_box_convert_by_hand_and_round_trip(kind):
    xyxy = as_kind([[10.0, 20.0, 30.0, 60.0]], kind)
    np.testing.assert_allclose(to_numpy(B.box_convert(xyxy, "xyxy", "xywh")), [[10, 20, 20, 40]])
    np.testing.assert_allclose(to_numpy(B.box_convert(xyxy, "xyxy", "cxcywh")), [[20, 40, 20, 40]])
    np.testing.assert_allclose(to_numpy(B.box_convert(xyxy, "xywh", "xyxy")), [[10, 20, 40, 80]])
    boxes = as_kind(random_boxes(np.random.default_rng(0), 50, grid=False, dtype=np.float64), kind)
    for fmt in ("xywh", "cxcywh"):
        back = B.box_convert(B.box_convert(boxes, "xyxy", fmt), fmt, "xyxy")
        np.testing.assert_allclose(to_numpy(back), to_numpy(boxes), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="unknown box format 'xxyy'"):
        B.box_convert(boxes, "xxyy", "xyxy")
    # the same format in and out gives a copy, never the caller's array / tensor itself
    same = B.box_convert(boxes, "xywh", "xywh")
    same[0, 0] = -1.0
    assert type(same) is type(boxes) and to_numpy(boxes)[0, 0] != -1.0


@pytest.mark.parametrize("kind", KINDS)
def test_normalize_and_denormalize(kind):
    image_size = (100, 200)  # height, width
    boxes = as_kind([[20, 10, 100, 50]], kind)  # integers become float
    normalised = B.normalize_boxes(boxes, image_size)
    np.testing.assert_allclose(to_numpy(normalised), [[0.1, 0.1, 0.5, 0.5]])
    back = B.denormalize_boxes(normalised, image_size)
    np.testing.assert_allclose(to_numpy(back), [[20, 10, 100, 50]])
    assert type(normalised) is type(back) is type(boxes)  # a tensor stays a tensor
    # format-agnostic: a cxcywh box normalises column by column too
    np.testing.assert_allclose(
        to_numpy(B.normalize_boxes(as_kind([[100.0, 50, 200, 100]], kind), image_size)),
        [[0.5, 0.5, 1, 1]],
    )


@pytest.mark.parametrize("kind", KINDS)
def test_clip_boxes(kind):
    boxes = as_kind([[-5.0, 10, 250, 120], [210, 110, 300, 130], [1, 2, 3, 4]], kind)
    clipped = to_numpy(B.clip_boxes(boxes, (100, 200)))
    np.testing.assert_array_equal(clipped, [[0, 10, 200, 100], [200, 100, 200, 100], [1, 2, 3, 4]])
    assert B.clip_boxes(boxes, (100, 200)).dtype == boxes.dtype


@pytest.mark.parametrize("kind", KINDS)
def test_box_area(kind):
    boxes = as_kind([[0.0, 0, 10, 20], [5, 5, 5, 9]], kind)
    np.testing.assert_array_equal(to_numpy(B.box_area(boxes)), [200, 0])
    np.testing.assert_array_equal(
        to_numpy(B.box_area(as_kind([[3.0, 4, 10, 20]], kind), fmt="xywh")), [200]
    )


@pytest.mark.parametrize("kind", KINDS)
def test_box_iou_by_hand(kind):
    a = [0.0, 0, 10, 10]
    others = [
        [5.0, 0, 15, 10],  # overlaps half of a: 50 / 150
        [10.0, 0, 20, 10],  # touches a: 0
        [0.0, 0, 10, 10],  # identical: 1
        [0.0, 0, 5, 10],  # inside a, half its area: 0.5
        [3.0, 3, 3, 3],  # zero-area point inside a: 0 / 100
    ]
    iou = to_numpy(B.box_iou(as_kind([a], kind), as_kind(others, kind)))
    np.testing.assert_allclose(iou, [[1 / 3, 0, 1, 0.5, 0]], rtol=1e-6)
    point = as_kind([[3.0, 3, 3, 3]], kind)
    assert math.isnan(to_numpy(B.box_iou(point, point))[0, 0])  # 0 / 0, as torchvision


@pytest.mark.parametrize("kind", KINDS)
def test_generalized_box_iou_by_hand(kind):
    a = as_kind([[0.0, 0, 10, 10]], kind)
    others = as_kind([[20.0, 0, 30, 10], [5, 0, 15, 10], [0, 0, 10, 10], [99, 99, 100, 100]], kind)
    giou = to_numpy(B.generalized_box_iou(a, others))
    # disjoint: 0 - (300 - 200) / 300; half overlap: enclosing = union; far apart: -> -1
    expected = [[-1 / 3, 1 / 3, 1, -(10000 - 101) / 10000]]
    np.testing.assert_allclose(giou, expected, rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_remove_small_boxes(kind):
    boxes = as_kind([[0.0, 0, 5, 10], [0, 0, 4.9, 10], [0, 0, 10, 10], [0, 0, 10, 3]], kind)
    keep = B.remove_small_boxes(boxes, min_size=5)
    np.testing.assert_array_equal(to_numpy(keep), [0, 2])  # sides == min_size are kept
    assert to_numpy(keep).dtype == np.int64


@pytest.mark.parametrize("kind", KINDS)
def test_nms_by_hand(kind):
    boxes = as_kind([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [5, 0, 15, 10]], kind)
    scores = as_kind([0.9, 0.8, 0.7, 0.95], kind)
    # visit 3 (keep), 0 (IoU 1/3 with 3: keep), 1 (IoU 81/119 with 0: drop), 2 (disjoint: keep)
    keep = B.nms(boxes, scores, 0.5)
    np.testing.assert_array_equal(to_numpy(keep), [3, 0, 2])
    assert to_numpy(keep).dtype == np.int64
    assert type(keep) is type(boxes)


@pytest.mark.parametrize("kind", KINDS)
def test_nms_threshold_is_strict(kind):
    boxes = as_kind([[0.0, 0, 10, 10], [0, 0, 10, 20]], kind)  # IoU exactly 0.5
    scores = as_kind([1.0, 0.5], kind)
    np.testing.assert_array_equal(to_numpy(B.nms(boxes, scores, 0.5)), [0, 1])
    np.testing.assert_array_equal(to_numpy(B.nms(boxes, scores, 0.49)), [0])


@pytest.mark.parametrize("kind", KINDS)
def test_nms_compares_float32_iou_with_the_exact_threshold(kind):
    # IoU = 3 / 10, which float32 rounds up to 0.30000001 > 0.3: torchvision suppresses in float32
    # and keeps in float64. A naive `iou > 0.3` on a float32 array would keep both.
    boxes = np.array([[0, 0, 10, 1], [0, 0, 3, 1]])
    scores = np.array([1.0, 0.5])
    for dtype, expected in ((np.float32, [0]), (np.float64, [0, 1])):
        keep = B.nms(as_kind(boxes.astype(dtype), kind), as_kind(scores.astype(dtype), kind), 0.3)
        np.testing.assert_array_equal(to_numpy(keep), expected)


@pytest.mark.parametrize("kind", KINDS)
def test_nms_ties_zero_area_and_empty(kind):
    same = as_kind([[0.0, 0, 10, 10]] * 3, kind)
    # equal scores: the lowest index is visited first and suppresses the others
    np.testing.assert_array_equal(to_numpy(B.nms(same, as_kind([0.5, 0.5, 0.5], kind), 0.5)), [0])
    apart = as_kind([[0.0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]], kind)
    np.testing.assert_array_equal(
        to_numpy(B.nms(apart, as_kind([0.5, 0.7, 0.5], kind), 0.5)), [1, 0, 2]
    )
    # two identical points: IoU nan never suppresses
    points = as_kind([[3.0, 3, 3, 3], [3, 3, 3, 3]], kind)
    np.testing.assert_array_equal(to_numpy(B.nms(points, as_kind([1.0, 0.5], kind), 0.0)), [0, 1])
    empty = B.nms(
        as_kind(np.zeros((0, 4), np.float32), kind), as_kind(np.zeros(0, np.float32), kind), 0.5
    )
    assert to_numpy(empty).shape == (0,) and to_numpy(empty).dtype == np.int64


@pytest.mark.parametrize("kind", KINDS)
def test_nms_negative_threshold_suppresses_disjoint_boxes(kind, nms_work_sizes):
    # IoU 0 > -0.5: the first box suppresses all others, even disjoint ones and points
    boxes = np.array([[0, 0, 1, 1], [3, 3, 3, 3], [3, 3, 3, 3], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    expected = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), -0.5)
    np.testing.assert_array_equal(expected.numpy(), [0])
    keep = B.nms(as_kind(boxes, kind), as_kind(scores, kind), -0.5)
    np.testing.assert_array_equal(to_numpy(keep), [0])


@pytest.mark.parametrize("kind", KINDS)
def test_batched_nms_by_hand(kind):
    boxes = as_kind([[0.0, 0, 10, 10], [0, 0, 10, 10], [1, 0, 10, 10], [50, 50, 60, 60]], kind)
    scores = as_kind([0.6, 0.9, 0.8, 0.1], kind)
    classes = as_kind([0, 1, 1, 0], kind)
    # box 2 overlaps box 1 (same class, IoU 0.9): dropped; box 0 overlaps them but is class 0: kept
    np.testing.assert_array_equal(to_numpy(B.batched_nms(boxes, scores, classes, 0.5)), [1, 0, 3])


def test_nms_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected boxes"):
        B.nms(np.zeros((3, 4)), np.zeros(2), 0.5)


def test_numpy_users_never_import_torch():
    code = (
        "import sys, numpy as np; from detseg import boxes as B;"
        "b = np.array([[0., 0, 10, 10], [1, 1, 11, 11]]);"
        "assert list(B.nms(b, np.array([1., .5]), .5)) == [0];"
        "B.box_iou(b, b); B.generalized_box_iou(b, b); B.clip_boxes(b, (5, 5));"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ---------------------------------------------------------------- parity with torchvision.ops


@pytest.mark.parametrize("kind", KINDS)
def test_pairwise_functions_match_torchvision(kind):
    ops = torchvision.ops
    for seed in range(40):
        rng = np.random.default_rng(seed)
        dtype = np.float32 if seed % 2 else np.float64
        boxes1 = random_boxes(rng, int(rng.integers(1, 30)), grid=seed % 4 < 2, dtype=dtype)
        boxes2 = random_boxes(rng, int(rng.integers(1, 30)), grid=seed % 4 < 2, dtype=dtype)
        if seed % 8 >= 6:  # normalised coordinates: sides and enclosing boxes well under 1
            boxes1, boxes2 = boxes1 / dtype(128), boxes2 / dtype(128)
        ours1, ours2 = as_kind(boxes1, kind), as_kind(boxes2, kind)
        ref1, ref2 = torch.from_numpy(boxes1), torch.from_numpy(boxes2)
        pairs = [
            (B.box_iou(ours1, ours2), ops.box_iou(ref1, ref2)),
            (B.generalized_box_iou(ours1, ours2), ops.generalized_box_iou(ref1, ref2)),
            (B.box_area(ours1), ops.box_area(ref1)),
            (B.clip_boxes(ours1, (9, 7)), ops.clip_boxes_to_image(ref1, (9, 7))),
            (B.remove_small_boxes(ours1, 2.5), ops.remove_small_boxes(ref1, 2.5)),
        ]
        for in_fmt in B.BOX_FORMATS:
            for out_fmt in B.BOX_FORMATS:
                pairs.append(
                    (B.box_convert(ours1, in_fmt, out_fmt), ops.box_convert(ref1, in_fmt, out_fmt))
                )
        for fmt in B.BOX_FORMATS:
            pairs.append((B.box_iou(ours1, ours2, fmt=fmt), ops.box_iou(ref1, ref2, fmt=fmt)))
            # torchvision's GIoU takes xyxy only: the same numbers read as fmt, converted first
            in_xyxy = [ops.box_convert(ref, fmt, "xyxy") for ref in (ref1, ref2)]
            pairs.append(
                (B.generalized_box_iou(ours1, ours2, fmt=fmt), ops.generalized_box_iou(*in_xyxy))
            )
        for ours, ref in pairs:
            assert type(ours) is type(ours1)
            torch.testing.assert_close(torch.as_tensor(to_numpy(ours)), ref, equal_nan=True)


def test_generalized_box_iou_gradient_matches_torchvision():
    rng = np.random.default_rng(0)
    boxes1 = torch.from_numpy(random_boxes(rng, 6, grid=False, dtype=np.float64) + [0, 0, 1, 1])
    boxes2 = torch.from_numpy(random_boxes(rng, 5, grid=False, dtype=np.float64) + [0, 0, 1, 1])
    grads = []
    for fn in (B.generalized_box_iou, torchvision.ops.generalized_box_iou):
        leaf = boxes1.clone().requires_grad_()
        grads.append(torch.autograd.grad(fn(leaf, boxes2).sum(), leaf)[0])
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("kind", KINDS)
def test_nms_and_batched_nms_match_torchvision(kind, nms_work_sizes):
    for seed in range(150 if nms_work_sizes == "default" else 60):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(0, 120))
        dtype = np.float32 if seed % 3 else np.float64
        # grid coordinates: exact under torchvision's coordinate-offset trick for batched NMS
        boxes = random_boxes(rng, n, grid=seed % 5 != 0, dtype=dtype)
        scores = random_scores(rng, n, dtype=dtype)
        classes = rng.integers(0, 3, n)
        threshold = THRESHOLDS[seed % len(THRESHOLDS)] if seed % 7 else float(rng.random())
        ref_boxes, ref_scores = torch.from_numpy(boxes), torch.from_numpy(scores)
        expected = torchvision.ops.nms(ref_boxes, ref_scores, threshold)
        keep = B.nms(as_kind(boxes, kind), as_kind(scores, kind), threshold)
        np.testing.assert_array_equal(to_numpy(keep), expected.numpy(), err_msg=f"seed {seed}")
        if seed % 5 == 0:
            continue  # float boxes: compare batched NMS only on the large, per-class path below
        expected = torchvision.ops.batched_nms(
            ref_boxes, ref_scores, torch.from_numpy(classes), threshold
        )
        keep = B.batched_nms(
            as_kind(boxes, kind), as_kind(scores, kind), as_kind(classes, kind), threshold
        )
        np.testing.assert_array_equal(to_numpy(keep), expected.numpy(), err_msg=f"seed {seed}")


@pytest.mark.parametrize("kind", KINDS)
def test_large_nms_matches_torchvision(kind):
    """1500 float boxes: several greedy blocks, and torchvision's per-class batched NMS path.

    That path merges the classes with an unstable sort, so among equal scores its order is
    arbitrary: there we require the same kept set, ordered as its own nms orders ties (by index).
    """
    for seed in range(3):
        rng = np.random.default_rng(seed)
        boxes = random_boxes(rng, 1500, grid=False)
        boxes[:500] = np.round(boxes[:500])  # some zero-area / touching / identical ones too
        scores = np.round(rng.random(1500), 2).astype(np.float32)
        classes = rng.integers(0, 4, 1500)
        ref = [torch.from_numpy(a) for a in (boxes, scores, classes)]
        ours = [as_kind(a, kind) for a in (boxes, scores, classes)]
        for threshold in (0.3, 0.7):
            expected = torchvision.ops.nms(ref[0], ref[1], threshold).numpy()
            np.testing.assert_array_equal(to_numpy(B.nms(ours[0], ours[1], threshold)), expected)
            kept = np.sort(torchvision.ops.batched_nms(*ref, threshold).numpy())
            expected = kept[np.argsort(-scores[kept], kind="stable")]
            np.testing.assert_array_equal(to_numpy(B.batched_nms(*ours, threshold)), expected)


# ---------------------------------------------------------------- parity with tf.image


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


@pytest.mark.tf
def test_nms_matches_tensorflow(tf):
    """tf.image.non_max_suppression also suppresses at IoU > threshold (strictly) and ranks equal
    scores by index; its boxes are [y1, x1, y2, x2] and it treats zero-area IoU as 0 (we: nan),
    which suppresses nothing either way. It compares in float32, though: see the next test."""
    for seed in range(60):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 100))
        boxes = random_boxes(rng, n, grid=seed % 3 != 0)
        scores = random_scores(rng, n)
        threshold = THRESHOLDS[seed % len(THRESHOLDS)] if seed % 7 else float(rng.random())
        threshold = float(np.float32(threshold))  # the value TF really compares with
        expected = tf.image.non_max_suppression(boxes[:, [1, 0, 3, 2]], scores, n, threshold)
        keep = B.nms(boxes, scores, threshold)
        np.testing.assert_array_equal(keep, expected.numpy(), err_msg=f"seed {seed}")


@pytest.mark.tf
def test_tensorflow_rounds_the_threshold_to_float32(tf):
    # IoU = float32(3 / 10) = 0.30000001 is > 0.3 for torchvision (and us), not for TF, which first
    # rounds the threshold 0.3 to the same float32 value. The two libraries disagree here.
    boxes = np.array([[0, 0, 10, 1], [0, 0, 3, 1]], np.float32)
    scores = np.array([1.0, 0.5], np.float32)
    tf_keep = tf.image.non_max_suppression(boxes[:, [1, 0, 3, 2]], scores, 2, 0.3).numpy()
    np.testing.assert_array_equal(tf_keep, [0, 1])
    np.testing.assert_array_equal(B.nms(boxes, scores, 0.3), [0])
    tv_keep = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.3)
    np.testing.assert_array_equal(tv_keep.numpy(), [0])


def test_plain_lists_are_accepted_as_numpy():
    iou = B.box_iou([[0, 0, 10, 10]], [[0, 0, 5, 10], [20, 20, 30, 30]])
    assert isinstance(iou, np.ndarray)
    np.testing.assert_allclose(iou, [[0.5, 0.0]])
    np.testing.assert_array_equal(B.nms([[0, 0, 10, 10], [1, 0, 10, 10]], [0.9, 0.8], 0.5), [0])


def test_nms_on_bfloat16_tensors_equals_float32():
    rng = np.random.default_rng(3)
    boxes = torch.from_numpy(random_boxes(rng, 40, grid=True))
    scores = torch.from_numpy(random_scores(rng, 40))
    expected = B.nms(boxes, scores, 0.5)
    # bfloat16 holds these small integers and quarters exactly; numpy has no bfloat16
    kept = B.nms(boxes.bfloat16(), scores.bfloat16(), 0.5)
    assert isinstance(kept, torch.Tensor) and torch.equal(kept, expected)


def test_neighbour_cells_by_hand():
    torch = pytest.importorskip("torch")
    # 4 x 4 grid. (1.2, 2.7): left (x past 1, 0.2 from its left side) and down (1.3 cells before the
    # bottom edge, 0.3 from it); (0.3, 0.4): its near neighbours would be outside; (2.7, 1.2): up, right
    centres = torch.tensor([[1.2, 2.7], [0.3, 0.4], [2.7, 1.2]])
    k, col, row = B.neighbour_cells(centres, (4, 4))
    assert k.tolist() == [0, 1, 2, 0, 2, 2, 0]  # centre cells, then left, up, right, down
    assert col.tolist() == [1, 0, 2, 0, 2, 3, 1]
    assert row.tolist() == [2, 0, 1, 2, 0, 1, 3]
    # offset 1: every neighbour that is inside the grid (5 cells here)
    k, col, row = B.neighbour_cells(centres[:1], (4, 4), offset=1.0)
    assert list(zip(col.tolist(), row.tolist())) == [(1, 2), (0, 2), (1, 1), (2, 2), (1, 3)]


def test_neighbour_cells_are_the_nearer_side_inside_the_grid():
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    height, width = 5, 7
    centres = torch.rand(400, 2, generator=generator) * torch.tensor([width, height])
    k, col, row = B.neighbour_cells(centres, (height, width))
    own = centres[k].floor().long()
    step = torch.stack([col, row], 1) - own
    assert (step.abs().sum(1) <= 1).all()  # the own cell or one step along one axis
    assert ((col >= 0) & (col < width) & (row >= 0) & (row < height)).all()
    frac = centres[k] - centres[k].floor()
    moved = step != 0
    assert (frac[moved & (step < 0)] < 0.5).all() and (frac[moved & (step > 0)] > 0.5).all()
    counts = torch.bincount(k, minlength=len(centres))
    assert counts.min() >= 1 and counts.max() <= 3  # own cell + at most one per axis


# ------------------------------------------------------------------ paired (elementwise) IoU


def test_paired_iou_and_giou_by_hand():
    a = [[0.0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 4, 4]]
    b = [[1.0, 1, 3, 3], [2, 0, 3, 1], [1, 1, 3, 3]]
    # overlap 1, union 7, enclosing 3 x 3; disjoint: union 2, enclosing 3 x 1; b inside a: 4 / 16
    np.testing.assert_allclose(B.paired_box_iou(a, b), [1 / 7, 0.0, 0.25])
    np.testing.assert_allclose(
        B.paired_generalized_box_iou(a, b), [1 / 7 - 2 / 9, 0 - 1 / 3, 0.25 - 0.0]
    )
    # cxcywh: the same first pair read as centres and sizes
    np.testing.assert_allclose(
        B.paired_box_iou([[1.0, 1, 2, 2]], [[2.0, 2, 2, 2]], "cxcywh"), [1 / 7]
    )


@pytest.mark.parametrize("kind", KINDS)
def test_paired_functions_equal_the_diagonal_of_torchvision(kind):
    ops = torchvision.ops
    for seed in range(20):
        rng = np.random.default_rng(seed)
        dtype = np.float32 if seed % 2 else np.float64
        n = int(rng.integers(1, 40))
        boxes1, boxes2 = (random_boxes(rng, n, grid=seed % 4 < 2, dtype=dtype) for _ in "ab")
        ref1, ref2 = torch.from_numpy(boxes1), torch.from_numpy(boxes2)
        for fmt in B.BOX_FORMATS:
            ours1, ours2 = as_kind(boxes1, kind), as_kind(boxes2, kind)
            in_xyxy = [ops.box_convert(ref, fmt, "xyxy") for ref in (ref1, ref2)]
            iou = B.paired_box_iou(ours1, ours2, fmt=fmt)
            giou = B.paired_generalized_box_iou(ours1, ours2, fmt=fmt)
            assert type(iou) is type(ours1) and iou.shape == (n,) and iou.dtype == ours1.dtype
            expected_iou = ops.box_iou(*in_xyxy).diagonal()
            expected_giou = ops.generalized_box_iou(*in_xyxy).diagonal()
            torch.testing.assert_close(torch.as_tensor(to_numpy(iou)), expected_iou, equal_nan=True)
            torch.testing.assert_close(
                torch.as_tensor(to_numpy(giou)), expected_giou, equal_nan=True
            )
        # broadcasting [N, 1, 4] against [M, 4] gives the whole pairwise matrix
        full = B.paired_box_iou(as_kind(boxes1, kind)[:, None], as_kind(boxes2[:5], kind))
        torch.testing.assert_close(
            torch.as_tensor(to_numpy(full)), ops.box_iou(ref1, ref2[:5]), equal_nan=True
        )


def test_paired_eps_turns_zero_area_nan_into_zero_and_keeps_the_rest():
    point = np.array([[5.0, 5, 5, 5], [0, 0, 2, 2]])
    assert np.isnan(B.paired_box_iou(point, point)[0]) and B.paired_box_iou(point, point)[1] == 1
    assert np.isnan(B.paired_generalized_box_iou(point, point)[0])
    np.testing.assert_array_equal(B.paired_box_iou(point, point, eps=1e-9), [0.0, 1.0])
    np.testing.assert_array_equal(B.paired_generalized_box_iou(point, point, eps=1e-9), [0.0, 1.0])


def test_paired_giou_loss_and_its_gradient_equal_torchvision_loss():
    rng = np.random.default_rng(3)
    boxes1 = torch.from_numpy(random_boxes(rng, 64, grid=False, dtype=np.float64)) + 0.5
    boxes2 = torch.from_numpy(random_boxes(rng, 64, grid=False, dtype=np.float64)) + 0.5
    ours = boxes1.clone().requires_grad_()
    theirs = boxes1.clone().requires_grad_()
    loss = 1 - B.paired_generalized_box_iou(ours, boxes2, eps=1e-12)
    reference = torchvision.ops.generalized_box_iou_loss(theirs, boxes2, eps=1e-12)
    torch.testing.assert_close(loss, reference)
    loss.sum().backward()
    reference.sum().backward()
    assert ours.grad.abs().sum() > 0
    torch.testing.assert_close(ours.grad, theirs.grad)
