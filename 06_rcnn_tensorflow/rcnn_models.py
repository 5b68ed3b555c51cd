"""Keras models of the R-CNN lessons: the region classifier, its backbones, the box-regression head.

- ``small``: a 4-stage CNN (conv-BN-ReLU-maxpool, 16-32-64-96 channels) trained from scratch on 64 x 64
  crops; needs no download (the offline route).
- ``mobilenet_v2``: Keras' MobileNetV2 with ImageNet weights, frozen, at 128 x 128 (the seed's
  choice of network); the weights are downloaded once by Keras. Offline, :func:`build_classifier`
  stops with one line naming the URL, the file to put in Keras' cache and ``--backbone small``.

Every classifier ends ``backbone -> GlobalAveragePooling ("features") -> Dropout -> Dense(softmax)``
so that :func:`feature_model` can give the box-regression head the pooled features.

Box regression (R-CNN, appendix C): a proposal ``P`` (centre x, y, width, height) and its ground truth
``G`` give the targets ``tx = (Gx - Px) / Pw``, ``ty = (Gy - Py) / Ph``, ``tw = log(Gw / Pw)``,
``th = log(Gh / Ph)`` (:func:`encode_boxes`; :func:`decode_boxes` inverts it). The head is
class-specific: ``Dense(4 * num_classes)`` on the features, the class's 4 values are used.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from detseg.errors import UserError
from detseg.tf_import import import_tensorflow

BACKBONES = {"small": 64, "mobilenet_v2": 128}  # name -> the input size its crops are resized to
MOBILENET_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_no_top.h5"
MOBILENET_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + MOBILENET_FILE
)


def keras_module() -> Any:
    """``keras``, imported after TensorFlow (through :mod:`detseg.tf_import`, torchvision first)."""
    import_tensorflow()
    import keras

    # a loaded model names its input "crops" and warns when called on a bare tensor: harmless
    warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
    return keras


# ----------------------------------------------------------------------------- box regression
def encode_boxes(proposals: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """R-CNN regression targets (tx, ty, tw, th) of ``targets`` relative to ``proposals``.

    Args:
        proposals, targets: float [N, 4] xyxy, positive widths and heights.
    Returns:
        float32 [N, 4].
    """
    p = np.asarray(proposals, np.float64).reshape(-1, 4)
    g = np.asarray(targets, np.float64).reshape(-1, 4)
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    px, py = p[:, 0] + pw / 2, p[:, 1] + ph / 2
    gx, gy = g[:, 0] + gw / 2, g[:, 1] + gh / 2
    return np.stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], 1).astype(
        np.float32
    )


def decode_boxes(proposals: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_boxes`: proposals [N, 4] xyxy + deltas [N, 4] -> boxes [N, 4] xyxy.

    ``tw`` and ``th`` are clipped at log(1000 / 16) (as torchvision) so that exp cannot overflow.
    """
    p = np.asarray(proposals, np.float64).reshape(-1, 4)
    d = np.asarray(deltas, np.float64).reshape(-1, 4)
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    px, py = p[:, 0] + pw / 2, p[:, 1] + ph / 2
    limit = np.log(1000.0 / 16)
    x, y = px + d[:, 0] * pw, py + d[:, 1] * ph
    w, h = pw * np.exp(np.minimum(d[:, 2], limit)), ph * np.exp(np.minimum(d[:, 3], limit))
    return np.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], 1).astype(np.float32)


# -------------------------------------------------------------------------------------- models
def _small_backbone(keras: Any, inputs: Any) -> Any:
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    for stage, channels in enumerate((16, 32, 64, 96)):
        for repeat in range(1):
            x = keras.layers.Conv2D(
                channels, 3, padding="same", use_bias=False, name=f"conv{stage}_{repeat}"
            )(x)
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{stage}_{repeat}")(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(2)(x)
    return x


def mobilenet_weights_path() -> Path:
    """Where Keras looks for the MobileNetV2 (alpha 1.0, 128, no top) ImageNet file:
    ``$KERAS_HOME/models/`` (default ``~/.keras/models/``), as read when Keras was imported."""
    keras_module()
    from keras.src.backend import config

    return Path(config.keras_home()) / "models" / MOBILENET_FILE


