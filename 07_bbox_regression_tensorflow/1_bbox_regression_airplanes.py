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
# # Lesson 1: bounding-box regression in Keras (one class)
#
# The simplest object detector there is: every image holds exactly one airplane, and the network
# outputs four numbers, the corners of its box. No anchors, no proposals, no NMS: a frozen
# convolutional backbone turns the image into a feature map, and a small dense head *regresses* the
# four coordinates, each divided by the image size so that a sigmoid can produce it.
#
# - **Framework**: Keras 3 on TensorFlow (``model.fit`` with callbacks; TensorFlow is imported through
#   ``detseg.tf_import``, after torchvision, because the other order crashes with torch 2.14).
# - **Dataset**: the built-in ``single_object`` data in the layout of the Caltech-101 subset used by
#   PyImageSearch's tutorial (``images/airplane/image_0001.jpg``, ``annotations/airplane.csv`` with
#   ``filename,startX,startY,endX,endY,label``); the real download is read by the same reader.
# - **What you learn**: a tf.data pipeline that reads the CSV lazily, IoU from scratch and proven
#   equal to torchvision, a frozen backbone with a regression head, and how good "just regress the
#   box" gets (mean IoU on held-out images, the share of boxes above IoU 0.5 and 0.75).
# - **Run time** (``python -m detseg.notebooks build --execute``): see the folder README.

# %% [markdown]
# ## Setup
#
# The settings are the measured ones of the README (``train_bbox.py --backbone small``). In smoke
# mode (``DETSEG_SMOKE=1``, used by the tests) the data has 24 images and training runs one epoch,
# so the notebook runs in seconds; its numbers are then meaningless.

# %%
import time
from pathlib import Path

import bbox_data
import bbox_fit
import bbox_models
import bbox_training
import matplotlib.pyplot as plt
import numpy as np
import torch
import torchvision
from bbox_models import keras, tf

from detseg import settings
from detseg.boxes import box_iou
from detseg.data.samples import detection_sample
from detseg.errors import UserError
from detseg.viz import image_grid

NOTEBOOK_START = time.perf_counter()
SMOKE = settings.smoke_mode()
EPOCHS = 1 if SMOKE else 40
# the small backbone's pretraining (section 3): the scripts' recipe, one epoch in smoke mode
PRETRAIN = {**bbox_training.PRETRAIN_DEFAULTS, **({"epochs": 1} if SMOKE else {})}
# a smoke run (the tests) writes apart, so that it never overwrites a full run's checkpoints
OUT = (
    settings.runs_root()
    / "07_bbox_regression_tensorflow"
    / ("lesson1-smoke" if SMOKE else "lesson1")
)
print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, smoke mode: {SMOKE}")

# %% [markdown]
# ## 1. The data, in the Caltech-101 CSV layout
#
# ``bbox_data.load_source`` generates the built-in data once (``data/single_object-0-n2400/``) and reads
# it with the core's CSV reader. The CSV is tiny: a file name and four numbers per image. The seed
# tutorial then loaded *every image* into one numpy array before training; here nothing but the CSV
# is read up front.

# %%
dataset = bbox_data.load_source(None)
print(f"{len(dataset)} images, classes {dataset.classes}")
print((dataset.root / "annotations" / "airplane.csv").read_text().splitlines()[:3])

# %% [markdown]
# The split is stratified by class and seeded: 20 % of each class held out for the final numbers
# (*test*), 10 % to pick the best epoch and stop early (*val*), the rest to train. This lesson keeps
# the airplanes only; the held-out airplanes are the same ones that lesson 2 holds out.

# %%
splits_all = bbox_data.split_dataset(dataset, val_fraction=0.1, test_fraction=0.2, seed=0)
splits = {name: bbox_data.select_classes(part, ["airplane"]) for name, part in splits_all.items()}
print({name: len(part) for name, part in splits.items()})

# %% [markdown]
# ``bbox_data.box_dataset`` builds the ``tf.data`` pipeline on the core adapter
# (``detseg.data.tf_datasets``): an index per image, mapped to "read, resize, divide the box by the
# size" when a batch is asked for. Let us take one batch and draw its boxes back in pixels.

# %%
pipeline = bbox_data.box_dataset(splits["train"], image_size=128, batch_size=8, with_class=False)
images, targets = next(iter(pipeline))
print(f"images {images.shape} {images.dtype}, boxes {targets['bbox'].shape} (in [0, 1])")
boxes_px = targets["bbox"].numpy() * 128
plt.figure(figsize=(12, 3))
plt.imshow(image_grid([bbox_training.draw_boxes((im.numpy() * 255).astype(np.uint8), None, b)
                       for im, b in zip(images, boxes_px)], ncols=8))  # fmt: skip
plt.axis("off")
plt.show()

# %% [markdown]
# ## 2. IoU from scratch, then proven equal to the libraries
#
# The quality of a predicted box is its *intersection over union* with the true one: the area they
# share divided by the area they cover together. 1 is a perfect box, 0 a box that misses. Here it is
# for pairs of boxes in numpy, then checked against ``torchvision.ops.box_iou`` and the repository's
# ``detseg.boxes.box_iou`` on random boxes, and against the Keras-ops version that the training
# metric uses.


