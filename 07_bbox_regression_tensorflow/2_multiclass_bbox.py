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
# # Lesson 2: box and class together, two heads on one backbone (Keras)
#
# Lesson 1 regressed the box of an airplane. Here the object may be an airplane, a face or a
# motorcycle: the network gets a second head, a softmax over the three classes, beside the box head,
# both on the same frozen features. Training minimises a *weighted sum* of the two losses (L1 + GIoU
# for the box, as in lesson 1; cross-entropy for the class). This is the Keras twin of ``04_basic_object_detection``'s PyTorch
# single-object detector; the last section compares the two on the same data and backbone size.
#
# - **Framework**: Keras 3 on TensorFlow; ``tf.distribute`` for several GPUs.
# - **Dataset**: built-in ``single_object`` (Caltech-101 CSV layout), 800 images per class.
# - **What you learn**: a multi-output Keras model with per-output losses and weights, class accuracy
#   and the confusion matrix, export to ``.keras`` / SavedModel / ONNX with parity checks.
# - **Run time** (``python -m detseg.notebooks build --execute``): see the folder README.

# %% [markdown]
# ## Setup
#
# Smoke mode (``DETSEG_SMOKE=1``, the tests) uses 24 images and one epoch: numbers then mean nothing.

# %%
import json
import time
from pathlib import Path

import bbox_data
import bbox_fit
import bbox_models
import bbox_training
import matplotlib.pyplot as plt
import numpy as np
from bbox_models import keras, tf

from detseg import settings
from detseg.data.samples import detection_sample
from detseg.scripts import load_script
from detseg.viz import image_grid

NOTEBOOK_START = time.perf_counter()
SMOKE = settings.smoke_mode()
EPOCHS = 1 if SMOKE else 40
# the small backbone's pretraining (lesson 1, section 3), one epoch in smoke mode
PRETRAIN = {**bbox_training.PRETRAIN_DEFAULTS, **({"epochs": 1} if SMOKE else {})}
RUNS = settings.runs_root() / "07_bbox_regression_tensorflow"
OUT = RUNS / ("lesson2-smoke" if SMOKE else "lesson2")  # a smoke run never overwrites a full one
print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, smoke mode: {SMOKE}")

# %% [markdown]
# ## 1. Data: all three classes
#
# The same split as lesson 1 (per class: 20 % test, 10 % val), now keeping every class. Each record
# holds one box and one label.

# %%
dataset = bbox_data.load_source(None)
splits = bbox_data.split_dataset(dataset, val_fraction=0.1, test_fraction=0.2, seed=0)
for name, part in splits.items():
    print(
        f"{name:<5} {len(part):>4} images, per class {np.bincount(bbox_data.true_labels(part)).tolist()}"
    )

# %% [markdown]
# ## 2. Two heads on one frozen backbone
#
# ``build_for("small", backbone, num_classes=3)`` adds the seed's class head (Dense 512, Dropout 0.5,
# Dense 512, Dropout 0.5, softmax) to lesson 1's box head; it reads the same [8, 8, 128] map, pooled
# back to the [4, 4, 128] of the whole backbone. The model returns a dict, and ``compile`` takes one
# loss per key and a weight per key: the total loss is
# ``bbox_weight * (L1 + 1 - GIoU) + class_weight * CE``. The backbone is the small one pretrained to
# classify and locate other built-in images (lesson 1, section 3; cached by lesson 1 or the scripts).
#
# The model is built inside a ``tf.distribute`` strategy scope: ``MirroredStrategy`` copies it on every
# GPU and splits each batch between them when there are several; here (CPU only) the strategy is one
# device. The same code runs on both; only the CPU path was run in this repository's tests.

# %%
strategy = bbox_training.select_strategy("auto")
print(f"{type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s)")
with strategy.scope():
    backbone, pretrain = bbox_training.pretrain_small_backbone(
        image_size=128, seed=0, cache_dir=RUNS / "pretrained", **PRETRAIN,
        held_out={"val": splits["val"], "test": splits["test"]},
    )  # fmt: skip
    model = bbox_models.build_for("small", backbone, num_classes=3)
    bbox_models.compile_regressor(
        model, lr=1e-3, with_class=True, bbox_weight=1.0, class_weight=1.0, box_loss="l1+giou"
    )
print(
    f"pretrained backbone (held-out images of its task): class accuracy "
    f"{pretrain['val_accuracy']:.3f}, box IoU {pretrain['val_box_iou']:.3f}"
)
print(
    f"outputs {list(model.output)}, trainable parameters {bbox_models.trainable_parameters(model):,}"
)

