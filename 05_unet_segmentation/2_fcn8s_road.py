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
# # Lesson 2: FCN-8s on road scenes
#
# The fully convolutional network (Long, Shelhamer and Darrell, 2015) turned an image classifier into
# a segmenter: the classifier's fully connected layers become convolutions, so the network outputs a
# coarse *map* of class scores instead of one vector; 1x1 convolutions score two earlier, finer
# feature maps too, and transposed convolutions (initialised as bilinear interpolation) bring the
# scores back to full resolution. This lesson proves each of those pieces in code, then trains
# FCN-8s to separate road from everything else.
#
# - **Framework**: PyTorch.
# - **Dataset**: the built-in `road` data, in the layout of the
#   [KITTI road benchmark](https://www.cvlibs.net/datasets/kitti/eval_road.php)
#   (`data_road/training/image_2`, colour ground truth in `gt_image_2`), at 160 x 480 pixels instead
#   of 375 x 1242; the real download is read by the same reader (folder README).
# - **Run time**: about 7 minutes on an idle 2-core CPU, most of it the 8 training epochs (the
#   last cell prints the time of the run shown, on a machine shared with other work); no GPU
#   needed.
#
# Previous: [lesson 1, U-Net on salt](1_unet_salt.ipynb). Next:
# [lesson 3, PSPNet vs U-Net on street scenes](3_pspnet_vs_unet_street.ipynb).

# %% [markdown]
# ## Setup
#
# The VGG16 encoder at full width has 134 M weights and costs about 0.5 s per image and step on two
# CPU cores; with no ImageNet weights to start from it would also need far more data than 217 road
# images. So the CPU default keeps the exact topology at a quarter of the channels (`width=0.25`,
# 1/16 of the multiply-adds) and trains it from scratch.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from fcn8s import POOL3, POOL4, POOL5, FCN8s, bilinear_kernel
from seg_training import TASKS, fit, make_datasets
from segmentation_models import build_model, count_multiply_adds, count_parameters, predict_logits
from torch import nn
from torchvision.models import VGG16_Weights

from detseg import settings
from detseg.data import recipes
from detseg.data.formats import kitti_road
from detseg.data.imageio import read_image
from detseg.data.torch_datasets import image_to_tensor
from detseg.data.transforms import Normalize
from detseg.devices import seed_everything, select_device
from detseg.engine import make_loader
from detseg.metrics.segmentation import SegmentationMeter
from detseg.pretrained import cache_path, weights_url
from detseg.viz import draw_segmentation, image_grid

NOTEBOOK_START = time.perf_counter()
SMOKE = settings.smoke_mode()
if SMOKE:  # the tests run several notebooks side by side; extra threads would only wait
    torch.set_num_threads(1)
EPOCHS = 1 if SMOKE else 8
WIDTH = 0.25
DEVICE = select_device("auto")
OUT = settings.runs_root() / "05_unet_segmentation" / "lesson2"
ROAD = [(0, 0, 0), (255, 0, 255)]  # not road (left unpainted), road in KITTI's magenta
seed_everything(0)
print(f"device: {DEVICE} | torch threads: {torch.get_num_threads()} | smoke mode: {SMOKE}")

# %% [markdown]
# ## 1. The data, in the KITTI road layout
#
# KITTI stores the ground truth as colour images: magenta = road, red = not road, black = outside
# the evaluated area (ignored). `kitti_road.colors_to_labels` maps them to class indices.

# %%
folder = recipes.ensure("road")
training = folder / "data_road" / "training"
names = sorted(p.name for p in (training / "image_2").iterdir())
print(
    f"{len(names)} training images, e.g. {names[:3]}; ground truth e.g. {sorted(p.name for p in (training / 'gt_image_2').iterdir())[:2]}"
)
image = read_image(training / "image_2" / names[0])
gt_colours = read_image(training / "gt_image_2" / kitti_road.gt_name(names[0].removesuffix(".png")))
labels = kitti_road.colors_to_labels(gt_colours)
print(
    f"image {image.shape}, ground truth colours {np.unique(gt_colours.reshape(-1, 3), axis=0).tolist()}"
)
print(f"labels {np.unique(labels).tolist()} (0 not road, 1 road, 255 ignored)")
plt.figure(figsize=(12, 2.6))
plt.imshow(image_grid([image, gt_colours, draw_segmentation(image, labels, ROAD)], ncols=3))
plt.axis("off")
plt.show()

