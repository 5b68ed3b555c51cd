"""Keras models of this folder: a frozen backbone, a box head and (07b) a class head.

Backbones (a visible dict, :data:`BACKBONES`):

- ``vgg16``: Keras' VGG16 without its classifier, ImageNet weights (the seed's choice), frozen; input
  224 x 224, features [7, 7, 512]. The weights are downloaded once (MD5-checked by Keras, the only
  hash Keras publishes) into ``$KERAS_HOME/models/``; offline, :func:`vgg16_backbone` stops with one line
  naming the URL, the file to put there, and ``--backbone small``.
- ``small``: five Conv-BN-ReLU-MaxPool blocks (16, 32, 64, 128, 128 channels); input 128 x 128,
  features [4, 4, 128] (flattened: 2048). Layer for layer the small backbone of
  ``04_basic_object_detection`` (PyTorch), so the side-by-side table compares equal sizes. No
  download: it is first trained to classify *and locate* the object in 1,200 *other* built-in
  images (data seed 1, never this folder's images; :func:`pretraining_model`), then frozen, the
  offline stand-in for "pretrained on ImageNet" (:func:`bbox_training.pretrain_small_backbone`).

Heads (the seed's dense layers; their own sub-model ``heads``, so that they can also train on
cached features), on the backbone's feature map::

    bbox:  [Conv 3x3 64 ReLU - Conv 1x1 32 ReLU] - Flatten - Dense 128 ReLU - Dense 64 ReLU
           - Dense 32 ReLU - Dense 4 sigmoid  (xyxy / image size)
    class: [MaxPool 2] - Flatten - Dense 512 ReLU - Dropout 0.5 - Dense 512 ReLU - Dropout 0.5
           - Dense C softmax  (07b only)

The bracketed layers are the small backbone's (:data:`HEAD_OPTIONS`): its regressor reads the map
*before* the last pooling ([8, 8, 128] at 128 px, a cell every 16 pixels instead of 32), the box head
first runs a trainable 3 x 3 convolution (64 channels: it sees the neighbouring cells, where a box edge
lies) and squeezes the result to 32 channels with a 1 x 1 convolution (so the flattened box features
stay 2048 long), and the class head pools it back to the [4, 4, 128] = 2048 features of the whole backbone.
VGG16 keeps the seed's heads exactly (flatten [7, 7, 512]).

Box losses (:data:`BOX_LOSSES`): ``mse`` (the seed's) or ``l1+giou`` (mean absolute error of the four
numbers plus ``1 - GIoU``, :func:`giou_loss`, the loss DETR uses for its boxes).

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
# what the regressor reads of each backbone and the layers its heads add (module docstring)
FEATURE_LAYER = {"small": "relu4", "vgg16": None}  # None: the backbone's own output
HEAD_OPTIONS: dict[str, dict[str, int | None]] = {
    "small": {"box_convs": ((3, 64), (1, 32)), "class_pool": 2},
    "vgg16": {"box_convs": (), "class_pool": None},
}


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


def regression_features(backbone: Any, backbone_name: str) -> Any:
    """The part of ``backbone`` the regressor reads: up to :data:`FEATURE_LAYER` (the small
    backbone's last ReLU, before its last pooling), or the whole backbone (VGG16)."""
    layer = FEATURE_LAYER[backbone_name]
    if layer is None:
        return backbone
    return keras.Model(
        backbone.input, backbone.get_layer(layer).output, name=f"{backbone.name}_map"
    )


LOCATOR_CHANNELS = 32  # the locating head's 1 x 1 convolution, as 04's


def pretraining_model(backbone: Any, num_classes: int) -> Any:
    """The small backbone's pretraining task: classify *and locate* the object (04's recipe).

    ``class``: the backbone's [4, 4, 128] output -> global average pooling -> softmax [B, C];
    ``bbox``: the map the regressor reads (:data:`FEATURE_LAYER`, [8, 8, 128]) -> Conv 1x1 32 ReLU
    -> flatten -> Dense 4 sigmoid [B, 4] (xyxy / image size). Both heads are dropped after the
    pretraining: only ``backbone`` is kept (and frozen), now with features that keep *where* the
    object is, as a detection-pretrained backbone's do.
    """
    finer = backbone.get_layer(FEATURE_LAYER["small"]).output  # [B, 8, 8, 128] at 128 px
    x = keras.layers.Conv2D(LOCATOR_CHANNELS, 1, activation="relu", name="locate_conv")(finer)
    x = keras.layers.Flatten(name="locate_flatten")(x)
    boxes = keras.layers.Dense(4, activation="sigmoid", name="locate_out")(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(backbone.output)
    labels = keras.layers.Dense(num_classes, activation="softmax", name="classify_out")(pooled)
    outputs = {"bbox": keras.layers.Identity(name="bbox")(boxes),
               "class": keras.layers.Identity(name="class")(labels)}  # fmt: skip
    return keras.Model(backbone.input, outputs, name="backbone_pretraining")


def build_heads(
    feature_shape: int | Sequence[int],
    *,
    num_classes: int | None = None,
    dropout: float = 0.5,
    box_convs: Sequence[tuple[int, int]] = (),
    class_pool: int | None = None,
) -> Any:
    """The heads (module docstring) as their own model ``heads``.

    Args:
        feature_shape: the backbone's output map ``(H, W, C)``, or ``F`` for flat features.
        num_classes: None for the box head only (07a), else C for the class head too (07b).
        box_convs: ``(kernel size, channels)`` of each convolution (ReLU, same padding) before the
            box head's flatten.
        class_pool: max pooling of that size before the class head's flatten.
    Returns:
        ``keras.Model`` features [B, *feature_shape] -> ``{"bbox": [B, 4]}`` (+ ``"class": [B, C]``).
    """
    shape = (feature_shape,) if isinstance(feature_shape, int) else tuple(feature_shape)
    features = keras.Input(shape, name="features")
    x = features
    for index, (size, channels) in enumerate(box_convs):
        x = keras.layers.Conv2D(
            channels, size, padding="same", activation="relu", name=f"bbox_conv{index}"
        )(x)
    x = keras.layers.Flatten(name="bbox_flatten")(x)
    for index, units in enumerate(BBOX_UNITS):
        x = keras.layers.Dense(units, activation="relu", name=f"bbox_dense{index}")(x)
    outputs = {"bbox": keras.layers.Dense(4, activation="sigmoid", name="bbox_out")(x)}
    if num_classes is not None:
        y = features
        if class_pool is not None:
            y = keras.layers.MaxPooling2D(class_pool, name="class_pool")(y)
        y = keras.layers.Flatten(name="class_flatten")(y)
        for index, units in enumerate(CLASS_UNITS):
            y = keras.layers.Dense(units, activation="relu", name=f"class_dense{index}")(y)
            y = keras.layers.Dropout(dropout, name=f"class_dropout{index}")(y)
        outputs["class"] = keras.layers.Dense(num_classes, activation="softmax", name="class_out")(
            y
        )
    return keras.Model(features, outputs, name="heads")


def build_regressor(
    backbone: Any,
    *,
    num_classes: int | None = None,
    heads: Any = None,
    dropout: float = 0.5,
    box_convs: Sequence[tuple[int, int]] = (),
    class_pool: int | None = None,
) -> Any:
    """The frozen ``backbone`` into ``heads`` (default: new :func:`build_heads`).

    Args:
        backbone: a Keras model, images -> feature map (:func:`regression_features`); frozen here
            (``trainable = False``: its weights and BatchNorm statistics stay as they are).
        num_classes: None for the box head only (07a), else C for the class head too (07b).
        heads: existing heads to reuse (trained on cached features, or resumed).
        box_convs, class_pool: of new heads (:func:`build_heads`, :data:`HEAD_OPTIONS`).
    Returns:
        ``keras.Model`` images [B, S, S, 3] -> ``{"bbox": [B, 4]}`` (+ ``"class": [B, C]``).
    """
    backbone.trainable = False
    size = backbone.input.shape[1]
    inputs = keras.Input((size, size, 3), name="images")
    features = backbone(inputs, training=False)
    if heads is None:
        heads = build_heads(
            tuple(features.shape[1:]), num_classes=num_classes, dropout=dropout,
            box_convs=box_convs, class_pool=class_pool,
        )  # fmt: skip
    predicted = heads(features)
    # named outputs, so that every export (SavedModel, ONNX) calls them "bbox" and "class"
    outputs = {name: keras.layers.Identity(name=name)(value) for name, value in predicted.items()}
    return keras.Model(inputs, outputs, name=f"{backbone.name}_regressor")


def build_for(backbone_name: str, backbone: Any, *, num_classes: int | None = None) -> Any:
    """The regressor of ``--backbone backbone_name`` on the whole (pretrained) ``backbone``:
    :func:`regression_features` and the :data:`HEAD_OPTIONS` of that backbone."""
    return build_regressor(
        regression_features(backbone, backbone_name),
        num_classes=num_classes,
        **HEAD_OPTIONS[backbone_name],
    )


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


def _inter_union(boxes_a: Any, boxes_b: Any) -> tuple[Any, Any]:
    """Intersection and union areas of ``boxes_a[i]`` and ``boxes_b[i]``, each [B]."""
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

    return inter, area(boxes_a) + area(boxes_b) - inter


def box_iou_pairs(boxes_a: Any, boxes_b: Any) -> Any:
    """IoU of ``boxes_a[i]`` with ``boxes_b[i]`` (Keras ops, any backend).

    Args:
        boxes_a, boxes_b: [B, 4] xyxy, both in the same units (pixels, or divided by the image
            size: IoU does not change when x and y are scaled, each by its own factor).
    Returns:
        [B] IoU in [0, 1]; 0 where both boxes are empty.
    """
    inter, union = _inter_union(boxes_a, boxes_b)
    return keras.ops.where(union > 0, inter / keras.ops.maximum(union, 1e-12), 0.0)


@keras.saving.register_keras_serializable(package="detseg07")
class MeanBoxIoU(keras.metrics.Mean):
    """Mean IoU of predicted and true boxes over the batches seen (shown as ``bbox_iou``)."""

    def __init__(self, name: str = "iou", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        return super().update_state(box_iou_pairs(y_true, y_pred), sample_weight)


def giou_pairs(boxes_true: Any, boxes_pred: Any) -> Any:
    """Generalised IoU of ``boxes_true[i]`` with ``boxes_pred[i]`` (Keras ops): IoU minus the share
    of the smallest enclosing box that neither covers (Rezatofighi et al. 2019).

    Args:
        boxes_true, boxes_pred: [B, 4] xyxy in the same units.
    Returns:
        [B] in [-1, 1]; it still falls as two disjoint boxes move apart, where IoU stays 0.
    """
    ops = keras.ops
    iou = box_iou_pairs(boxes_true, boxes_pred)
    inter_union = _inter_union(boxes_true, boxes_pred)
    hull_w = ops.maximum(boxes_true[:, 2], boxes_pred[:, 2]) - ops.minimum(
        boxes_true[:, 0], boxes_pred[:, 0]
    )
    hull_h = ops.maximum(boxes_true[:, 3], boxes_pred[:, 3]) - ops.minimum(
        boxes_true[:, 1], boxes_pred[:, 1]
    )
    hull = ops.maximum(hull_w, 0.0) * ops.maximum(hull_h, 0.0)
    union = inter_union[1]
    return iou - (hull - union) / ops.maximum(hull, 1e-7)


@keras.saving.register_keras_serializable(package="detseg07")
def giou_loss(boxes_true: Any, boxes_pred: Any) -> Any:
    """``1 - GIoU`` per box, [B] (:func:`giou_pairs`)."""
    return 1.0 - giou_pairs(boxes_true, boxes_pred)


@keras.saving.register_keras_serializable(package="detseg07")
def l1_giou_loss(boxes_true: Any, boxes_pred: Any) -> Any:
    """Mean absolute error of the four numbers plus ``1 - GIoU``, per box, [B]."""
    l1 = keras.ops.mean(keras.ops.abs(boxes_true - boxes_pred), axis=-1)
    return l1 + giou_loss(boxes_true, boxes_pred)


BOX_LOSSES: dict[str, Any] = {"mse": "mse", "l1+giou": l1_giou_loss}


def compile_regressor(
    model: Any,
    *,
    lr: float,
    with_class: bool,
    bbox_weight: float = 1.0,
    class_weight: float = 1.0,
    box_loss: str = "mse",
    decay_steps: int | None = None,
) -> Any:
    """Adam (its rate decayed from ``lr`` to 0 along a cosine over ``decay_steps`` steps, or
    constant when None); ``box_loss`` (:data:`BOX_LOSSES`) on the boxes, cross-entropy on the
    class, weighted and summed."""
    rate = lr if decay_steps is None else keras.optimizers.schedules.CosineDecay(lr, decay_steps)
    losses: dict[str, Any] = {"bbox": BOX_LOSSES[box_loss]}
    weights = {"bbox": bbox_weight}
    metrics: dict[str, Any] = {"bbox": [MeanBoxIoU()]}
    if with_class:
        losses["class"] = "sparse_categorical_crossentropy"
        weights["class"] = class_weight
        metrics["class"] = ["sparse_categorical_accuracy"]
    model.compile(
        optimizer=keras.optimizers.Adam(rate), loss=losses, loss_weights=weights, metrics=metrics
    )
    return model
