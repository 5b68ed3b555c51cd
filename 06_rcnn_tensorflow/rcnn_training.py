"""Training the R-CNN classifier and its box-regression head with Keras, resumable exactly.

Epoch ``e`` sees the training crops in the order ``default_rng((seed, e)).permutation(N)``,
augmented in numpy by the same generator (flip, a random shift-and-zoom of up to 12 %, brightness
and contrast): the same epoch gives the same batches whether the run was interrupted or not. After every epoch ``last.keras`` (weights and optimizer state) is
written atomically, and ``best.keras`` when the validation loss improved; the number of epochs done
is the optimizer's step count divided by the (fixed) steps per epoch, so that it can never disagree
with the weights. ``--resume`` loads ``last.keras`` and trains the remaining epochs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from rcnn_models import (
    build_bbox_head,
    encode_boxes,
    feature_model,
    keras_module,
    load_model,
    save_model_atomic,
)

from detseg.errors import UserError


def augment(crops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random flip, shift-and-zoom (up to 12 %), brightness and contrast of a batch, in numpy.

    Args:
        crops: uint8 [B, S, S, 3]. rng: the epoch's generator.
    Returns:
        float32 [B, S, S, 3] in [0, 255].
    """
    count, size = len(crops), crops.shape[1]
    out = crops.astype(np.float32)
    flip = rng.random(count) < 0.5
    out[flip] = out[flip, :, ::-1]
    # zoom in: a random square of 88-100 % of the side, resampled by nearest index (vectorised)
    side = rng.uniform(0.88, 1.0, count) * size
    start = rng.uniform(0, 1, (count, 2)) * (size - side)[:, None]
    grid = np.arange(size) + 0.5
    rows = np.clip((start[:, 1:2] + grid * side[:, None] / size).astype(np.int64), 0, size - 1)
    cols = np.clip((start[:, 0:1] + grid * side[:, None] / size).astype(np.int64), 0, size - 1)
    out = out[np.arange(count)[:, None, None], rows[:, :, None], cols[:, None, :]]
    contrast = rng.uniform(0.8, 1.2, (count, 1, 1, 1)).astype(np.float32)
    brightness = rng.uniform(-25, 25, (count, 1, 1, 1)).astype(np.float32)
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    return np.clip((out - mean) * contrast + mean + brightness, 0, 255)


def epoch_arrays(
    crops: np.ndarray, labels: np.ndarray, seed: int, epoch: int
) -> tuple[np.ndarray, np.ndarray]:
    """Epoch ``epoch``'s training arrays: crops permuted and augmented with
    ``default_rng((seed, epoch))``, so that an interrupted run sees the same epoch again."""
    rng = np.random.default_rng((seed, epoch))
    order = rng.permutation(len(crops))
    return augment(crops[order], rng), labels[order]


def reseed_layers(model: Any, seed: int, epoch: int) -> None:
    """Set every random layer's (Dropout's) generator to a state that depends only on
    ``(seed, epoch)``: a resumed run draws the same dropout masks as an uninterrupted one."""
    for layer in model._flatten_layers():
        generator = getattr(layer, "seed_generator", None)
        if generator is not None:
            state = np.array([seed, epoch], dtype=str(generator.state.dtype))
            generator.state.assign(state)


