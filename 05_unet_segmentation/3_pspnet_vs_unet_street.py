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
# # Lesson 3: PSPNet vs U-Net on street scenes (multi-class)
#
# A street scene has seven classes here (road, sidewalk, building, sky, vegetation, car, person).
# Which class a pixel belongs to often depends on context far away: grey texture is road at the
# bottom of the image and building at the side. U-Net sees context through its encoder; PSPNet
# (Zhao et al., 2017) adds a *pyramid pooling module* that averages the whole feature map into 1x1,
# 2x2, 3x3 and 6x6 bins and hands that global summary to every pixel. This lesson builds PSPNet's
# pieces, trains both models with the same budget and compares them in one table: mean IoU,
# per-class IoU, parameters, time per epoch and inference time per image.
#
# - **Framework**: PyTorch (PSPNet's backbone is torchvision's ResNet-18, dilated).
# - **Dataset**: the built-in `street` data, in the layout of the Kaggle
#   [Cityscapes image pairs](https://www.kaggle.com/datasets/dansbecker/cityscapes-image-pairs)
#   (one 256 x 512 JPEG per example: photo left, colour labels right); the real download is read by
#   the same reader (folder README).
# - **Run time**: about 8 minutes on an idle 2-core CPU, most of it training the two models (the
#   last cell prints the time of the run shown, on a machine shared with other work); no GPU
#   needed.
#
# Previous: [lesson 2, FCN-8s on road scenes](2_fcn8s_road.ipynb). Next:
# [lesson 4, torchvision's segmentation models](4_torchvision_models.ipynb).

# %% [markdown]
# ## Setup
#
# Both models train on the same 850 images for the same number of epochs with the same optimiser
# and learning rate, at 128 x 128 pixels (the photos are resized once, labels with nearest
# neighbour). U-Net uses base width 16; PSPNet dilates only its last stage (output stride 16),
# which needs 3 x fewer multiply-adds than the paper's stride 8 at this size.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from pspnet import PyramidPooling
from seg_training import TASKS, fit, make_datasets
from segmentation_models import build_model, count_multiply_adds, count_parameters, predict_logits

from detseg import settings
from detseg.data import recipes
from detseg.data.formats import cityscapes
from detseg.data.imageio import read_image
from detseg.devices import seed_everything, select_device
from detseg.export import time_inference
from detseg.viz import colorize_mask, draw_segmentation, image_grid

NOTEBOOK_START = time.perf_counter()
SMOKE = settings.smoke_mode()
if SMOKE:  # the tests run several notebooks side by side; extra threads would only wait
    torch.set_num_threads(1)
EPOCHS = 1 if SMOKE else 4
SIZE = TASKS["street"].image_size  # (128, 128)
MODELS = {"U-Net": "unet", "PSPNet": "pspnet_os16"}
REPEATS = 3 if SMOKE else 20  # timed forward passes per model
DEVICE = select_device("auto")
OUT = settings.runs_root() / "05_unet_segmentation" / "lesson3"
print(f"device: {DEVICE} | torch threads: {torch.get_num_threads()} | smoke mode: {SMOKE}")

# %% [markdown]
# ## 1. The data: Cityscapes image pairs
#
# Each file holds the photo and its label picture side by side. The labels are Cityscapes colours,
# saved as JPEG, so they are noisy: the reader maps every label pixel to the nearest colour of the
# full Cityscapes palette and keeps it only if that colour is one of our seven classes and close
# enough; everything else becomes 255 (ignored by the loss and the metrics).

# %%
folder = recipes.ensure("street") / "cityscapes_data"
pair = read_image(folder / "train" / "1.jpg")
print(
    f"train: {len(list((folder / 'train').iterdir()))} files, val: {len(list((folder / 'val').iterdir()))} files, one file {pair.shape}"
)
labels = cityscapes.colors_to_labels(pair[:, 256:])
print("classes:", cityscapes.CLASSES, "| values in this label map:", np.unique(labels).tolist())
palette = np.array(cityscapes.PALETTE, dtype=np.uint8)
plt.figure(figsize=(12, 3))
plt.imshow(image_grid([pair, colorize_mask(labels, palette)], ncols=2))
plt.axis("off")
plt.title("a pair file (photo | colour labels) and the decoded class map")
plt.show()

