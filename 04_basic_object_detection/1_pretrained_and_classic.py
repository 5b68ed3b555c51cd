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
# # Lesson 1: pretrained detectors, and the classic ones that came before
#
# torchvision ships nine COCO-trained detectors behind one call each. This lesson lists them, shows
# how each resizes an image of any size before it looks at it, what happens offline, and then runs
# the two detectors OpenCV 4 ships without any deep learning: the Viola-Jones Haar face cascade
# (2001) and the Dalal-Triggs HOG + linear SVM people detector (2005), on a real photograph from
# scikit-image. The question to keep in mind: what did deep learning change?
#
# - **Framework**: PyTorch / torchvision, OpenCV 4.
# - **Data**: `skimage.data.astronaut()` (a real photograph) and the built-in `pedestrians` scenes.
# - **Run time**: under a minute on a 2-core CPU (no training).
#
# Next: [lesson 2, a single-object detector](2_single_object_detector.ipynb).

# %%
import contextlib
import io
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
from detection_zoo import COCO_CATEGORIES, PRETRAINED, build_pretrained
from detector_runtime import classic_predictor, haar_faces, hog_people, time_predictors

from detseg import settings
from detseg.boxes import box_convert
from detseg.data import recipes
from detseg.data.imageio import read_image
from detseg.errors import UserError
from detseg.pretrained import cache_path
from detseg.viz import draw_detections, image_grid

NOTEBOOK_START = time.perf_counter()
SMOKE = settings.smoke_mode()  # DETSEG_SMOKE=1 (tests): fewer frames, one thread
if SMOKE:
    torch.set_num_threads(1)

# %% [markdown]
# ## The dict of pretrained detectors
#
# One visible dict maps a name to its builder and its COCO weights. The weights' file name carries
# the first digits of its SHA-256, which torch.hub checks on download.

# %%
for name, (_builder, weights) in PRETRAINED.items():
    print(
        f"{name:40s} box AP {weights.meta['_metrics']['COCO-val2017']['box_map']:5.1f}  "
        f"{cache_path(weights).name}"
    )
print(len(COCO_CATEGORIES), "labels, e.g.", COCO_CATEGORIES[1:6])

# %% [markdown]
# ## Offline: one line that says what to do
#
# Without the file in the torch hub cache and without internet, `build_pretrained` stops with the
# URL, the path where to put the file, and the alternative that needs no download. The paths are
# under your home directory; we print it as `~` so the message reads the same on every machine.


# %%
def home_as_tilde(text: str) -> str:
    return text.replace(str(Path.home()), "~")


hub_log = io.StringIO()  # torch.hub prints 'Downloading: "<url>" to <path>', then a progress bar
try:
    with contextlib.redirect_stdout(hub_log), contextlib.redirect_stderr(hub_log):
        model, classes = build_pretrained("fasterrcnn_mobilenet_v3_large_320_fpn")
    outcome = "weights found: the model is ready"
except UserError as err:
    outcome = f"error: {err.message()}"
print(home_as_tilde("\n".join(hub_log.getvalue().splitlines()[:1] + [outcome])))

# %% [markdown]
# ## Any image size: the resize every torchvision detector does first
#
# A two-stage detector scales the image so that its shorter side is `min_size`, unless the longer
# side would then pass `max_size`. We compute that size by hand and check it against the model's own
# transform (random weights are enough: the transform has no weights).


# %%
def resized_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return int(height * scale), int(width * scale)


model, _ = build_pretrained("fasterrcnn_mobilenet_v3_large_320_fpn", load_weights=False)
min_size, max_size = model.transform.min_size[0], model.transform.max_size
for height, width in [(480, 640), (300, 1200), (512, 512)]:
    images, _ = model.transform([torch.rand(3, height, width)])
    assert images.image_sizes[0] == resized_size(height, width, min_size, max_size)
    print((height, width), "->", images.image_sizes[0])

# %% [markdown]
# ## The Haar cascade on a real photograph
#
# A boosted cascade of Haar-like features slides over the image at several scales; the windows that
# pass every stage and have `minNeighbors` overlapping neighbours become faces. OpenCV returns
# `(x, y, w, h)`; we convert to `xyxy` by hand and check against the core's `box_convert`.

# %%
astronaut = skimage.data.astronaut()
faces = haar_faces(astronaut)
import cv2  # noqa: E402

raw = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
xywh = raw.detectMultiScale(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY), 1.1, 5).astype(np.float32)
by_hand = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
np.testing.assert_allclose(by_hand, box_convert(xywh, "xywh", "xyxy"))
np.testing.assert_allclose(by_hand, faces["boxes"])
print("faces:", faces["boxes"])

# %% [markdown]
# ## HOG people detector on the photograph and on built-in street scenes
#
# HOG describes 64 x 128 windows by histograms of gradient orientation; a linear SVM trained on
# INRIA pedestrians scores them. It knows upright people of one aspect ratio, nothing else.

# %%
people = hog_people(astronaut)
scenes = recipes.load("pedestrians", num_images=16 if SMOKE else 20)
scene = read_image(scenes.image_path(scenes.records[0]))
scene_people = hog_people(scene)
print(
    f"HOG: {len(people['boxes'])} on the astronaut, {len(scene_people['boxes'])} on a scene "
    f"with {len(scenes.records[0].boxes)} people"
)
grid = image_grid([
    draw_detections(astronaut, faces["boxes"], np.zeros(len(faces["boxes"]), int), class_names=["face"]),
    draw_detections(scene, scene_people["boxes"], np.zeros(len(scene_people["boxes"]), int),
                    scene_people["scores"], class_names=["person"]),
], ncols=2)  # fmt: skip
print(grid.shape)

# %% [markdown]
# ## How fast are they on 320 px frames?

# %%
frames = [cv2.resize(read_image(scenes.image_path(r)), (320, 320))
          for r in scenes.records[: 3 if SMOKE else 10]]  # fmt: skip
table = time_predictors([classic_predictor("haar_face"), classic_predictor("hog_people")], frames)
for name, row in table.items():
    print(f"{name:12s} {row['fps']:6.1f} FPS, {row['detections_per_frame']:.1f} detections / frame")

# %% [markdown]
# ## Summary
#
# - torchvision's detectors are one call each; their weights are hash-named files in the hub cache.
# - The classic detectors are fast and need no GPU, but each knows one object class in one pose, and
#   their hand-made features fail on what they were not designed for. Learned detectors (lesson 3)
#   learn features and many classes from data.
#
# ## Exercises
#
# 1. Lower `min_neighbors` of the Haar cascade to 2: what appears on the astronaut photo?
# 2. Run HOG on `skimage.data.coffee()` and explain what it finds.

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.0f} s")
