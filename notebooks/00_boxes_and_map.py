# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Boxes, IoU, NMS and mAP from scratch
#
# Every detection lesson in this repository leans on four small ideas: how a box is written down,
# how much two boxes overlap (IoU), how a detector's pile of overlapping guesses is thinned out
# (non-maximum suppression) and how a list of scored detections becomes one number (COCO mAP).
# This notebook builds each one by hand, then proves it equal to the reference library
# (`torchvision.ops`, `pycocotools`), then switches to the repository's tested copy
# (`detseg.boxes`, `detseg.metrics`) that the other lessons use.
#
# - **Framework**: NumPy for the hand-written versions, PyTorch / torchvision and pycocotools as
#   references.
# - **Dataset**: a handful of hand-made boxes and a small random COCO-style case built in the
#   notebook; nothing is downloaded.
# - **Run time**: under a minute on a CPU, kernel start and imports included; no GPU needed.
#
# This is the first lesson of the repository. Next: [01, Mask R-CNN explained](
# ../01_mask_r_cnn_fine_tuning/maskrcnn_lesson.ipynb), which uses IoU, NMS and AP from here.

# %% [markdown]
# ## Setup
#
# Seeded random generators, so the numbers below are the same on every run. Pictures go to
# `runs/00_boxes_and_map/`.

# %%
import contextlib
import io
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torchvision
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detseg import settings
from detseg.viz import diagrams

NOTEBOOK_START = time.perf_counter()
rng = np.random.default_rng(0)
NUM_RANDOM_BOXES = 50 if settings.smoke_mode() else 500  # smoke mode: the tests
OUT = settings.runs_root() / "00_boxes_and_map"
OUT.mkdir(parents=True, exist_ok=True)
print("torch", torch.__version__, "| torchvision", torchvision.__version__)

# %% [markdown]
# ## 1. Three ways to write a box
#
# Inside this repository a box is `xyxy` in pixels: left, top, right, bottom (torchvision's
# convention). Files use other ones: COCO JSON stores `xywh` (top-left corner, width, height)
# and YOLO labels store `cxcywh` (centre, width, height), usually divided by the image size.
# Converting is plain arithmetic; the only trap is mixing formats up.


# %%
def xyxy_to_xywh(boxes):
    x1, y1, x2, y2 = boxes.T
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)


def xyxy_to_cxcywh(boxes):
    x1, y1, x2, y2 = boxes.T
    return np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)


box = np.array([[10.0, 20.0, 50.0, 80.0]])  # [1, 4] xyxy
print("xyxy  ", box[0])
print("xywh  ", xyxy_to_xywh(box)[0])  # COCO: 40 wide, 60 high
print("cxcywh", xyxy_to_cxcywh(box)[0])  # YOLO, before dividing by the image size

# %% [markdown]
# Check against torchvision's converter on random boxes.


# %%
def random_boxes(generator, n, size=200.0, min_side=4.0):
    """n random xyxy boxes inside a size x size image, [n, 4] float64."""
    corners = generator.uniform(0, size, (n, 2))
    sides = generator.uniform(min_side, size / 3, (n, 2))
    return np.concatenate([corners, np.minimum(corners + sides, size)], axis=1)


boxes = random_boxes(rng, NUM_RANDOM_BOXES)
for fmt, mine in [("xywh", xyxy_to_xywh), ("cxcywh", xyxy_to_cxcywh)]:
    reference = torchvision.ops.box_convert(torch.from_numpy(boxes), "xyxy", fmt)
    torch.testing.assert_close(torch.from_numpy(mine(boxes)), reference)
print("conversions match torchvision.ops.box_convert")

# %% [markdown]
# ## 2. Intersection over union
#
# IoU is the area both boxes cover divided by the area either covers. The intersection of two
# boxes is itself a box: its left edge is the larger of the two left edges, its right edge the
# smaller of the two right edges; if they cross, the width is zero. A picture first (drawn by
# `detseg.viz.diagrams`): two boxes of 5 x 4 and 5 x 5 that share a 3 x 3 square.

# %%
diagrams.show(diagrams.iou_figure())

# %% [markdown]
# By hand for two 10 x 10 squares shifted by 5 in x and y: intersection 5 x 5 = 25, union
# 100 + 100 - 25 = 175, IoU = 25 / 175 = 1/7. The function computes every pair of two lists at once.


