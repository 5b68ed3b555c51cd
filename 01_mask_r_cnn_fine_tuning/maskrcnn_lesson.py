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
# # Mask R-CNN explained: fine-tuning and training from scratch
#
# Mask R-CNN (He et al., 2017) finds every object in an image and gives each one a box, a class,
# a score and a pixel mask. This lesson takes the model apart on pedestrian photos, piece by piece:
# the **backbone + FPN** that turn an image into feature maps, the **RPN** that scores thousands of
# **anchors** and keeps a few hundred proposals, **RoIAlign** that cuts a fixed-size feature patch
# out of each proposal (written here by hand and checked against `torchvision.ops.roi_align`),
# and the **box and mask heads**. It then shows the two ways of getting a model for your own classes:
# **fine-tuning** a COCO-trained model by replacing its class-dependent heads (the torchvision
# tutorial), and **training from scratch** a slim Mask R-CNN small enough for a laptop CPU.
#
# - **Framework**: PyTorch / torchvision (`MaskRCNN`, `AnchorGenerator`, `MultiScaleRoIAlign`).
# - **Dataset**: the built-in `pedestrians` set, drawn on first use in the exact layout of the
#   Penn-Fudan database (`PNGImages/`, `PedMasks/`, `Annotation/`); the real PennFudanPed is read by
#   the same reader (`python train.py --data pennfudan`).
# - **Run time** (measured with `python -m detseg.notebooks build --execute`): 2 CPU cores, one
#   and a half to three minutes by machine (77 s on the Intel Xeon VM of 2026-12-06, 118-187 s in
#   four builds on the earlier AMD EPYC VM), most of it the short training in section 7; seconds
#   in smoke mode.

# %% [markdown]
# ## Setup
#
# The lesson's own modules sit next to this notebook: `models_maskrcnn` (the model builders),
# `maskrcnn_data` (where images come from), `maskrcnn_eval` (COCO evaluation) and the scripts.
# In smoke mode (`DETSEG_SMOKE=1`, used by the tests) the data has 16 images and training runs one
# step.

# %%
# isort: off
from detseg import devices  # first: on a Mac it enables the CPU fallback of MPS before torch loads

# isort: on
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torchvision
from mask_detail import DETAIL_KEYS
from maskrcnn_data import load_splits, torch_datasets
from matrix_nms import matrix_nms_decay
from models_maskrcnn import build_model, count_parameters, replace_heads
from slim_maskrcnn import SlimConfig, receptive_field, slim_mask_head
from torchvision.models.detection._utils import Matcher
from torchvision.ops import box_iou, roi_align

from detseg import settings
from detseg.data.imageio import read_label_png
from detseg.viz import draw_detections, image_grid

NOTEBOOK_START = time.perf_counter()
torch.manual_seed(0)
OUT = settings.runs_root() / "01_mask_r_cnn_fine_tuning" / "lesson"
OUT.mkdir(parents=True, exist_ok=True)
print(f"torch {torch.__version__} | torchvision {torchvision.__version__} | out: {OUT}")
print("device for training:", devices.describe_device(devices.select_device("auto")))

# %% [markdown]
# ## 1. The data: Penn-Fudan's layout
#
# Penn-Fudan stores one PNG per image and one *instance-id* PNG per image: pixel value 0 is the
# background, 1 the first pedestrian, 2 the second, and so on. The reader
# (`detseg.data.formats.pennfudan`) turns each id into a binary mask and the mask's extent into a
# box, exactly as the torchvision tutorial's `Dataset` does. `load_splits` holds out 20 % of the
# images for validation.

# %%
splits = load_splits("pedestrians")
record = splits.train.records[0]
id_map = read_label_png(record.extra["mask_file"])
print(f"{len(splits.train)} train / {len(splits.val)} val images, classes {splits.classes}")
print("instance ids in", record.extra["mask_file"].split("/")[-1], "->", np.unique(id_map))
print("boxes (xyxy pixels):\n", record.boxes)