# %% [markdown]
# ## 2. FCN-8s, piece by piece
#
# The whole network at a glance: VGG16's pools, its fully connected layers turned into
# convolutions, class scores at 1/32 and the two skips that bring pool4 and pool3 back in.

# %%
from detseg.viz import diagrams  # noqa: E402

diagrams.show(diagrams.fcn8s_figure())

# %% [markdown]
# ### Fully connected = convolution
#
# VGG16's first classifier layer reads the 512 x 7 x 7 pool5 map as one flat vector. The same
# weights reshaped to a 7 x 7 convolution give the same numbers on a 7 x 7 map, and on a larger map
# they slide: one classification per position, i.e. a coarse score map. (Small channel counts here;
# `load_vgg16_imagenet` does this with the real 4096 x 25088 matrix.)
#
# This demo convolution is unpadded, as the classifier was: a 7 x 7 window fits `(H - 6) x (W - 6)`
# times, so a 10 x 20 map gives 4 x 14 scores, and an input smaller than 7 x 7 at pool5 (224 pixels)
# gives none. The paper handled that by padding every input image by 100 pixels and cropping the
# output back to the image. Our `fcn8s.py` instead pads `fc6` by 3 (so its map keeps pool5's size)
# and pads the input to a multiple of 32 (so pool5, pool4 and pool3 line up exactly after the 2x
# upsamplings), then crops the padding off the output: same weights, other borders.

# %%
torch.manual_seed(0)
linear = nn.Linear(16 * 7 * 7, 32)
conv = nn.Conv2d(16, 32, 7)
with torch.no_grad():
    conv.weight.copy_(linear.weight.view(32, 16, 7, 7))  # [out, in*7*7] -> [out, in, 7, 7]
    conv.bias.copy_(linear.bias)
pool5 = torch.rand(2, 16, 7, 7)
torch.testing.assert_close(conv(pool5)[:, :, 0, 0], linear(pool5.flatten(1)))
slid = conv(torch.rand(1, 16, 10, 20))
assert slid.shape == (1, 32, 10 - 6, 20 - 6)  # unpadded: one score per 7 x 7 window
print("Linear on a flat 7x7 map == 7x7 convolution; on a 10x20 map:", tuple(slid.shape))

# %% [markdown]
# ### Transposed convolutions that start as bilinear interpolation
#
# A transposed convolution with stride `f`, kernel `k` and padding `p` turns `n` cells into
# `(n - 1) f + k - 2p`. With `k = 2f` that is `n f + f - 2p`: exactly `f` times larger only with
# padding `p = f / 2` (2x: kernel 4, padding 1; 8x: kernel 16, padding 4), which is what
# `fcn8s._upsample` uses. With the kernel of `bilinear_kernel` it *is* bilinear interpolation (away
# from the border), and training can then improve on it. The 4 x 4 kernel for 2x upsampling, the
# sizes with and without that padding, and the check against `F.interpolate`:

# %%
print(bilinear_kernel(1, 1, 4)[0, 0])
scores = torch.rand(1, 2, 5, 15)
for padding in (0, 4):  # the output size only: any 16 x 16 kernel will do
    size = F.conv_transpose2d(scores, torch.zeros(2, 2, 16, 16), stride=8, padding=padding).shape
    print(f"stride 8, kernel 16, padding {padding}: 5 x 15 -> {tuple(size[-2:])}")
up8 = nn.ConvTranspose2d(2, 2, 16, stride=8, padding=4, bias=False)
with torch.no_grad():
    up8.weight.copy_(bilinear_kernel(2, 2, 16))
    learned, reference = up8(scores), F.interpolate(scores, scale_factor=8, mode="bilinear")
torch.testing.assert_close(learned[..., 8:-8, 8:-8], reference[..., 8:-8, 8:-8])
assert learned.shape[-2:] == (5 * 8, 15 * 8)
print(
    f"8x transposed convolution {tuple(learned.shape)} == bilinear interpolation inside the border"
)

