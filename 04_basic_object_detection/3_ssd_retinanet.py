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
# # Lesson 3: SSD and RetinaNet, trained here without any download
#
# One-stage detectors put a fixed set of *default boxes* (anchors) over the image, and for each one
# predict class scores and four offsets that move it onto an object. SSD (Liu et al. 2016) takes them
# from six feature maps of decreasing size with scales from 0.2 to 0.95 of the image; SSDlite swaps
# its convolutions for depthwise-separable ones on MobileNetV3. RetinaNet (Lin et al. 2017) uses an
# FPN and the focal loss so the many easy background anchors do not drown the few objects.
#
# - **Framework**: PyTorch / torchvision builders, the repository's engine and COCO evaluator.
# - **Dataset**: built-in `shapes` in its COCO layout (`annotations/instances_{train,val}.json`).
# - **Run time**: the default runs are timed in the folder README; this notebook trains briefly.
#
# Previous: [lesson 2](2_single_object_detector.ipynb). Next: [lesson 4, OpenCV DNN and
# realtime](4_opencv_dnn_realtime.ipynb).

# %%
import time

import numpy as np
import torch
from detection_zoo import build_retinanet_small, build_ssdlite320, count_parameters
from detector_body import decode_boxes
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.image_list import ImageList

from detseg import settings
from detseg.scripts import load_script

NOTEBOOK_START = time.perf_counter()
SMOKE = settings.smoke_mode()  # DETSEG_SMOKE=1 (tests): one batch; numbers meaningless
if SMOKE:
    torch.set_num_threads(1)
OUT = settings.runs_root() / "04_basic_object_detection" / "lesson3"
train_detector = load_script(".", "train_detector")

# %% [markdown]
# ## SSD's default boxes, from scratch
#
# With m = 6 maps, map k has scale s_k = s_min + (s_max - s_min) (k - 1) / (m - 1), and at every
# cell a box per aspect ratio a: width s_k sqrt(a), height s_k / sqrt(a), plus one square box of
# scale sqrt(s_k s_{k+1}). torchvision's `DefaultBoxGenerator` clips the boxes' centre form to
# [0, 1] before converting to pixels; we do the same and compare on SSDlite320's maps.


# %%
def default_boxes(map_sizes, aspect_ratios, image_size, s_min=0.2, s_max=0.95):
    m = len(map_sizes)
    scales = [s_min + (s_max - s_min) * k / (m - 1) for k in range(m)] + [1.0]
    boxes = []
    for k, size in enumerate(map_sizes):
        shapes = [(scales[k], scales[k]), (np.sqrt(scales[k] * scales[k + 1]),) * 2]
        for ratio in aspect_ratios[k]:
            shapes += [(scales[k] * np.sqrt(ratio), scales[k] / np.sqrt(ratio)),
                       (scales[k] / np.sqrt(ratio), scales[k] * np.sqrt(ratio))]  # fmt: skip
        for i in range(size):
            for j in range(size):
                for w, h in shapes:
                    boxes.append([(j + 0.5) / size, (i + 0.5) / size, w, h])
    boxes = np.clip(np.array(boxes), 0, 1)
    xyxy = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
    return (xyxy * image_size).astype(np.float32)


ssd = build_ssdlite320(6, width_mult=0.5).eval()
images = torch.zeros(1, 3, 320, 320)
with torch.no_grad():
    features = list(ssd.backbone(images).values())
library = ssd.anchor_generator(ImageList(images, [(320, 320)]), features)[0].numpy()
map_sizes = [f.shape[-1] for f in features]
mine = default_boxes(map_sizes, [[2, 3]] * 6, 320)
np.testing.assert_allclose(mine, library, atol=1e-3)
print("feature maps", map_sizes, "->", len(mine), "default boxes, equal to torchvision's")

# %% [markdown]
# ## From offsets to boxes
#
# The head predicts (dx, dy, dw, dh) per default box, scaled by (10, 10, 5, 5): the centre moves by
# dx / 10 widths, the width is multiplied by exp(dw / 5). `detector_body.decode_boxes` is that,
# in numpy, the one copy every runtime of lesson 4 uses; here it is checked against torchvision.

# %%
offsets = torch.randn(len(library), 4)
expected = BoxCoder((10.0, 10.0, 5.0, 5.0)).decode_single(offsets, torch.from_numpy(library))
np.testing.assert_allclose(decode_boxes(offsets.numpy(), library, (10, 10, 5, 5)),
                           expected.numpy(), rtol=1e-5, atol=1e-3)  # fmt: skip

# %% [markdown]
# ## The two models
#
# SSDlite320 with its MobileNetV3 backbone at width 0.5 (CPU training; 1.0 is the published model)
# and a RetinaNet on ResNet-18 + FPN with 128 channels.

# %%
retina = build_retinanet_small(6)
print(
    f"SSDlite320 (width 0.5): {count_parameters(ssd) / 1e6:.2f} M parameters; "
    f"RetinaNet (ResNet-18 FPN): {count_parameters(retina) / 1e6:.2f} M"
)

# %% [markdown]
# ## Training
#
# The published SSDlite starts from an ImageNet-trained MobileNetV3; offline there is none, and
# from scratch 250 steps scored AP50 0.003. So `train_detector.py` first gives the trunk a head
# start, as lesson 2 did for its small backbone: it learns to classify shapes cut out of *other*
# built-in scenes (data seed 1, never the detector's; `ssdlite_pretraining.py`), 64 px crops that
# cost 1/16 of a scene each; the trunk is cached with the seconds it took, reported apart and, like
# ImageNet weights, outside the 10-minute `--time-budget`. Then SSDlite trains at 256 px (the scenes' own size) with AdamW,
# warm-up and a cosine schedule, and default boxes of 0.05-0.6 of the input instead of the paper's
# 0.2-0.95 (the built-in shapes are small: `--anchor-scales`); it evaluates COCO AP on the
# validation images after every epoch with the core evaluator and keeps `best.pt` by AP50. Before
# each evaluation it recomputes the BatchNorm statistics on 128 training images (`--precise-bn`):
# in a short run the running averages still remember their start, and a model that fit 16 images
# exactly scored AP50 0.02 on them with those averages, 1.00 with recomputed ones. Here a short run
# with a shorter pretraining (4 epochs); the README's run and how far it is from the bar: README.

# %%
quick = (["--dry-run", "--batch-size", "2"] if SMOKE
         else ["--epochs", "3", "--num-images", "300", "--pretrain-epochs", "4"])  # fmt: skip
result = train_detector.main([*quick, "--output-dir", str(OUT / "ssdlite320")])
print({k: round(v, 3) for k, v in result["eval"].items()})
assert set(result["eval"]) >= {"bbox_AP", "bbox_AP50"}

# %% [markdown]
# ## Summary
#
# - A one-stage detector is a dense grid of default boxes, a classifier and a regressor per box,
#   a decoder and NMS.
# - The default boxes and the decoding are a few lines; writing them out is what lets lesson 4 run
#   the network body on runtimes that do not know torchvision.
#
# ## Exercises
#
# 1. Train `--model retinanet_small` with the same budget and compare AP50 and AP75.
# 2. Try `--width-mult 1.0` (the published SSDlite320): is it worth the time on a CPU?
# 3. Train with `--backbone-pretraining none` (from scratch) and with `--pretrain-epochs 16`:
#    what does the trunk's head start give after the same 3 epochs?

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.0f} s")