def fit_classifier(
    model: Any,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    output_dir: str | Path,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    resume: bool | str | Path = False,
    max_steps_per_epoch: int | None = None,
    verbose: int = 1,
) -> dict[str, Any]:
    """Train ``model`` (softmax classifier) on ``train = (crops uint8 [N, S, S, 3], labels [N])``.

    Args:
        resume: ``True`` for ``<output_dir>/last.keras``, or a path; the model passed in is then
            replaced by the loaded one.
        max_steps_per_epoch: cut every epoch short (``--dry-run``).
    Returns:
        ``{"model", "history": [per epoch {"epoch", "loss", "accuracy", "val_loss",
        "val_accuracy", "seconds"}], "epochs_trained" (in this call), "steps_trained" (this call),
        "last", "best"}``.
    """
    keras = keras_module()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    crops, labels = train
    steps = int(np.ceil(len(crops) / batch_size))
    if max_steps_per_epoch is not None:
        steps = min(steps, max_steps_per_epoch)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume:
        path = out / "last.keras" if resume is True else Path(resume)
        model = load_model(path)
        done = int(model.optimizer.iterations.numpy())
        if done % steps:
            raise UserError(
                f"checkpoint has {done} steps, not a multiple of {steps} steps per epoch",
                path=path,
                fix="resume with the same data, --batch-size and --dry-run setting",
            )
        start_epoch = done // steps
        history_file = out / "history.json"
        if history_file.is_file():
            history = json.loads(history_file.read_text())[:start_epoch]
    else:
        model.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    steps_before = int(model.optimizer.iterations.numpy())
    best_loss = min((h["val_loss"] for h in history), default=np.inf)
    for epoch in range(start_epoch, epochs):
        began = time.perf_counter()
        images, targets = epoch_arrays(crops, labels, seed, epoch)
        reseed_layers(model, seed, epoch)
        images, targets = images[: steps * batch_size], targets[: steps * batch_size]
        fitted = model.fit(
            images, targets, batch_size=batch_size, epochs=1, shuffle=False, verbose=verbose
        )
        val_loss, val_accuracy = model.evaluate(
            val[0].astype(np.float32), val[1], batch_size=256, verbose=0
        )
        row = {
            "epoch": epoch + 1,
            "loss": float(fitted.history["loss"][-1]),
            "accuracy": float(fitted.history["accuracy"][-1]),
            "val_loss": float(val_loss),
            "val_accuracy": float(val_accuracy),
            "seconds": time.perf_counter() - began,
        }
        history.append(row)
        if verbose:
            print(json.dumps(row))
        save_model_atomic(model, out / "last.keras")
        if val_loss < best_loss:
            best_loss = val_loss
            save_model_atomic(model, out / "best.keras")
        (out / "history.json").write_text(json.dumps(history, indent=1))
    return {
        "model": model,
        "history": history,
        "epochs_trained": max(0, epochs - start_epoch),
        "steps_trained": int(model.optimizer.iterations.numpy()) - steps_before,
        "last": out / "last.keras",
        "best": out / "best.keras",
    }


def predict_features(classifier: Any, crops: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Pooled backbone features of ``crops`` (uint8 [N, S, S, 3]) -> float32 [N, F]."""
    features = feature_model(classifier)
    out = [
        np.asarray(features(crops[i : i + batch_size].astype(np.float32), training=False))
        for i in range(0, len(crops), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, features.output.shape[-1]), np.float32)


def fit_bbox_head(
    classifier: Any,
    crops: np.ndarray,
    boxes: np.ndarray,
    gt_boxes: np.ndarray,
    *,
    epochs: int = 30,
    lr: float = 3e-3,
    seed: int = 0,
    verbose: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """Train R-CNN's box regressor on the (frozen) classifier's features of proposals ``boxes``
    towards ``gt_boxes``; targets are standardised (mean / std kept in the returned config).

    Returns:
        ``(head, {"target_mean", "target_std", "samples", "loss_first", "loss_last"})``.
    """
    keras = keras_module()
    keras.utils.set_random_seed(seed)
    features = predict_features(classifier, crops)
    targets = encode_boxes(boxes, gt_boxes)
    mean, std = targets.mean(axis=0), targets.std(axis=0) + 1e-6
    head = build_bbox_head(features.shape[1], 1)
    head.compile(optimizer=keras.optimizers.Adam(lr), loss=keras.losses.Huber(delta=1.0))
    fitted = head.fit(
        features,
        (targets - mean) / std,
        epochs=epochs,
        batch_size=64,
        verbose=verbose,
        shuffle=True,
    )
    losses = fitted.history["loss"]
    return head, {
        "target_mean": mean.tolist(),
        "target_std": std.tolist(),
        "samples": len(features),
        "loss_first": float(losses[0]),
        "loss_last": float(losses[-1]),
    }
