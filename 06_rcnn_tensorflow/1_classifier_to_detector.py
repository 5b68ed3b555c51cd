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
# # Lesson 1: from an image classifier to a detector
#
# A classifier says *what* is in a picture; a detector also says *where*. The oldest bridge between
# the two: slide a window over an image pyramid, classify every window, keep the confident ones, and
# remove duplicates with non-maximum suppression. This lesson builds each piece
# (`sliding_window.py`), proves the repository's NMS equal to TensorFlow's, and measures why the
# approach is slow.
#
# - **Framework**: Keras 3 on TensorFlow (imported through `detseg.tf_import`, torchvision first).
# - **Classifier**: ResNet50 with ImageNet weights when they can be downloaded (its 1000 classes
#   have no raccoon, so it only shows the mechanics); offline, and for the detector itself, a small
#   CNN trained here on patches of the built-in `racoon` data.
# - **Run time**: 2 min 49 s wall (250 s CPU) on 2 CPU cores, no GPU; smoke mode (`DETSEG_SMOKE=1`)
#   trains one short epoch.

# %%

import matplotlib.pyplot as plt
import numpy as np
from racoon_data import load_image, load_racoon
from rcnn_detection import evaluate_detections
from rcnn_models import build_classifier, keras_module
from rcnn_training import fit_classifier
from sliding_window import detect_sliding, image_pyramid, patch_dataset, windows_of

from detseg import settings
from detseg.boxes import batched_nms
from detseg.errors import UserError
from detseg.tf_import import import_tensorflow
from detseg.viz import draw_detections

tf = import_tensorflow()
keras = keras_module()
SMOKE = settings.smoke_mode()
OUT = settings.runs_root() / "06_rcnn_tensorflow" / "lesson1"
train, val = load_racoon()
print(f"racoon: {len(train)} training and {len(val)} validation images")

# %% [markdown]
# ## 1. A pretrained classifier, if it can be downloaded
#
# Keras downloads ResNet50's ImageNet weights (about 100 MB) on first use. Offline that fails; we
# say so in one line and go on with our own small classifier.

# %%
try:
    if SMOKE:
        raise UserError("smoke mode: no download attempted", fix="run the notebook normally")
    resnet = keras.applications.ResNet50(weights="imagenet")
    print("ResNet50 with ImageNet weights loaded")
except Exception as err:  # offline: URL fetch failure
    resnet = None
    print(f"ResNet50 weights not available ({str(err)[:120]}); using the small classifier below")

# %% [markdown]
# ## 2. A small raccoon / background classifier trained on patches
#
# Patches: shifted and rescaled copies of each raccoon box (IoU >= 0.7, label 1) and random boxes
# (IoU < 0.3, label 0), warped to 64 x 64. The classifier is the folder's `small` backbone.

# %%
limit = 8 if SMOKE else None
crops, labels = patch_dataset(train, 64, per_image=24, limit=limit)
val_crops, val_labels = patch_dataset(val, 64, per_image=24, seed=1, limit=4 if SMOKE else None)
print(f"{len(crops)} training patches, {labels.mean():.0%} raccoons")
fitted = fit_classifier(
    build_classifier("small", crop_size=64),
    (crops, labels),
    (val_crops, val_labels),
    output_dir=OUT / "patch_classifier",
    epochs=1 if SMOKE else 6,
    batch_size=64,
    lr=1e-3,
    verbose=0,
)
classifier = fitted["model"]
print(fitted["history"][-1])

# %% [markdown]
# ## 3. Pyramid and sliding windows
#
# Each pyramid level is the image shrunk by `scale` again; each window is 64 x 64 at `step`-pixel
# spacing. A window at (x, y) on a level shrunk by factor f is the box (x f, y f, (x + 64) f,
# (y + 64) f) of the original image.

# %%
image, gt = load_image(val, 0)
for factor, level in image_pyramid(image, 1.5, (64, 64)):
    print(f"factor {factor:.2f}: level {level.shape[1]} x {level.shape[0]}")
crops_all, boxes_all, per_level = windows_of(image, scale=1.5, step=16, window=(64, 64))
print(f"{len(crops_all)} windows, per level {per_level}")
assert (
    boxes_all[:, 2].max() <= image.shape[1] + 1e-3
    and boxes_all[:, 3].max() <= image.shape[0] + 1e-3
)

