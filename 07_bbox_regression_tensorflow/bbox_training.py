"""Training of this folder's Keras models: callbacks, resume, pretraining, evaluation.

Keras trains with its own loop (``model.fit``), not the repository's PyTorch engine, so what the engine
gives the other folders is done here with Keras callbacks:

- progress: Keras' progress bar (``verbose``);
- checkpoints: :class:`AtomicCheckpoint` writes ``last.keras`` every epoch and ``best.keras`` when the
  validation IoU improves, each through a temporary file and an atomic rename, with a ``.json``
  beside it (epoch, history, early-stopping state, config): enough to resume and to predict;
- ``history.csv``: ``keras.callbacks.CSVLogger`` (appends on resume);
- early stopping: :class:`ResumableEarlyStopping` (Keras' own, plus its counters in the checkpoint);
- ``--tracker``: :class:`TrackerCallback` hands each epoch to the core's trackers (csv, W&B offline);
- ``--resume``: reload ``last.keras`` (weights and optimizer state) and continue at the next epoch, with
  the data order of that epoch (:func:`bbox_data.epoch_order`) and the early-stopping counters.

Distribution: :func:`select_strategy` builds the model under a ``tf.distribute`` strategy:
``MirroredStrategy`` over every GPU when there are several, one device otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import bbox_data
import bbox_models
import cv2
import numpy as np
from bbox_models import keras, tf

from detseg import settings
from detseg.boxes import paired_box_iou
from detseg.data.pretraining import PRETRAIN_DATA_SEED, check_disjoint
from detseg.data.types import DetectionDataset
from detseg.engine.checkpoint import atomic_write_text, copy_atomic
from detseg.errors import UserError
from detseg.metrics.segmentation import confusion_matrix

EXAMPLE = "07_bbox_regression_tensorflow"
MONITOR = "val_bbox_iou"  # Keras names it <output>_<metric name>
TRUE_COLOR = (40, 200, 40)
PREDICTED_COLOR = (230, 30, 30)


# ------------------------------------------------------------------------------- devices


def select_strategy(device: str = "auto") -> Any:
    """The ``tf.distribute`` strategy for ``--device``.

    ``auto``: ``MirroredStrategy`` (synchronous data parallelism, one replica per GPU) when TensorFlow
    sees several GPUs, the single GPU when it sees one, the CPU otherwise. ``cpu`` / ``cuda`` /
    ``cuda:N`` pick one device.

    Raises:
        UserError: a device that TensorFlow does not have (``mps``: TensorFlow has no MPS backend).
    """
    gpus = tf.config.list_logical_devices("GPU")
    if device == "auto":
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if device == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if device == "cuda" or device.startswith("cuda:"):
        index = int(device.split(":")[1]) if ":" in device and device.split(":")[1].isdigit() else 0
        if index < len(gpus):
            return tf.distribute.OneDeviceStrategy(f"/gpu:{index}")
        raise UserError(
            f"--device {device}: TensorFlow sees {len(gpus)} GPU(s)",
            fix="use --device auto or cpu (TensorFlow needs its CUDA build to see a GPU)",
        )
    raise UserError(
        f"--device {device} is not available to TensorFlow",
        fix="use auto, cpu, cuda or cuda:N (TensorFlow has no Apple MPS backend)",
    )


def set_threads(threads: int | None) -> None:
    """TensorFlow's CPU threads (inter- and intra-op), if it has not started yet (then: unchanged)."""
    if threads is None:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime is already initialised in this process
        pass


# ------------------------------------------------------------------------------- checkpoints