# %% [markdown]
# ## 3. Train
#
# ``fit_regressor`` builds this same model under the same strategy and runs ``model.fit`` with the
# callbacks of lesson 1 (checkpoints, CSV log, early
# stopping on the validation IoU) and evaluates ``best.keras`` on the test split.

# %%
result = bbox_fit.fit_regressor(
    splits=splits, backbone_name="small", with_class=True, epochs=EPOCHS, batch_size=64, lr=1e-3,
    seed=0, output_dir=OUT, config={"lesson": 2, "val_fraction": 0.1, "test_fraction": 0.2,
                                    "seed": 0, "data_path": None, "num_images": None},
    pretrain={**PRETRAIN, "cache_dir": RUNS / "pretrained"},
    box_loss="l1+giou", flip=True, lr_schedule="cosine", patience=15, verbose=0,
)  # fmt: skip
for row in result["history"][4::5]:  # every 5th epoch (the script prints each one)
    print(
        f"epoch {row['epoch']:3d}: loss {row['loss']:.3f}, val loss {row['val_loss']:.3f}, "
        f"val IoU {row['val_bbox_iou']:.3f}, {row['epoch_time_s']:.1f} s"
    )
print(bbox_fit.describe(result))
test = result["test"]
confusion = np.array(test["confusion"])
assert confusion.sum() == test["num_images"]
assert abs(np.trace(confusion) / confusion.sum() - test["class_accuracy"]) < 1e-9
print("confusion matrix (rows: true class; columns: predicted):")
print(confusion)

# %%
plt.figure(figsize=(11, 3.5))
plt.imshow(plt.imread(OUT / "training_curves.png"))
plt.axis("off")
plt.show()

# %% [markdown]
# ## 4. Look at the predictions
#
# Green: the true box; red: the predicted one; above each picture the IoU and the predicted class.

# %%
best, state = bbox_training.load_trained(OUT / "best.keras")
predictions = bbox_training.predict_split(best, splits["test"], image_size=128)
truth = bbox_data.true_boxes(splits["test"])
ious = bbox_training.paired_iou(predictions["boxes"], truth)
picked = np.linspace(0, len(truth) - 1, min(8, len(truth))).astype(int)
shown = [bbox_training.draw_boxes(detection_sample(splits["test"], int(i))[0], predictions["boxes"][i], truth[i])
         for i in picked]  # fmt: skip
titles = [f"IoU {ious[i]:.2f} {dataset.classes[predictions['scores'][i].argmax()]}" for i in picked]
plt.figure(figsize=(14, 5))
plt.imshow(image_grid(shown, titles=titles, ncols=4))
plt.axis("off")
plt.show()

# %% [markdown]
# ## 5. Export: .keras, SavedModel, ONNX
#
# ``export.py`` saves the model three ways, reloads each and compares it with Keras on random and real
# images; the ONNX file is written by Keras' own ``model.export(path, format="onnx")`` (tf2onnx inside)
# and run by ONNX Runtime.

# %%
exported = load_script(Path(bbox_training.__file__).parent, "export").main(
    ["--weights", str(OUT / "best.keras"), "--dry-run"]
)
for kind in ("keras", "saved_model", "onnx"):
    assert exported[kind]["max_abs_diff_bbox"] < 1e-4 and exported[kind]["same_class"]

# %% [markdown]
# ## 6. Side by side with PyTorch
#
# ``compare_pytorch.py`` trains this model and ``04_basic_object_detection``'s PyTorch twin on the same
# files with the same backbone architecture, and writes one table. It takes minutes, so the lesson
# shows the table of the last run if there is one.

# %%
table = RUNS / "comparison" / "comparison.md"
print(table.read_text() if table.is_file() else f"no {table} yet: run compare_pytorch.py")

# %% [markdown]
# ## Summary
#
# - Two heads on one backbone: one loss per output, weighted and summed by Keras.
# - The class head is nearly free once the features are good; the box is the hard part.
# - ``tf.distribute`` scales the same code to several GPUs; every export gives Keras' predictions.
#
# ## Exercises
#
# 1. Set ``class_weight=0`` (``--class-weight`` cannot be 0 in the script: why?), then 10. How do
#    accuracy and IoU move?
# 2. Train on the airplanes and faces only (``--classes airplane face``) and compare the confusion.
# 3. Time ``model.predict`` on the test split against the ONNX Runtime session: where does the gap
#    come from?

# %%
print(json.dumps({k: round(v, 3) for k, v in test.items() if isinstance(v, float)}))
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.0f} s")
