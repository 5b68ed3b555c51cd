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
# # Lesson 2: a single-object detector with two heads, trained on cached features
#
# When every image holds exactly one object, detection is two questions answered at once: *where*
# (four numbers, a box) and *what* (one class). The seed of this lesson put two heads in parallel on
# a frozen ImageNet ResNet-50: a box regressor (Linear 128-64-32-4, ReLU between, sigmoid at the
# end) and a classifier (Linear 512, ReLU, Dropout, Linear 512, ReLU, Dropout, Linear 3), trained
# with MSE on the box plus cross-entropy on the class.
#
# - **Framework**: PyTorch; training through the repository's engine.
# - **Dataset**: built-in `single_object` (airplane / face / motorcycle) in the PyImageSearch CSV
#   layout of the Caltech-101 subset (`images/<class>/*.jpg`, `annotations/<class>.csv`).
# - **What is new here**: without ImageNet weights (offline) the backbone is pretrained on a
#   built-in classification task, and since it is frozen its features are computed **once**.
# - **Run time**: about 6 minutes on 2 idle CPU cores, 2.5 of them pretraining the backbone (see the
#   folder README for measured numbers).
#
# Previous: [lesson 1, pretrained and classic detectors](1_pretrained_and_classic.ipynb).
# Next: [lesson 3, SSD and RetinaNet trained here](3_ssd_retinanet.ipynb).

# %%
import contextlib
import io
import re
import time

import numpy as np
import torch
import torchvision
from single_object_detector import (
    SingleObjectImages,
    TwoHeadDetector,
    build_resnet50,
    count_trainable,
    paired_iou,
)

from detseg import settings
from detseg.boxes import box_iou
from detseg.data import recipes
from detseg.scripts import load_script
from detseg.viz import draw_detections, image_grid

NOTEBOOK_START = time.perf_counter()
SMOKE = settings.smoke_mode()  # DETSEG_SMOKE=1 (tests): 12 images, 2 epochs; numbers meaningless
if SMOKE:
    torch.set_num_threads(1)
NUM_IMAGES = 12 if SMOKE else 600
EPOCHS = 2 if SMOKE else 40
OUT = settings.runs_root() / "04_basic_object_detection" / "lesson2"
train_single_object = load_script(".", "train_single_object")

# %% [markdown]
# ## The data: one object per image, boxes in a CSV
#
# Each row of `annotations/<class>.csv` is `filename,startX,startY,endX,endY,label` in pixels. The
# model predicts the box divided by the image size (so any image size works) and we multiply back.

# %%
dataset = recipes.load("single_object", num_images=NUM_IMAGES)
print(dataset.classes, len(dataset), "images; first record:", dataset.records[0].boxes[0])
items = SingleObjectImages(dataset, list(range(len(dataset))), "small")
image, box, label = items[0]
print("input", tuple(image.shape), "normalised box", box.numpy().round(3), "label", int(label))

# %% [markdown]
# ## The seed's heads, exactly
#
# On ResNet-50's 2048 pooled features, the two heads have this many weights. We count them by hand
# and check the model agrees (the backbone is frozen, so only the heads are trainable).

# %%
by_hand = (2048 * 128 + 128) + (128 * 64 + 64) + (64 * 32 + 32) + (32 * 4 + 4)
by_hand += (2048 * 512 + 512) + (512 * 512 + 512) + (512 * 3 + 3)
seed_model = TwoHeadDetector(build_resnet50("none"), num_classes=3)
print(seed_model.box_head, seed_model.class_head, sep="\n")
assert count_trainable(seed_model) == by_hand
print("trainable parameters:", by_hand)

# %% [markdown]
# ## The small backbone's box head: the finer map, squeezed
#
# Offline, the backbone is the small one trained here, and its last 4 x 4 grid (a cell every 32 px)
# is coarse for a box. So its box head reads the 8 x 8 map *before* the last pooling (a cell every
# 16 px) through one trainable 3 x 3 convolution down to 32 channels, then flattens it into the
# seed's layers: 32 x 8 x 8 = 2048 inputs, as many as before. The class head keeps the 4 x 4 grid.
# With `--backbone resnet50` nothing of this applies: the heads stay exactly the seed's.

# %%
from single_object_detector import SmallBackbone  # noqa: E402

small_model = TwoHeadDetector(SmallBackbone(num_pretrain_classes=3, box_map=8), num_classes=3)
print(small_model.box_head[:3])
print("trainable parameters:", count_trainable(small_model), "(the seed's + the convolution)")

# %% [markdown]
# ## IoU of a predicted box with its ground truth, from scratch
#
# With one box per image the score of a box is its IoU with the one true box. We write it for
# pairs and check it against the library's pairwise IoU (the diagonal of the N x N matrix).


