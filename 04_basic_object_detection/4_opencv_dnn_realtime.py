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
# # Lesson 4: the same SSD on PyTorch, ONNX Runtime and OpenCV DNN, in real time
#
# OpenCV's DNN module runs networks without PyTorch, but it cannot import torchvision's whole
# detection graph (per-class top-k, NMS, data-dependent shapes). It does run the *network body*:
# backbone + heads at a fixed square input (320 px for torchvision's SSDlite320, 256 px for the one
# `train_detector.py` trains on the 256 px scenes), giving raw box offsets and class logits per default
# box. We export that body to ONNX, decode it with the same numpy code for every runtime (lesson 3's
# default boxes and offsets, the core's NMS), check the three runtimes find the same detections, and
# time them beside the classic HOG and Haar detectors on 320 px frames and a video stream.
#
# - **Framework**: PyTorch, ONNX / ONNX Runtime, OpenCV 4 DNN.
# - **Data**: built-in `shapes` scenes and the built-in synthetic video stream.
# - **Run time**: about a minute on a 2-core CPU with a trained checkpoint (lesson 3 /
#   `train_detector.py`); without one a brief run is trained first.
#
# Previous: [lesson 3](3_ssd_retinanet.ipynb).

# %%
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from detector_body import DecodeConfig, SSDBody, postprocess, to_body_input
from detector_runtime import body_predictor, classic_predictor, time_predictors, torch_predictor

from detseg import settings
from detseg.data import recipes
from detseg.data.imageio import read_image
from detseg.export import export_onnx, match_detections, ort_session, run_opencv_dnn
from detseg.scripts import load_script
from detseg.video import run_loop
from detseg.viz import draw_detections

NOTEBOOK_START = time.perf_counter()
SMOKE = settings.smoke_mode()  # DETSEG_SMOKE=1 (tests): a one-batch model, 3 frames
if SMOKE:
    torch.set_num_threads(1)
OUT = settings.runs_root() / "04_basic_object_detection" / "lesson4"
CHECKPOINT = settings.runs_root() / "04_basic_object_detection" / "ssdlite320" / "best.pt"
train_detector = load_script(".", "train_detector")

# %% [markdown]
# ## A trained SSDlite
#
# The checkpoint of `train_detector.py` if there is one; else a short run (one batch in smoke mode).

# %%
if SMOKE or not CHECKPOINT.is_file():
    quick = (
        ["--dry-run", "--batch-size", "2"]
        if SMOKE  # else lesson 3's short run (its 4-epoch trunk is cached once lesson 3 ran)
        else ["--epochs", "3", "--num-images", "300", "--pretrain-epochs", "4"]
    )
    train_detector.main([*quick, "--output-dir", str(OUT / "ssd")])
    CHECKPOINT = OUT / "ssd" / ("dry-run/last.pt" if SMOKE else "best.pt")
model, config = train_detector.load_detector(CHECKPOINT)
classes = ["__background__", *config["classes"]]
print(config["model"], "trained on", config["data_source"])

# %% [markdown]
# ## Export the body and compare the raw outputs
#
# The traced input is a random image; we compare on real scenes that were not traced.
#
# One detail decides whether OpenCV gets the same numbers. At 256 px SSDlite's last two feature
# maps are 1 x 1, and each head level starts with a depthwise 3 x 3 convolution padded by 1 (so
# does the last extra block). On a single pixel only the kernel's centre tap meets real data; the
# other eight meet the padding's zeros. OpenCV DNN 4.14 gets this case wrong: its depthwise kernel
# reads the *next channels'* pixels where the zeros should be (the core's tests pin it). So we
# export `body.exportable()`, a copy in which every such convolution is the 1 x 1 convolution it
# equals at this size (its centre tap; `detseg.export.single_pixel_convs_as_1x1`). Eager PyTorch
# keeps the original body: the comparison below checks the swap too.

# %%
body = SSDBody(model).eval()
exportable = body.exportable()
print("exported as 1 x 1 convolutions:", exportable.single_pixel_convs)
onnx_path = export_onnx(exportable, torch.rand(1, 3, body.size, body.size), OUT / "ssd_body.onnx",
                        input_names=["images"], output_names=["regressions", "logits"])  # fmt: skip
