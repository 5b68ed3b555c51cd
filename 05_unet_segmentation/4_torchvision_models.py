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
# # torchvision's segmentation models: FCN, DeepLabV3 and LR-ASPP
#
# Lessons 1-3 built U-Net, FCN-8s and PSPNet by hand. torchvision ships three families ready to
# use, with weights trained on COCO images labelled with the 20 Pascal VOC classes. This notebook
# takes `fcn_resnet50`, `deeplabv3_mobilenet_v3_large` and `lraspp_mobilenet_v3_large` apart:
#
# - what they return (an `OrderedDict` with `out`, and `aux` for the two with an auxiliary head),
#   at which resolution their backbones work, how many weights they have and how fast they run
#   on a CPU;
# - why their inputs are standardised with the ImageNet mean and standard deviation;
# - the pretrained path: the real hash-checked download, the one-line message when there is no
#   internet, and where to put the file by hand (the loading code is run here on a stand-in file);
# - replacing the 21-class classifier by one for our 7 street classes;
# - a short training run of the fastest one from random weights (`weights=None`) on the built-in
#   `street` dataset through this folder's `train.py`, a trap of short runs (batch-norm
#   statistics) and its fix, and a picture of its predictions.
#
# - **Framework**: PyTorch / torchvision.
# - **Dataset**: the built-in `street` dataset (Cityscapes image pairs, 7 classes, 256 x 256),
#   generated on first use into `data/street-0/`. Nothing is downloaded unless you have internet
#   and ask for the pretrained weights.
# - **Run time**: about 4 minutes on a 2-core CPU, most of it the short training (the last cell
#   prints the time of the run shown); no GPU needed.
#
# Previous: [lesson 3, PSPNet vs U-Net](3_pspnet_vs_unet_street.ipynb). Next:
# [lesson 5, COCO instances to semantic class maps](5_coco_to_semantic.ipynb).

# %% [markdown]
# ## Setup
#
# The notebook runs in its own folder, so this folder's modules (`segmentation_models.py`,
# `seg_training.py`, `train.py`) import directly.

# %%
import contextlib
import importlib.util
import io
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from IPython.display import Image, display
from torch import nn
from torchvision.models import segmentation as tv_seg
from torchvision.transforms import functional as TF

FOLDER = Path.cwd()  # the notebook's folder: python -m detseg.notebooks runs it there
if str(FOLDER) not in sys.path:
    sys.path.insert(0, str(FOLDER))
from seg_training import evaluate, get_task, make_datasets
from segmentation_models import (
    MODELS,
    build_model,
    count_parameters,
    predict_logits,
    replace_last_layers,
)

from detseg import pretrained, settings
from detseg.bench import time_it
from detseg.data import recipes
from detseg.data.imageio import write_image
from detseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Normalize
from detseg.engine.checkpoint import load_checkpoint, model_state
from detseg.engine.distributed import make_loader
from detseg.errors import UserError
from detseg.viz import colorize_mask, draw_segmentation, image_grid

NOTEBOOK_START = time.perf_counter()
SMOKE = settings.smoke_mode()  # the tests (DETSEG_SMOKE=1): smaller inputs, 16 images, 1 epoch
SIZE = 64 if SMOKE else 256  # input side for the shape and timing cells (street images: 256)
NUM_IMAGES = None if SMOKE else 160  # street images; None = the recipe's default (16 in smoke mode)
EPOCHS = 1 if SMOKE else 3
OUT = settings.runs_root() / "05_unet_segmentation" / "torchvision_models"
OUT.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
WEIGHTS = {
    "fcn_resnet50": tv_seg.FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
    "deeplabv3_mobilenet_v3_large": tv_seg.DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1,
    "lraspp_mobilenet_v3_large": tv_seg.LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1,
}
NAMES = list(WEIGHTS)
assert set(NAMES) <= set(MODELS)
threads = torch.get_num_threads()
print(f"torch {torch.__version__} | torchvision {torchvision.__version__} | CPU threads: {threads}")

