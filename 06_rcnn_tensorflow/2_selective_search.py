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
# # Lesson 2: selective search two ways
#
# A sliding-window detector (lesson 1) looks at tens of thousands of windows of one shape. Selective
# search (Uijlings et al., IJCV 2013) proposes a few thousand boxes of any shape that are likely to
# hold *an* object, by grouping pixels bottom-up. This lesson builds it from scratch
# (`selective_search.py`), runs OpenCV contrib's implementation next to it, and measures both:
# proposals per image, recall of the ground-truth boxes at IoU 0.5 and 0.7 against the number of
# proposals, and CPU time.
#
# - **Framework**: numpy, scikit-image (Felzenszwalb segmentation), OpenCV contrib. No TensorFlow.
# - **Data**: the built-in `racoon` validation images (Pascal VOC layout) and four photographs that
#   ship with scikit-image, with boxes set by hand (`proposal_recall.PHOTO_BOXES`).
# - **Run time**: 44 s wall (69 s CPU) on 2 CPU cores, no GPU (40 racoon images and 4 photographs,
#   both methods, fast mode); smoke mode (`DETSEG_SMOKE=1`) uses 2 images and the one-strategy mode.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from proposal_recall import PHOTO_BOXES, compare_methods, photo_set
from selective_search import (
    MODES,
    opencv_selective_search,
    region_features,
    selective_search,
)
from skimage.segmentation import felzenszwalb, mark_boundaries

from detseg import settings
from detseg.boxes import box_iou
from detseg.viz import draw_detections

SMOKE = settings.smoke_mode()
MODE = "single" if SMOKE else "fast"
OUT = settings.runs_root() / "06_rcnn_tensorflow" / "lesson2"
print("mode:", MODE, MODES[MODE])

# %% [markdown]
# ## 1. Initial regions: Felzenszwalb's graph segmentation
#
# Pixels are nodes, neighbouring pixels are joined by edges weighted by their colour difference, and
# regions merge while the edge between them is weaker than their inner variation plus `k / size`.
# A larger `k` gives larger regions. Selective search starts from these regions.

# %%
photos = photo_set()
name, image, boxes = photos[1]  # coffee
figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for axis, k in zip(axes, (50, 300)):
    labels = felzenszwalb(image, scale=k, sigma=0.8, min_size=k)
    axis.imshow(mark_boundaries(image, labels))
    axis.set_title(f"k = {k}: {labels.max() + 1} regions")
    axis.axis("off")
plt.show()

# %% [markdown]
# ## 2. Region features and the four similarities
#
# Each region gets a colour histogram (25 bins per channel), a texture histogram (Gaussian
# derivatives in 8 orientations, 10 bins each, per channel), its size and bounding box, and its list
# of neighbours. Similarities: colour and texture histogram intersection, *size* (small regions first)
# and *fill* (regions whose union box has few holes). Merging two regions averages their histograms
# by size, so features are never recomputed from pixels.

# %%
labels = felzenszwalb(image, scale=100, sigma=0.8, min_size=100)
from selective_search import convert_colour, gaussian_derivatives

colour = convert_colour(image, "hsv")
features = region_features(labels, colour, gaussian_derivatives(colour))
print({key: value.shape for key, value in features.items()})
assert np.allclose(features["colour"].sum(axis=1), 1) and np.allclose(
    features["texture"].sum(axis=1), 1
)

# %% [markdown]
# ## 3. Both searches on one photograph
#
# Ours runs 8 hierarchies in fast mode (HSV and Lab, k = 50 and 100, two similarity sums); OpenCV's
# fast mode also uses HSV and Lab but k = 150 and 300. The green boxes are the hand-set objects, in
# red the best proposal for each.

# %%
shown = []
for method, search in (("ours", selective_search), ("opencv", opencv_selective_search)):
    began = time.process_time()
    proposals = search(image, MODE)
    seconds = time.process_time() - began
    best = box_iou(proposals, boxes).argmax(axis=0)
    print(f"{method:<7} {len(proposals):5d} proposals, {seconds:.2f} s CPU, best IoU per object:",
          np.round(box_iou(proposals, boxes).max(axis=0), 2), list(PHOTO_BOXES[name]))  # fmt: skip
    drawn = draw_detections(image, boxes, np.ones(len(boxes), int))
    shown.append(draw_detections(drawn, proposals[best], np.zeros(len(best), int)))
plt.figure(figsize=(12, 4))
plt.imshow(np.concatenate(shown, axis=1))
plt.axis("off")
plt.show()

# %% [markdown]
# ## 4. Recall against the number of proposals
#
# A detector built on proposals can only find the objects they cover. `compare_methods` runs both
# searches (2 processes, one OpenCV thread each, CPU time per image), then plots the fraction of
# ground-truth boxes that the first `n` proposals of each image cover at IoU >= 0.5 and >= 0.7.

# %%
racoon = compare_methods("racoon", ["ours", "opencv"], MODE, output_dir=OUT)
photos_result = compare_methods("photos", ["ours", "opencv"], MODE, output_dir=OUT)
for title, result in (("racoon", racoon), ("photos", photos_result)):
    image = plt.imread(result["plot"])
    plt.figure(figsize=(6.4, 4.2))
    plt.imshow(image)
    plt.axis("off")
    plt.title(title)
    plt.show()
print(
    f"time ratio ours / OpenCV: racoon {racoon['time_ratio']:.2f}, photos {photos_result['time_ratio']:.2f}"
)
for method in ("ours", "opencv"):
    curve = racoon["curves"][method][0.5]
    assert (np.diff(curve) >= 0).all()  # more proposals never lose an object
    assert 0 <= racoon[method]["recall@0.7"] <= racoon[method]["recall@0.5"] <= 1

# %% [markdown]
# ## Summary
#
# - Selective search = over-segmentation + greedy grouping of neighbours + diversity (colour spaces,
#   thresholds, similarity sums) + a randomised ranking; every region ever formed is a proposal.
# - Both implementations cover almost every raccoon at IoU 0.5 with all their proposals (numbers in
#   the folder README); the paper's smaller `k` gives ours more proposals than OpenCV's.
#
# Exercises: (1) run `quality` mode and compare recall at 100 and 1000 proposals; (2) drop the
# texture term and see which objects are lost; (3) rank proposals without the random factor.
