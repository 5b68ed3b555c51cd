"""Keras models of this folder: a frozen backbone, a box head and (07b) a class head.

Backbones (a visible dict, :data:`BACKBONES`):

- ``vgg16``: Keras' VGG16 without its classifier, ImageNet weights (the seed's choice), frozen; input
  224 x 224, features [7, 7, 512]. The weights are downloaded once (MD5-checked by Keras, the only
  hash Keras publishes) into ``$KERAS_HOME/models/``; offline, :func:`vgg16_backbone` stops with one line
  naming the URL, the file to put there, and ``--backbone small``.
- ``small``: five Conv-BN-ReLU-MaxPool blocks (16, 32, 64, 128, 128 channels); input 128 x 128,
  features [4, 4, 128] (flattened: 2048). Layer for layer the small backbone of
  ``04_basic_object_detection`` (PyTorch), so the side-by-side table compares equal sizes. No download: it is first trained on a built-in *classification* task (which of the
  three classes is in the image: the training images only, never their boxes), then frozen, the
  offline stand-in for "pretrained on ImageNet" (:func:`pretrain_small_backbone`).

Heads (the seed's, on the flattened features; their own sub-model ``heads``, so that they can
also train on cached features)::

    bbox:  Dense 128 ReLU - Dense 64 ReLU - Dense 32 ReLU - Dense 4 sigmoid  (xyxy / image size)
    class: Dense 512 ReLU - Dropout 0.5 - Dense 512 ReLU - Dropout 0.5 - Dense C softmax  (07b only)

Models take images float32 [B, S, S, 3] in [0, 1] (the VGG16 model converts them to its own input
convention inside, :class:`CaffePreprocess`) and return a dict ``{"bbox": [B, 4], "class": [B, C]}``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detseg.errors import UserError
from detseg.tf_import import import_tensorflow

tf = import_tensorflow()
import keras  # noqa: E402  (after TensorFlow, which import_tensorflow loads after torchvision)

IMAGE_SIZE = {"small": 128, "vgg16": 224}
SMALL_WIDTHS = (16, 32, 64, 128, 128)  # as 04_basic_object_detection's SmallBackbone
VGG16_WEIGHTS = {
    "url": "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "file": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "md5": "6d6bbae143d832006294945121d1f1fc",  # keras/src/applications/vgg16.py
}
BBOX_UNITS = (128, 64, 32)
CLASS_UNITS = (512, 512)


@keras.saving.register_keras_serializable(package="detseg07")
class CaffePreprocess(keras.layers.Layer):
    """[0, 1] RGB -> what the ImageNet VGG16 weights expect: 0-255 BGR minus the ImageNet mean
    (``keras.applications.vgg16.preprocess_input``, inside the model so exports include it)."""

    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, images: Any) -> Any:
        bgr = keras.ops.flip(images * 255.0, axis=-1)
        return bgr - keras.ops.convert_to_tensor(self.MEAN_BGR, dtype=images.dtype)


def build_small_backbone(image_size: int = 128, widths: Sequence[int] = SMALL_WIDTHS) -> Any:
    """Conv 3x3 - BatchNorm - ReLU - MaxPool 2 per width: [B, S, S, 3] -> [B, S/16, S/16, widths[-1]]."""
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = inputs
    for index, width in enumerate(widths):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{index}")(x)  # as PyTorch
        x = keras.layers.ReLU(name=f"relu{index}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
    return keras.Model(inputs, x, name="small_backbone")


def keras_home() -> Path:
    """Keras' cache folder (``$KERAS_HOME``, default ``~/.keras``); weights go to ``models/`` in it."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))


def vgg16_weights_path(*, download: Callable[..., str] | None = None) -> Path:
    """The VGG16 ImageNet weights file: from the cache, else downloaded and MD5-checked.

    A file already in ``$KERAS_HOME/models/`` is used as it is (as Keras does), so a copy made on a
    machine with internet works offline.

    Raises:
        UserError: not cached and the download failed (offline, or a corrupted file).
    """
    cached = keras_home() / "models" / VGG16_WEIGHTS["file"]
    if cached.is_file():
        return cached
    fetch = download or keras.utils.get_file
    try:
        return Path(
            fetch(
                VGG16_WEIGHTS["file"],
                VGG16_WEIGHTS["url"],
                cache_subdir="models",
                file_hash=VGG16_WEIGHTS["md5"],
                cache_dir=str(keras_home()),
            )
        )
    except Exception as err:  # URLError, HTTPError, a hash mismatch (ValueError) ...
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise UserError(
            f"cannot download the VGG16 ImageNet weights from {VGG16_WEIGHTS['url']} "
            f"({type(err).__name__}: {reason})",
            path=cached,
            fix=f"put that file there (MD5 {VGG16_WEIGHTS['md5']}) from a machine with internet, "
            "or use --backbone small (pretrained here on the built-in data, no download)",
        ) from err


def vgg16_backbone(image_size: int = 224, *, weights: str | Path | None = "imagenet") -> Any:
    """VGG16 without its classifier, ``[0, 1]`` images in, [B, S/32, S/32, 512] out.

    Args:
        weights: ``"imagenet"`` (cached or downloaded, see :func:`vgg16_weights_path`), a weights
            file, or None (random: only for tests and shapes).
    """
    inputs = keras.Input((image_size, image_size, 3), name="images")
    path = vgg16_weights_path() if weights == "imagenet" else weights
    vgg = keras.applications.VGG16(
        include_top=False, weights=None, input_shape=(image_size, image_size, 3)
    )
    if path is not None:
        vgg.load_weights(str(path))
    return keras.Model(inputs, vgg(CaffePreprocess(name="caffe_preprocess")(inputs)), name="vgg16")


