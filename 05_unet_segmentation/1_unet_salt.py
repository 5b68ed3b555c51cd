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
# # Lesson 1: U-Net from scratch on salt (binary segmentation)
#
# Seismic images show layers of sediment; salt bodies show up as blobs without layers. Finding
# them pixel by pixel is a *binary segmentation* task: one probability per pixel. This lesson
# builds U-Net (Ronneberger et al., 2015) from scratch, trains it with a BCE + Dice loss, measures
# IoU / Dice / pixel accuracy after every epoch, picks the probability threshold on the validation
# set, and looks at the predictions.
#
# - **Framework**: PyTorch (the training loop is the repository's engine, `detseg.engine`).
# - **Dataset**: the built-in `salt` data, generated on first use in the exact layout of the
#   [TGS Salt Identification](https://www.kaggle.com/competitions/tgs-salt-identification-challenge)
#   Kaggle data (101 x 101 grey PNGs, masks, `depths.csv`, `train.csv`); the real download is read
#   by the same reader (see the folder README).
# - **Run time**: about 2.5 minutes on an idle 2-core CPU, most of it the 4 training epochs (the
#   last cell prints the time of the run shown, on a machine shared with other work); no GPU
#   needed.
#
# Read first: [`notebooks/00_boxes_and_map`](../notebooks/00_boxes_and_map.ipynb) (IoU). Next:
# [lesson 2, FCN-8s on road scenes](2_fcn8s_road.ipynb).

# %% [markdown]
# ## Setup
#
# Training settings are the ones measured in the folder README: U-Net at width 8, the first 2000
# labelled images (1600 to train, 400 to validate), 4 epochs.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from seg_training import TASKS, fit, make_datasets, soft_dice_loss, threshold_sweep
from segmentation_models import build_model, predict_logits
from unet import UNET_PAPER, UNet, count_parameters

from detseg import settings
from detseg.data import recipes
from detseg.devices import seed_everything, select_device
from detseg.engine import make_loader
from detseg.metrics.segmentation import binary_dice, confusion_matrix, iou_per_class
from detseg.viz import diagrams, draw_segmentation, image_grid

NOTEBOOK_START = time.perf_counter()
# smoke mode (DETSEG_SMOKE=1, the tests): 16 images, one epoch, one thread; numbers meaningless
SMOKE = settings.smoke_mode()
if SMOKE:
    torch.set_num_threads(1)
NUM_IMAGES = None if SMOKE else 2000  # None: every image of the (16-image) smoke dataset
EPOCHS = 1 if SMOKE else 4
DEVICE = select_device("auto")
OUT = settings.runs_root() / "05_unet_segmentation" / "lesson1"
SALT = [(0, 0, 0), (255, 40, 40)]  # colours: sediment (not painted), salt
seed_everything(0)
print(f"device: {DEVICE} | torch threads: {torch.get_num_threads()}")

# %% [markdown]
# ## 1. The data, in the TGS layout
#
# `recipes.ensure("salt")` writes the dataset once under `data/salt-0/` and reuses it afterwards. The
# files are laid out as Kaggle's: images and masks with the same 10-hex-digit ids, a `depths.csv`
# and a `train.csv` holding the masks again as run-length encodings.

# %%
folder = recipes.ensure("salt")
for path in sorted(folder.iterdir()):
    count = f"{len(list(path.rglob('*.png')))} png" if path.is_dir() else f"{path.stat().st_size} B"
    print(f"{path.name:<14} {count}")
print((folder / "train.csv").read_text().splitlines()[:3])

# %% [markdown]
# The reader (`detseg.data.formats.tgs`, behind `recipes.load`) turns each pair into an RGB uint8
# image (the grey channel repeated three times) and a class map: 0 = sediment, 1 = salt. About 40 %
# of the images hold no salt at all, which is why the loss and the metrics must cope with empty masks.

# %%
dataset = recipes.load("salt")
image, mask = dataset.load(dataset.records[0])
print(f"{len(dataset)} labelled images, classes {dataset.classes}")
print(
    f"image {image.shape} {image.dtype}, mask {mask.shape} {mask.dtype}, values {np.unique(mask)}"
)
salt_share = [dataset.load(r)[1].mean() for r in dataset.records[:200]]  # salt fraction per image
print(
    f"first {len(salt_share)} images: {np.mean(np.equal(salt_share, 0)):.0%} empty, mean salt area {np.mean(salt_share):.0%}"
)

shown = []
for record in dataset.records[:8]:
    image, mask = dataset.load(record)
    shown += [image, draw_segmentation(image, mask, SALT)]
