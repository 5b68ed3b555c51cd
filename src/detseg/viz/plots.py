"""Plots saved as PNG: training curves, precision-recall curves, confusion matrices.

Each function draws on a bare ``matplotlib.figure.Figure`` (no pyplot, so no global state, no window,
no display needed: the Agg renderer writes the file), saves it, and returns the path. Inputs are plain
lists / numpy arrays, so the plots do not depend on the engine's or the evaluator's classes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

# Subplot groups of plot_history, in display order; a key goes to the first group whose test matches.
HISTORY_GROUPS: dict[str, str] = {
    "loss": "loss",
    "lr": "learning rate",
    "time": "time (s)",
    "metric": "evaluation",
}


def history_group(key: str) -> str:
    """Which subplot of :func:`plot_history` a history key belongs to (a key of HISTORY_GROUPS)."""
    name = key.lower()
    if "loss" in name:
        return "loss"
    if name == "lr" or name.startswith("lr_") or name.endswith("_lr") or "learning_rate" in name:
        return "lr"
    if "time" in name or name.endswith("_s") or name.endswith("_sec"):
        return "time"
    return "metric"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def history_series(
    history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, object]],
) -> dict[str, tuple[list[float], list[float]]]:
    """Normalise a training history to ``{key: (epochs, values)}``.

    Args:
        history: either columns ``{"train_loss": [...], "mAP": [...], "epoch": [...]}`` (x is the
            ``epoch`` column when its length matches, else 1, 2, ...), or rows
            ``[{"epoch": 1, "loss": 0.9, "lr": 0.01}, {"epoch": 2, "loss": 0.7, "mAP": 0.3}, ...]``
            as written to metrics.json (x is each row's ``epoch``, else its 1-based position; a key
            missing from a row is simply not plotted there). Non-numeric values are skipped.
    Returns:
        ``{key: (x, y)}`` in first-seen key order, without the ``epoch`` key.
    """
    series: dict[str, tuple[list[float], list[float]]] = {}
    if isinstance(history, Mapping):
        epochs = history.get("epoch")
        for key, values in history.items():
            if key == "epoch":
                continue
            numbers = [float(v) for v in values if _is_number(v)]
            if len(numbers) != len(values):
                continue
            use_epochs = epochs is not None and len(epochs) == len(numbers)
            xs = (
                [float(e) for e in epochs]
                if use_epochs
                else [float(i + 1) for i in range(len(numbers))]
            )
            series[key] = (xs, numbers)
        return series
    for position, row in enumerate(history):
        epoch = row.get("epoch", position + 1)
        x = float(epoch) if _is_number(epoch) else float(position + 1)
        for key, value in row.items():
            if key == "epoch" or not _is_number(value):
                continue
            xs, ys = series.setdefault(key, ([], []))
            xs.append(x)
            ys.append(float(value))  # type: ignore[arg-type]
    return series


def _save(fig: object, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)  # type: ignore[attr-defined]
    return path


def plot_history(
    history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, object]],
    path: str | Path,
    title: str | None = None,
    *,
    dpi: int = 100,
) -> Path:
    """Training curves: one subplot per group of keys (losses, learning rate, time, eval metrics).

    Args:
        history: columns or per-epoch rows, see :func:`history_series`.
        path: PNG file to write (parents are created).
        title: figure title.
    Returns:
        ``path`` as a Path.
    Raises:
        ValueError: the history holds no numeric series.
    """
    from matplotlib.figure import Figure

    series = history_series(history)
    if not series:
        raise ValueError("plot_history: the history holds no numeric values to plot")
    groups: dict[str, list[str]] = {group: [] for group in HISTORY_GROUPS}
    for key in series:
        groups[history_group(key)].append(key)
    shown = [group for group, keys in groups.items() if keys]
    fig = Figure(figsize=(4.6 * len(shown), 3.6), layout="constrained")
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    for axis, group in zip(axes, shown):
        for key in groups[group]:
            xs, ys = series[key]
            axis.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3, label=key)
        positive = [y for key in groups[group] for y in series[key][1] if math.isfinite(y)]
        if group == "lr" and positive and min(positive) > 0 and max(positive) / min(positive) > 20:
            axis.set_yscale("log")
        axis.set_xlabel("epoch")
        axis.set_title(HISTORY_GROUPS[group])
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi)


def plot_pr_curves(
    recall: Sequence[float] | np.ndarray,
    precisions: Mapping[str, Sequence[float] | np.ndarray],
    path: str | Path,
    title: str | None = None,
    *,
    dpi: int = 100,
) -> Path:
    """Precision-recall curves, one line per name, with the mean precision in the legend.

    Args:
        recall: [R] recall values (e.g. COCO's 101 thresholds 0, 0.01, ..., 1).
        precisions: ``{name: [R] precision at each recall}``; negative entries (COCO's -1 for
            "no ground truth") are not drawn. On the COCO 101-point grid the legend's mean
            precision is the AP.
        path: PNG file to write.
    Returns:
        ``path`` as a Path.
    """
    from matplotlib.figure import Figure

    recall_np = np.asarray(recall, dtype=np.float64).reshape(-1)
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    axis = fig.subplots()
    for name, precision in precisions.items():
        precision_np = np.asarray(precision, dtype=np.float64).reshape(-1)
        if precision_np.shape != recall_np.shape:
            raise ValueError(
                f"precision '{name}' has {precision_np.size} values for {recall_np.size} recalls"
            )
        precision_np = np.where(precision_np < 0, np.nan, precision_np)
        mean = float(np.nanmean(precision_np)) if np.isfinite(precision_np).any() else float("nan")
        axis.plot(recall_np, precision_np, label=f"{name} ({mean:.3f})")
    axis.set_xlim(0.0, 1.0)
    axis.set_ylim(0.0, 1.02)
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.grid(alpha=0.3)
    if precisions:
        axis.legend(fontsize="small", title="name (mean precision)")
    axis.set_title(title or "precision-recall")
    return _save(fig, path, dpi)


def plot_confusion_matrix(
    cm: np.ndarray | Sequence[Sequence[float]],
    class_names: Sequence[str],
    path: str | Path,
    normalize: bool = True,
    title: str | None = None,
    *,
    dpi: int = 100,
) -> Path:
    """Confusion matrix heat map: rows = true class, columns = predicted class.

    Args:
        cm: [C, C] counts.
        class_names: C names (include "background" if the matrix has a background row/column).
        path: PNG file to write.
        normalize: divide each row by its sum (rows with no samples stay 0), so the diagonal is
            the per-class recall.
    Returns:
        ``path`` as a Path.
    """
    from matplotlib.figure import Figure

    matrix = np.asarray(cm, dtype=np.float64)
    if (
        matrix.ndim != 2
        or matrix.shape[0] != matrix.shape[1]
        or matrix.shape[0] != len(class_names)
    ):
        raise ValueError(
            f"confusion matrix {matrix.shape} does not match {len(class_names)} class names"
        )
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    size = len(class_names)
    side = min(14.0, 2.5 + 0.55 * size)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    axis = fig.subplots()
    image = axis.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(image, ax=axis, shrink=0.8)
    axis.set_xticks(range(size), labels=list(class_names), rotation=45, ha="right")
    axis.set_yticks(range(size), labels=list(class_names))
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if size <= 25:
        threshold = matrix.max() / 2.0 if matrix.size else 0.0
        for row in range(size):
            for col in range(size):
                value = matrix[row, col]
                text = f"{value:.2f}" if normalize else f"{value:g}"
                color = "white" if value > threshold else "black"
                axis.text(col, row, text, ha="center", va="center", color=color, fontsize=8)
    axis.set_title(
        title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix")
    )
    return _save(fig, path, dpi)