# %% [markdown]
# `torch_datasets` wraps the records for torchvision: a float image `[3, H, W]` in [0, 1] and a
# target with `boxes`, `labels` (1 = person; 0 is reserved for the background) and `masks`
# `[N, H, W]`. Here are a few training images with their ground truth.

# %%
train_set, val_set = torch_datasets(splits, hflip=False)
pictures = []
for index in range(4):
    image, target = train_set[index]
    pictures.append(
        draw_detections(
            image.permute(1, 2, 0).numpy(),
            target["boxes"],
            target["labels"] - 1,
            masks=target["masks"].numpy().astype(bool),
            class_names=splits.classes,
        )
    )
plt.figure(figsize=(12, 4))
plt.imshow(image_grid(pictures, ncols=4))
plt.axis("off")
plt.show()

# %% [markdown]
# The hardest people for the mask head are the ones standing behind another: only slivers of them
# show. `train.py` therefore pastes 1-2 people of another *training* image into half of the
# training images (copy-paste augmentation, Ghiasi et al. 2021, `detseg.data.copy_paste`). The
# depth order is the street's: the person whose feet are lower stands nearer and hides the other,
# and every mask is cut down to what stays visible. The same four images, each with a paste:

# %%
pasted_set, _ = torch_datasets(splits, hflip=False, copy_paste=1.0)
pictures = []
for index in range(4):
    image, target = pasted_set[index]
    masks = target["masks"].numpy().astype(bool)
    pictures.append(
        draw_detections(
            image.permute(1, 2, 0).numpy(),
            target["boxes"],
            target["labels"] - 1,
            masks=masks,
            class_names=splits.classes,
        )
    )
print(
    "people per image without / with the paste:",
    [len(train_set[i][1]["boxes"]) for i in range(4)],
    [len(pasted_set[i][1]["boxes"]) for i in range(4)],
)
plt.figure(figsize=(12, 4))
plt.imshow(image_grid(pictures, ncols=4))
plt.axis("off")
plt.show()

# %% [markdown]
# ## 2. The model at a glance
#
# torchvision's `MaskRCNN` is five parts called in order: `transform` (resize and normalise),
# `backbone` (ResNet + FPN), `rpn` (anchors -> proposals), `roi_heads` (RoIAlign + box head + mask
# head) and, at inference, the post-processing inside `roi_heads` and `transform` (NMS, masks pasted
# back into the image). Below, parameters per part for the tutorial's ResNet-50 model (built on the
# `meta` device: shapes only, no memory) and for the slim model this lesson trains from scratch.

# %%
with torch.device("meta"):
    big = build_model("maskrcnn_resnet50_fpn", num_classes=2, weights="none")
slim = build_model("maskrcnn_slim", num_classes=2)
for name, model in (("maskrcnn_resnet50_fpn", big), ("maskrcnn_slim", slim)):
    parts = {part: count_parameters(getattr(model, part)) / 1e6 for part in ("backbone", "rpn")}
    parts["roi_heads"] = count_parameters(model.roi_heads) / 1e6
    print(f"{name:<22} " + "  ".join(f"{k} {v:5.2f} M" for k, v in parts.items()))

# %% [markdown]
# ## 3. Backbone + FPN
#
# A ResNet shrinks the image stage by stage (strides 4, 8, 16, 32) while its features get more
# abstract. The Feature Pyramid Network (Lin et al., 2017) adds a top-down path so that every level
# gets the deep features, upsampled, plus its own sharper ones through a lateral 1x1 convolution.
# Small objects are then found on the fine levels, large ones on the coarse levels, all with the
# same number of channels. The slim model feeds stages 2-4 (strides 8, 16, 32) to a 64-channel FPN;
# `pool` is a max-pooled extra level (stride 64) that only the RPN uses. Two more entries serve the
# mask head alone (section 6): `detail`, stage 1 (stride 4) through a 1x1 convolution, and `image`,
# the normalised input itself.

# %%
slim.eval()
image, target = val_set[0]
with torch.no_grad():
    images, _ = slim.transform([image])  # resized, normalised, padded to a multiple of 32
    features = slim.backbone(images.tensors)