# %% [markdown]
# ### Two skips: pool4 and pool3
#
# The class scores at 1/32 resolution are too coarse for road edges. FCN-8s upsamples them 2x and
# adds 1x1-convolution scores of pool4 (1/16), upsamples again and adds scores of pool3 (1/8), then
# upsamples 8x. The shapes for one 160 x 480 road image:

# %%
model = build_model("fcn8s", num_classes=2, width=WIDTH)
with torch.no_grad():
    x = torch.zeros(1, 3, 160, 480)
    pool3 = model.features[: POOL3 + 1](x)
    pool4 = model.features[POOL3 + 1 : POOL4 + 1](pool3)
    pool5 = model.features[POOL4 + 1 : POOL5 + 1](pool4)
    fc7 = model.fc7(F.relu(model.fc6(pool5)))
    for name, value in [("pool3", pool3), ("pool4", pool4), ("pool5", pool5), ("fc7", fc7)]:
        print(f"{name:<6} {tuple(value.shape)}")  # [N, C, H / stride, W / stride]
    output = model(x)  # one forward pass, as before: dropout draws random numbers
    print(f"score_pool3 {tuple(model.score_pool3(pool3).shape)} | output {tuple(output.shape)}")
    assert output.shape == (1, 2, 160, 480) and pool3.shape[-2:] == (160 // 8, 480 // 8)

# %% [markdown]
# Full width is VGG16 exactly; counting multiply-adds with forward hooks
# (`segmentation_models.count_multiply_adds`, on the `meta` device, so nothing is allocated) shows
# what `width=0.25` saves.


# %%
with torch.device("meta"):
    candidates = {
        "width 1 (VGG16)": FCN8s(num_classes=2),
        f"width {WIDTH}": FCN8s(num_classes=2, width=WIDTH),
    }
for name, net in candidates.items():
    print(
        f"{name:<16} {count_parameters(net) / 1e6:7.2f} M parameters, {count_multiply_adds(net, (160, 480)) / 1e9:6.2f} G multiply-adds per image"
    )

# %% [markdown]
# ## 3. ImageNet weights
#
# At full width the encoder can start from torchvision's ImageNet VGG16 (`--pretrained pretrained`
# in `train.py`), which is how the paper trains. The weights are a 528 MB download, hash-checked;
# this notebook never downloads them, it only says whether they are in the cache.

# %%
from pathlib import Path  # noqa: E402

vgg_file = cache_path(VGG16_Weights.IMAGENET1K_V1)
shown = str(vgg_file).replace(str(Path.home()), "~")  # the cache lies in your home folder
if vgg_file.is_file():
    print(f"cached: {shown}")
    print("build_model('fcn8s', num_classes=2, width=1.0, weights='pretrained') loads it")
else:
    print("not cached; train.py --pretrained pretrained --width 1 downloads")
    print(f"{weights_url(VGG16_Weights.IMAGENET1K_V1)} to {shown}")

# %% [markdown]
# ## 4. Training from scratch
#
# Every pair is resized to 160 x 480 (real KITTI images are 375 x ~1242) and kept in memory after the
# first epoch; 20 % of the labelled images are held out. The loss is cross-entropy over two classes
# with ignored pixels left out.

# %%
train_set, val_set, source = make_datasets(TASKS["road"])
print(
    f"train {len(train_set)} images, validation {len(val_set)} images, size {TASKS['road'].image_size}"
)
result = fit(
    model,
    train_set,
    val_set,
    task=TASKS["road"],
    classes=source.classes,
    device=DEVICE,
    epochs=EPOCHS,
    batch_size=4,
    lr=1e-3,
    output_dir=OUT / "run",
    progress=False,
    config={"model": "fcn8s", "width": WIDTH, "num_outputs": 2, "binary": False, "dataset": "road"},
)
print(f"{'epoch':>5} {'loss':>7} {'IoU road':>9} {'pixel acc':>10} {'minutes':>8}")
for entry in result["history"]:
    metrics = entry["eval"]
    print(
        f"{entry['epoch']:>5} {entry['train']['loss']:>7.4f} {metrics['iou_road']:>9.4f} {metrics['pixel_accuracy']:>10.4f} {metrics['minutes']:>8.2f}"
    )

# %% [markdown]
# ## 5. Evaluation
#
# KITTI ranks road methods by the F-measure of the road class (precision and recall of road pixels);
# for a single operating point that is the Dice coefficient of the road class. Both come from one
# confusion matrix over the validation pixels.

# %%
meter = SegmentationMeter(num_classes=2)
loader = make_loader(val_set, 4, False, 0, 0)
for images, masks in loader:
    meter.update(predict_logits(model, images.to(DEVICE)).argmax(1).cpu(), masks)
scores = meter.compute()
cm = np.array(scores["confusion_matrix"])  # rows: truth, columns: prediction
tp, fp, fn = cm[1, 1], cm[0, 1], cm[1, 0]
precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
f_measure = 2 * tp / max(2 * tp + fp + fn, 1)  # = 2 P R / (P + R), without dividing by zero
print(
    f"road IoU {scores['iou'][1]:.4f} | road F-measure {f_measure:.4f} (precision {precision:.4f}, "
    f"recall {recall:.4f}) | pixel accuracy {scores['pixel_accuracy']:.4f}"
)
np.testing.assert_allclose(f_measure, scores["dice"][1])  # the Dice of the road class
if precision + recall > 0:
    np.testing.assert_allclose(f_measure, 2 * precision * recall / (precision + recall))

# %% [markdown]
# ## 6. Predictions
#
# Validation images (truth, then prediction) and unlabelled images of the `testing` split. Shadows
# across the road and cars at its edge are where errors gather.

# %%
shown = []
for index in range(min(3, len(val_set))):
    images, masks = val_set[index]
    image, _ = source.load(source.records[val_set.indices[index]])
    predicted = predict_logits(model, images[None].to(DEVICE)).argmax(1)[0].cpu()
    shown += [draw_segmentation(image, masks, ROAD), draw_segmentation(image, predicted, ROAD)]
testing = recipes.load("road", split="test")
for record in testing.records[:2]:
    image, _ = testing.load(record)
    normalized, _ = Normalize()(image, {})  # as in training: ImageNet mean and std
    predicted = (
        predict_logits(model, image_to_tensor(normalized)[None].to(DEVICE)).argmax(1)[0].cpu()
    )
    shown += [image, draw_segmentation(image, predicted, ROAD)]
plt.figure(figsize=(12, 11))
plt.imshow(image_grid(shown, ncols=2))
plt.axis("off")
plt.title("validation: truth | prediction, then testing: image | prediction")
plt.show()

# %% [markdown]
# ## Summary
#
# - Convolutionalising the classifier turns "what is in this image" into "what is at each position".
# - Skips from pool4 and pool3 add back the resolution the encoder threw away; transposed
#   convolutions initialised as bilinear interpolation start as plain upsampling and learn from there.
# - The quarter-width FCN-8s trains from scratch on a CPU in minutes and separates road from the
#   rest; the README gives the measured numbers and the command for the full-width ImageNet version.
#
# ## Exercises
#
# 1. Build FCN-32s, without both skips: subclass `FCN8s`, copy its `forward` and replace the last
#    three lines by
#    `return F.interpolate(self.score_fr(fc), scale_factor=32, mode="bilinear")[..., :height, :width]`
#    (FCN-32s upsamples the 1/32 scores in one step). Train it as in section 4 with
#    `model = FCN32s(num_classes=2, width=WIDTH)`: how much road IoU do the skips buy, and where?
# 2. Freeze the transposed convolutions at their bilinear initialisation
#    (`for up in (model.upscore2, model.upscore_pool4, model.upscore8): up.requires_grad_(False)`
#    before `fit`). Does training suffer?
# 3. Train at full width from ImageNet weights (a GPU helps):
#    `python 05_unet_segmentation/train.py --dataset road --width 1 --pretrained pretrained`, and
#    compare with scratch.
# 4. KITTI evaluates in a bird's-eye view. Why would a per-pixel F-measure in the image favour
#    methods that are good near the camera?
#
# Next: [lesson 3, PSPNet vs U-Net on street scenes](3_pspnet_vs_unet_street.ipynb).

# %%
print(f"run time of this notebook: {time.perf_counter() - NOTEBOOK_START:.1f} s")
