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
# # YOLOv7 from scratch: architecture, custom data, training, export, real time
#
# YOLOv7 (Wang, Bochkovskiy and Liao, 2022) is a one-stage detector: one network pass predicts, on
# three grids, a box, an objectness and class scores for every cell and anchor. This lesson builds
# the authors' two P5 models (YOLOv7-tiny and YOLOv7) layer for layer, checks the parameter counts
# against theirs, fuses the re-parameterised convolutions for deployment, trains YOLOv7-tiny on a
# Roboflow-style custom dataset (ball, cup, lotion on a table), exports it to ONNX and runs it as a
# video stream.
#
# - **Framework**: PyTorch; training goes through the repository's engine (`detseg.engine`).
# - **Dataset**: the built-in `tabletop` set, written exactly as Roboflow exports "YOLO v7 PyTorch"
#   (`data.yaml`, `train/ valid/ test/` with `images/` and `labels/`); your own export is read by
#   the same code (`train.py --data-path your_export/`).
# - **Run time**: about 1.5 minutes on a 2-core CPU (a short training; the folder README has the
#   full run); the last cell prints the time of the run shown.

# %% [markdown]
# ## Setup

# %%
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import yolov7
from matplotlib.patches import FancyBboxPatch
from yolov7 import (
    AUTHORS_PARAMETERS,
    AUTHORS_PARAMETERS_FUSED,
    build_model,
    count_flops,
    count_parameters,
)
from yolov7_data import YoloSamples, read_split
from yolov7_loss import find_candidates

from detseg import settings
from detseg.data import recipes
from detseg.data.yolo_augment import hflip, hsv_gains, hsv_jitter
from detseg.scripts import load_script
from detseg.viz import draw_detections, image_grid

NOTEBOOK_START = time.perf_counter()
FOLDER = Path(yolov7.__file__).resolve().parent  # this lesson's folder (scripts load from it)
SMOKE = settings.smoke_mode()  # the tests run this file with 16 images, one tiny epoch
torch.manual_seed(0)

# %% [markdown]
# ## 1. The architecture, block by block
#
# `yolov7.py` describes each variant as a numbered list of layers; layer *i* reads the outputs of
# earlier layers, and its index is the index of the authors' `cfg/training/yolov7*.yaml`. The
# blocks have names: **ELAN** (tiny) and **E-ELAN** (base) stack 3x3 convolutions on one of two
# 1x1 branches and concatenate outputs taken at different depths, so gradients reach the input
# along short and long paths; **MP** downsamples with a max-pool branch next to a strided-conv
# branch; **SPPCSPC** pools at three scales; **RepConv** and **IDetect** are explained below.
# Here is the E-ELAN block of the base model drawn from its wiring:

# %%
base = build_model("base", 80)
first = 4  # layers 4-11: the first E-ELAN block
fig, axis = plt.subplots(figsize=(9, 2.6))
for offset in range(8):
    index = first + offset
    layer = base.layers[index]
    name = type(layer).__name__
    kernel = f" {layer.conv.kernel_size[0]}x{layer.conv.kernel_size[0]}" if name == "Conv" else ""
    axis.add_patch(FancyBboxPatch((offset * 1.2, 0), 1.0, 0.6, boxstyle="round,pad=0.02",
                                  color="#cfe2f3" if name == "Conv" else "#f4cccc"))  # fmt: skip
    axis.text(
        offset * 1.2 + 0.5, 0.3, f"{index}\n{name}{kernel}", ha="center", va="center", fontsize=8
    )
    for source in base.sources[index]:
        if source != index - 1:  # draw the non-sequential connections as arcs
            start = (source - first) * 1.2 + 0.5 if source >= first else -0.5
            axis.annotate("", (offset * 1.2 + 0.5, 0.62), (start, 0.62),
                          arrowprops={"arrowstyle": "->", "connectionstyle": "arc3,rad=-0.35"})  # fmt: skip
axis.set_xlim(-0.8, 9.6)
axis.set_ylim(-0.2, 1.8)
axis.axis("off")
axis.set_title("E-ELAN (layers 4-11): two 1x1 branches, four 3x3 convs, concat of 4 taps, 1x1")
plt.show()
print("sources of the concat (layer 10):", base.sources[10])

# %% [markdown]
# **Parameters and FLOPs.** The counts equal the authors' implementation: their training form
# (IDetect head) and the fused form their scripts print after "Fusing layers...". GFLOPs are
# counted by our own hook on every convolution; a convolution's work grows with the number of
# output pixels, so 640 px costs exactly 100 times 64 px (the paper: 13.8 and 104.7 at 640).