print("input batch", tuple(images.tensors.shape))
for level, feature in features.items():
    stride = images.tensors.shape[-1] / feature.shape[-1]
    print(f"level {level:>4}: {tuple(feature.shape)}  stride {stride:.0f}")

# %% [markdown]
# ## 4. Anchors and the Region Proposal Network
#
# An *anchor* is a reference box placed at every cell of every FPN level, in a few sizes and
# aspect ratios (height / width). The RPN is a small convolution that predicts, for each anchor,
# an objectness score and four box deltas; the best few hundred boxes after NMS are the
# *proposals*. We write the anchors of one level by hand and compare them with torchvision's
# `AnchorGenerator` (note its convention: anchors are centred on the cell's top-left corner,
# `x * stride`, not on the cell centre).


# %%
def anchors_by_hand(grid_h: int, grid_w: int, stride: int, sizes, ratios) -> torch.Tensor:
    """Anchors [grid_h * grid_w * len(ratios) * len(sizes), 4] xyxy, location-major."""
    sizes, ratios = torch.tensor(sizes, dtype=torch.float32), torch.tensor(ratios)
    heights = (torch.sqrt(ratios)[:, None] * sizes[None, :]).reshape(-1)
    widths = (1 / torch.sqrt(ratios)[:, None] * sizes[None, :]).reshape(-1)
    base = (torch.stack([-widths, -heights, widths, heights], dim=1) / 2).round()  # [A, 4]
    ys, xs = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    centres = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4) * stride  # [HW, 1, 4]
    return (centres + base[None]).reshape(-1, 4)


generator = slim.rpn.anchor_generator
levels = [feature for name, feature in features.items() if name not in DETAIL_KEYS]  # the FPN's
all_anchors = generator(images, levels)[0]  # every level, concatenated
level0 = features["0"]
mine = anchors_by_hand(*level0.shape[-2:], 8, generator.sizes[0], generator.aspect_ratios[0])
torch.testing.assert_close(mine, all_anchors[: len(mine)])
print(f"{len(all_anchors)} anchors on {len(levels)} levels; level 0 equals torchvision's")

# %% [markdown]
# During training each anchor gets a label by its best IoU with a ground-truth box: >= 0.7 is
# positive, < 0.3 negative, in between ignored, and each object also claims its best anchor even
# below 0.7 (`allow_low_quality_matches`). The RPN's loss samples 256 of them per image, at most
# half positive. Drawn below: the positive anchors of one validation image, in the resized frame.

# %%
scale = images.image_sizes[0][0] / image.shape[1]
gt_boxes = target["boxes"] * scale
matcher = Matcher(0.7, 0.3, allow_low_quality_matches=True)
matched = matcher(box_iou(gt_boxes, all_anchors))  # [num_anchors]: object index, -1 or -2
positive = all_anchors[matched >= 0]
print(f"{len(positive)} positive anchors for {len(gt_boxes)} objects")
resized = torch.nn.functional.interpolate(image[None], size=images.image_sizes[0])[0]
plt.figure(figsize=(5, 4))
plt.imshow(draw_detections(resized.permute(1, 2, 0).numpy(), positive, thickness=1))
plt.axis("off")
plt.show()

# %% [markdown]
# ## 5. RoIAlign, by hand
#
# The heads need a fixed-size input per proposal whatever its size. RoIAlign (Mask R-CNN's fix of
# RoIPool) divides the box into `output_size x output_size` bins and averages
# `sampling_ratio x sampling_ratio` bilinearly interpolated samples per bin, without rounding
# any coordinate. torchvision's `MultiScaleRoIAlign` first picks the FPN level by the box size
# (level = 4 + log2(sqrt(area) / 224), clamped). Below, the computation for one box on one map,
# checked against `torchvision.ops.roi_align` with the settings Mask R-CNN uses
# (`sampling_ratio=2`, `aligned=False`).


