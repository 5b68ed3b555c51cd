"""tf.data pipelines for Keras models, built on the same numpy samples and transforms as the torch side.

Records are read and transformed in numpy (:mod:`detseg.data.samples`, :mod:`detseg.data.transforms`)
inside ``tf.numpy_function``, so one record gives the same pixels and boxes here as in
:mod:`detseg.data.torch_datasets`, only laid out for Keras (NHWC, padded boxes). TensorFlow is imported
inside the functions: importing this module costs nothing.

Detection batches::

    images:    float32 [B, H, W, 3] in [0, 1]
    boxes:     float32 [B, M, 4] xyxy in pixels of the resized image (or in [0, 1] with
               ``normalize_boxes=True``), rows past ``num_boxes`` are zeros
    labels:    int32 [B, M] contiguous class index 0..C-1 (no background shift), -1 past ``num_boxes``
    num_boxes: int32 [B]
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from detseg.data.samples import (
    SampleTransform,
    apply_transforms,
    detection_sample,
    sample_rng,
    segmentation_sample,
)
from detseg.data.transforms import Normalize, Resize
from detseg.data.types import DetectionDataset, SegmentationDataset
from detseg.tf_import import import_tensorflow


class _EpochCounter:
    """Counts how often each index was loaded, so that epoch ``e`` of index ``i`` draws from the
    generator ``(seed, e, i)`` whatever the order and parallelism of the map."""

    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()
        self._lock = threading.Lock()

    def next(self, index: int) -> int:
        with self._lock:
            epoch = self._counts[index]
            self._counts[index] += 1
            return epoch


def _indices(num_items: int, *, shuffle: bool, seed: int) -> Any:
    tf = import_tensorflow()

    indices = tf.data.Dataset.range(num_items)
    if shuffle:
        indices = indices.shuffle(max(num_items, 1), seed=seed, reshuffle_each_iteration=True)
    return indices


def detection_tf_dataset(
    dataset: DetectionDataset,
    *,
    image_size: Sequence[int],
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    transforms: SampleTransform | None = None,
    max_boxes: int | None = None,
    normalize_boxes: bool = False,
    drop_remainder: bool = False,
) -> Any:
    """A ``tf.data.Dataset`` of ``(images, {"boxes", "labels", "num_boxes"})`` batches.

    Args:
        dataset: detection records from any reader.
        image_size: (height, width) every image is resized to after ``transforms``.
        batch_size: images per batch.
        shuffle: reshuffle the order each epoch (seeded by ``seed``).
        seed: seeds the order and the augmentation generators.
        transforms: numpy transforms (:mod:`detseg.data.transforms`) applied before the resize.
        max_boxes: padding length M (default: the largest object count in ``dataset``); extra
            objects are cut off.
        normalize_boxes: divide boxes by (width, height) so they lie in [0, 1].
        drop_remainder: drop a last, smaller batch.
    Returns:
        ``tf.data.Dataset`` as in the module docstring.
    """
    tf = import_tensorflow()

    height, width = int(image_size[0]), int(image_size[1])
    resize = Resize((height, width))
    if max_boxes is None:
        max_boxes = max([len(r.labels) for r in dataset.records] + [1])
    epochs = _EpochCounter()

    def load(index: np.int64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.int32]:
        i = int(index)
        image, target = detection_sample(dataset, i)
        rng = sample_rng(seed, epochs.next(i), i)
        image, target = apply_transforms(transforms, image, target, rng)
        image, target = resize(image, target)
        boxes = np.asarray(target["boxes"], dtype=np.float32).reshape(-1, 4)[:max_boxes]
        labels = np.asarray(target["labels"], dtype=np.int32)[:max_boxes]
        if normalize_boxes:
            boxes = boxes / np.array([width, height, width, height], dtype=np.float32)
        padded_boxes = np.zeros((max_boxes, 4), np.float32)
        padded_boxes[: len(boxes)] = boxes
        padded_labels = np.full(max_boxes, -1, np.int32)
        padded_labels[: len(labels)] = labels
        pixels = image.astype(np.float32) / 255.0
        return pixels, padded_boxes, padded_labels, np.int32(len(labels))

    def to_example(index: Any) -> tuple[Any, dict[str, Any]]:
        image, boxes, labels, count = tf.numpy_function(
            load, [index], [tf.float32, tf.float32, tf.int32, tf.int32], stateful=True
        )
        image = tf.ensure_shape(image, [height, width, 3])
        boxes = tf.ensure_shape(boxes, [max_boxes, 4])
        labels = tf.ensure_shape(labels, [max_boxes])
        count = tf.ensure_shape(count, [])
        return image, {"boxes": boxes, "labels": labels, "num_boxes": count}

    pipeline = _indices(len(dataset), shuffle=shuffle, seed=seed)
    pipeline = pipeline.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return pipeline.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def segmentation_tf_dataset(
    dataset: SegmentationDataset,
    *,
    image_size: Sequence[int],
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    transforms: SampleTransform | None = None,
    normalize: Normalize | None = None,
    drop_remainder: bool = False,
) -> Any:
    """A ``tf.data.Dataset`` of ``(images float32 [B, H, W, 3], masks int32 [B, H, W])`` batches.

    Images are in [0, 1], or ``normalize``-d; masks hold class indices (or the dataset's
    ``ignore_index``) and are resized with nearest neighbour. Arguments as in
    :func:`detection_tf_dataset`.
    """
    tf = import_tensorflow()

    height, width = int(image_size[0]), int(image_size[1])
    resize = Resize((height, width))
    epochs = _EpochCounter()

    def load(index: np.int64) -> tuple[np.ndarray, np.ndarray]:
        i = int(index)
        image, target = segmentation_sample(dataset, i)
        rng = sample_rng(seed, epochs.next(i), i)
        image, target = apply_transforms(transforms, image, target, rng)
        image, target = resize(image, target)
        if normalize is not None:
            pixels, target = normalize(image, target, rng)
        else:
            pixels = image.astype(np.float32) / 255.0
        mask = np.asarray(target["semantic_mask"], dtype=np.int32)
        return pixels.astype(np.float32), mask

    def to_example(index: Any) -> tuple[Any, Any]:
        image, mask = tf.numpy_function(load, [index], [tf.float32, tf.int32], stateful=True)
        return tf.ensure_shape(image, [height, width, 3]), tf.ensure_shape(mask, [height, width])

    pipeline = _indices(len(dataset), shuffle=shuffle, seed=seed)
    pipeline = pipeline.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return pipeline.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