# %%
def iou_pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of a[i] with b[i]: [N, 4], [N, 4] xyxy -> [N]."""
    width = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    height = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = width * height
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


boxes_a = torch.rand(20, 2) * 0.5
boxes_a = torch.cat([boxes_a, boxes_a + 0.1 + torch.rand(20, 2) * 0.4], 1)
boxes_b = boxes_a + torch.randn(20, 4) * 0.05
torch.testing.assert_close(iou_pairs(boxes_a, boxes_b), paired_iou(boxes_a, boxes_b))
torch.testing.assert_close(
    iou_pairs(boxes_a, boxes_b), torchvision.ops.box_iou(boxes_a, boxes_b).diagonal()
)
torch.testing.assert_close(paired_iou(boxes_a, boxes_b), box_iou(boxes_a, boxes_b).diagonal())

# %% [markdown]
# ## Train on cached features, then the seed's loop, and compare
#
# `train_single_object.py` pretrains the small backbone on a built-in task (by default: classify
# *and locate* 1,200 other built-in images, so that its features keep where the object is; or
# loads it from its cache), freezes it, and trains the heads on the images plus fixed augmented
# copies of them: each mirrored, and two crops around the box (boxes moved with the image). A cache
# can hold augmentation only as such fixed copies, computed once like the rest. The loss is L1 +
# (1 - GIoU) on the box, and the learning rate decays along a cosine. With `--cached-features` (the
# default) the backbone runs once over the images; with `--no-cached-features` it runs on every
# image in every epoch, as the seed did. Same seed, same batches, same dropout draws: the same
# numbers. How much the cache saves depends on the backbone: this small one costs about 9 times the
# heads' step, so about 10x; the seed's ResNet-50 about 500 times, and there the cache measured
# 208x faster (folder README).

# %%
common = ["--num-images", str(NUM_IMAGES), "--seed", "0"]
script_log = io.StringIO()  # the script's progress, kept short below (a terminal shows it live)
with contextlib.redirect_stderr(script_log):
    cached = train_single_object.main(
        [*common, "--epochs", str(EPOCHS), "--output-dir", str(OUT / "cached")]
    )
    short = ["--epochs", "2"]
    check_cached = train_single_object.main([*common, *short, "--output-dir", str(OUT / "c2")])
    seed_loop = train_single_object.main(
        [*common, *short, "--no-cached-features", "--output-dir", str(OUT / "s2")]
    )
for line in script_log.getvalue().splitlines():
    epoch = re.match(r"epoch (\d+)/(\d+) \|", line)
    if line.startswith(("small backbone:", "backbone features", "done:")) or (
        epoch and (int(epoch[1]) % 10 == 0 or epoch[1] == epoch[2])
    ):
        print(line[:150])
assert abs(check_cached["mean_iou"] - seed_loop["mean_iou"]) < 1e-4
assert check_cached["class_accuracy"] == seed_loop["class_accuracy"]
speedup = seed_loop["seconds_per_epoch"] / check_cached["seconds_per_epoch"]
print(
    f"cached: {check_cached['seconds_per_epoch']:.3f} s / epoch, seed's loop "
    f"{seed_loop['seconds_per_epoch']:.3f} s / epoch: {speedup:.0f}x; same IoU and accuracy"
)
print(
    f"{EPOCHS} epochs on the cache: mean IoU {cached['mean_iou']:.3f}, "
    f"accuracy {cached['class_accuracy']:.3f} on {cached['val_images']} held-out images"
)

# %% [markdown]
# ## Predictions on held-out images
#
# Green: ground truth; the predicted box carries the class and its softmax probability.

# %%
model, config = train_single_object.load_model(OUT / "cached" / "last.pt")
predict_single_object = load_script(".", "predict_single_object")
from detseg.data.imageio import read_image  # noqa: E402
from detseg.data.torch_datasets import split_indices  # noqa: E402

_, val_idx = split_indices(len(dataset), val_fraction=0.2, seed=0)
pictures = []
for index in val_idx[:6]:
    record = dataset.records[index]
    picture = read_image(dataset.image_path(record))
    found = predict_single_object.predict(model, config, picture)
    picture = draw_detections(picture, record.boxes, np.array([0]), class_names=["truth"])
    pictures.append(
        draw_detections(
            picture,
            np.array([found["box"]]),
            np.array([found["label"]]),
            np.array([found["score"]]),
            class_names=dataset.classes,
        )
    )
grid = image_grid(pictures, ncols=3)
print(grid.shape)

# %% [markdown]
# ## Summary
#
# - Two heads on one frozen feature vector answer "where" and "what"; the box head ends in a sigmoid
#   so the box is a fraction of the image size.
# - A frozen backbone computes the same features every epoch: computing them once makes an epoch a
#   few matrix products instead of a pass of a CNN over every image, with the same result.
# - Without ImageNet, a backbone pretrained on a built-in task (classify and locate other images)
#   is the honest stand-in; a box head that reads a finer map than the classifier does localises
#   better.
#
# ## Exercises
#
# 1. Train with `--pretrain-task shape_crops` and `other_images`: which features localise better?
# 2. Turn off the mirror images (`--no-mirror-train`), or add random crops around the box
#    (`--crop-copies 2`): how much of the IoU does each augmentation give?
# 3. Let the box head read the 4 x 4 grid as the seed's does (`--box-map 0`), or the 16 x 16 map
#    (`--box-map 16`): is a finer map always better?
# 4. With internet, run `--backbone resnet50` and compare with the small backbone.

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.0f} s")