def save_keras_atomic(model: Any, path: str | Path) -> Path:
    """``model.save(path)`` so that ``path`` is the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".save-") as folder:
        staged = Path(folder) / path.name
        model.save(staged)
        copy_atomic(staged, path)
    return path


def check_keras_file(path: str | Path, flag: str) -> Path:
    """``path`` if it is a ``.keras`` archive (a zip holding ``config.json``), else a UserError
    naming ``flag`` and the file: checked before any work starts."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag}: no such file", path=path, fix="check the path")
    if path.suffix != ".keras":
        raise UserError(
            f"{flag} must be a .keras file written by this folder",
            path=path,
            fix="pass runs/07_bbox_regression_tensorflow/<run>/best.keras",
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as err:
        raise UserError(
            f"{flag}: not a Keras archive ({type(err).__name__})",
            path=path,
            fix="pass a .keras file written by train_bbox.py / train_multiclass.py",
        ) from err
    if "config.json" not in names:
        raise UserError(
            f"{flag}: a zip file without config.json, not a Keras model",
            path=path,
            fix="pass a .keras file written by train_bbox.py / train_multiclass.py",
        )
    return path


def read_state(checkpoint: str | Path) -> dict[str, Any]:
    """The ``.json`` written beside a ``.keras`` checkpoint (epoch, history, config ...).

    Raises:
        UserError: missing or unreadable.
    """
    path = Path(checkpoint).with_suffix(".json")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise UserError(
            "no training state beside the checkpoint",
            path=path,
            fix="pass a .keras file written by train_bbox.py / train_multiclass.py",
        ) from err
    except json.JSONDecodeError as err:
        raise UserError(
            f"unreadable training state ({err.msg})", path=path, fix="train again"
        ) from err


def load_trained(checkpoint: str | Path) -> tuple[Any, dict[str, Any]]:
    """``(model, state)`` from a ``.keras`` checkpoint and its ``.json``.

    Raises:
        UserError: the file is missing or not a Keras model of this folder.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise UserError(
            "no such checkpoint",
            path=checkpoint,
            fix="train first (train_bbox.py / train_multiclass.py) or pass --weights FILE.keras",
        )
    check_keras_file(checkpoint, "checkpoint")
    state = read_state(checkpoint)
    try:
        model = keras.models.load_model(checkpoint, compile=True)
    except Exception as err:  # zip / h5 / config errors from Keras
        raise UserError(
            f"not a Keras model of this folder ({type(err).__name__})",
            path=checkpoint,
            fix="pass a .keras file written by this folder's training scripts",
        ) from err
    return model, state


def seed_states(model: Any) -> list[list[int]]:
    """The state of every random-seed generator of ``model`` (its Dropout layers), in layer order.

    Keras does not save these in ``.keras`` files: a resumed run restores them from the ``.json``
    (:func:`restore_seed_states`) so that it draws the dropout masks an uninterrupted run draws.
    """
    return [v.numpy().tolist() for v in model.variables if v.path.endswith("seed_generator_state")]


def restore_seed_states(model: Any, states: Sequence[Sequence[int]]) -> None:
    """Set the seed generators of ``model`` to ``states`` (from :func:`seed_states`)."""
    variables = [v for v in model.variables if v.path.endswith("seed_generator_state")]
    if len(variables) != len(states):
        raise UserError(
            f"the checkpoint holds {len(states)} random-generator states, the model "
            f"{len(variables)}",
            fix="resume with the script and flags that wrote it",
        )
    for variable, state in zip(variables, states):
        variable.assign(np.asarray(state, dtype=variable.dtype))


def normalized_logs(logs: Mapping[str, Any] | None) -> dict[str, float]:
    """Keras' epoch logs with the IoU always named ``bbox_iou`` / ``val_bbox_iou`` (Keras drops the
    output-name prefix when a model has one output, as 07a's)."""
    renamed = {"iou": "bbox_iou", "val_iou": "val_bbox_iou"}
    return {renamed.get(key, key): float(value) for key, value in (logs or {}).items()}


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' early stopping whose counters (``wait``, ``best``) survive a resume."""

    def get_monitor_value(self, logs: Mapping[str, Any] | None) -> Any:
        return super().get_monitor_value(normalized_logs(logs))

    def __init__(self, *args: Any, restored: Mapping[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._restored = dict(restored or {})

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self._restored:
            self.wait = int(self._restored["wait"])
            self.best = float(self._restored["best"])

    def counters(self) -> dict[str, float]:
        best = float(self.best) if self.best is not None else None
        return {"wait": int(self.wait), "best": best}


class AtomicCheckpoint(keras.callbacks.Callback):
    """``last.keras`` every epoch, ``best.keras`` when ``monitor`` improves (higher is better);
    each with a ``.json`` (epoch, history, best, early-stopping counters, config) beside it.

    When the model being fitted is the ``heads`` alone (cached features), ``full_model`` (backbone +
    those heads) is what ``last.keras`` / ``best.keras`` hold, and the heads with their optimizer
    state go to ``last-heads.keras`` for ``--resume``.
    """

    def __init__(
        self,
        output_dir: Path,
        *,
        config: Mapping[str, Any],
        history: list[dict[str, Any]],
        best: float | None,
        early_stopping: ResumableEarlyStopping | None,
        monitor: str = MONITOR,
        full_model: Any = None,
    ) -> None:
        super().__init__()
        self.full_model = full_model
        self.output_dir = Path(output_dir)
        self.config = dict(config)
        self.history = history
        self.best = best
        self.early_stopping = early_stopping
        self.monitor = monitor
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        logs = normalized_logs(logs)
        row = {"epoch": epoch + 1, **logs}
        row["epoch_time_s"] = time.perf_counter() - self._start
        self.history.append(row)
        value = logs.get(self.monitor)
        improved = value is not None and (self.best is None or float(value) > self.best)
        if improved:
            self.best = float(value)
        state = {
            "epoch": epoch + 1,
            "history": self.history,
            "best": self.best,
            "monitor": self.monitor,
            "early_stopping": self.early_stopping.counters() if self.early_stopping else None,
            "seed_generators": seed_states(self.model),
            "config": self.config,
        }
        if self.full_model is not None:
            save_keras_atomic(self.model, self.output_dir / "last-heads.keras")
        save_keras_atomic(self.full_model or self.model, self.output_dir / "last.keras")
        atomic_write_text(self.output_dir / "last.json", json.dumps(state, indent=1) + "\n")
        if improved:
            copy_atomic(self.output_dir / "last.keras", self.output_dir / "best.keras")
            atomic_write_text(self.output_dir / "best.json", json.dumps(state, indent=1) + "\n")


class TrackerCallback(keras.callbacks.Callback):
    """Hands each epoch to a core tracker (``--tracker csv | wandb | wandb-online``) in the engine's
    history format: ``{"epoch", "lr", "train": {...}, "eval": {...}}``."""

    def __init__(self, tracker: Any, history: Sequence[Mapping[str, Any]]) -> None:
        super().__init__()
        self.tracker = tracker
        self.entries = [self._entry(row) for row in history]

    @staticmethod
    def _entry(row: Mapping[str, Any]) -> dict[str, Any]:
        train = {
            k: v for k, v in row.items() if k not in ("epoch", "lr") and not k.startswith("val_")
        }
        evals = {k[4:]: v for k, v in row.items() if k.startswith("val_")}
        return {"epoch": row["epoch"], "lr": row.get("lr", 0.0), "train": train, "eval": evals}

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        row = {"epoch": epoch + 1, **normalized_logs(logs)}
        row["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.entries.append(self._entry(row))
        self.tracker.log_epoch(self.entries)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self.tracker.close()


# ------------------------------------------------------------------------------- pretraining


def _cache_key(parts: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


PRETRAIN_NUM_IMAGES = 1200  # as 04's pretraining: 960 trained on, 240 held out
SMOKE_PRETRAIN_NUM_IMAGES = 16
# the measured recipe (README): the scripts' and the lessons' defaults, so they share one cache file
PRETRAIN_DEFAULTS = {"epochs": 8, "batch_size": 64, "lr": 3e-3}


def pretraining_data(
    num_images: int | None = None,
    *,
    data_seed: int = PRETRAIN_DATA_SEED,
    seed: int = 0,
    val_fraction: float = 0.2,
) -> dict[str, DetectionDataset]:
    """``{"train", "val"}``: the built-in ``single_object`` images of ``data_seed`` (other images than
    the lessons', which are data seed 0), ``val_fraction`` of them held out by a ``seed``
    permutation to report the pretraining task's accuracy and box IoU.

    Args:
        num_images: images drawn (default 1,200; 16 in smoke mode).
    """
    if num_images is None:
        num_images = SMOKE_PRETRAIN_NUM_IMAGES if settings.smoke_mode() else PRETRAIN_NUM_IMAGES
    dataset = bbox_data.load_source(None, num_images=num_images, data_seed=data_seed)
    order = np.random.default_rng(seed).permutation(len(dataset))
    cut = max(1, round(val_fraction * len(dataset)))
    return {
        name: replace(dataset, records=[dataset.records[int(i)] for i in part])
        for name, part in (("train", order[cut:]), ("val", order[:cut]))
    }


def pretrain_small_backbone(
    *,
    image_size: int,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    cache_dir: Path,
    num_images: int | None = None,
    data_seed: int = PRETRAIN_DATA_SEED,
    held_out: Mapping[str, DetectionDataset] | None = None,
    max_steps: int | None = None,
    flip: float = 0.5,
    verbose: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """Train the small backbone to classify *and locate* the object of other built-in images
    (:func:`pretraining_data`, :func:`bbox_models.pretraining_model`), or reuse the copy cached under
    the same settings; returns ``(backbone, info)``, the pretraining heads dropped.

    04's recipe in Keras: loss cross-entropy + L1 + (1 - GIoU) of the box; Adam with a one-cycle
    rate (linear warm-up from ``lr / 25`` to ``lr`` over the first 30 % of the steps, then a cosine
    to 0); each training image mirrored left-right with probability ``flip``, its box with it.
    ``held_out``: datasets whose images the pretraining set must not hold (:func:`check_disjoint`;
    the lessons pass their validation and test splits).

    Returns:
        ``info``: ``{"val_accuracy", "val_box_iou" (the held-out 20 % of the pretraining images),
        "seconds", "epochs", "train_images", "data_seed", "cached", "path"}``.
    """
    data = pretraining_data(num_images, data_seed=data_seed, seed=seed)
    if held_out:
        check_disjoint(data, held_out)
    train, val = data["train"], data["val"]
    key = _cache_key(
        {
            "task": "classify+locate",
            "files": sorted(r.file_name for r in train.records),
            "root": str(Path(train.root).resolve()),
            "classes": train.classes,
            "widths": bbox_models.SMALL_WIDTHS,
            "locator": bbox_models.LOCATOR_CHANNELS,
            "image_size": image_size,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "max_steps": max_steps,
            "flip": flip,
            "schedule": "one-cycle",
        }
    )
    path = Path(cache_dir) / f"small_backbone-{key}.keras"
    if path.is_file() and path.with_suffix(".json").is_file():
        info = json.loads(path.with_suffix(".json").read_text())
        return keras.models.load_model(path), {**info, "cached": True, "path": str(path)}
    if verbose:
        print(
            f"pretraining the small backbone: classify and locate {len(train)} other built-in "
            f"images (data seed {data_seed}; {epochs} epochs; cached as {path})"
        )
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    backbone = bbox_models.build_small_backbone(image_size)
    model = bbox_models.pretraining_model(backbone, len(train.classes))
    steps = bbox_data.steps_per_epoch(len(train), batch_size)
    if max_steps is not None:
        steps = min(steps, max_steps)
    total = steps * epochs
    warmup = max(1, round(0.3 * total)) if total > 1 else 0
    rate = keras.optimizers.schedules.CosineDecay(
        lr / 25, max(1, total - warmup), warmup_target=lr, warmup_steps=warmup
    )
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss={"bbox": bbox_models.l1_giou_loss, "class": "sparse_categorical_crossentropy"},
        metrics={"bbox": [bbox_models.MeanBoxIoU()], "class": ["sparse_categorical_accuracy"]},
    )
    batches = bbox_data.training_dataset(
        train, image_size=image_size, batch_size=batch_size, with_class=True, seed=seed,
        first_epoch=0, last_epoch=epochs, flip=flip,
    )  # fmt: skip
    val_batches = bbox_data.box_dataset(val, image_size=image_size, batch_size=64, with_class=True)
    fit = model.fit(
        batches, epochs=epochs, steps_per_epoch=steps, validation_data=val_batches,
        verbose=verbose, shuffle=False,
    )  # fmt: skip
    history = normalized_logs({k: v[-1] for k, v in fit.history.items()})
    info = {
        "val_accuracy": history["val_class_sparse_categorical_accuracy"],
        "val_box_iou": history["val_bbox_iou"],
        "seconds": time.perf_counter() - start,
        "epochs": epochs,
        "train_images": len(train),
        "data_seed": data_seed,
    }
    save_keras_atomic(backbone, path)
    atomic_write_text(path.with_suffix(".json"), json.dumps(info, indent=1) + "\n")
    return backbone, {**info, "cached": False, "path": str(path)}


# ------------------------------------------------------------------------------- evaluation


def predict_split(
    model: Any, dataset: Any, *, image_size: int, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Predictions on every record of ``dataset``, boxes in pixels of the original images.

    Returns:
        ``{"boxes": float32 [N, 4] xyxy pixels, "scores": float32 [N, C] (class heads only)}``.
    """
    pipeline = bbox_data.box_dataset(
        dataset, image_size=image_size, batch_size=batch_size, with_class=False
    ).map(lambda images, targets: images)
    outputs = model.predict(pipeline, verbose=0)
    result = {"boxes": np.asarray(outputs["bbox"], np.float32) * bbox_data.image_sizes(dataset)}
    if "class" in outputs:
        result["scores"] = np.asarray(outputs["class"], np.float32)
    return result


def draw_boxes(
    image: np.ndarray, predicted: np.ndarray, truth: np.ndarray | None = None
) -> np.ndarray:
    """A copy of ``image`` (RGB uint8) with the true box (green) and the predicted one (red)."""
    canvas = np.ascontiguousarray(image.copy())
    thickness = max(2, round(min(image.shape[:2]) / 120))
    for box, color in ((truth, TRUE_COLOR), (predicted, PREDICTED_COLOR)):
        if box is not None:
            x0, y0, x1, y1 = (int(round(float(v))) for v in box)
            cv2.rectangle(canvas, (x0, y0), (x1, y1), color, thickness)
    return canvas


def paired_iou(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of ``predicted[i]`` with ``truth[i]`` (both [N, 4] xyxy pixels): ``detseg.boxes``'
    paired IoU in float64."""
    return paired_box_iou(np.asarray(predicted, np.float64), np.asarray(truth, np.float64))


def box_metrics(
    predicted: np.ndarray,
    truth: np.ndarray,
    *,
    scores: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Mean IoU, the fraction of boxes with IoU >= 0.5 and >= 0.75, and (with ``scores``) the class
    accuracy and confusion matrix (rows = true class)."""
    ious = paired_iou(predicted, truth)
    result: dict[str, Any] = {
        "mean_iou": float(ious.mean()),
        "iou_above_0.5": float((ious >= 0.5).mean()),
        "iou_above_0.75": float((ious >= 0.75).mean()),
        "num_images": len(ious),
    }
    if scores is not None and labels is not None:
        predicted_labels = scores.argmax(axis=1)
        result["class_accuracy"] = float((predicted_labels == labels).mean())
        result["confusion"] = confusion_matrix(
            predicted_labels, labels, num_classes or scores.shape[1], ignore_index=None
        ).tolist()
    return result


def environment_threads() -> int | None:
    """``DETSEG_TF_THREADS`` if set (the tests use 1), else None (TensorFlow's choice)."""
    value = os.environ.get("DETSEG_TF_THREADS")
    return int(value) if value else None
