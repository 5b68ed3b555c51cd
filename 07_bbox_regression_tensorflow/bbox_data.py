"""The data of this folder: the Caltech-101 CSV layout, split by class, read lazily into tf.data.

The seed script read every image into one numpy array before training (about 800 x 224 x 224 x 3
floats for the airplanes alone). Here the CSV is read once (a few kB: file names and boxes) and every
image is decoded only when its batch is needed, through the core's tf.data adapter
(:func:`detseg.data.tf_datasets.detection_tf_dataset`), so the memory used does not grow with the
dataset.

Batches for Keras::

    images: float32 [B, S, S, 3] in [0, 1] (every image resized to S x S, the box with it)
    targets: {"bbox": float32 [B, 4] xyxy divided by (width, height), so in [0, 1],
              "class": int32 [B] class index}      ("class" only for the multi-class model)

Boxes are normalised by the image size: the regression head ends in a sigmoid, and a box predicted
for the resized image maps back to the original image by multiplying with its (width, height).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from detseg import settings
from detseg.data import recipes
from detseg.data.formats import csvboxes
from detseg.data.types import DetectionDataset
from detseg.errors import UserError

RECIPE = "single_object"
# 800 images per class: the seed's CALTECH-101 airplane folder has 800 images
DEFAULT_NUM_IMAGES = 2400
SMOKE_NUM_IMAGES = 24


def load_source(
    data_path: str | Path | None, *, num_images: int | None = None, data_seed: int = 0
) -> DetectionDataset:
    """The whole dataset: the built-in one (generated on first use), or a folder in the CSV layout.

    Args:
        data_path: a folder with ``images/<class>/`` and ``annotations/<class>.csv`` (PyImageSearch's
            Caltech-101 layout), or None for the built-in ``single_object`` data.
        num_images: size of the built-in dataset (default 2400; 24 in smoke mode).
        data_seed: seed of the built-in dataset's drawing.
    Raises:
        UserError: the folder is not in the CSV layout (names the file and line).
    """
    if data_path is not None:
        dataset = csvboxes.read(data_path)
    else:
        if num_images is None:
            num_images = SMOKE_NUM_IMAGES if settings.smoke_mode() else DEFAULT_NUM_IMAGES
        dataset = recipes.load(RECIPE, num_images=num_images, seed=data_seed)
    several = [r.file_name for r in dataset.records if len(r.labels) != 1]
    if several:
        raise UserError(
            f"{len(several)} images hold several boxes (first: {several[0]}); this lesson regresses "
            "one box per image",
            path=dataset.root,
            fix="keep one row per image in annotations/<class>.csv",
        )
    return dataset


def select_classes(dataset: DetectionDataset, names: Sequence[str]) -> DetectionDataset:
    """The records of the classes ``names``, relabelled ``0..len(names)-1`` in that order.

    Raises:
        UserError: a name that is not a class of the dataset.
    """
    unknown = [name for name in names if name not in dataset.classes]
    if unknown:
        raise UserError(
            f"class {unknown[0]!r} is not in the dataset (classes: {', '.join(dataset.classes)})",
            path=dataset.root,
            fix="pass one of those to --classes",
        )
    new_label = {dataset.classes.index(name): index for index, name in enumerate(names)}
    records = [
        replace(record, labels=np.array([new_label[int(record.labels[0])]], dtype=np.int64))
        for record in dataset.records
        if int(record.labels[0]) in new_label
    ]
    return replace(dataset, classes=list(names), records=records)


def split_dataset(
    dataset: DetectionDataset, *, val_fraction: float, test_fraction: float, seed: int = 0
) -> dict[str, DetectionDataset]:
    """Stratified split into ``{"train", "val", "test"}``: per class, records shuffled by ``seed``,
    the first ``test_fraction`` to test, the next ``val_fraction`` to val, the rest to train.

    The split depends on the class and file name of each record only, so the airplanes of the
    single-class run are held out exactly as in the multi-class run on the same data.
    """
    parts: dict[str, list[Any]] = {"train": [], "val": [], "test": []}
    for label in range(len(dataset.classes)):
        members = sorted(
            (r for r in dataset.records if int(r.labels[0]) == label), key=lambda r: r.file_name
        )
        order = np.random.default_rng([seed, label]).permutation(len(members))
        n_test = round(test_fraction * len(members))
        n_val = round(val_fraction * len(members))
        parts["test"] += [members[i] for i in order[:n_test]]
        parts["val"] += [members[i] for i in order[n_test : n_test + n_val]]
        parts["train"] += [members[i] for i in order[n_test + n_val :]]
    for name, records in parts.items():
        if not records:
            raise UserError(
                f"the {name} split is empty ({len(dataset)} images)",
                path=dataset.root,
                fix="use more images or other --val-fraction / --test-fraction",
            )
    return {name: replace(dataset, records=records) for name, records in parts.items()}


def epoch_order(num_items: int, *, seed: int, epoch: int) -> np.ndarray:
    """The training order of epoch ``epoch``: a permutation that depends on ``(seed, epoch)`` only,
    so a resumed run sees the same batches as an uninterrupted one."""
    return np.random.default_rng([seed, epoch, 7]).permutation(num_items)


def box_dataset(
    dataset: DetectionDataset,
    *,
    image_size: int,
    batch_size: int,
    with_class: bool,
    order: np.ndarray | None = None,
    flip: float = 0.0,
    flip_seed: int = 0,
) -> Any:
    """A ``tf.data.Dataset`` of ``(images, targets)`` batches (module docstring) in ``order``;
    each image mirrored left-right with probability ``flip`` (1: all), its box with it
    (:func:`mirror_boxes`), drawn from ``(flip_seed, image index)``.

    Images are read and resized one by one when the batch is needed (never all at once).
    """
    from detseg.data.tf_datasets import detection_tf_dataset
    from detseg.data.transforms import HorizontalFlip

    if order is not None:
        dataset = replace(dataset, records=[dataset.records[int(i)] for i in order])
    pipeline = detection_tf_dataset(
        dataset,
        image_size=(image_size, image_size),
        batch_size=batch_size,
        max_boxes=1,
        normalize_boxes=True,
        transforms=HorizontalFlip(p=flip) if flip > 0 else None,
        seed=flip_seed,
    )

    def to_keras(images: Any, targets: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        outputs = {"bbox": targets["boxes"][:, 0, :]}
        if with_class:
            outputs["class"] = targets["labels"][:, 0]
        return images, outputs

    return pipeline.map(to_keras)


def training_dataset(
    dataset: DetectionDataset,
    *,
    image_size: int,
    batch_size: int,
    with_class: bool,
    seed: int,
    first_epoch: int,
    last_epoch: int,
    flip: float = 0.0,
) -> Any:
    """Epochs ``first_epoch .. last_epoch - 1`` one after the other, each in :func:`epoch_order`,
    for ``model.fit(..., initial_epoch=first_epoch, steps_per_epoch=steps_per_epoch(...))``;
    ``flip``: the probability of mirroring an image, drawn anew each epoch."""
    epochs = [
        box_dataset(
            dataset,
            image_size=image_size,
            batch_size=batch_size,
            with_class=with_class,
            order=epoch_order(len(dataset), seed=seed, epoch=epoch),
            flip=flip,
            flip_seed=seed * 100_003 + epoch,
        )
        for epoch in range(first_epoch, last_epoch)
    ]
    pipeline = epochs[0]
    for more in epochs[1:]:
        pipeline = pipeline.concatenate(more)
    return pipeline


def mirror_boxes(boxes: np.ndarray) -> np.ndarray:
    """[N, 4] xyxy divided by the image size -> the boxes of the left-right mirrored images."""
    boxes = np.asarray(boxes, np.float32)
    return np.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], axis=1)


def steps_per_epoch(num_items: int, batch_size: int) -> int:
    """Batches in one epoch (the last one may be smaller)."""
    return -(-num_items // batch_size)


def true_boxes(dataset: DetectionDataset) -> np.ndarray:
    """float32 [N, 4]: the box of each record, xyxy in pixels of the original image."""
    return np.stack([record.boxes[0] for record in dataset.records]).astype(np.float32)


def image_sizes(dataset: DetectionDataset) -> np.ndarray:
    """float32 [N, 4]: ``(width, height, width, height)`` of each record, to scale [0, 1] boxes."""
    return np.array([[r.width, r.height, r.width, r.height] for r in dataset.records], np.float32)


def true_labels(dataset: DetectionDataset) -> np.ndarray:
    """int64 [N]: the class of each record."""
    return np.array([int(record.labels[0]) for record in dataset.records], dtype=np.int64)