# %%
def bilinear(feature: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sample feature [C, H, W] at float points (y, x) [P] -> [C, P]; zero outside the map."""
    height, width = feature.shape[-2:]
    outside = (y < -1) | (y > height) | (x < -1) | (x > width)
    y, x = y.clamp(min=0), x.clamp(min=0)
    y0, x0 = y.floor().long().clamp(max=height - 1), x.floor().long().clamp(max=width - 1)
    y1, x1 = (y0 + 1).clamp(max=height - 1), (x0 + 1).clamp(max=width - 1)
    y = torch.where(y0 >= height - 1, y0.float(), y)  # at the last row / column: no blend
    x = torch.where(x0 >= width - 1, x0.float(), x)
    dy, dx = y - y0, x - x0
    value = (
        feature[:, y0, x0] * (1 - dy) * (1 - dx)
        + feature[:, y0, x1] * (1 - dy) * dx
        + feature[:, y1, x0] * dy * (1 - dx)
        + feature[:, y1, x1] * dy * dx
    )
    return torch.where(outside, torch.zeros_like(value), value)


def roi_align_by_hand(feature, box, output_size: int, spatial_scale: float, sampling_ratio: int):
    """RoIAlign of one xyxy box (input pixels) on feature [C, H, W] -> [C, out, out]."""
    x_start, y_start, x_end, y_end = (box * spatial_scale).tolist()
    bin_h = max(y_end - y_start, 1.0) / output_size
    bin_w = max(x_end - x_start, 1.0) / output_size
    offsets = (torch.arange(sampling_ratio) + 0.5) / sampling_ratio  # inside one bin
    ys = y_start + (torch.arange(output_size)[:, None] + offsets[None, :]).reshape(-1) * bin_h
    xs = x_start + (torch.arange(output_size)[:, None] + offsets[None, :]).reshape(-1) * bin_w
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # [out*s, out*s]
    samples = bilinear(feature, grid_y.reshape(-1), grid_x.reshape(-1))
    samples = samples.reshape(-1, output_size, sampling_ratio, output_size, sampling_ratio)
    return samples.mean(dim=(2, 4))


feature_map = features["0"][0]  # stride 8
box = gt_boxes[0]
ours = roi_align_by_hand(feature_map, box, 7, 1 / 8, 2)
theirs = roi_align(feature_map[None], [box[None]], 7, spatial_scale=1 / 8, sampling_ratio=2)[0]
torch.testing.assert_close(ours, theirs)
print("RoIAlign by hand == torchvision.ops.roi_align:", tuple(ours.shape))

# %% [markdown]
# ## 6. The box and mask heads
#
# The box head maps each 7 x 7 RoI feature to a vector (two fully connected layers: of 256 in the
# slim model, of 1024 in the ResNet-50 model); the box
# *predictor* turns it into class scores `[R, C]` and class-specific box deltas `[R, 4C]`. The mask
# head works on 14 x 14 RoI features with 3x3 convolutions, and the mask predictor upsamples to
# 28 x 28 logits, one mask per class. Its training target is the ground-truth mask cut out of the
# proposal box with the same RoIAlign and resized to 28 x 28, what torchvision's
# `project_masks_on_boxes` does.

# %%
masks = target["masks"][:1].float()[:, None]  # [1, 1, H, W]
proposal = target["boxes"][:1] + torch.tensor([[-6.0, -4.0, 5.0, 8.0]])  # a slightly wrong box
mask_target = roi_align(masks, [proposal], 28, spatial_scale=1.0)[0, 0]  # [28, 28] in [0, 1]
head_out = slim.roi_heads.box_head(torch.zeros(5, 64, 7, 7))
scores, deltas = slim.roi_heads.box_predictor(head_out)
print(
    "box head",
    tuple(head_out.shape),
    "-> scores",
    tuple(scores.shape),
    "deltas",
    tuple(deltas.shape),
)
plt.figure(figsize=(3, 3))
plt.imshow(mask_target, cmap="gray")
plt.title("28 x 28 mask target")
plt.axis("off")
plt.show()

# %% [markdown]
# **How much of the RoI does the mask head see?** When two pedestrians overlap, the proposal of
# the one behind also holds much of the one in front, and the mask head must label each of the
# 14 x 14 cells "my person" or not. A cell can only decide from what its convolutions see.
# `receptive_field` backpropagates from the centre cell and marks every input cell that changes
# it: two plain 3 x 3 convolutions (torchvision's lighter heads) see 5 x 5 cells; four of
# dilation 2 reach across the RoI but only every other cell (the "gridding" of dilated stacks);
# rates (1, 2, 4, 1), the slim model's head, see all of it. The slim head also gets two extra
# input channels with each cell's x and y inside the RoI (`RoICoordinates`, CoordConv), so it
# knows where the middle of its proposal is. On the built-in pedestrians, 16 epochs each, the
# whole-RoI head raised segm AP50 from 0.75 (two plain convolutions) to 0.80; the coordinates
# added no gain that one run each can show (0.804 without, 0.807 with; README "Results").

# %%
designs = {"2 convs": ((64, 64), ()), "4 convs, rate 2": ((64,) * 4, (2, 2, 2, 2))}
designs["4 convs, rates 1-2-4-1"] = ((64,) * 4, (1, 2, 4, 1))
figure, axes = plt.subplots(1, 3, figsize=(9, 3))
for axis, (name, (layers, rates)) in zip(axes, designs.items()):
    config = SlimConfig(mask_layers=layers, mask_dilations=rates, mask_coords=False)
    seen = receptive_field(slim_mask_head(config, None), channels=config.fpn_channels)
    axis.imshow(seen, cmap="gray", vmin=0, vmax=1)
    axis.set_title(f"{name}: {int(seen.sum())} cells", fontsize=9)
    axis.axis("off")
plt.show()
print("slim model's mask head:", slim.roi_heads.mask_head)

# %% [markdown]
# **What a stride of 8 cannot draw.** Seeing the whole RoI is not enough when the RoI's cells
# are coarse: the FPN level the mask head reads has a stride of 8, so a person 45 px wide spans
# about 6 cells, and the slivers of a person standing behind another fall between them. Below,
# for every validation person, the 28 x 28 target cut from the pixels is compared with the best
# a stride-8 head could draw: the same mask averaged to the stride-8 grid, pooled 14 x 14 and
# upsampled to 28 x 28. Even this perfect coarse prediction misses a person behind another by
# much more than a person alone, and some fall below IoU 0.5 (a miss for AP50) before any learning.
# Hence the slim model's **detail branch** (`mask_detail.py`, `--slim mask_detail=16`, the
# default): the head's output is upsampled to 28 x 28 and refined there by two convolutions that
# also see the RoI's own pixels and ResNet's stride-4 stage, each pooled on the 28 x 28 grid.


# %%
def coarse_mask_iou(mask: torch.Tensor, box: torch.Tensor, stride: int) -> float:
    """IoU of a mask's 28 x 28 target with what a ``stride`` grid keeps of it (both > 0.5)."""
    mask = mask.float()[None, None]  # [1, 1, H, W]
    target = roi_align(mask, [box[None]], 28, 1.0, 2)[0, 0] > 0.5
    cells = 14 if stride == 8 else 28  # the RoI grid of the slim head / of the detail branch
    pooled = roi_align(torch.nn.functional.avg_pool2d(mask, stride), [box[None]], cells, 1 / stride)
    drawn = torch.nn.functional.interpolate(pooled, size=28, mode="bilinear")[0, 0] > 0.5
    return float((target & drawn).sum() / (target | drawn).sum())


kept = {("alone", 8): [], ("alone", 4): [], ("behind", 8): [], ("behind", 4): []}
for index in range(len(val_set)):
    _, target = val_set[index]
    boxes = target["boxes"]
    overlap = box_iou(boxes, boxes)
    for person in range(len(boxes)):
        others = [k for k in range(len(boxes)) if k != person]
        behind = any(overlap[person, k] > 0.05 and boxes[k, 3] > boxes[person, 3] for k in others)
        for stride in (8, 4):
            iou = coarse_mask_iou(target["masks"][person], boxes[person], stride)
            kept[("behind" if behind else "alone", stride)].append(iou)
for (kind, stride), ious in kept.items():
    ious = np.array(ious)
    print(
        f"{kind:>6}, stride {stride}: {len(ious)} people, mean IoU {ious.mean():.2f}, "
        f"below 0.5: {int((ious < 0.5).sum())}"
    )

# %% [markdown]
# **Which detections are duplicates?** At inference the box head's NMS drops a detection whose
# box overlaps a higher-scored one by more than a threshold. That cannot tell a second detection
# of the same person from a person standing behind another: both boxes overlap a lot. Their masks
# tell them apart. The slim model therefore keeps box NMS loose (IoU 0.8) and then applies
# **Matrix NMS** (SOLOv2, Wang et al. 2020; `matrix_nms.py`) to the pasted masks: each score is
# multiplied by `exp(-(iou^2 - c^2) / sigma)` for its largest mask overlap `iou` with a
# higher-scored detection, where `c` forgives an overlap that the higher one itself already has.
# Three masks: a person, a duplicate of it, and a person right behind it. Box NMS at the old
# threshold of 0.6 would have deleted both the duplicate and the person behind.

# %%
person = torch.zeros(40, 30, dtype=torch.bool)
person[5:40, 8:20] = True
duplicate = torch.zeros_like(person)
duplicate[6:40, 8:21] = True  # nearly the same pixels
behind = torch.zeros_like(person)  # someone right behind: a head above, slivers either side
behind[2:5, 11:17] = behind[5:36, 7:8] = behind[5:36, 20:21] = True
boxes = torch.tensor([[8.0, 5, 20, 40], [8, 6, 21, 40], [7, 2, 21, 36]])  # each mask's extent
decay = matrix_nms_decay(torch.stack([person, duplicate, behind]), torch.ones(3), sigma=0.5)
print("box IoU with the first:", [round(float(v), 2) for v in box_iou(boxes[:1], boxes)[0]])
print("score factor:          ", [round(float(v), 2) for v in decay])

# %% [markdown]
# ## 7. Fine-tuning vs training from scratch
#
# **Fine-tuning** (the torchvision tutorial) starts from the detector trained on COCO's 80 classes
# and replaces only the layers whose shape depends on the number of classes: the box predictor and
# the mask predictor. Everything that learned to see (backbone, FPN, RPN, box-head MLP, mask-head
# convolutions) keeps its weights, so a few hundred images and a few epochs suffice. Here is how much
# of the ResNet-50 model starts over:

# %%
with torch.device("meta"):
    coco_model = build_model("maskrcnn_resnet50_fpn", num_classes=91, weights="none")
    total = count_parameters(coco_model)
    replace_heads(coco_model, num_classes=2)
new = count_parameters(coco_model.roi_heads.box_predictor)
new += count_parameters(coco_model.roi_heads.mask_predictor)
print(f"new: {new / 1e6:.2f} M of {total / 1e6:.1f} M parameters ({100 * new / total:.1f} %)")
print(coco_model.roi_heads.box_predictor)

# %% [markdown]
# With the COCO file (170 MB, fetched once into torch's cache, SHA-256 checked) the same script
# fine-tunes it: `python train.py --model maskrcnn_resnet50_fpn --weights coco --image-size 512 800`.
# On a CPU that is about ten seconds per step, which is why the seed tutorial called it "extremely
# slow on machines without a proper CUDA". **Training from scratch** needs no download and is
# what runs here: the slim model (ResNet-18 FPN with 64 channels, heads a quarter of the size,
# 256 px images, fewer proposals) learns the pedestrians in minutes on two cores. The run below uses
# the lesson's quick path (`tour.py`): four epochs at 192 px, one and a half to three minutes by
# machine, enough for a bbox AP50 above 0.5 (0.82 on 2026-12-06); the README gives the default run
# (`python train.py`: 16 epochs at 256 px in 9 minutes on that day's machine, bbox AP50 0.97,
# segm AP50 0.86 on the 34 validation images and 0.86-0.88 on 300 fresh scenes).

# %%
from tour import QUICK_ARGS, SMOKE_ARGS  # noqa: E402
from train import main as train_main  # noqa: E402

argv = [*QUICK_ARGS, "--output-dir", str(OUT / "train")]
result = train_main(argv + (SMOKE_ARGS if settings.smoke_mode() else []))
print(f"trained in {result['train_time_s']:.0f} s")
for name, value in result["eval"].items():
    print(f"{name:<12} {value:.3f}")

# %% [markdown]
# The engine wrote checkpoints, `metrics.json` and the training curves; `train.py` also drew its
# predictions on validation images (masks, boxes, class and score above 0.5).

# %%
figure, axes = plt.subplots(1, 2, figsize=(14, 5))
# the engine's run folder (a --dry-run in smoke mode writes into train/dry-run)
pictures = (Path(result["output_dir"]) / "training_curves.png", OUT / "train" / "predictions.png")
for axis, picture in zip(axes, pictures):
    axis.imshow(plt.imread(picture))
    axis.axis("off")
plt.show()

# %% [markdown]
# ## 8. Reading the COCO numbers
#
# `bbox_AP50` is the area under the precision-recall curve when a detection counts as correct at
# IoU >= 0.5 with an unmatched ground-truth box; `bbox_AP` averages that over IoU thresholds
# 0.50, 0.55, ..., 0.95, so it rewards tight boxes. `segm_*` are the same with mask IoU instead of
# box IoU. They come from `detseg.metrics.evaluate_coco`, which gives pycocotools' numbers
# (the folder's tests check it on this model's predictions). Export to ONNX and the comparison with
# the eager model are in `export.py`.

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.0f} s")