# %% [markdown]
# ## 1. Three models as published
#
# Each builder takes `weights` (None = random initialisation), `weights_backbone` (ImageNet
# weights for the backbone alone) and `num_classes`. Built exactly like the published checkpoints
# (21 classes = background + 20 VOC classes, auxiliary head where there is one), the parameter
# count must equal the one torchvision records in the weights' metadata: a cheap proof that the
# architecture here is the one the checkpoint was trained with. The metadata also holds the
# published accuracy and cost; nothing of it needs a download.
#
# - **FCN-ResNet50**: ResNet-50 with dilated last stages (output stride 8), a 3x3 conv head,
#   upsampled bilinearly: the FCN idea of lesson 2 on a stronger backbone.
# - **DeepLabV3-MobileNetV3**: atrous spatial pyramid pooling (parallel dilated convolutions and
#   an image-level pooling branch, the cousin of PSPNet's pyramid of lesson 3) on MobileNetV3.
# - **LR-ASPP-MobileNetV3**: "lite reduced ASPP", a pooled attention gate on the stride-16
#   features plus a shortcut from stride-8 features; made for phones.

# %%
published = {}
print(f"{'model':30} {'parameters':>11} {'GFLOPs@520':>10} {'file MB':>8} {'VOC mIoU':>9}")
for name, weights in WEIGHTS.items():
    has_aux = name != "lraspp_mobilenet_v3_large"  # LR-ASPP has no auxiliary head
    model = getattr(tv_seg, name)(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=has_aux or None
    )
    published[name] = model.eval()
    assert count_parameters(model) == weights.meta["num_params"]
    metrics = weights.meta["_metrics"]["COCO-val2017-VOC-labels"]
    print(
        f"{name:30} {count_parameters(model):>11,} {weights.meta['_ops']:>10.1f} "
        f"{weights.meta['_file_size']:>8.1f} {metrics['miou']:>9.1f}"
    )

# %% [markdown]
# ## 2. What comes out: an `OrderedDict`
#
# A classifier returns a tensor; these models return `OrderedDict(out=..., aux=...)`. `out` holds
# the logits [N, 21, H, W], already upsampled to the input size; `aux` (FCN and DeepLabV3 only) is
# a second, simpler head on an earlier backbone stage, used only as an extra loss during training
# (weight 0.4 in `seg_training.py`, as in the PSPNet paper) and dropped at inference.
# `segmentation_models.logits_of` takes `out`, so the training code treats every model alike.
#
# The backbone itself is wrapped by torchvision's `IntermediateLayerGetter` and also returns a
# dict: the feature maps each head reads. Their strides (input size / feature size) show the
# design: FCN keeps ResNet at stride 8 with dilation, MobileNetV3 works at stride 16, and LR-ASPP
# adds a stride-8 shortcut (`low`) for sharper edges.