# %%
tiny = build_model("tiny", 80)
for name, model in (("tiny", tiny), ("base", base)):
    params = count_parameters(model)
    print(f"{name}: {params:,} parameters (authors {AUTHORS_PARAMETERS[name]:,}), "
          f"{100 * count_flops(model, 64):.1f} GFLOPs at 640 px")  # fmt: skip
    assert params == AUTHORS_PARAMETERS[name]

# %% [markdown]
# **Re-parameterisation.** A `RepConv` trains as a 3x3 conv + a 1x1 conv (+ identity), each with
# BatchNorm, summed. Convolution is linear, so for inference the three branches collapse into one
# 3x3 convolution: the 1x1 kernel becomes the centre of a 3x3 one. The implicit-knowledge layers
# of the head (`ImplicitA` added before the last 1x1, `ImplicitM` multiplied after it) fold into
# that 1x1's weights and bias. `fuse()` does both and leaves the outputs unchanged:

# %%
name = "tiny" if SMOKE else "base"  # smoke mode (the tests) fuses the small one
model = tiny if SMOKE else base
images = torch.rand(1, 3, 128, 128)
model.eval()
with torch.no_grad():
    before = model(images)
    model.fuse()
    after = model(images)
print(f"{name}: max |fused - unfused| = {(after - before).abs().max():.2e}; parameters now "
      f"{count_parameters(model):,} (authors' fused: {AUTHORS_PARAMETERS_FUSED[name]:,})")  # fmt: skip
del base

# %% [markdown]
# ## 2. A custom dataset in Roboflow's YOLOv7 layout
#
# The seed project filmed three objects with a webcam, labelled them in Roboflow and exported
# "YOLO v7 PyTorch". The built-in `tabletop` set stands in for it: same files, same names,
# one `class cx cy w h` line per object, normalised.

# %%
num_images = 16 if SMOKE else 200
root = recipes.ensure("tabletop", num_images=num_images)
print((root / "data.yaml").read_text())
train_data = read_split(None, "train", num_images=num_images)
first_label = train_data.records[0].extra["source"]
print(first_label.split("/")[-1], "->", Path(first_label).read_text().splitlines()[:2])

# %% [markdown]
# **Augmentation.** Training images are mosaics of four scenes, with HSV jitter and flips; the
# boxes move with the pixels (`detseg.data.yolo_augment`, tested by hand-computed cases).

# %%
samples = YoloSamples(train_data, 320, augment=True, seed=0)
shown = []
for index in range(4):
    image, targets, _ = samples[index]
    picture = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    boxes = np.concatenate(
        [targets[:, 1:3] - targets[:, 3:5] / 2, targets[:, 1:3] + targets[:, 3:5] / 2], 1
    )
    shown.append(
        draw_detections(picture, boxes, targets[:, 0].astype(int), class_names=train_data.classes)
    )
flipped, _ = hflip(hsv_jitter(shown[0], hsv_gains(np.random.default_rng(1))), np.zeros((0, 4)))
plt.figure(figsize=(12, 3.5))
plt.imshow(image_grid([*shown, flipped], ncols=5))
plt.axis("off")
plt.show()

# %% [markdown]
# ## 3. Label assignment: which predictions learn each object?
#
# Step 1 (from YOLOv5): per level, anchors whose sides are within 4x of the object's are
# candidates, in the centre cell and the two neighbouring cells nearest the centre. Step 2
# (SimOTA, from YOLOX): each object keeps its *k* cheapest candidates, cost = class BCE +
# 3 x -log(IoU), with k = the sum of its 10 best IoUs. Here are the step-1 cells of one object:

# %%
record = train_data.records[0]
box = record.boxes[0]
target = torch.tensor([[0, record.labels[0], (box[0] + box[2]) / 2, (box[1] + box[3]) / 2,
                        box[2] - box[0], box[3] - box[1]]], dtype=torch.float32)  # fmt: skip
tiny_anchors = tiny.head.anchors
for level, stride in enumerate((8, 16, 32)):
    cand = find_candidates(
        target, tiny_anchors[level], stride, (math.ceil(240 / stride), math.ceil(320 / stride))
    )
    cells = sorted({(int(c), int(r)) for c, r in zip(cand.col, cand.row)})
    print(f"stride {stride}: anchors {sorted(set(cand.anchor.tolist()))}, cells (col, row) {cells}")

# %% [markdown]
# **Coarse-to-fine, lead guided.** A model with an auxiliary head (in the paper the P6 models;
# here `train.py --variant base --aux-head`) trains that head on *coarse* labels: the centre cell
# and all four neighbours, with k from the 20 best IoUs, both chosen by SimOTA from the **lead**
# head's predictions, and weights its loss 0.25. More positives for the earlier layers; the lead
# head keeps the precise ones. The coarse candidates of the same object (compare with above):