# %% [markdown]
# ## 4. Class-wise NMS, equal to TensorFlow's
#
# `detseg.boxes.batched_nms` keeps the best box and drops boxes of the *same class* overlapping it by
# more than the threshold. On random boxes it keeps exactly what `tf.image.non_max_suppression` keeps
# for one class and `tf.image.combined_non_max_suppression` for several (both take y1, x1, y2, x2).

# %%
rng = np.random.default_rng(0)
centres, sizes = rng.uniform(0, 200, (300, 2)), rng.uniform(10, 80, (300, 2))
boxes = np.concatenate([centres, centres + sizes], 1).astype(np.float32)
scores = rng.random((300, 2)).astype(np.float32)
single = tf.image.non_max_suppression(boxes[:, [1, 0, 3, 2]], scores[:, 0], 300, 0.5).numpy()
np.testing.assert_array_equal(batched_nms(boxes, scores[:, 0], None, 0.5), single)
combined = tf.image.combined_non_max_suppression(
    boxes[None, :, None, [1, 0, 3, 2]] / 300, scores[None], 300, 600, 0.5, 0.0, clip_boxes=False
)
count = int(combined.valid_detections[0])
keep = batched_nms(np.repeat(boxes, 2, 0), scores.reshape(-1), np.tile([0, 1], 300), 0.5)
np.testing.assert_array_equal(np.tile([0, 1], 300)[keep], combined.nmsed_classes[0, :count].numpy())
print(f"NMS: {len(single)} boxes kept for one class, {count} over two classes, same as TensorFlow")

# %% [markdown]
# ## 5. Detection, and why it is slow
#
# All windows of all levels go through the classifier in batches; windows scoring >= 0.9 survive
# NMS. The table counts windows and time per window for several scales and steps: the cost is
# (windows per image) x (time per window), and both a finer pyramid and a smaller step multiply it.

# %%
settings_table = [(1.5, 16)] if SMOKE else [(1.25, 8), (1.25, 16), (1.5, 16), (1.5, 32), (2.0, 32)]
for scale, step in settings_table:
    found = detect_sliding(image, classifier, scale=scale, step=step, score_threshold=0.9)
    per_window = found["seconds"] / max(found["windows"], 1) * 1e3
    print(f"scale {scale:<4} step {step:>2}: {found['windows']:6d} windows x {per_window:.3f} ms "
          f"= {found['seconds']:.2f} s, {len(found['boxes'])} detections")  # fmt: skip
found = detect_sliding(image, classifier, scale=1.5, step=16, score_threshold=0.9)
plt.figure(figsize=(5, 4))
plt.imshow(
    draw_detections(
        image, found["boxes"], found["labels"], found["scores"], class_names=["raccoon"]
    )
)
plt.axis("off")
plt.show()

# %% [markdown]
# mAP@0.5 of the sliding-window detector on the validation images (the core's COCO evaluator): the
# boxes are square and on a grid, so even correct windows often miss IoU 0.5.

# %%
count = 3 if SMOKE else len(val)
detections, gts, sizes = [], [], []
for i in range(count):
    image, gt = load_image(val, i)
    detections.append(detect_sliding(image, classifier, scale=1.5, step=16, score_threshold=0.5))
    gts.append(gt)
    sizes.append(image.shape[:2])
sliding = evaluate_detections(detections, gts, sizes, OUT, "sliding_windows")
print(f"sliding windows: mAP@0.5 = {sliding['map50']:.3f} on {count} images")
assert 0.0 <= sliding["map50"] <= 1.0

# %% [markdown]
# ## Summary
#
# Sliding windows turn any classifier into a detector, at the price the seed lists: tens of
# thousands of windows per image, one box shape, boxes only as good as the grid, nothing trained for
# the boxes. Lesson 2 replaces the windows by selective-search proposals.
#
# Exercises: (1) add a second window shape (64 x 32) and see the mAP change; (2) time the classifier
# at batch size 1 and 256; (3) lower the NMS threshold to 0.1 and count detections.