# %%
images = torch.rand(2, 3, SIZE, SIZE)
with torch.no_grad():
    for name, model in published.items():
        output = model(images)
        features = model.backbone(images)
        heads = {key: tuple(value.shape) for key, value in output.items()}
        strides = {key: SIZE // value.shape[-1] for key, value in features.items()}
        print(f"{name}: {type(output).__name__} {heads}")
        shapes = {key: tuple(value.shape[1:]) for key, value in features.items()}
        print(f"    backbone features [C, H, W] {shapes}, strides {strides}")
        assert list(output) == (["out"] if "lraspp" in name else ["out", "aux"])
        assert output["out"].shape == (2, 21, SIZE, SIZE)

# %% [markdown]
# ## 3. Speed on a CPU
#
# Median time of one image (batch 1, inference mode) after a warm-up call, with
# `detseg.bench.time_it`. The published GFLOPs (above, at 520 x 520) predict the order; the
# ResNet-50 model costs over 70 times the operations of LR-ASPP.

# %%
timings = {}
single = torch.rand(1, 3, SIZE, SIZE)
for name, model in published.items():
    with torch.inference_mode():
        timing = time_it(lambda model=model: model(single), warmup=1, repeats=1 if SMOKE else 5)
    timings[name] = timing["median_s"] * 1e3
    print(
        f"{name:30} {timings[name]:8.1f} ms / image at {SIZE} x {SIZE}, "
        f"{count_parameters(model) / 1e6:5.1f} M parameters"
    )

# %% [markdown]
# ## 4. ImageNet normalisation
#
# The backbones were trained on ImageNet photos given as `(pixel / 255 - mean) / std` per colour
# channel, with mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), the statistics of the
# ImageNet training set. Pretrained filters expect inputs centred on 0 with unit spread; feed them
# [0, 1] or [0, 255] pixels and every activation of the first layer is shifted and scaled away
# from what the following layers learned to read. From random weights it matters less (batch norm
# follows the first convolution), but keeping one input pipeline for both cases avoids a silent
# mismatch when the weights change. `detseg.data.transforms.Normalize` does it on the uint8 images
# of this repository; the weights' own preset (`weights.transforms()`) uses the same numbers and
# also resizes to 520 pixels, which we skip to stay at 256 on a CPU.

# %%
street = recipes.load("street", num_images=NUM_IMAGES, split="train")
preset = WEIGHTS["lraspp_mobilenet_v3_large"].transforms()
assert tuple(preset.mean) == IMAGENET_MEAN and tuple(preset.std) == IMAGENET_STD
pixels = np.stack([street.load(record)[0] for record in street.records[:8]])  # [8, H, W, 3]
ours = np.stack([Normalize()(image, {})[0] for image in pixels])  # float32 [8, H, W, 3]
reference = TF.normalize(
    torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255, IMAGENET_MEAN, IMAGENET_STD
)
torch.testing.assert_close(torch.from_numpy(ours).permute(0, 3, 1, 2), reference)
print("Normalize == torchvision.transforms.functional.normalize")
for label, values in (("pixels / 255", pixels / 255), ("normalised", ours)):
    mean, std = values.mean((0, 1, 2)).round(3), values.std((0, 1, 2)).round(3)
    print(f"{label:13} per channel mean {mean}, std {std}")

# %% [markdown]
# ## 5. Pretrained weights: download, offline message, cache
#
# `build_model(name, weights="pretrained")` (and `train.py --pretrained pretrained`) goes
# through `detseg.pretrained.load_state_dict`: if the file is in torch's cache
# (`$TORCH_HOME/hub/checkpoints/`, by default `~/.cache/torch/hub/checkpoints/`) it is loaded;
# otherwise it is downloaded with a SHA-256 check (the file name carries the first hex digits of
# the hash). Without internet the call fails with one line naming the URL and the exact path where
# a copy made elsewhere has to go. With internet this cell downloads the 12.5 MB LR-ASPP file
# once (a 10 s socket timeout keeps a blocked network from hanging it).

# %%
lraspp_weights = WEIGHTS["lraspp_mobilenet_v3_large"]
print("URL:       ", lraspp_weights.url)
HOME = str(Path.home())  # shown as ~: the cache lies in your home folder
print("cache file:", str(pretrained.cache_path(lraspp_weights)).replace(HOME, "~"))
previous_timeout = socket.getdefaulttimeout()
socket.setdefaulttimeout(10)
log = io.StringIO()  # torch prints its own "Downloading ..." line: shown below, with ~
try:
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        build_model("lraspp_mobilenet_v3_large", num_classes=7, weights="pretrained")
    outcome = "pretrained COCO/VOC weights loaded (from the cache or just downloaded)"
except UserError as error:
    outcome = f"error: {error}"
finally:
    socket.setdefaulttimeout(previous_timeout)
print((log.getvalue() + outcome).replace(HOME, "~"))

# %% [markdown]
# (The hint's `--weights none` is the generic wording of `detseg.pretrained`; in this folder's
# `train.py` the switch is `--pretrained none`.) To use real weights on an offline machine: download the URL above elsewhere, copy the `.pth`
# file to the cache path printed above, keeping its name, then run
# `python train.py --model lraspp_mobilenet_v3_large --dataset street --pretrained pretrained`.
#
# The loading branch is tested here without the real file: under a temporary `TORCH_HOME` we
# save a stand-in state dict (a randomly initialised 21-class model) under the exact cache file
# name; `build_model` then loads it instead of downloading, and replaces the classifier for 7
# classes. The backbone weights of the result equal the stand-in's, so the file was really read.

# %%
saved_torch_home = os.environ.get("TORCH_HOME")
with tempfile.TemporaryDirectory() as torch_home:
    os.environ["TORCH_HOME"] = torch_home
    try:
        cache_file = pretrained.cache_path(lraspp_weights)
        cache_file.parent.mkdir(parents=True)
        stand_in = published["lraspp_mobilenet_v3_large"]
        torch.save(stand_in.state_dict(), cache_file)
        loaded = build_model("lraspp_mobilenet_v3_large", num_classes=7, weights="pretrained")
    finally:
        if saved_torch_home is None:
            os.environ.pop("TORCH_HOME")
        else:
            os.environ["TORCH_HOME"] = saved_torch_home
print(f"loaded $TORCH_HOME/{cache_file.relative_to(torch_home)}")
for key in ("backbone.0.0.weight", "backbone.16.0.weight", "classifier.cbr.0.weight"):
    torch.testing.assert_close(loaded.state_dict()[key], stand_in.state_dict()[key])
outputs = loaded.classifier.low_classifier.out_channels
print(f"backbone and head weights equal the file's; the classifiers now output {outputs} classes")

# %% [markdown]
# ## 6. A classifier for our classes
#
# Fine-tuning keeps everything but the last 1x1 convolution(s), which map features to the 21 VOC
# classes; `replace_last_layers` swaps them for new, randomly initialised ones with 7 outputs:
# `classifier[4]` (and `aux_classifier[4]`) in FCN and DeepLabV3, `low_classifier` and
# `high_classifier` in LR-ASPP, whose two branches are summed. Only a few thousand weights change.


# %%
def class_convolutions(model: nn.Module, num_classes: int) -> dict[str, tuple]:
    """Name -> weight shape of every convolution with ``num_classes`` outputs."""
    return {
        name: tuple(module.weight.shape)
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and module.out_channels == num_classes
    }


for name, model in published.items():
    before = count_parameters(model)
    print(f"{name}: before {class_convolutions(model, 21)}")
    replace_last_layers(model, num_classes=7)
    print(
        f"{' ' * len(name)}  after  {class_convolutions(model, 7)}, "
        f"{before - count_parameters(model):,} fewer parameters"
    )
    assert not class_convolutions(model, 21)
    with torch.no_grad():
        assert model(images)["out"].shape == (2, 7, SIZE, SIZE)

# %% [markdown]
# ## 7. Training LR-ASPP from random weights on `street`
#
# The fastest model, with `weights=None` (`--pretrained none`), trained by this folder's
# `train.py`, called through its `main()` exactly as the command line would: the core engine
# (progress bar, checkpoints `last.pt` / `best.pt`, `metrics.json`, curves), AdamW with a cosine
# schedule, cross-entropy ignoring 255, mean IoU on the validation split after every epoch.
# 160 images (136 train, 24 val), 3 epochs, batch 4: under 3 minutes on one CPU core. The
# progress bar is captured to keep the notebook short; the per-epoch lines are printed after it.

# %%
spec = importlib.util.spec_from_file_location("train_05_unet_segmentation", FOLDER / "train.py")
train_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_script)

