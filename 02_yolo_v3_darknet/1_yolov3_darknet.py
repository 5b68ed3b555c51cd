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
# # YOLOv3 from darknet's own files: cfg, weights, grid, anchors, NMS, and training it
#
# YOLOv3 (Redmon & Farhadi, 2018) was published as two files for the darknet framework: a `.cfg`
# text file describing the network layer by layer and a `.weights` binary file of float32 numbers.
# This lesson reads both formats with our own code, builds the PyTorch model from the cfg, proves it
# equal to OpenCV's independent darknet importer, decodes the 13 x 13 / 26 x 26 / 52 x 52 grids into
# boxes by hand, removes duplicates with NMS, and then does what the original PyTorch ports could
# not: trains YOLOv3-tiny on custom classes and writes the result back as darknet files.
#
# - **Framework**: PyTorch (training through the repository's engine), OpenCV DNN as the peer.
# - **Dataset**: the built-in `shapes` data in its Roboflow YOLO export layout (`data.yaml`,
#   `train/images`, `train/labels/*.txt`); any YOLO `data.yaml` works the same way.
# - **Run time**: about 2 minutes on a 2-core CPU (the training cell is most of it), plus 3.5 minutes
#   the first time for the pretrained layers of section 7 (then cached); no GPU needed.
#
# Read first: [`notebooks/00_boxes_and_map`](../notebooks/00_boxes_and_map.ipynb) (IoU, NMS, mAP).

# %% [markdown]
# ## Setup

# %%
import time

import cv2
import matplotlib.pyplot as plt
import numpy as np
import torch
import torchvision
from anchors import kmeans_anchors
from darknet import build_model, load_weights, randomize, read_header, save_weights
from darknet_cfg import OFFICIAL_CFGS, layer_table, parse_cfg
from darknet_pretraining import PretrainConfig, ensure_partial, partial_path
from yolo_loss import LossConfig
from yolo_training import (
    build_custom_model,
    fit,
    load_splits,
    predict_batch,
    save_darknet,
    training_boxes_wh,
)

from detseg import settings
from detseg.boxes import batched_nms, box_iou
from detseg.data.yolo_dataset import YoloAugment, YoloDataset
from detseg.devices import seed_everything
from detseg.viz import draw_detections, image_grid
from detseg.yolo_decode import decode_output, postprocess

NOTEBOOK_START = time.perf_counter()
# smoke mode (DETSEG_SMOKE=1, the tests): 16 images, one epoch at 64 px, one thread
SMOKE = settings.smoke_mode()
if SMOKE:
    torch.set_num_threads(1)
SIZE = 64 if SMOKE else 160  # training input side (a multiple of 32)
EPOCHS = 1 if SMOKE else 6
OUT = settings.runs_root() / "02_yolo_v3_darknet" / "lesson"
OUT.mkdir(parents=True, exist_ok=True)
seed_everything(0)

# %% [markdown]
# ## 1. The cfg: the network as a text file
#
# A cfg is a list of `[sections]`. `[net]` holds the input size; every other section is one layer,
# numbered from 0 in file order. `[route] layers = -1, 61` concatenates the previous layer with
# layer 61; `[shortcut] from=-3` adds a residual. We parse the file and infer every shape.

# %%
print(OFFICIAL_CFGS["yolov3"].read_text().split("[convolutional]")[1][:120])
spec = parse_cfg("yolov3")
table = layer_table(spec).splitlines()
print("\n".join(table[:8] + ["  ..."] + table[80:88]))
print(f"layers: {len(spec.layers)}, parameters: {spec.num_params:,}, "
      f"weights_bytes: {spec.weights_bytes:,}")  # fmt: skip

# %% [markdown]
# The parameter count is darknet's: every float32 the `.weights` file stores. A convolution with
# batch norm stores beta, gamma, running mean and variance (4 per filter) and its kernel; one
# without stores a bias per filter and its kernel. Layer 0 by hand, then the whole file:

# %%
first = spec.layers[0]
by_hand = first.filters * 3 * 3 * 3 + 4 * first.filters  # 32 filters of 3 x 3 x 3, batch norm
assert first.params == by_hand == 992
for name in OFFICIAL_CFGS:
    s = parse_cfg(name)
    print(f"{name:<12} {s.num_params:>11,} numbers -> {s.weights_bytes:>12,} bytes "
          f"(20-byte header + 4 x numbers)")  # fmt: skip
assert spec.weights_bytes == 248_007_048  # the size of darknet's yolov3.weights

# %% [markdown]
# ## 2. Three grids and 255 channels
#
# At 416 x 416 the three `[yolo]` layers see grids of 13 x 13, 26 x 26 and 52 x 52 cells (strides
# 32, 16, 8). Each cell predicts 3 boxes, one per anchor of that scale, and each box is 5 + 80
# numbers: `tx, ty, tw, th`, objectness, and 80 class scores: 3 x 85 = 255 channels.

# %%
for layer in spec.yolo_layers:
    channels, rows, cols = layer.in_shape
    print(f"[yolo] layer {layer.index}: {rows} x {cols} grid, stride {416 // rows}, "
          f"{channels} = {len(layer.anchors)} x (5 + {layer.num_classes}), anchors {layer.anchors}")  # fmt: skip