# %% [markdown]
# Classes are far from balanced: road, building and sky cover most pixels, people very few. Mean
# IoU weighs every class equally, so the rare ones matter as much as the large ones.

# %%
train_set, val_set, source = make_datasets(TASKS["street"])
counts = np.zeros(len(source.classes), dtype=np.int64)
for index in range(min(200, len(train_set))):
    mask = train_set[index][1].numpy()
    counts += np.bincount(mask[mask != 255], minlength=len(source.classes))
print(f"train {len(train_set)} images, validation {len(val_set)} images, size {SIZE}")
for name, share in zip(source.classes, counts / counts.sum()):
    print(f"{name:<11} {share:6.1%}")

# %% [markdown]
# ## 2. PSPNet's two ideas
#
# **Dilation** keeps resolution: ResNet's last stages would shrink the map to 1/32; replacing their
# strides by dilated 3x3 convolutions (same weights, spread-out taps) keeps it at 1/8 (the paper) or
# 1/16 (ours) while the receptive field still grows.

# %%
for stride in (8, 16):
    with torch.device("meta"):
        net = build_model("pspnet" if stride == 8 else "pspnet_os16", num_classes=7).eval()
        features = net.layer4(
            net.layer3(net.layer2(net.layer1(net.stem(torch.zeros(1, 3, *SIZE)))))
        )
    print(
        f"output stride {stride:>2}: layer4 map {tuple(features.shape)}, {count_multiply_adds(net, SIZE) / 1e9:.2f} G multiply-adds per image"
    )

# %% [markdown]
# **Pyramid pooling** averages that map into 1x1, 2x2, 3x3 and 6x6 bins, reduces each to a quarter
# of the channels with a 1x1 convolution, upsamples them back and concatenates them with the map:
# the 1x1 bin is the whole image's summary, the 6x6 bins a coarse layout. A 3x3 convolution on
# the concatenation then scores the classes.

# %%
from detseg.viz import diagrams  # noqa: E402

diagrams.show(diagrams.pyramid_pooling_figure(bins=(1, 2, 3, 6)))

# %% [markdown]
# The module of `pspnet.py` on a random 512-channel map of 8 x 8 cells:

# %%
ppm = PyramidPooling(512).eval()
feature_map = torch.rand(1, 512, 8, 8)
for stage in ppm.stages:
    print(
        f"bins {stage[0].output_size}: pooled {tuple(stage(feature_map).shape)}"
    )  # [N, C/4, b, b]
print(f"concatenated: {tuple(ppm(feature_map).shape)}")  # [N, 2C, h, w]
assert ppm(feature_map).shape == (1, 2 * 512, 8, 8)
# the 1x1 bin is the mean over the whole map, the same value at every pixel
torch.testing.assert_close(ppm.stages[0][0](feature_map)[..., 0, 0], feature_map.mean((2, 3)))

# %% [markdown]
# ## 3. Training both, with the same budget
#
# Same data, epochs, batch size, optimiser and learning rate; PSPNet also gets its auxiliary loss
# (a second head on stage 3, weight 0.4), as in the paper.

# %%
results, models = {}, {}


def train(label: str) -> None:
    """Train ``MODELS[label]`` from the same seed with the shared settings; keep model and result."""
    name = MODELS[label]
    seed_everything(0)
    models[label] = build_model(name, num_classes=len(source.classes))
    results[label] = fit(
        models[label],
        train_set,
        val_set,
        task=TASKS["street"],
        classes=source.classes,
        device=DEVICE,
        epochs=EPOCHS,
        batch_size=8,
        lr=2e-3,
        output_dir=OUT / name,
        progress=False,
        config={"model": name, "num_outputs": len(source.classes), "binary": False},
    )
    history = results[label]["history"]
    print(f"{label}: mIoU per epoch {[round(e['eval']['mean_iou'], 3) for e in history]}")


# %% [markdown]
# U-Net first. Its first epoch also decodes the JPEG pairs (the label colours are matched against
# the Cityscapes palette pixel by pixel); the pairs stay in memory afterwards, for PSPNet too.

# %%
train("U-Net")