RUN_DIR = OUT / "lraspp-street"
shutil.rmtree(RUN_DIR, ignore_errors=True)  # a fresh run, not a resumed one
command = "--model lraspp_mobilenet_v3_large --dataset street --pretrained none --batch-size 4"
argv = [*command.split(), "--lr", "2e-3", "--epochs", str(EPOCHS), "--output-dir", str(RUN_DIR)]
if NUM_IMAGES is not None:
    argv += ["--num-images", str(NUM_IMAGES)]
started = time.perf_counter()
with contextlib.redirect_stderr(io.StringIO()) as train_log:
    result = train_script.main(argv)
train_minutes = (time.perf_counter() - started) / 60
print("\n".join(re.findall(r"^epoch \d+/\d+ \|.*$", train_log.getvalue(), re.MULTILINE)))
print(
    f"{train_minutes:.1f} min; best mean IoU {result['best']['value']:.3f} "
    f"(epoch {result['best']['epoch']}); files: {sorted(p.name for p in RUN_DIR.iterdir())}"
)

# %% [markdown]
# ## 8. A trap of short runs: batch-norm statistics
#
# The training loss falls quickly, yet the validation IoU stays low. In training mode batch norm
# normalises with the statistics of the current batch; in evaluation mode it uses running
# averages updated by `running = (1 - momentum) * running + momentum * batch`. torchvision's
# MobileNetV3 builds its batch norms with `momentum=0.01` (made for runs of hundreds of epochs;
# the LR-ASPP head keeps PyTorch's 0.1), so after a hundred steps the backbone's averages still
# hold much of their initial values (mean 0, variance 1) and evaluation sees wrongly scaled
# features. The fix used by e.g. detectron2's "precise BN": reset the
# averages and recompute them as a plain mean over training batches with the trained weights
# (`momentum=None`), no gradient step. Then evaluate the same checkpoint again.


