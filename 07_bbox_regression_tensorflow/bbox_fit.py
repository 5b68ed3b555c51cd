"""One training run of a box regressor: build or resume, fit with callbacks, evaluate, plot.

Two loops, the same numbers to float precision (the backbone is frozen, so its features of an image
never change):

- ``cached_features=True`` (default): the backbone runs once over the training and validation images
  (read lazily by ``tf.data``), its flattened features (2048 floats per image for the small backbone,
  8 kB against 196 kB for the 128 x 128 image) are kept, and ``model.fit`` trains the ``heads``
  sub-model on them; the checkpoints hold the whole model (backbone + heads).
- ``cached_features=False``: the seed's loop, ``model.fit`` on the whole model, the frozen backbone run
  on every image in every epoch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import bbox_data
import bbox_models
import numpy as np
from bbox_models import keras, tf
from bbox_training import (
    MONITOR,
    AtomicCheckpoint,
    ResumableEarlyStopping,
    TrackerCallback,
    box_metrics,
    load_trained,
    predict_split,
    pretrain_small_backbone,
    restore_seed_states,
    select_strategy,
)

from detseg.engine.checkpoint import atomic_write_text
from detseg.engine.trackers import make_tracker
from detseg.errors import UserError
from detseg.viz import plot_confusion_matrix, plot_history


def extract_features(
    backbone: Any, dataset: Any, *, image_size: int, flip: bool = False
) -> np.ndarray:
    """float32 [N, *map shape]: the backbone's features of every record (of its left-right mirror
    with ``flip``), images read lazily."""
    pipeline = bbox_data.box_dataset(
        dataset, image_size=image_size, batch_size=64, with_class=False, flip=1.0 if flip else 0.0
    ).map(lambda images, targets: images)
    return np.asarray(backbone.predict(pipeline, verbose=0), np.float32)


def targets_of(dataset: Any, *, with_class: bool, flip: bool = False) -> dict[str, np.ndarray]:
    """``{"bbox": float32 [N, 4] in [0, 1], "class": int32 [N]}`` of every record (``flip``: the
    boxes of the mirrored images)."""
    boxes = bbox_data.true_boxes(dataset) / bbox_data.image_sizes(dataset)
    targets = {"bbox": bbox_data.mirror_boxes(boxes) if flip else boxes}
    if with_class:
        targets["class"] = bbox_data.true_labels(dataset).astype(np.int32)
    return targets


def training_features(
    backbone: Any, dataset: Any, *, image_size: int, with_class: bool, flip: bool
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The cached training set: features and targets of every record, then (``flip``) of every
    record mirrored left-right, so an epoch sees each image both ways ([2N, ...])."""
    features = extract_features(backbone, dataset, image_size=image_size)
    targets = targets_of(dataset, with_class=with_class)
    if not flip:
        return features, targets
    mirrored = extract_features(backbone, dataset, image_size=image_size, flip=True)
    mirrored_targets = targets_of(dataset, with_class=with_class, flip=True)
    return np.concatenate([features, mirrored]), {
        name: np.concatenate([values, mirrored_targets[name]]) for name, values in targets.items()
    }


def cached_training_dataset(
    features: np.ndarray,
    targets: Mapping[str, np.ndarray],
    *,
    batch_size: int,
    seed: int,
    first_epoch: int,
    last_epoch: int,
) -> Any:
    """Batches of cached features in :func:`bbox_data.epoch_order`, epoch after epoch (the same
    order as :func:`bbox_data.training_dataset` gives the images)."""
    table = tf.constant(features)
    columns = {name: tf.constant(values) for name, values in targets.items()}
    epochs = [
        tf.data.Dataset.from_tensor_slices(
            bbox_data.epoch_order(len(features), seed=seed, epoch=epoch)
        ).batch(batch_size)
        for epoch in range(first_epoch, last_epoch)
    ]
    indices = epochs[0]
    for more in epochs[1:]:
        indices = indices.concatenate(more)
    return indices.map(
        lambda rows: (
            tf.gather(table, rows),
            {name: tf.gather(values, rows) for name, values in columns.items()},
        )
    )