# %% [markdown]
# Then PSPNet, from the same seed, on the same (now cached) data.

# %%
train("PSPNet")

# %% [markdown]
# ## 4. The comparison
#
# Inference time is the median of 20 forward passes on one 128 x 128 image (eval mode, after 3
# warm-up passes); time per epoch is the median training pass after the first (which decodes the
# JPEGs for U-Net).

# %%
sample = torch.rand(1, 3, *SIZE, device=DEVICE)
rows = {}
for label, model in models.items():
    model.eval()
    with torch.no_grad():
        timing = time_inference(
            lambda x, model=model: predict_logits(model, x), sample, warmup=3, repeats=REPEATS
        )
    history = results[label]["history"]
    final = history[-1]["eval"]
    rows[label] = {
        "parameters (M)": count_parameters(model) / 1e6,
        "mIoU": final["mean_iou"],
        **{f"IoU {name}": final[f"iou_{name}"] for name in source.classes},
        "s / epoch": float(np.median([e["time"]["epoch_s"] for e in history[1:] or history])),
        "ms / image": timing["median_ms"],
    }
print(f"{'':<18}" + "".join(f"{label:>12}" for label in rows))
for key in rows["U-Net"]:
    print(f"{key:<18}" + "".join(f"{row[key]:>12.3f}" for row in rows.values()))

# %% [markdown]
# Per class, side by side:

# %%
x = np.arange(len(source.classes))
plt.figure(figsize=(9, 3.5))
for offset, (label, row) in zip((-0.2, 0.2), rows.items()):
    plt.bar(x + offset, [row[f"IoU {name}"] for name in source.classes], width=0.4, label=label)
plt.xticks(x, source.classes)
plt.ylabel("validation IoU")
plt.ylim(0, 1)
plt.legend()
plt.grid(axis="y", alpha=0.3)
plt.show()

# %% [markdown]
# ## 5. Predictions
#
# Each row: the photo, the truth, U-Net, PSPNet (validation images, at 128 x 128).

# %%
shown = []
for index in range(min(4, len(val_set))):
    images, masks = val_set[index]
    image, _ = val_set.dataset.load(val_set.dataset.records[index])
    shown += [image, draw_segmentation(image, masks, palette, alpha=0.7, background=None)]
    for model in models.values():
        predicted = predict_logits(model, images[None].to(DEVICE)).argmax(1)[0].cpu()
        shown.append(draw_segmentation(image, predicted, palette, alpha=0.7, background=None))
plt.figure(figsize=(10, 11))
plt.imshow(image_grid(shown, ncols=4))
plt.axis("off")
plt.title("photo | truth | U-Net | PSPNet")
plt.show()

# %% [markdown]
# ## Summary
#
# - Context matters in street scenes; PSPNet gets it from a pyramid of pooled summaries of a dilated
#   backbone's map, U-Net from its deep encoder and skip connections.
# - With the same short budget on a CPU, the table above (and the README) shows what each costs and
#   buys: PSPNet carries 7 x the parameters of this U-Net; its ResNet-18 backbone shines most when it
#   starts from ImageNet weights (`--pretrained pretrained`), which this comparison leaves out.
# - Mean IoU hides the rare classes: read the per-class rows.
#
# ## Exercises
#
# 1. Train PSPNet from an ImageNet ResNet-18 (a 45 MB download) and compare again:
#    `python 05_unet_segmentation/train.py --dataset street --model pspnet_os16 --pretrained pretrained`.
# 2. Take the pyramid pooling module out: in `train`, after `build_model`, give PSPNet
#    `models[label].ppm = torch.nn.Conv2d(512, 1024, 1)` (the channels the head expects, no pooled
#    context) and train again. Which classes lose most?
# 3. Train both at 256 x 256 (`train.py --dataset street --image-size 256 256`, with and without
#    `--model pspnet_os16`): who gains more from resolution, and on which classes?
# 4. Give both models the same *time* instead of the same epochs (`train.py --time-budget 5`).
#
# Next: [lesson 4, torchvision's segmentation models](4_torchvision_models.ipynb).

# %%
print(f"run time of this notebook: {time.perf_counter() - NOTEBOOK_START:.1f} s")