# %%
@torch.no_grad()
def recompute_batchnorm_statistics(model: nn.Module, loader, max_batches: int) -> None:
    """Set every batch-norm layer's running mean / var to the average over ``max_batches``."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average instead of an exponential one
    model.train()
    for index, (batch_images, _) in enumerate(loader):
        if index == max_batches:
            break
        model(batch_images)
    model.eval()


train_set, val_set, source = make_datasets(get_task("street"), num_images=NUM_IMAGES, seed=0)
model = build_model("lraspp_mobilenet_v3_large", num_classes=len(source.classes))
model.load_state_dict(model_state(load_checkpoint(RUN_DIR / "last.pt")))
momenta = {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
val_loader = make_loader(val_set, 8, False, 0, 0)
before = evaluate(model, val_loader, "cpu", class_names=source.classes, binary=False)
recompute_batchnorm_statistics(model, make_loader(train_set, 8, False, 0, 0), max_batches=20)
after = evaluate(model, val_loader, "cpu", class_names=source.classes, binary=False)
print("batch-norm momentum in the model:", momenta)
print(f"{'':22} {'mean IoU':>8} {'pixel acc':>9}  " + " ".join(f"{c:>10}" for c in source.classes))
for label, metrics in (("running stats as saved", before), ("recomputed stats", after)):
    per_class = " ".join(f"{metrics[f'iou_{c}']:>10.3f}" for c in source.classes)
    print(f"{label:22} {metrics['mean_iou']:>8.3f} {metrics['pixel_accuracy']:>9.3f}  {per_class}")

# %% [markdown]
# ## 9. Predictions
#
# Four validation images: the photo, the ground truth and the prediction of the recalibrated
# model, in the Cityscapes colours of the dataset (ignored pixels black). The picture is saved as
# `lraspp_street_predictions.png`; the notebook shows a JPEG copy to stay small.

# %%
val_source = recipes.load("street", num_images=NUM_IMAGES, split="val")
palette = np.array(val_source.palette, dtype=np.uint8)
tiles, titles = [], []
for record in val_source.records[:4]:
    image, truth = val_source.load(record)
    inputs = torch.from_numpy(Normalize()(image, {})[0]).permute(2, 0, 1)[None]  # [1, 3, H, W]
    prediction = predict_logits(model, inputs).argmax(1)[0].numpy()  # [H, W]
    overlay = draw_segmentation(image, prediction, palette, background=None)  # road is class 0
    tiles += [image, colorize_mask(truth, palette), overlay]
    titles += [record.file_name, "ground truth", "LR-ASPP prediction"]
grid = image_grid(tiles, titles=titles, ncols=3)
write_image(OUT / "lraspp_street_predictions.png", grid)
display(Image(filename=write_image(OUT / "lraspp_street_predictions.jpg", grid, jpeg_quality=85)))

# %% [markdown]
# ## Summary
#
# - torchvision's segmentation models return `OrderedDict(out=[N, C, H, W], aux=...)`; `aux`
#   exists for FCN and DeepLabV3 and only serves as an extra training loss.
# - LR-ASPP-MobileNetV3 has a tenth of FCN-ResNet50's weights and runs many times faster on a
#   CPU, for a few points of published mIoU.
# - Inputs are standardised with ImageNet's mean and std, because that is what the pretrained
#   backbones saw.
# - Pretrained weights come from a hash-checked download into torch's cache; offline, one line
#   says where to put the file. Fine-tuning replaces only the final 1x1 convolution(s).
# - After a short run, recompute batch-norm statistics before judging a model with small BN
#   momentum.
#
# ## Exercises
#
# 1. On a machine with internet, train with `--pretrained pretrained` for the same 3 epochs. How
#    much higher is the mean IoU than from random weights?
# 2. Instead of recomputing the statistics afterwards, set `momentum=0.1` in every batch-norm
#    layer before training (build the model and call `engine.train` as `train.py` does). Compare.
# 3. Build `tv_seg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=7,
#    aux_loss=True)` and train it with `seg_training.fit` as lessons 1-3 do: does the auxiliary
#    loss help in 3 epochs? (`seg_training.segmentation_loss` adds it when `aux` is in the output.)
# 4. Time the three models at 512 x 512. Does the time grow with the number of pixels?
#
# Next: [lesson 5, COCO instances to semantic class maps](5_coco_to_semantic.ipynb).

# %%
print(f"run time of this notebook: {time.perf_counter() - NOTEBOOK_START:.1f} s")