def fit_regressor(
    *,
    splits: Mapping[str, Any],
    backbone_name: str,
    with_class: bool,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    output_dir: Path,
    config: Mapping[str, Any],
    pretrain: Mapping[str, Any],
    cached_features: bool = True,
    flip: bool = False,
    box_loss: str = "mse",
    lr_schedule: str = "constant",
    bbox_weight: float = 1.0,
    class_weight: float = 1.0,
    patience: int = 8,
    resume: Path | None = None,
    init_weights: Path | None = None,
    max_steps: int | None = None,
    tracker: str = "none",
    device: str = "auto",
    verbose: int = 1,
) -> dict[str, Any]:
    """Train (or resume) a box regressor; evaluate ``best.keras`` on the test split; write plots.

    Args:
        splits: ``{"train", "val", "test"}`` datasets (:func:`bbox_data.split_dataset`).
        backbone_name: ``"small"`` (pretrained here on other built-in images,
            :func:`bbox_training.pretrain_small_backbone` with the keywords in ``pretrain``;
            ``pretrain["held_out"]``: the images it must never see, default this run's val and
            test splits) or ``"vgg16"`` (ImageNet).
        with_class: add the class head (07b).
        cached_features: train the heads on cached backbone features (module docstring).
        flip: (cached features only) train on every image and its left-right mirror.
        box_loss: a key of :data:`bbox_models.BOX_LOSSES`.
        lr_schedule: ``constant`` or ``cosine`` (from ``lr`` to 0 over the ``epochs``).
        resume: a ``last.keras`` to continue from (its ``.json`` gives the epoch and counters).
        init_weights: a ``.keras`` whose weights start the run (``--weights``).
        max_steps: batches per epoch cap (``--dry-run``: 1).
    Returns:
        ``{"test": box_metrics, "history", "best_epoch", "epochs_run", "epochs_trained_now",
        "trainable_parameters", "parameters", "seconds_per_epoch", "train_seconds",
        "feature_seconds", "pretrain", "output_dir", "pictures"}``.
    """
    output_dir = Path(output_dir)
    image_size = bbox_models.IMAGE_SIZE[backbone_name]
    train, val, test = splits["train"], splits["val"], splits["test"]
    num_classes = len(train.classes)
    strategy = select_strategy(device)
    steps = bbox_data.steps_per_epoch(len(train) * (2 if flip else 1), batch_size)
    if max_steps is not None:
        steps = min(steps, max_steps)
    output_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    start_epoch, best, counters = 0, None, None
    pretrain_info: dict[str, Any] = {}
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        if resume is not None:
            model, state = load_trained(resume)
            start_epoch, history = int(state["epoch"]), list(state["history"])
            best, counters = state["best"], state["early_stopping"]
            pretrain_info = dict(state["config"].get("pretrain_info", {}))
            if cached_features:  # the heads with their optimizer state
                heads = keras.models.load_model(Path(resume).with_name("last-heads.keras"))
                model = bbox_models.build_regressor(
                    bbox_models.split_regressor(model)[0], heads=heads
                )
        else:
            if backbone_name == "small":
                options = {"held_out": {"val": val, "test": test}, **pretrain}
                backbone, pretrain_info = pretrain_small_backbone(
                    image_size=image_size, seed=seed, max_steps=max_steps, verbose=verbose,
                    **options,
                )  # fmt: skip
            else:
                backbone = bbox_models.vgg16_backbone(image_size)
            keras.utils.set_random_seed(seed)  # the heads start the same, cached or not
            model = bbox_models.build_for(
                backbone_name, backbone, num_classes=num_classes if with_class else None
            )
            if init_weights is not None:
                try:
                    model.load_weights(init_weights)
                except ValueError as err:  # another architecture (07a weights into 07b ...)
                    raise UserError(
                        f"--weights do not fit this model ({str(err).splitlines()[0][:150]})",
                        path=init_weights,
                        fix="pass a checkpoint of the same script and --backbone",
                    ) from err
        backbone, heads = bbox_models.split_regressor(model)
        fitted = heads if cached_features else model
        if resume is not None:  # Keras does not save the dropout generators: the .json does
            restore_seed_states(fitted, state.get("seed_generators", []))
        if resume is None:  # a resumed model comes compiled, with its optimizer state
            bbox_models.compile_regressor(
                fitted, lr=lr, with_class=with_class, bbox_weight=bbox_weight,
                class_weight=class_weight, box_loss=box_loss,
                decay_steps=steps * epochs if lr_schedule == "cosine" else None,
            )  # fmt: skip
    config = {**config, "image_size": image_size, "classes": train.classes,
              "with_class": with_class, "pretrain_info": pretrain_info,
              "cached_features": cached_features, "flip": flip,
              "box_loss": box_loss, "lr_schedule": lr_schedule}  # fmt: skip
    early_stopping = ResumableEarlyStopping(
        monitor=MONITOR, mode="max", patience=patience, restored=counters
    )
    callbacks = [
        early_stopping,
        AtomicCheckpoint(
            output_dir,
            config=config,
            history=history,
            best=best,
            early_stopping=early_stopping,
            full_model=model if cached_features else None,
        ),  # fmt: skip
        keras.callbacks.CSVLogger(str(output_dir / "history.csv"), append=resume is not None),
    ]
    if tracker != "none":
        callbacks.append(TrackerCallback(make_tracker(tracker, output_dir, config=config), history))
    trained_now, feature_seconds = 0, 0.0
    train_start = time.perf_counter()
    if start_epoch < epochs:
        if cached_features:
            feature_start = time.perf_counter()
            train_features, train_targets = training_features(
                backbone, train, image_size=image_size, with_class=with_class, flip=flip
            )
            val_features = extract_features(backbone, val, image_size=image_size)
            feature_seconds = time.perf_counter() - feature_start
            data = cached_training_dataset(
                train_features, train_targets, batch_size=batch_size,
                seed=seed, first_epoch=start_epoch, last_epoch=epochs,
            )  # fmt: skip
            val_data = tf.data.Dataset.from_tensor_slices(
                (val_features, targets_of(val, with_class=with_class))
            ).batch(256)
        else:
            if flip:
                raise UserError("--flip needs --cached-features", fix="drop --flip")
            data = bbox_data.training_dataset(
                train, image_size=image_size, batch_size=batch_size, with_class=with_class,
                seed=seed, first_epoch=start_epoch, last_epoch=epochs,
            )  # fmt: skip
            val_data = bbox_data.box_dataset(
                val, image_size=image_size, batch_size=64, with_class=with_class
            )
        fit = fitted.fit(
            data,
            epochs=epochs,
            initial_epoch=start_epoch,
            steps_per_epoch=steps,
            validation_data=val_data,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the order is bbox_data.epoch_order's, so that resume is exact
        )
        trained_now = len(fit.epoch)
    train_seconds = time.perf_counter() - train_start
    best_model, best_state = load_trained(output_dir / "best.keras")
    predictions = predict_split(best_model, test, image_size=image_size)
    test_metrics = box_metrics(
        predictions["boxes"],
        bbox_data.true_boxes(test),
        scores=predictions.get("scores"),
        labels=bbox_data.true_labels(test),
        num_classes=num_classes,
    )
    pictures = [plot_history(
        [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in history],
        output_dir / "training_curves.png", title=f"{backbone_name} backbone",
    )]  # fmt: skip
    if with_class:
        pictures.append(
            plot_confusion_matrix(
                np.array(test_metrics["confusion"]),
                train.classes,
                output_dir / "confusion_matrix.png",
                normalize=False,
                title=f"test split, accuracy {test_metrics['class_accuracy']:.3f}",
            )
        )
    times = [row["epoch_time_s"] for row in history]
    result = {
        "test": test_metrics,
        "best_epoch": int(best_state["epoch"]),
        "epochs_run": len(history),
        "epochs_trained_now": trained_now,
        "history": history,
        "trainable_parameters": bbox_models.trainable_parameters(model),
        "parameters": bbox_models.all_parameters(model),
        "seconds_per_epoch": float(np.median(times)) if times else 0.0,
        "train_seconds": train_seconds,
        "feature_seconds": feature_seconds,
        "cached_features": cached_features,
        "pretrain": pretrain_info,
        "output_dir": str(output_dir),
        "pictures": [str(p) for p in pictures],
    }
    atomic_write_text(output_dir / "metrics.json", json.dumps(result, indent=1) + "\n")
    return result


def describe(result: Mapping[str, Any]) -> str:
    """One summary line of a run."""
    test = result["test"]
    text = (
        f"test mean IoU {test['mean_iou']:.3f} | IoU>=0.5 {test['iou_above_0.5']:.3f} | "
        f"IoU>=0.75 {test['iou_above_0.75']:.3f}"
    )
    if "class_accuracy" in test:
        text += f" | class accuracy {test['class_accuracy']:.3f}"
    return text + f" | best epoch {result['best_epoch']} of {result['epochs_run']}"