def _mobilenet_backbone(keras: Any, inputs: Any, weights: str | None) -> Any:
    size = BACKBONES["mobilenet_v2"]
    try:
        base = keras.applications.MobileNetV2(
            input_shape=(size, size, 3), include_top=False, weights=weights, alpha=1.0
        )
    except Exception as err:  # keras raises a bare Exception naming the URL when offline
        if weights is None or mobilenet_weights_path().is_file():
            raise
        raise UserError(
            f"cannot download the MobileNetV2 ImageNet weights from {MOBILENET_URL} "
            f"({type(err).__name__})",
            path=mobilenet_weights_path(),
            fix="download the file on a machine with internet and put it at this path, "
            "or use --backbone small (trained from scratch on the built-in data)",
        ) from err
    base.trainable = False  # the seed fine-tunes only the new head
    x = keras.layers.Resizing(size, size)(inputs)
    x = keras.applications.mobilenet_v2.preprocess_input(x)  # [0, 255] -> [-1, 1]
    return base(x, training=False)


def build_classifier(
    backbone: str = "small",
    *,
    num_classes: int = 2,
    crop_size: int | None = None,
    weights: str | None = "imagenet",
    dropout: float = 0.3,
    seed: int = 0,
) -> Any:
    """The region classifier: ``float32 [B, S, S, 3]`` crops in [0, 255] -> softmax ``[B, classes]``.

    Args:
        backbone: a key of :data:`BACKBONES`.
        num_classes: background + object classes (2: no_raccoon, raccoon).
        crop_size: input side S (default: the backbone's).
        weights: ``"imagenet"`` or ``None`` (``mobilenet_v2`` only).
        dropout: before the last layer.
        seed: initialisation seed.
    """
    keras = keras_module()
    if backbone not in BACKBONES:
        raise UserError(f"unknown backbone {backbone!r}", fix=f"use one of {sorted(BACKBONES)}")
    keras.utils.set_random_seed(seed)
    size = crop_size or BACKBONES[backbone]
    inputs = keras.Input((size, size, 3), name="crops")
    if backbone == "small":
        x = _small_backbone(keras, inputs)
    else:
        x = _mobilenet_backbone(keras, inputs, weights)
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    x = keras.layers.Dropout(dropout, seed=seed)(features)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="scores")(x)
    return keras.Model(inputs, outputs, name=f"rcnn_{backbone}")


def feature_model(classifier: Any) -> Any:
    """The classifier up to its pooled ``features`` layer (shares its weights)."""
    keras = keras_module()
    return keras.Model(classifier.inputs, classifier.get_layer("features").output)


def build_bbox_head(num_features: int, num_classes: int = 1, *, l2: float = 1e-3) -> Any:
    """R-CNN's class-specific box regressor: features [B, F] -> deltas [B, 4 * num_classes]
    (a linear layer with L2 weight decay, as the paper's ridge regression)."""
    keras = keras_module()
    inputs = keras.Input((num_features,), name="features")
    outputs = keras.layers.Dense(
        4 * num_classes, kernel_regularizer=keras.regularizers.L2(l2), name="deltas"
    )(inputs)
    return keras.Model(inputs, outputs, name="bbox_head")


def save_model_atomic(model: Any, path: str | Path) -> Path:
    """``model.save`` to a temporary ``.keras`` file next to ``path``, then rename it into place: a
    crash mid-write never leaves a half-written checkpoint under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.keras")
    model.save(temp)
    os.replace(temp, path)
    return path


def load_model(path: str | Path) -> Any:
    """A ``.keras`` file written by :func:`save_model_atomic`; one-line error when it is not one.

    ``safe_mode`` stays on: no arbitrary code is deserialised (Keras' equivalent of
    ``weights_only=True``).
    """
    keras = keras_module()
    path = Path(path)
    if not path.is_file():
        raise UserError(
            "no such model file", path=path, fix="train first (train_rcnn.py) or fix the path"
        )
    try:
        return keras.models.load_model(path, safe_mode=True)
    except Exception as err:  # a truncated or foreign file
        raise UserError(
            f"not a readable Keras model ({type(err).__name__})",
            path=path,
            fix="pass a .keras file written by train_rcnn.py",
        ) from err