fig, axes = plt.subplots(1, 3, figsize=(12, 4))
for ax, layer in zip(axes, spec.yolo_layers):
    cells = layer.in_shape[1]
    stride = 416 / cells
    ax.set_xlim(0, 416)
    ax.set_ylim(416, 0)
    for k in range(cells + 1):
        ax.axhline(k * stride, color="0.85", lw=0.5)
        ax.axvline(k * stride, color="0.85", lw=0.5)
    cx = cy = (cells // 2 + 0.5) * stride
    for w, h in layer.anchors:
        ax.add_patch(plt.Rectangle((cx - w / 2, cy - h / 2), w, h, fill=False, lw=1.5))
    ax.set_title(f"{cells} x {cells}, anchors of stride {stride:.0f}")
    ax.set_aspect("equal")
plt.tight_layout()
plt.savefig(OUT / "grids_and_anchors.png")
plt.show()

# %% [markdown]
# ## 3. Decoding one cell by hand
#
# For the cell in row `r`, column `c` and an anchor of size `(pw, ph)`: `bx = (sigmoid(tx) + c) *
# stride`, `bw = pw * exp(tw)`, objectness = `sigmoid(to)`, class probability = `sigmoid(tc)`; the
# score of a class is objectness x probability. We decode one cell of a random output by hand and
# check it against the tested `detseg.yolo_decode.decode_output`.

# %%
raw = torch.randn(1, 3 * 85, 13, 13, generator=torch.Generator().manual_seed(0))
anchors, stride = spec.yolo_layers[0].anchors, 32
row, col, anchor = 4, 7, 2
t = raw[0, anchor * 85 : (anchor + 1) * 85, row, col]  # this anchor's 85 numbers
by_hand = torch.stack([
    (torch.sigmoid(t[0]) + col) * stride, (torch.sigmoid(t[1]) + row) * stride,
    anchors[anchor][0] * torch.exp(t[2]), anchors[anchor][1] * torch.exp(t[3]),
    torch.sigmoid(t[4]),
])  # fmt: skip
decoded = decode_output(raw, anchors, stride)[0]  # rows ordered (row, col, anchor)
torch.testing.assert_close(decoded[(row * 13 + col) * 3 + anchor, :5], by_hand)
print("cx, cy, w, h, objectness:", by_hand.numpy().round(3))

# %% [markdown]
# ## 4. NMS from scratch, then the library
#
# Many cells see the same object. Greedy non-maximum suppression keeps the best-scoring box and
# drops every box of the same class that overlaps it with IoU above a threshold, then repeats.


# %%
def nms_by_hand(boxes, scores, labels, iou_threshold):
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    keep = []
    while order:
        best = order.pop(0)
        keep.append(best)
        ious = box_iou(boxes[best][None], boxes[order])[0]
        order = [
            i for i, iou in zip(order, ious) if labels[i] != labels[best] or iou <= iou_threshold
        ]
    return torch.tensor(keep)


generator = torch.Generator().manual_seed(1)
centres = torch.rand(300, 2, generator=generator) * 150
sizes = torch.rand(300, 2, generator=generator) * 60 + 10
boxes = torch.cat([centres, centres + sizes], dim=1)
scores = torch.rand(300, generator=generator)
labels = torch.randint(0, 3, (300,), generator=generator)
mine = nms_by_hand(boxes, scores, labels, 0.45)
assert torch.equal(mine, batched_nms(boxes, scores, labels, 0.45))
assert torch.equal(mine, torchvision.ops.batched_nms(boxes, scores, labels, 0.45))
print(f"NMS kept {len(mine)} of 300 boxes; same as detseg.boxes and torchvision")

# %% [markdown]
# ## 5. The `.weights` file, and a second opinion from OpenCV
#
# The file is a header (int32 major, minor, revision; images seen as int64 since version 0.2) and
# then, per convolution in file order, beta, gamma, mean, variance (or the bias) and the kernel.
# We write random weights for YOLOv3-tiny with our writer and let OpenCV's darknet importer, an
# independent implementation, run them: the raw inputs of the `[yolo]` layers agree.

# %%
tiny = randomize(build_model("yolov3-tiny", size=160), seed=0).eval()
path = save_weights(tiny, OUT / "random-yolov3-tiny.weights", seen=123)
print("header:", read_header(path.read_bytes()[:20]), "| file size:", path.stat().st_size)
net = cv2.dnn.readNetFromDarknet(str(OFFICIAL_CFGS["yolov3-tiny"]), str(path))
blob = np.random.default_rng(0).random((1, 3, 160, 160), dtype=np.float32)
net.setInput(blob)
theirs = net.forward([f"conv_{layer.index - 1}" for layer in tiny.spec.yolo_layers])
with torch.no_grad():
    ours = tiny(torch.from_numpy(blob))
diff = max(float(np.abs(a - b.numpy()).max()) for a, b in zip(theirs, ours))
assert diff <= 1e-4
print(f"OpenCV DNN vs ours, max abs difference: {diff:.1e}")
reread = build_model("yolov3-tiny", size=160).eval()
load_weights(reread, path)  # strict: any other file size is an error naming both sizes

# %% [markdown]
# ## 6. Custom classes: anchors by k-means
#
# For 5 shape classes the head needs `filters = 3 x (5 + 5) = 30` before each `[yolo]`. The anchors
# should fit the data: k-means on the training boxes' widths and heights with the distance
# `1 - IoU` (YOLOv2's "dimension clusters"), so that big and small boxes count alike.

# %%
splits = load_splits(None, num_images=None if SMOKE else 300)
wh = training_boxes_wh(splits.train, SIZE)
anchors6, mean_iou = kmeans_anchors(wh, 6)
print(f"{len(wh)} training boxes; anchors at {SIZE} px: {anchors6.round(1).tolist()}; "
      f"mean IoU with the best anchor {mean_iou:.2f}")  # fmt: skip
plt.figure(figsize=(4, 4))
plt.scatter(wh[:, 0], wh[:, 1], s=4, alpha=0.4, label="boxes")
plt.scatter(anchors6[:, 0], anchors6[:, 1], marker="x", s=80, c="red", label="anchors")
plt.xlabel("width (px)")
plt.ylabel("height (px)")
plt.legend()
plt.savefig(OUT / "kmeans_anchors.png")
plt.show()

# %% [markdown]
# ## 7. Darknet's start: a partial weights file, `yolov3-tiny.conv.15`
#
# Darknet does not train YOLOv3-tiny from random weights. Its recipe for custom classes cuts the
# first 15 layers (convolutions 0-14, everything before the first head's last 1 x 1 convolution)
# out of trained weights, `darknet partial cfg/yolov3-tiny.cfg yolov3-tiny.weights
# yolov3-tiny.conv.15 15`, and starts training from that file: the same header, then only those
# layers' numbers, in order. The heads stay random, so the file fits any number of classes.
#
# Offline there are no trained weights to cut, so we teach the 15 layers a stand-in task first:
# classify the shapes cut out of *other* built-in scenes (data seed 1; `ensure_partial` checks on
# the files' bytes that none of them is a training or validation image of the detector), with a
# global average pool and a linear layer on top, then drop those and write the 15 layers with our
# own writer. Like downloaded weights, this runs once (about 3.5 minutes on 2 cores) and is cached
# under `runs/`: this is `train.py`'s own file, so after a `train.py` run the cell only reads it.

# %%
pretrain = PretrainConfig()  # train.py's: crops of 1000 other scenes, 6 epochs
if SMOKE:
    pretrain = PretrainConfig(num_images=16, epochs=1, max_steps=2)
partial, info = ensure_partial(
    partial_path(settings.runs_root(), pretrain), pretrain,
    held_out={"detector train": splits.train, "detector val": splits.val},
)  # fmt: skip
tiny_spec = parse_cfg("yolov3-tiny")
floats = sum(layer.params for layer in tiny_spec.layers[:15])
assert partial.stat().st_size == 20 + 4 * floats
print(f"{partial.name}: {partial.stat().st_size:,} bytes = 20-byte header + 4 x {floats:,} numbers "
      f"of layers 0-14 (the whole yolov3-tiny.weights: {tiny_spec.weights_bytes:,}); held-out crop "
      f"accuracy {info['crop_accuracy']:.2f} after {info['seconds']:.0f} s of pretraining "
      f"({'cached' if info['cached'] else 'now'})")  # fmt: skip

# %% [markdown]
# ## 8. Training YOLOv3-tiny on the shapes
#
# The loss (`yolo_loss.py`): each box is assigned to anchors and cells that must predict it; box
# (GIoU), objectness (BCE, with predictions already overlapping a box ignored) and class (BCE;
# where two boxes share a cell and an anchor, both classes are targets there, as in darknet) terms.
# `LossConfig` holds darknet's YOLOv3 choices by default (squared-error box loss, only the
# best-shaped anchor, at the one cell holding the centre, objectness target 1). `train.py`'s
# recipe, used here, takes GIoU and YOLOv5's assignment: every anchor within 4x of the box's width
# and height, at the centre cell and its 2 nearest neighbours (about 10x more positives, so faster
# learning), with the positives' objectness target their IoU with the box. A neighbour cell's
# offset to the centre lies in -0.5..1.5, so the `[yolo]` layers get darknet's `scale_x_y = 2`
# (centre = `col + 2 sigmoid(tx) - 0.5`), which `model.decode` and OpenCV apply.
# The engine adds warm-up, checkpoints and COCO mAP on the validation images. The model starts
# from the partial file: `load_weights(..., layers=15)` is strict about its size (a file of other
# layers is one error naming both sizes) and leaves the heads as they are.

# %%
model, cfg_text = build_custom_model("yolov3-tiny", len(splits.classes),
                                     anchors=[tuple(a) for a in anchors6], image_size=SIZE,
                                     scale_xy=2.0)  # fmt: skip
load_weights(model, partial, layers=15)
result = fit(
    model, splits, image_size=SIZE, epochs=EPOCHS, batch_size=8,
    lr=2e-3, optimizer_name="adamw", warmup_iters=100,
    loss_config=LossConfig(box_loss="giou", assign="yolov5", obj_target="iou"),
    output_dir=OUT / "run", device=torch.device("cpu"), progress=False,
    augment=YoloAugment(hflip=0.5, hsv=(0.015, 0.5, 0.3), scale=(0.75, 1.25)),
    config={"cfg_text": cfg_text, "classes": splits.classes, "image_size": SIZE},
)  # fmt: skip
for entry in result["history"]:
    print(f"epoch {entry['epoch']}: loss {entry['train']['loss']:.2f}, "
          f"mAP@0.5 {entry['eval']['mAP50']:.3f}")  # fmt: skip

# %% [markdown]
# Six epochs of 240 images (180 steps) only start the detector, even from the pretrained layers:
# the mAP above is low, and few boxes pass the 0.3 threshold of the pictures below. `train.py`'s
# recipe (800 images at 192 px, 10 minutes, from the same `yolov3-tiny.conv.15`)
# reaches mAP@0.5 0.42, against 0.32 from random weights (README); the shapes are found before
# they are told apart.

# %%
val = YoloDataset(splits.val, SIZE)
model.eval()
shown = []
for index in range(min(8, len(val))):
    image, _ = val[index]
    found = predict_batch(model, image[None], score_threshold=0.3, iou_threshold=0.45)[0]
    picture = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    shown.append(draw_detections(picture, found["boxes"], found["labels"], found["scores"],
                                 class_names=splits.classes))  # fmt: skip
plt.figure(figsize=(12, 6))
plt.imshow(image_grid(shown, ncols=4))
plt.axis("off")
plt.show()

# %% [markdown]
# ## 9. Back to darknet: our trained model in OpenCV DNN
#
# The trained model is written as a darknet `.cfg` + `.weights` pair; OpenCV reads it and finds the
# same detections (decoded and NMS-filtered by the same code). The threshold is low (0.05) so that
# the short run above has detections to compare.

# %%
cfg_path, weights_path = save_darknet(model, cfg_text, OUT, "yolov3-tiny-shapes")
net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
image = val[0][0][None]
net.setInput(image.numpy())
raw_cv = [torch.from_numpy(a) for a in net.forward(
    [f"conv_{layer.index - 1}" for layer in model.spec.yolo_layers])]  # fmt: skip
with torch.no_grad():
    raw_ours = model(image)
found_cv, found_ours = (
    postprocess(model.decode(raw), score_threshold=0.05)[0] for raw in (raw_cv, raw_ours)
)
print(f"detections: ours {len(found_ours['boxes'])}, OpenCV {len(found_cv['boxes'])}")
assert torch.equal(found_ours["labels"], found_cv["labels"])
torch.testing.assert_close(found_ours["boxes"], found_cv["boxes"], rtol=0, atol=1e-2)

# %% [markdown]
# ## Summary
#
# - A darknet cfg is the network as text; its layer list fixes the size of the `.weights` file
#   exactly (YOLOv3: 62,001,757 numbers, 248,007,048 bytes), which makes the reader strict.
# - OpenCV's importer and ours agree on random weights to 1e-4: the format is understood.
# - Each grid cell predicts 3 boxes of 5 + C numbers; decoding is sigmoid offsets in the cell and
#   exponential scaling of the anchor; NMS per class removes duplicates.
# - For custom classes only the heads change (`filters = 3 x (5 + C)`), plus anchors fitted by
#   k-means; `train.py` is the full recipe (README for its measured mAP).
# - Darknet starts from a partial file, the first layers of trained weights (`yolov3-tiny.conv.15`:
#   header + layers 0-14, 30,973,396 bytes); offline we pretrain those layers on other images.
#
# ## Exercises
#
# 1. Train with the cfg's COCO anchors instead of k-means (`train.py --anchors cfg`): how much mAP
#    does the choice of anchors cost on these shapes?
# 2. Write the SPP block of `yolov3-spp.cfg` as three `nn.MaxPool2d` with padding and check it
#    against `darknet.MaxPoolLayer`.
# 3. Start from random weights (`train.py --backbone-pretraining none`) and compare the mAP after
#    each epoch with the default start from `yolov3-tiny.conv.15`.
# 4. Train with YOLOv3's own assignment (`--assign yolov3 --assign-threshold 2 --obj-target one`:
#    only the best anchor, at one cell, as darknet) and compare the mAP after each epoch.

# %%
print(f"run time of this notebook: {time.perf_counter() - NOTEBOOK_START:.1f} s")