scenes = recipes.load("shapes", split="val", num_images=16 if SMOKE else 100)
frames = [read_image(scenes.image_path(r)) for r in scenes.records[: 3 if SMOKE else 10]]
session = ort_session(onnx_path)
for frame in frames[:2]:
    blob = to_body_input(frame, body.size)
    with torch.no_grad():
        eager = [t.numpy() for t in body(torch.from_numpy(blob))]
    for name, outputs in (("onnxruntime", session.run(None, {"images": blob})),
                          ("opencv", run_opencv_dnn(onnx_path, blob))):  # fmt: skip
        diff = max(float(np.abs(a - b).max()) for a, b in zip(eager, outputs))
        scale = max(float(np.abs(a).max()) for a in eager)
        print(f"{name:12s} max |diff| to PyTorch {diff:.2e} (largest output {scale:.1f})")
        assert diff < 1e-4 * scale + 1e-4

# %% [markdown]
# ## Decoding once, for every runtime, equal to torchvision
#
# `postprocess` (numpy: decode, softmax, per-class threshold and top-k, the core's batched NMS) on the
# body's outputs gives what torchvision's own `SSD.forward` gives on the same image at the body's size
# (detections above 0.3; the tests check it on a model with many).

# %%
model.score_thresh = 0.3  # confident detections only: no near-ties at the cap of 100
decode = DecodeConfig.from_ssd(model)
image = cv2.resize(frames[0], (body.size, body.size))
tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
with torch.no_grad():
    reference = model([tensor])[0]
    regressions, logits = body(tensor[None])
mine = postprocess(regressions[0].numpy(), logits[0].numpy(), decode)
match = match_detections(mine, {k: v.numpy() for k, v in reference.items()})
assert match["matched"] == match["count_a"] == match["count_b"], match
print(
    f"{match['matched']} detections, all matched; max box error {match['max_box_err'] or 0:.1e} px"
)

# %% [markdown]
# ## Three runtimes, their detections

# %%
predictors = {runtime: body_predictor(runtime, decode, classes, body=body, onnx_path=onnx_path,
                                      score_threshold=0.3)
              for runtime in ("torch", "onnxruntime", "opencv")}  # fmt: skip
for frame in frames[:2]:
    found = {runtime: predictor(frame) for runtime, predictor in predictors.items()}
    for other in ("onnxruntime", "opencv"):
        match = match_detections(found["torch"], found[other])
        print(f"{other:12s} {match['matched']} of PyTorch's {match['count_a']} detections "
              f"matched ({match['count_b']} found)")  # fmt: skip
        assert match["matched"] == match["count_a"] == match["count_b"], (other, match)

# %% [markdown]
# ## Frames per second on 320 px frames

# %%
frames_320 = [np.ascontiguousarray(cv2.resize(f, (320, 320))) for f in frames]
table = time_predictors([torch_predictor(model, classes, name="eager torchvision"),
                         *predictors.values(), classic_predictor("hog_people"),
                         classic_predictor("haar_face")], frames_320)  # fmt: skip
for name, row in table.items():
    print(f"{name:24s} {row['fps']:6.1f} FPS ({row['median_ms']:.1f} ms per frame)")

# %% [markdown]
# ## Realtime: the built-in video stream with an FPS overlay

# %%
predictor = predictors["opencv"]


def annotate(frame):
    found = predictor(frame.image)
    return draw_detections(frame.image, found["boxes"], found["labels"], found["scores"],
                           class_names=classes)  # fmt: skip


stream = run_loop("synthetic", annotate, writer_path=OUT / "stream.avi",
                  max_frames=3 if SMOKE else 60)  # fmt: skip
print(f"{stream['frames']} frames at {stream['fps']:.1f} FPS -> {stream['output']}")