# %% [markdown]
# ## Summary
#
# - Mask R-CNN = backbone + FPN (features at several strides), RPN (anchor scores and deltas ->
#   proposals), RoIAlign (fixed-size patches without rounding), box head (class + refined box) and
#   mask head (a 28 x 28 mask per class), all trained together with five losses.
# - Fine-tuning replaces only the class-dependent predictors of a COCO model; training from scratch
#   is possible on a CPU when the model, the images and the number of proposals are small.
# - Copy-paste augmentation multiplies the occlusions a model sees at no cost per step; it raised
#   bbox AP50 here (0.96 vs 0.92 in the README's runs) but not the masks of people behind another.
# - A mask can be no finer than the features it is drawn from: the detail branch (the RoI's
#   pixels and a stride-4 map at 28 x 28) made the masks sharper (segm AP 0.40 vs 0.32 on 300
#   fresh scenes), and Matrix NMS on the masks, instead of a strict box NMS, keeps a person behind
#   another while it still pushes duplicates down the ranking.
# - From scratch, watch whether the model is still learning when the schedule ends: at 12 epochs
#   the training loss still fell in every epoch; 16 (in 9 of the 10 minutes) raised segm AP on
#   300 fresh scenes from 0.44 to 0.48-0.50.
#
# ## Exercises
#
# 1. Train with `--slim "aspect_ratios=[0.5,1.0,2.0]"` (COCO's ratios) instead of the tall
#    ratios chosen for pedestrians. How do the number of positive anchors (section 4) and the
#    final `bbox_AP` change?
# 2. Replace `roi_align` by `torchvision.ops.roi_pool` in section 6's mask target and compare the
#    two 28 x 28 targets: where does the quantisation show?
# 3. Train on the multi-class built-in data (`python train.py --data shapes`) and read the per-class
#    AP with `detseg.metrics.evaluate_coco(...).per_class_ap`.
# 4. With internet access, fine-tune `maskrcnn_mobilenet_v3_fpn --weights coco` on the real
#    PennFudanPed (`--data pennfudan`) and compare its speed and AP with the slim model.
# 5. Train once with `--slim mask_detail=0 --slim mask_nms_sigma=0 --slim box_nms_thresh=0.6`
#    and score both models with `python evaluate.py --data-seed 7 --num-images 300 --split all`:
#    which group of people (alone, in front, behind another) do the two additions help?