plt.figure(figsize=(12, 3.2))
plt.imshow(image_grid(shown, ncols=8))
plt.axis("off")
plt.title("images and their salt masks (red)")
plt.show()

# %% [markdown]
# ## 2. U-Net from scratch
#
# `unet.py` holds the model. The encoder applies two 3x3 convolutions per level and halves the
# resolution `depth` times while doubling the width; the decoder upsamples (2x2 transposed
# convolution), concatenates the encoder map of the same level (the *skip connection*: fine detail
# the bottleneck lost) and applies two convolutions again. First, the paper's configuration
# (width 64, depth 4, unpadded "valid" convolutions, no batch norm): it must have the paper's
# 31,030,658 weights and turn a 572 x 572 tile into a 388 x 388 map. The `meta` device checks
# shapes and counts without allocating or computing anything. The picture (drawn by
# `detseg.viz.diagrams`, as every architecture figure of the lessons) is that configuration.

# %%
diagrams.show(diagrams.unet_figure(depth=4, base_width=64))

# %%
with torch.device("meta"):
    paper = UNet(in_channels=1, num_classes=2, **UNET_PAPER)
    paper_out = paper(torch.zeros(1, 1, 572, 572))
print(
    f"paper U-Net: {count_parameters(paper):,} parameters, 572x572 -> {tuple(paper_out.shape[-2:])}"
)
assert count_parameters(paper) == 31_030_658 and paper_out.shape[-2:] == (388, 388)

# %% [markdown]
# For CPU training we keep the topology but change three things: "same" padding (output size =
# input size, also for the odd 101 x 101 images), batch norm after every convolution (trains much
# faster from scratch), and width 8 instead of 64 (64 x fewer multiply-adds). Forward hooks print the
# shape after each level: the resolution halves down to the bottleneck and comes back up.

# %%
model = build_model("unet", num_classes=1, width=0.5)  # base width 16 x 0.5 = 8, depth 4
print(f"our U-Net: {count_parameters(model):,} parameters")
shapes = []
names = [f"down{i}" for i in range(len(model.down))] + [f"up{i}" for i in range(len(model.up_conv))]
hooks = [
    block.register_forward_hook(
        lambda module, inputs, output, name=name: shapes.append((name, output.shape))
    )
    for name, block in zip(names, [*model.down, *model.up_conv])
]
with torch.no_grad():
    logits = model(torch.zeros(2, 3, 101, 101))
for hook in hooks:
    hook.remove()
for name, shape in shapes:
    print(f"{name:<6} {shape}")  # [N, C, H, W]
print("logits", tuple(logits.shape))

# %% [markdown]
# ## 3. The loss: BCE + Dice
#
# Binary cross-entropy scores every pixel on its own, so the many easy sediment pixels dominate it.
# The soft Dice loss, `1 - (2 sum(p t) + eps) / (sum p + sum t + eps)` with `eps = 1`, scores the
# overlap of the predicted salt region with the true one as a whole. With hard 0 / 1 predictions
# soft Dice is the Dice metric, which the next cell checks against `detseg.metrics`.

# %%
rng = np.random.default_rng(0)
truth = rng.random((4, 101, 101)) < 0.3
guess = rng.random((4, 101, 101)) < 0.3
hard_logits = torch.from_numpy(np.where(guess, 30.0, -30.0)).float()[:, None]  # sigmoid -> 0 / 1
loss = soft_dice_loss(hard_logits, torch.from_numpy(truth).long(), eps=0.0)
print(f"soft Dice loss {loss.item():.6f} | 1 - Dice metric {1 - binary_dice(guess, truth):.6f}")
np.testing.assert_allclose(loss.item(), 1 - binary_dice(guess, truth), atol=1e-6)

# %% [markdown]
# Where the sums run matters. `soft_dice_loss` sums over the whole batch ("batch Dice"): every salt
# pixel of the batch weighs the same, so a large body counts for more than a small one, and an image
# without salt only adds its false alarms to `sum p`. Summed per image instead, an image without
# salt has `sum t = 0`, and its loss is `sum p / (sum p + 1)`: near 0 only while the model predicts
# (almost) nothing there, and already 0.5 for a single pixel's worth of probability, 0.98 for 50;
# so per-image Dice punishes a few false pixels on an empty image as hard as missing a whole body.
# The numbers, on a batch of two 101 x 101 masks:


# %%
def dice_loss(probs: np.ndarray, target: np.ndarray, axes, eps: float = 1.0) -> np.ndarray:
    """1 - soft Dice of probabilities and {0, 1} targets [N, H, W], summed over ``axes``."""
    intersection = (probs * target).sum(axes)
    return 1 - (2 * intersection + eps) / (probs.sum(axes) + target.sum(axes) + eps)


large, small = np.zeros((101, 101)), np.zeros((101, 101))
large[20:80, 20:80], small[45:50, 45:50] = 1, 1  # 3600 and 25 salt pixels
truth_pair = np.stack([large, small])
missed_small = np.stack([large, np.zeros_like(small)])  # perfect on the large body, small missed
print(f"small body missed: batch loss {dice_loss(missed_small, truth_pair, None):.4f}")
print(f"                   per-image losses {dice_loss(missed_small, truth_pair, (1, 2)).round(4)}")
empty = np.zeros((1, 101, 101))
for false_pixels in (0, 1, 50):
    alarm = np.zeros((1, 101, 101))
    alarm[0, 0, :false_pixels] = 1
    print(f"empty image, {false_pixels:>2} false pixels: loss {dice_loss(alarm, empty, None):.4f}")
batch_torch = soft_dice_loss(torch.logit(torch.tensor(missed_small).clamp(1e-7, 1 - 1e-7))[:, None],
                             torch.from_numpy(truth_pair))  # fmt: skip
np.testing.assert_allclose(batch_torch.item(), dice_loss(missed_small, truth_pair, None), atol=1e-4)
assert (
    dice_loss(missed_small, truth_pair, None)
    < 0.01
    < 0.9
    < dice_loss(missed_small, truth_pair, (1, 2))[1]
)

# %% [markdown]
# ## 4. Training
#
# `make_datasets` reads the pairs, holds out 20 % for validation (the TGS layout has no validation
# split), flips training images left-right at random and normalises with the ImageNet statistics.
# `fit` runs the core engine: AdamW, a one-cycle learning rate (warm-up, then cosine decay), and after
# every epoch IoU, Dice and pixel accuracy on the validation set; checkpoints go to `OUT / "run"`.

# %%
train_set, val_set, source = make_datasets(TASKS["salt"], num_images=NUM_IMAGES)
print(f"train {len(train_set)} images, validation {len(val_set)} images")
result = fit(
    model,
    train_set,
    val_set,
    task=TASKS["salt"],
    classes=source.classes,
    device=DEVICE,
    epochs=EPOCHS,
    batch_size=16,
    lr=3e-3,
    output_dir=OUT / "run",
    progress=False,
    config={"model": "unet", "width": 0.5, "num_outputs": 1, "binary": True, "dataset": "salt"},
)

# %% [markdown]
# One row per epoch: the training loss and the validation metrics. IoU counts salt pixels over the
# whole validation set: intersection / union of predicted and true salt; Dice is `2 IoU / (1 + IoU)`
# per class and averaged here over both classes; pixel accuracy counts every pixel.

# %%
print(
    f"{'epoch':>5} {'loss':>7} {'IoU salt':>9} {'mean Dice':>10} {'pixel acc':>10} {'minutes':>8}"
)
for entry in result["history"]:
    metrics = entry["eval"]
    print(
        f"{entry['epoch']:>5} {entry['train']['loss']:>7.4f} {metrics['iou_salt']:>9.4f} "
        f"{metrics['mean_dice']:>10.4f} {metrics['pixel_accuracy']:>10.4f} {metrics['minutes']:>8.2f}"
    )
if not SMOKE:  # the folder's quality bar (README: 0.949 with these settings)
    assert result["history"][-1]["eval"]["iou_salt"] >= 0.85
plt.figure(figsize=(10, 4))
plt.imshow(plt.imread(OUT / "run" / "training_curves.png"))
plt.axis("off")
plt.show()

# %% [markdown]
# ## 5. The metric, by hand
#
# The engine's numbers come from `detseg.metrics` (a confusion matrix over all pixels). Counting
# intersection and union of the salt pixels directly must give the same IoU.

# %%
loader = make_loader(val_set, 16, False, 0, 0)
predictions, truths = [], []
for images, masks in loader:
    predictions.append((torch.sigmoid(predict_logits(model, images.to(DEVICE)))[:, 0] > 0.5).cpu())
    truths.append(masks == 1)
predicted, actual = torch.cat(predictions).numpy(), torch.cat(truths).numpy()
by_hand = (predicted & actual).sum() / (predicted | actual).sum()
library = iou_per_class(confusion_matrix(predicted.astype(int), actual.astype(int), 2))[1]
print(
    f"IoU salt: by hand {by_hand:.6f} | detseg.metrics {library:.6f} | engine {result['history'][-1]['eval']['iou_salt']:.6f}"
)
np.testing.assert_allclose(by_hand, library)
np.testing.assert_allclose(by_hand, result["history"][-1]["eval"]["iou_salt"])