# %% [markdown]
# ## The seed's Caffe MobileNet-SSD (VOC) on OpenCV DNN
#
# The seed ran chuanqi305's MobileNet-SSD (MobileNet v1 + SSD, 20 VOC classes + background,
# 300 x 300, BatchNorm folded into the convolutions) with `cv2.dnn.readNetFromCaffe`. Its deploy
# prototxt is in this folder, written by `caffe_mobilenet_ssd.py` from three tables (backbone,
# extra layers, the six predicting maps with their default-box sizes). The published weights come
# from a URL once (SHA-1-checked) into the torch hub cache; offline we write a `.caffemodel` with
# random weights for the same prototxt (Caffe's protobuf, encoded by hand), which exercises every
# layer, but its detections mean nothing.

# %%
import caffe_mobilenet_ssd as caffe_ssd

if caffe_ssd.weights_path().is_file():
    caffemodel, published = caffe_ssd.weights_path(), True
else:
    where = str(caffe_ssd.weights_path()).replace(str(Path.home()), "~")  # the same on any machine
    print(f"offline: random weights (the published file goes to {where})")
    caffemodel = caffe_ssd.random_caffemodel(OUT / "random.caffemodel", conf_bias={15: 4.0})
    published = False
net = caffe_ssd.load_net(caffemodel)
net.setInput(caffe_ssd.to_blob(frames[0]))
out, loc, conf, priors = net.forward(
    ["detection_out", "mbox_loc", "mbox_conf_flatten", "mbox_priorbox"]
)
print("detection_out", out.shape, "(image, label, score, x0, y0, x1, y1), normalised")

# %% [markdown]
# The last two layers are plain numpy in `caffe_mobilenet_ssd`: `prior_boxes` (SSD's default boxes,
# 1917 at 300 px: 19 x 19 x 3 + (10 x 10 + 5 x 5 + 3 x 3 + 2 x 2 + 1) x 6) and `detection_output`
# (decode with the variances 0.1 / 0.2, per-class threshold, top-k and NMS). Both equal OpenCV's.

# %%
np.testing.assert_allclose(priors[0, 0].reshape(-1, 4), caffe_ssd.prior_boxes(), atol=1e-6)
mine = caffe_ssd.detection_output(loc[0], conf[0])[0, 0]
theirs = out[0, 0][out[0, 0, :, 1] >= 1]  # OpenCV pads with rows of zeros
mine, theirs = (rows[np.lexsort((rows[:, 3], -rows[:, 2]))] for rows in (mine, theirs))
np.testing.assert_allclose(mine, theirs, atol=1e-5)  # same rows, in the same order
print(f"{len(caffe_ssd.prior_boxes())} priors and {len(mine)} detections equal to OpenCV's")
found = caffe_ssd.decode_detection_out(out, frames[0].shape[:2], score_threshold=0.5)
print([caffe_ssd.VOC_CLASSES[label] for label in found["labels"][:5]],
      "(meaningful with the published weights only)" if not published else "")  # fmt: skip
caffe_fps = time_predictors([caffe_ssd.caffe_predictor(caffemodel)], frames_320)
fps = caffe_fps["mobilenet-ssd caffe, opencv"]["fps"]
print(f"MobileNet-SSD (Caffe, 300 px) on OpenCV DNN: {fps:.1f} FPS")

# %% [markdown]
# ## Summary
#
# - Export the part of a detector that is a fixed-size tensor program; keep the data-dependent part
#   (decoding, NMS) in one small, tested function.
# - The three runtimes agree to float precision, so their detections match one to one, once the
#   export avoids the one case OpenCV DNN computes wrong (a padded depthwise convolution on a 1 x 1
#   map): check every runtime against eager PyTorch, on more than the traced input.
# - A Caffe model is a prototxt (the layers) plus a binary of named weight blobs; OpenCV runs both,
#   including SSD's own `PriorBox` and `DetectionOutput` layers, which are a few lines of numpy.
#
# ## Exercises
#
# 1. Export at width 1.0 and compare FPS.
# 2. `python detect_video.py --source 0 --weights <best.pt> --runtime opencv --show` on a webcam.
# 3. With the published weights: `python detect_image.py photo.jpg --model mobilenet_ssd_caffe`.

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.0f} s")