def classifier_on(backbone: Any, num_classes: int) -> Any:
    """backbone -> global average pooling -> softmax: the pretraining task of the small backbone."""
    x = keras.layers.GlobalAveragePooling2D(name="gap")(backbone.output)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="class")(x)
    return keras.Model(backbone.input, outputs, name="backbone_classifier")


def build_heads(num_features: int, *, num_classes: int | None = None, dropout: float = 0.5) -> Any:
    """The seed's heads on flattened features (module docstring), as their own model ``heads``.

    Returns:
        ``keras.Model`` features [B, F] -> ``{"bbox": [B, 4]}`` (+ ``"class": [B, C]``).
    """
    features = keras.Input((num_features,), name="features")
    x = features
    for index, units in enumerate(BBOX_UNITS):
        x = keras.layers.Dense(units, activation="relu", name=f"bbox_dense{index}")(x)
    outputs = {"bbox": keras.layers.Dense(4, activation="sigmoid", name="bbox_out")(x)}
    if num_classes is not None:
        y = features
        for index, units in enumerate(CLASS_UNITS):
            y = keras.layers.Dense(units, activation="relu", name=f"class_dense{index}")(y)
            y = keras.layers.Dropout(dropout, name=f"class_dropout{index}")(y)
        outputs["class"] = keras.layers.Dense(num_classes, activation="softmax", name="class_out")(
            y
        )
    return keras.Model(features, outputs, name="heads")


def build_regressor(
    backbone: Any, *, num_classes: int | None = None, heads: Any = None, dropout: float = 0.5
) -> Any:
    """The frozen ``backbone``, flattened, into ``heads`` (default: new :func:`build_heads`).

    Args:
        backbone: a Keras model, images -> feature map; frozen here (``trainable = False``: its
            weights and BatchNorm statistics stay as they are).
        num_classes: None for the box head only (07a), else C for the class head too (07b).
        heads: existing heads to reuse (trained on cached features, or resumed).
    Returns:
        ``keras.Model`` images [B, S, S, 3] -> ``{"bbox": [B, 4]}`` (+ ``"class": [B, C]``).
    """
    backbone.trainable = False
    size = backbone.input.shape[1]
    inputs = keras.Input((size, size, 3), name="images")
    features = keras.layers.Flatten(name="flatten")(backbone(inputs, training=False))
    if heads is None:
        heads = build_heads(int(features.shape[-1]), num_classes=num_classes, dropout=dropout)
    predicted = heads(features)
    # named outputs, so that every export (SavedModel, ONNX) calls them "bbox" and "class"
    outputs = {name: keras.layers.Identity(name=name)(value) for name, value in predicted.items()}
    return keras.Model(inputs, outputs, name=f"{backbone.name}_regressor")


def split_regressor(model: Any) -> tuple[Any, Any]:
    """``(backbone, heads)`` of a model built by :func:`build_regressor`."""
    backbone = next(
        layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name != "heads"
    )
    return backbone, model.get_layer("heads")


def trainable_parameters(model: Any) -> int:
    """Number of weights the optimiser updates."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def all_parameters(model: Any) -> int:
    """Number of weights, frozen ones included."""
    return int(sum(np.prod(w.shape) for w in model.weights))


def box_iou_pairs(boxes_a: Any, boxes_b: Any) -> Any:
    """IoU of ``boxes_a[i]`` with ``boxes_b[i]`` (Keras ops, any backend).

    Args:
        boxes_a, boxes_b: [B, 4] xyxy, both in the same units (pixels, or divided by the image
            size: IoU does not change when x and y are scaled, each by its own factor).
    Returns:
        [B] IoU in [0, 1]; 0 where both boxes are empty.
    """
    ops = keras.ops
    x1 = ops.maximum(boxes_a[:, 0], boxes_b[:, 0])
    y1 = ops.maximum(boxes_a[:, 1], boxes_b[:, 1])
    x2 = ops.minimum(boxes_a[:, 2], boxes_b[:, 2])
    y2 = ops.minimum(boxes_a[:, 3], boxes_b[:, 3])
    inter = ops.maximum(x2 - x1, 0.0) * ops.maximum(y2 - y1, 0.0)

    def area(boxes: Any) -> Any:
        return ops.maximum(boxes[:, 2] - boxes[:, 0], 0.0) * ops.maximum(
            boxes[:, 3] - boxes[:, 1], 0.0
        )

    union = area(boxes_a) + area(boxes_b) - inter
    return ops.where(union > 0, inter / ops.maximum(union, 1e-12), 0.0)


@keras.saving.register_keras_serializable(package="detseg07")
class MeanBoxIoU(keras.metrics.Mean):
    """Mean IoU of predicted and true boxes over the batches seen (shown as ``bbox_iou``)."""

    def __init__(self, name: str = "iou", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        return super().update_state(box_iou_pairs(y_true, y_pred), sample_weight)


def compile_regressor(
    model: Any, *, lr: float, with_class: bool, bbox_weight: float = 1.0, class_weight: float = 1.0
) -> Any:
    """Adam, MSE on the boxes (the seed's loss), cross-entropy on the class, weighted and summed."""
    losses: dict[str, Any] = {"bbox": "mse"}
    weights = {"bbox": bbox_weight}
    metrics: dict[str, Any] = {"bbox": [MeanBoxIoU()]}
    if with_class:
        losses["class"] = "sparse_categorical_crossentropy"
        weights["class"] = class_weight
        metrics["class"] = ["sparse_categorical_accuracy"]
    model.compile(
        optimizer=keras.optimizers.Adam(lr), loss=losses, loss_weights=weights, metrics=metrics
    )
    return model