# %% [markdown]
# ## 6. Choosing the threshold
#
# A pixel is called salt when its probability exceeds a threshold; 0.5 is a guess. One pass over the
# validation set scores every threshold at once. (On a real project, pick it on validation data and
# report on a separate test set.)

# %%
thresholds = np.round(np.linspace(0.05, 0.95, 19), 2)
sweep = threshold_sweep(model, loader, DEVICE, thresholds)
best = max(sweep, key=lambda t: sweep[t])
print(f"IoU at 0.5: {sweep[0.5]:.4f} | best threshold {best:.2f}: IoU {sweep[best]:.4f}")
plt.figure(figsize=(5, 3))
plt.plot(list(sweep), list(sweep.values()), marker="o")
plt.xlabel("probability threshold")
plt.ylabel("validation IoU (salt)")
plt.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## 7. Predictions
#
# Each row: the image, the true mask, the prediction (at the best threshold), scored by its own
# IoU. Per image, an empty mask is merciless: a few false salt pixels on an image without salt score
# 0, the same as missing a whole salt body (TGS's Kaggle metric worked per image like this). So the
# rows show the two worst images without salt (false alarms, if there are any), then the two worst
# and the two best images with salt.

# %%
union = (predicted | actual).sum((1, 2))  # [N] pixels per validation image
per_image = np.where(union > 0, (predicted & actual).sum((1, 2)) / np.maximum(union, 1), 1.0)
has_salt = actual.any((1, 2))
order = np.argsort(per_image, kind="stable")
empty_worst = [i for i in order if not has_salt[i]][:2]
with_salt = [i for i in order if has_salt[i]]
picks = [*empty_worst, *with_salt[:2], *with_salt[-2:]]
shown = []
for index in picks:
    images, masks = val_set[int(index)]
    image, _ = source.load(source.records[val_set.indices[int(index)]])
    probs = torch.sigmoid(predict_logits(model, images[None].to(DEVICE)))[0, 0].cpu()
    shown += [
        image,
        draw_segmentation(image, masks, SALT),
        draw_segmentation(image, (probs > best).long(), SALT),
    ]
plt.figure(figsize=(9, 3 * len(picks)))
plt.imshow(image_grid(shown, ncols=3))
plt.axis("off")
plt.title("image | truth | prediction")
plt.show()
print("IoU of the rows shown:", np.round(per_image[picks], 3))
print(
    f"{(~has_salt).sum()} validation images without salt, {(~has_salt & (per_image < 1)).sum()} "
    f"with false alarms; mean per-image IoU {per_image.mean():.3f} vs pixel IoU {by_hand:.3f}"
)

# %% [markdown]
# ## Summary
#
# - U-Net = an encoder that halves resolution and doubles width, a decoder that comes back up, and
#   skip connections that carry the fine detail across; the paper's version has 31 M weights, ours
#   0.5 M and still separates salt from sediment well on this data.
# - BCE handles pixels one by one, Dice handles the region as a whole; summed over the batch, Dice
#   weighs large bodies more and keeps a few false pixels on an empty image from costing a full 1.
# - IoU is counted over all validation pixels; the threshold is a free parameter worth choosing.
# - The same code trains on the real TGS data: `python 05_unet_segmentation/train.py --data-path
#   PATH/TO/tgs` (see the README for the download).
#
# ## Exercises
#
# 1. Train with BCE only (drop the `dice` term in `seg_training.segmentation_loss`). Which metric
#    suffers, and on which images?
# 2. Build a shallower U-Net, `model = UNet(in_channels=3, num_classes=1, base_width=8, depth=2)`
#    (from `unet.py`), in place of `build_model("unet", ...)` in section 2 and train it the same
#    way. How do the receptive field and the IoU change?
# 3. Kaggle scored this competition with a mean precision over IoU thresholds 0.5 to 0.95 *per
#    image*, where an empty mask predicted empty scores 1. Implement it and compare with the pixel IoU.
# 4. Replace the transposed convolutions with bilinear upsampling:
#    `UNet(in_channels=3, num_classes=1, base_width=8, bilinear=True)`. Parameters, speed, IoU?
#
# Next: [lesson 2, FCN-8s on road scenes](2_fcn8s_road.ipynb).

# %%
print(f"run time of this notebook: {time.perf_counter() - NOTEBOOK_START:.1f} s")