# %%
def paired_iou_numpy(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of boxes_a[i] with boxes_b[i]; both [N, 4] xyxy."""
    top_left = np.maximum(boxes_a[:, :2], boxes_b[:, :2])
    bottom_right = np.minimum(boxes_a[:, 2:], boxes_b[:, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    area_a = np.prod(boxes_a[:, 2:] - boxes_a[:, :2], axis=1)
    area_b = np.prod(boxes_b[:, 2:] - boxes_b[:, :2], axis=1)
    return inter / (area_a + area_b - inter)


rng = np.random.default_rng(0)
corners = np.sort(rng.random((500, 2, 2)) * 300, axis=1).astype(np.float32)
boxes_a = np.concatenate([corners[:, 0], corners[:, 1]], axis=1)
boxes_b = boxes_a + rng.normal(0, 20, boxes_a.shape).astype(np.float32)
boxes_b[:, 2:] = np.maximum(boxes_b[:, 2:], boxes_b[:, :2] + 1)
mine = paired_iou_numpy(boxes_a, boxes_b)
torchvision_iou = torch.diag(
    torchvision.ops.box_iou(torch.from_numpy(boxes_a), torch.from_numpy(boxes_b))
)
keras_iou = keras.ops.convert_to_numpy(bbox_models.box_iou_pairs(boxes_a, boxes_b))
np.testing.assert_allclose(mine, torchvision_iou.numpy(), atol=1e-5)
np.testing.assert_allclose(mine, np.diag(box_iou(boxes_a, boxes_b)), atol=1e-5)
np.testing.assert_allclose(mine, keras_iou, atol=1e-5)
print(f"equal on 500 random pairs (mean IoU of the pairs {mine.mean():.3f})")

# %% [markdown]
# ## 3. A backbone: VGG16 from ImageNet, or one pretrained here
#
# The seed froze VGG16 with its ImageNet weights. ``bbox_models.vgg16_backbone`` does that when the
# weights (59 MB) are in Keras' cache or can be downloaded. Offline it says, in one line, where to put
# the file, and the lesson goes on with the *small* backbone: five Conv-BN-ReLU-MaxPool stages, first
# trained here on a task of its own, then frozen. The task is 04's: *classify and locate* the object
# of 1,200 **other** built-in images (data seed 1; this lesson's images are data seed 0), with a
# class head on the pooled output and a small box head on the [8, 8, 128] map (a 1 x 1 convolution,
# then 4 sigmoids), both dropped afterwards. Learning where the object is, not only what it is,
# leaves features that keep its position, as a detection-pretrained backbone's do: that is the
# stand-in for ImageNet weights here. ``held_out`` makes the function compare the bytes of every
# pretraining image with this lesson's validation and test images, and refuse any shared one.
# Training: Adam with a one-cycle rate (warm-up over 30 % of the steps, then a cosine), each image
# mirrored at random with its box; 8 epochs, cached after the first run (the scripts share it).

# %%
try:
    bbox_models.vgg16_weights_path()
    print("VGG16 ImageNet weights available (train_bbox.py --backbone vgg16 uses them)")
except UserError as err:
    print("offline:", err.message().replace(str(Path.home()), "~"))  # home folder as ~

HELD_OUT = {"val": splits_all["val"], "test": splits_all["test"]}
CACHE = settings.runs_root() / "07_bbox_regression_tensorflow" / "pretrained"
backbone, pretrain = bbox_training.pretrain_small_backbone(
    image_size=128, seed=0, cache_dir=CACHE, held_out=HELD_OUT, **PRETRAIN
)
print(
    f"pretraining task on its held-out images: class accuracy {pretrain['val_accuracy']:.3f}, "
    f"box IoU {pretrain['val_box_iou']:.3f} ({pretrain['seconds']:.0f} s; cached: {pretrain['cached']})"
)
print(f"backbone: {bbox_models.all_parameters(backbone):,} weights, output {backbone.output.shape}")

# %% [markdown]
# ## 4. The regression head
#
# The seed's head: flatten the feature map (keeping *where* each feature is, which a global average
# would throw away), Dense 128 - 64 - 32, then 4 sigmoids. One change to where it reads: the small
# backbone's map *before* its last pooling ([8, 8, 128], a cell every 16 pixels instead of 32), through
# a trainable 3 x 3 convolution (64 channels: an edge of the box is found by comparing neighbouring
# cells) and a 1 x 1 convolution down to 32 channels, so that the flattened features stay 2048 long.
# Freezing the backbone leaves only the head to train.
#
# The seed's loss was the mean squared error of the four numbers. Here it is the mean absolute error
# plus ``1 - GIoU`` (``bbox_models.l1_giou_loss``): the generalised IoU is the IoU minus the share of
# the smallest box enclosing both that neither covers, so it still has a gradient when the boxes do
# not overlap, and it weighs a corner's error by the size of the box, as the IoU does.

# %%
model = bbox_models.build_for("small", backbone)
print(f"trainable parameters: {bbox_models.trainable_parameters(model):,} "
      f"of {bbox_models.all_parameters(model):,}")  # fmt: skip
model.summary(line_length=90)

# %% [markdown]
# ## 5. Training with Keras callbacks
#
# ``bbox_fit.fit_regressor`` compiles (Adam with a cosine learning rate, L1 + GIoU) and trains on
# the backbone's cached features of every training image *and of its mirror image* (the box mirrored
# with it: ``bbox_data.mirror_boxes``). It calls ``model.fit`` with the callbacks the
# PyTorch examples get from the repository's engine: a progress bar, ``last.keras`` / ``best.keras``
# written atomically each epoch (best = highest validation IoU), ``history.csv`` (``CSVLogger``), early
# stopping, and, with ``tracker="wandb"``, Weights & Biases offline. ``--resume`` on the script
# continues from ``last.keras`` with the same batches an uninterrupted run would see.

# %%
result = bbox_fit.fit_regressor(
    splits=splits, backbone_name="small", with_class=False, epochs=EPOCHS, batch_size=64, lr=1e-3,
    seed=0, output_dir=OUT, config={"lesson": 1, "val_fraction": 0.1, "test_fraction": 0.2,
                                    "seed": 0, "data_path": None, "num_images": None},
    pretrain={**PRETRAIN, "cache_dir": CACHE, "held_out": HELD_OUT},
    box_loss="l1+giou", flip=True, lr_schedule="cosine", patience=15, verbose=0,
)  # fmt: skip
for row in result["history"][4::5]:  # every 5th epoch (the script prints each one)
    print(
        f"epoch {row['epoch']:3d}: loss {row['loss']:.3f}, val loss {row['val_loss']:.3f}, "
        f"val IoU {row['val_bbox_iou']:.3f}, {row['epoch_time_s']:.1f} s"
    )
print(bbox_fit.describe(result))
print(f"{result['seconds_per_epoch']:.1f} s per epoch, {result['train_seconds']:.0f} s in all")

# %%
history = result["history"]
plt.figure(figsize=(10, 3.5))
plt.subplot(1, 2, 1)
plt.plot([r["loss"] for r in history], label="train")
plt.plot([r["val_loss"] for r in history], label="val")
plt.title("L1 + (1 - GIoU) of the normalised boxes")
plt.legend()
plt.subplot(1, 2, 2)
plt.plot([r["bbox_iou"] for r in history], label="train")
plt.plot([r["val_bbox_iou"] for r in history], label="val")
plt.title("mean IoU")
plt.legend()
plt.show()

# %% [markdown]
# ## 6. How good is it, on images it never saw?
#
# The numbers above come from ``best.keras`` on the test airplanes. Recompute them here from the
# predicted boxes, with torchvision's IoU in pixels of the original images.

# %%
best, _ = bbox_training.load_trained(OUT / "best.keras")
test = splits["test"]
predicted = bbox_training.predict_split(best, test, image_size=128)["boxes"]
truth = bbox_data.true_boxes(test)
ious = torch.diag(
    torchvision.ops.box_iou(torch.from_numpy(predicted), torch.from_numpy(truth))
).numpy()
assert abs(ious.mean() - result["test"]["mean_iou"]) < 1e-5
assert abs((ious >= 0.75).mean() - result["test"]["iou_above_0.75"]) < 1e-9
print(
    f"mean IoU {ious.mean():.3f}, IoU >= 0.5: {(ious >= 0.5).mean():.1%}, IoU >= 0.75: {(ious >= 0.75).mean():.1%}"
)

shown = [
    bbox_training.draw_boxes(detection_sample(test, i)[0], predicted[i], truth[i])
    for i in range(min(8, len(test)))
]
plt.figure(figsize=(14, 5))
plt.imshow(image_grid(shown, titles=[f"IoU {v:.2f}" for v in ious[: len(shown)]], ncols=4))
plt.axis("off")
plt.title("true box green, predicted red")
plt.show()

# %% [markdown]
# ## Summary
#
# - A detector for "one object, always there" is a regressor: a frozen backbone, a flattened map,
#   four sigmoids; the seed's MSE loss, or better L1 + GIoU.
# - The CSV is read once; images are read when their batch is needed (``tf.data``), so the memory used
#   does not grow with the dataset.
# - IoU built by hand equals torchvision's, the core's and the Keras metric's.
# - Without ImageNet, what the frozen backbone was pretrained on decides most of the IoU: learning to
#   *locate* objects in other images gave more than any change to the head (README, EXPERIMENTS.md).
# - The limits named by the seed remain: one class, one object per image. Lesson 2 adds classes.
#
# ## Exercises
#
# 1. Train with the seed's loss (``box_loss="mse"``) and without the mirrored images
#    (``flip=False``). How much of the test IoU does each give?
# 2. Unfreeze the last stage of the small backbone (``backbone.layers[-4:]``) with a 10x smaller
#    learning rate. What happens to the validation IoU, and to the seconds per epoch?
# 3. Global-average-pool the features instead of flattening them. Why does the IoU collapse?
# 4. Pretrain the backbone on fewer other images (``num_images=300`` in ``pretrain``). How much test
#    IoU do the extra 900 images buy?

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.0f} s")