# %%
def box_area(boxes):
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1, boxes2):
    """Pairwise IoU of [N, 4] and [M, 4] xyxy boxes -> [N, M]."""
    top_left = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # [N, M, 2]
    bottom_right = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # [N, M, 2]
    width_height = np.clip(bottom_right - top_left, 0, None)  # [N, M, 2]
    intersection = width_height[..., 0] * width_height[..., 1]  # [N, M]
    union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - intersection
    return intersection / union


square = np.array([[0.0, 0.0, 10.0, 10.0]])
shifted = np.array([[5.0, 5.0, 15.0, 15.0], [20.0, 20.0, 30.0, 30.0]])
print(box_iou(square, shifted))  # [[1/7, 0]]
assert np.isclose(box_iou(square, shifted)[0, 0], 1 / 7)
assert np.isclose(box_iou(np.array([[1.0, 1, 6, 5]]), np.array([[3.0, 2, 8, 7]]))[0, 0], 9 / 36)

# %% [markdown]
# The same function on hundreds of random boxes, asserted equal to `torchvision.ops.box_iou`.

# %%
boxes_a, boxes_b = random_boxes(rng, NUM_RANDOM_BOXES), random_boxes(rng, NUM_RANDOM_BOXES // 2)
reference = torchvision.ops.box_iou(torch.from_numpy(boxes_a), torch.from_numpy(boxes_b))
torch.testing.assert_close(torch.from_numpy(box_iou(boxes_a, boxes_b)), reference)
print("IoU matches torchvision.ops.box_iou on", reference.shape, "pairs")

# %% [markdown]
# ## 3. Non-maximum suppression
#
# A detector fires many times around each object. Greedy NMS keeps the highest-scoring box,
# drops every remaining box that overlaps it by more than a threshold, and repeats with what
# is left. It returns the indices of the kept boxes, highest score first.


# %%
def nms(boxes, scores, iou_threshold):
    """Greedy NMS: indices of kept boxes, by decreasing score."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(best)
        overlaps = box_iou(boxes[best][None], boxes[rest])[0]
        order = rest[overlaps <= iou_threshold]
    return np.array(keep, dtype=np.int64)


scores = rng.uniform(0, 1, len(boxes_a))
for threshold in (0.3, 0.5, 0.7):
    mine = nms(boxes_a, scores, threshold)
    reference = torchvision.ops.nms(torch.from_numpy(boxes_a), torch.from_numpy(scores), threshold)
    torch.testing.assert_close(torch.from_numpy(mine), reference)
print("NMS matches torchvision.ops.nms at IoU thresholds 0.3, 0.5, 0.7")

# %% [markdown]
# To see it work, scatter noisy guesses around three objects and keep what NMS keeps. Green:
# the objects; grey: every guess; red: the guesses NMS keeps at IoU 0.5. Here each object keeps
# exactly one box (the cell checks it): the guesses around one object overlap each other by more
# than 0.5. Noisier guesses would leave a second box on an object whenever two of them overlap by
# 0.5 or less; a lower threshold removes such duplicates but also deletes one of two real objects
# that overlap. The threshold trades one against the other.

# %%
objects = np.array(
    [[20.0, 30.0, 90.0, 110.0], [110.0, 40.0, 180.0, 90.0], [60.0, 120.0, 150.0, 190.0]]
)
picture_rng = np.random.default_rng(1)
guesses = np.repeat(objects, 8, axis=0) + picture_rng.normal(0, 6, (24, 4))  # [24, 4]
guess_scores = picture_rng.uniform(0.3, 1.0, len(guesses))
kept = nms(guesses, guess_scores, 0.5)
best_object = box_iou(guesses[kept], objects).argmax(axis=1)  # which object each kept box covers
print("kept guesses", kept.tolist(), "-> objects", best_object.tolist())
assert sorted(best_object.tolist()) == [0, 1, 2]  # one box per object


def draw_boxes(axis, boxes, color, width):
    for x1, y1, x2, y2 in boxes:
        axis.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=color, lw=width))


figure, axes = plt.subplots(1, 2, figsize=(9, 4.5))
panels = [("all 24 guesses", guesses, "grey"), (f"after NMS: {len(kept)}", guesses[kept], "red")]
for axis, (title, shown, color) in zip(axes, panels):
    axis.set(xlim=(0, 200), ylim=(200, 0), aspect="equal", title=title)
    draw_boxes(axis, objects, "green", 3)
    draw_boxes(axis, shown, color, 1.5)
figure.tight_layout()
figure.savefig(OUT / "nms.png", dpi=80)
plt.show()

# %% [markdown]
# ## 4. Precision and recall from a ranked list
#
# Evaluation starts from the detections of one class sorted by score, each marked true positive
# (it found an object not found before) or false positive. Walking down the list, precision is
# TP / (TP + FP) so far and recall is TP / (number of objects). Take 7 objects and 8 detections
# marked `1 1 0 1 0 0 1 0`: precision runs 1, 1, 2/3, 3/4, 3/5, 1/2, 4/7, 1/2 and recall
# 1/7, 2/7, 2/7, 3/7, 3/7, 3/7, 4/7, 4/7.


# %%
def precision_recall(is_tp, num_objects):
    """Precision and recall after each detection of a score-ranked list."""
    true_positives = np.cumsum(is_tp)
    false_positives = np.cumsum(~is_tp)
    return true_positives / (true_positives + false_positives), true_positives / num_objects


ranked_is_tp = np.array([1, 1, 0, 1, 0, 0, 1, 0], dtype=bool)
precision, recall = precision_recall(ranked_is_tp, num_objects=7)
print("precision", precision.round(3))
print("recall   ", recall.round(3))

# %% [markdown]
# ## 5. Average precision, COCO style (101 points)
#
# The raw curve zig-zags, so first each precision is replaced by the best precision at this or
# any higher recall (the *envelope*: 1, 1, 3/4, 3/4, 3/5, 4/7, 4/7, 1/2). Then COCO reads the
# envelope at the 101 recall levels 0, 0.01, ..., 1: at each level, the precision of the first
# detection whose recall reaches it, or 0 if recall never gets there. AP is the mean of the 101.
#
# By hand: levels 0-0.14 (15 of them) reach 1/7 at rank 1, precision 1; levels 0.15-0.28 (14)
# reach 2/7 at rank 2, precision 1; 0.29-0.42 (14) reach 3/7 at rank 4, envelope 3/4; 0.43-0.57
# (15) reach 4/7 at rank 7, envelope 4/7; the 43 levels above 4/7 get 0. So
# AP = (15 + 14 + 14 * 3/4 + 15 * 4/7) / 101 = 0.476.

# %%
RECALL_LEVELS = np.linspace(0.0, 1.0, 101)


def average_precision(is_tp, num_objects):
    """COCO 101-point interpolated AP of a score-ranked list of TP/FP flags."""
    if len(is_tp) == 0:
        return 0.0
    precision, recall = precision_recall(is_tp, num_objects)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    first_rank = np.searchsorted(recall, RECALL_LEVELS, side="left")  # [101]
    reached = first_rank < len(recall)
    return float(np.where(reached, envelope[np.minimum(first_rank, len(recall) - 1)], 0.0).mean())


hand_ap = average_precision(ranked_is_tp, 7)
print(f"AP = {hand_ap:.5f}")
assert np.isclose(hand_ap, (15 + 14 + 14 * 3 / 4 + 15 * 4 / 7) / 101)

# %% [markdown]
# ## 6. From detections to TP / FP, and mAP on a small COCO case
#
# Where do the flags come from? In each image, for each class, detections are taken by
# decreasing score; each one claims the not-yet-claimed object it overlaps most, if that IoU
# reaches the threshold (then it is a TP; otherwise a FP, also when its object was already
# claimed: a duplicate). The flags of all images are pooled and sorted by score for
# `average_precision`. COCO's headline mAP averages that over classes and over ten IoU
# thresholds 0.50, 0.55, ..., 0.95, so a sloppy box scores less than a tight one.
#
# The test case: 8 images with 1-4 objects of two classes; the "detector" finds most objects
# with a few pixels of noise and adds some low-scored false alarms. Files hold COCO `xywh`.

# %%
CATEGORIES = [{"id": 1, "name": "triangle"}, {"id": 2, "name": "square"}]


def coco_record(image_id, category_id, box, **fields):
    """A COCO annotation or detection of an xyxy box (files hold xywh)."""
    x1, y1, x2, y2 = box.tolist()
    return {
        "image_id": image_id,
        "category_id": int(category_id),
        "bbox": [x1, y1, x2 - x1, y2 - y1],
        **fields,
    }


def make_coco_case(generator, num_images=8):
    images, annotations, detections = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": 200, "height": 200, "file_name": f"{image_id}.png"})
        objects = random_boxes(generator, generator.integers(1, 5), min_side=16)
        for box, category in zip(objects, generator.integers(1, 3, len(objects))):
            area = float(box_area(box[None])[0])
            annotations.append(
                coco_record(image_id, category, box, id=len(annotations) + 1, area=area, iscrowd=0)
            )
            if generator.uniform() < 0.85:  # found, with noisy corners
                noisy = box + generator.normal(0, 2, 4)
                detections.append(
                    coco_record(image_id, category, noisy, score=generator.uniform(0.4, 1))
                )
        for false_alarm in random_boxes(generator, generator.integers(0, 3)):
            category = generator.integers(1, 3)
            detections.append(
                coco_record(image_id, category, false_alarm, score=generator.uniform(0, 0.5))
            )
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}, detections


ground_truth, detections = make_coco_case(np.random.default_rng(2))
print(len(ground_truth["annotations"]), "objects,", len(detections), "detections")

# %% [markdown]
# The matching, the pooling over images and the mean over classes and thresholds.


# %%
def select(items, image_id, category_id):
    """xyxy boxes [K, 4] and scores [K] (1 for ground truth) of one image and one class."""
    chosen = [x for x in items if x["image_id"] == image_id and x["category_id"] == category_id]
    boxes = np.array([x["bbox"] for x in chosen], dtype=np.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
    return boxes, np.array([x.get("score", 1.0) for x in chosen])


def match_image(objects, found, scores, iou_threshold):
    """TP flags of one image's detections of one class, by decreasing score."""
    order = np.argsort(-scores, kind="stable")
    ious = box_iou(found[order], objects)  # [D, G]
    claimed = np.zeros(len(objects), dtype=bool)
    is_tp = np.zeros(len(order), dtype=bool)
    for rank in range(len(order)):
        candidates = np.flatnonzero(~claimed & (ious[rank] >= iou_threshold))
        if candidates.size:
            claimed[candidates[np.argmax(ious[rank, candidates])]] = True
            is_tp[rank] = True
    return scores[order], is_tp


def ranked_flags(gt, dets, category_id, iou_threshold):
    """TP flags of one class's detections pooled over images and ranked by score, and #objects."""
    pooled = []
    for image in gt["images"]:
        objects, _ = select(gt["annotations"], image["id"], category_id)
        found, scores = select(dets, image["id"], category_id)
        pooled.append(match_image(objects, found, scores, iou_threshold))
    scores = np.concatenate([s for s, _ in pooled])
    is_tp = np.concatenate([t for _, t in pooled])[np.argsort(-scores, kind="stable")]
    num_objects = sum(1 for a in gt["annotations"] if a["category_id"] == category_id)
    return is_tp, num_objects


IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def coco_map(gt, dets, iou_thresholds=IOU_THRESHOLDS):
    """Mean AP over the classes that have objects and over the IoU thresholds."""
    aps = []
    for category in gt["categories"]:
        for threshold in iou_thresholds:
            is_tp, num_objects = ranked_flags(gt, dets, category["id"], threshold)
            if num_objects > 0:
                aps.append(average_precision(is_tp, num_objects))
    return float(np.mean(aps))


my_map, my_ap50 = coco_map(ground_truth, detections), coco_map(ground_truth, detections, [0.5])
print(f"from scratch: mAP@[.50:.95] = {my_map:.4f}, AP50 = {my_ap50:.4f}")

# %% [markdown]
# pycocotools is the reference every paper reports. Its first two numbers are the same two
# quantities, and they must agree to rounding error.


# %%
def pycocotools_stats(gt, dets):
    """COCOeval's 12 numbers (and its printed summary) for in-memory ground truth and detections."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats, printed.getvalue()


reference_stats, summary = pycocotools_stats(ground_truth, detections)
print("\n".join(line for line in summary.splitlines() if line.startswith(" Average Precision")))
np.testing.assert_allclose([my_map, my_ap50], reference_stats[:2], atol=1e-12)
print("from-scratch mAP and AP50 equal pycocotools")

# %% [markdown]
# A picture of what AP measures. Left: the hand example, raw precision (dots), its envelope
# (line) and the 101 levels read from it (crosses). Right: the envelopes of the two classes of
# the COCO case at IoU 0.50 and 0.75; AP is the area under each.


# %%
def envelope_curve(is_tp, num_objects):
    precision, recall = precision_recall(is_tp, num_objects)
    return recall, np.maximum.accumulate(precision[::-1])[::-1]


figure, axes = plt.subplots(1, 2, figsize=(10, 4))
recall_hand, envelope_hand = envelope_curve(ranked_is_tp, 7)
first_rank = np.searchsorted(recall_hand, RECALL_LEVELS, side="left")
last = len(recall_hand) - 1
sampled = np.where(first_rank <= last, envelope_hand[np.minimum(first_rank, last)], 0.0)
axes[0].plot(recall, precision, "o", label="precision after each detection")
axes[0].step(recall_hand, envelope_hand, where="post", label="envelope")
axes[0].plot(RECALL_LEVELS, sampled, "x", ms=3, label=f"101 levels, mean = AP = {hand_ap:.3f}")
axes[0].set(
    title="hand example (7 objects)", xlabel="recall", ylabel="precision", ylim=(-0.02, 1.05)
)
axes[0].legend(loc="lower left", fontsize=8)
for category in CATEGORIES:
    for threshold, style in [(0.5, "-"), (0.75, "--")]:
        is_tp, num_objects = ranked_flags(ground_truth, detections, category["id"], threshold)
        curve_recall, curve_precision = envelope_curve(is_tp, num_objects)
        label = (
            f"{category['name']} IoU {threshold}: AP {average_precision(is_tp, num_objects):.2f}"
        )
        axes[1].step(curve_recall, curve_precision, style, where="post", label=label)
axes[1].set(title="COCO case", xlabel="recall", xlim=(0, 1), ylim=(-0.02, 1.05))
axes[1].legend(loc="lower left", fontsize=8)
figure.tight_layout()
figure.savefig(OUT / "precision_recall.png", dpi=80)
plt.show()

# %% [markdown]
# ## 7. The repository's tested copies
#
# The other lessons do not paste these functions again: they import `detseg.boxes` and
# `detseg.metrics`, whose tests compare them with torchvision and pycocotools on many random
# cases (and cover what was skipped here: torch tensors, batched NMS per class, crowd regions,
# area ranges, segmentation masks). Same numbers as the hand-written versions above.

# %%
from detseg import boxes as box_ops
from detseg.metrics import evaluate_coco

np.testing.assert_allclose(box_ops.box_convert(boxes, "xyxy", "cxcywh"), xyxy_to_cxcywh(boxes))
np.testing.assert_allclose(box_ops.box_iou(boxes_a, boxes_b), box_iou(boxes_a, boxes_b), rtol=1e-12)
for threshold in (0.3, 0.5, 0.7):
    np.testing.assert_array_equal(
        box_ops.nms(boxes_a, scores, threshold), nms(boxes_a, scores, threshold)
    )
print("detseg.boxes: box_convert, box_iou and nms equal the hand-written versions")

result = evaluate_coco(ground_truth, detections, iou_type="bbox")
print(result.summary_table())
np.testing.assert_allclose(list(result.stats.values()), reference_stats, atol=1e-9)
print("detseg.metrics.evaluate_coco: all 12 numbers equal pycocotools")

# %% [markdown]
# ## Summary
#
# - A box is four numbers in one of three orders; convert at the file boundary and keep `xyxy`
#   pixels inside.
# - IoU is intersection over union, computed for all pairs at once by broadcasting.
# - Greedy NMS keeps the best box and drops its close neighbours, repeatedly.
# - AP is the mean of the precision envelope at 101 recall levels, from detections matched
#   greedily by score; COCO mAP averages it over classes and IoU 0.50-0.95.
#
# ## Exercises
#
# 1. Give `box_iou` a box of zero width. What does it return, and what does torchvision return?
# 2. Write Soft-NMS: instead of dropping an overlapping box, multiply its score by `1 - IoU`.
#    Does AP on the COCO case go up or down?
# 3. Pascal VOC 2007 used 11 recall levels (0, 0.1, ..., 1). Compute it for the hand example and
#    compare with the 101-level AP.
# 4. Raise the detector's noise in `make_coco_case` from 2 to 6 pixels: which of AP50 and
#    mAP@[.50:.95] drops more, and why?
#
# Next: [01, Mask R-CNN explained](../01_mask_r_cnn_fine_tuning/maskrcnn_lesson.ipynb) (detection
# and instance segmentation), then the segmentation lessons of
# [05](../05_unet_segmentation/1_unet_salt.ipynb).

# %%
print(f"run time of this notebook: {time.perf_counter() - NOTEBOOK_START:.1f} s")