# %%
for level, stride in enumerate((8, 16, 32)):
    grid = (math.ceil(240 / stride), math.ceil(320 / stride))
    cand = find_candidates(target, tiny_anchors[level], stride, grid, offset=1.0)
    cells = sorted({(int(c), int(r)) for c, r in zip(cand.col, cand.row)})
    print(f"stride {stride}: coarse cells (col, row) {cells}")

# %% [markdown]
# ## 4. Training on the custom data
#
# `train.py` puts it together: the engine's loop with warm-up, a cosine learning rate, EMA of the
# weights, COCO mAP@0.5 and mAP@0.5:0.95 on the validation split every epoch, `best.pt` /
# `last.pt`. The last two epochs see no mosaic (`--close-mosaic 2`, from YOLOX): a mosaic shrinks
# each scene to 0.5-1x, so the model ends on single images at the scale it is evaluated on. The
# mosaic epochs also run at 0.8x the side (`--mosaic-scale 0.8`: 160 px here, 256 px in the full
# run), which costs about 0.7x per image on a CPU: progressive resizing, the bulk of training cheap
# and the end at the evaluation's size. With `--time-budget 10` the first epoch is timed and the
# whole schedule (cosine end, closing epochs) is fitted to the epochs that fit the 10 minutes
# (`yolov7_budget.py`). A short run here (the README has the full one and its numbers):

# %%
run_dir = settings.runs_root() / "03_yolo_v7_tutorial" / "lesson"
train = load_script(FOLDER, "train")
result = train.main([
    "--num-images", str(num_images), "--image-size", "64" if SMOKE else "192",
    "--epochs", "1" if SMOKE else "4", "--batch-size", "8", "--optimizer", "adamw",
    "--lr", "0.002", "--workers", "0", "--output-dir", str(run_dir),
])  # fmt: skip
for entry in result["history"]:
    print(f"epoch {entry['epoch']}: loss {entry['train']['loss']:.3f}, "
          f"mAP@0.5 {entry['eval']['map50']:.3f}, mAP@0.5:0.95 {entry['eval']['map']:.3f}")  # fmt: skip

# %% [markdown]
# Four epochs of 140 images (two mosaic epochs at 160 px, two without mosaic at 192 px; 72 steps)
# from random weights only start the detector: the mAP above stays near zero and the stream below
# finds few objects, if any, above its threshold. The README's full run (`train.py --time-budget
# 10`: 420 images, 320 px at the end) says how far ten minutes of CPU get from random weights.

# %% [markdown]
# ## 5. Export and real-time inference
#
# `export.py` fuses the model, writes ONNX (optionally with NMS in the graph) and checks ONNX
# Runtime against PyTorch on inputs other than the traced one; `detect.py` runs either backend on
# a webcam, a video, a folder or the built-in stream, with an FPS overlay.

# %%
exported = load_script(FOLDER, "export").main(
    ["--weights", str(run_dir / "best.pt"), "--repeats", "5"]
)
stream = load_script(FOLDER, "detect").main([
    "--weights", str(run_dir / "best.pt"), "--backend", "onnx", "--source", "tabletop",
    "--no-show", "--max-frames", "4", "--output", str(run_dir / "stream.mp4"),
])  # fmt: skip
print(f"ONNX parity {exported['max_abs_diff']:.1e}; stream: {stream['frames']} frames, "
      f"{stream['detections']} detections, written to {stream['output']}")  # fmt: skip

# %% [markdown]
# ## Summary
#
# - YOLOv7's P5 models are ELAN / E-ELAN stacks with MP downsampling, an SPP block and a PANet
#   neck; our layer lists reproduce the authors' parameter counts exactly.
# - RepConv and the implicit layers are training-time structure: `fuse()` removes them with
#   identical outputs.
# - The lead head's labels come from 3-cell candidates filtered by SimOTA's dynamic k; an
#   auxiliary head would learn from 5-cell "coarse" labels that the lead head's predictions choose.
#
# Exercises:
# 1. Train `--variant base` for one epoch and compare its step time with tiny's.
# 2. Turn mosaic off (`--mosaic 0`) and compare the validation mAP after the same epochs.
# 3. Record 30 frames with `record_images.py --source synthetic --every 5`, label them in
#    Label Studio, export YOLO and train on them with `--data-path`.

# %%
print(f"notebook run time: {time.perf_counter() - NOTEBOOK_START:.0f} s")
