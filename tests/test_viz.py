"""Tests of detseg.viz: drawn pixels where expected (and only there), grids, PNG plots without a display."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from detseg.data.imageio import read_image
from detseg.viz import (
    class_color,
    colorize_mask,
    default_palette,
    draw_detections,
    draw_segmentation,
    history_group,
    history_series,
    image_grid,
    plot_confusion_matrix,
    plot_history,
    plot_pr_curves,
    save_grid,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _grey(height: int = 100, width: int = 120, value: int = 50) -> np.ndarray:
    return np.full((height, width, 3), value, dtype=np.uint8)


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.any(before != after, axis=2)


def test_draw_box_changes_border_only_and_keeps_input():
    image = _grey()
    out = draw_detections(image, np.array([[10, 20, 60, 70]]), labels=np.array([1]), thickness=1)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.all(image == 50), "input must not be modified"
    color = class_color(1)
    # The four edges carry the class colour.
    assert tuple(out[45, 10]) == color and tuple(out[45, 60]) == color
    assert tuple(out[70, 35]) == color and tuple(out[20, 35]) == color
    changed = _changed(image, out)
    # Inside the box, away from the label (label sits above the top edge), nothing changes.
    assert not changed[22:69, 12:59].any()
    # Right of and below the box nothing changes.
    assert not changed[:, 62:].any() and not changed[72:, :].any()
    # The label text "1" is drawn on a filled background just above the box.
    assert changed[:20, 10:40].any()


def test_draw_label_text_has_background_and_name():
    image = _grey(height=200, width=200)
    with_name = draw_detections(
        image, np.array([[50, 100, 150, 180]]), labels=np.array([2]), scores=np.array([0.87]),
        class_names=["bg", "cat", "dog"],
    )  # fmt: skip
    no_text = draw_detections(image, np.array([[50, 100, 150, 180]]), labels=np.array([2]))
    assert np.array_equal(with_name[101:], no_text[101:])
    # Text "dog 0.87" sits on a filled rectangle of the class colour just above the box's top-left.
    (text_w, text_h), baseline = cv2.getTextSize("dog 0.87", cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
    label = with_name[100 - (text_h + baseline + 2) : 100, 50 : 50 + text_w + 2]
    assert np.all(label == class_color(2), axis=2).mean() > 0.4
    assert (label.min(axis=2) > 150).any(), "light ink on the dark blue of class 2"
    assert not _changed(image, with_name)[: 100 - (text_h + baseline + 3)].any()


def test_score_threshold_skips_low_scores():
    image = _grey()
    boxes = np.array([[10, 20, 60, 70], [70, 10, 110, 40]], dtype=np.float32)
    out = draw_detections(image, boxes, labels=[0, 1], scores=[0.3, 0.9], score_threshold=0.5)
    changed = _changed(image, out)
    assert not changed[25:80, 5:62].any(), "the 0.3 box is below the threshold"
    assert changed[10:41, 70:111].any()
    assert np.array_equal(
        draw_detections(image, boxes[:1], scores=[0.1], score_threshold=0.5), image
    )


def test_mask_overlay_is_exact_alpha_blend_inside_mask_only():
    image = _grey()
    masks = np.zeros((1, 100, 120), dtype=bool)
    masks[0, 30:50, 20:40] = True
    alpha = 0.4
    out = draw_detections(
        image, np.array([[10, 20, 60, 70]]), labels=[3], masks=masks, mask_alpha=alpha, thickness=1
    )
    expected = np.round(50 * (1 - alpha) + np.array(class_color(3)) * alpha).astype(np.uint8)
    assert np.all(out[30:50, 20:40] == expected)
    changed = _changed(image, out)
    inside_box = np.zeros_like(changed)
    inside_box[22:69, 12:59] = True
    assert not (changed & inside_box & ~masks[0]).any()
    # Float probability masks [N, 1, H, W] (torchvision Mask R-CNN output) give the same picture.
    torch = pytest.importorskip("torch")
    probabilities = torch.from_numpy(masks[:, None].astype(np.float32) * 0.9)
    out_torch = draw_detections(
        image, torch.tensor([[10.0, 20, 60, 70]]), labels=torch.tensor([3]),
        masks=probabilities, mask_alpha=alpha, thickness=1,
    )  # fmt: skip
    assert np.array_equal(out, out_torch)


def test_colours_are_stable_and_distinct():
    # the same colours in another process (another hash seed): nothing random or hash-based
    code = "from detseg.viz import class_color; print([class_color(c) for c in range(20)])"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert other.stdout.strip() == str([class_color(c) for c in range(20)])
    assert len({class_color(c) for c in range(10)}) == 10
    assert class_color(np.int64(3)) == class_color(3) == class_color(3 + 16)  # 16 colours, cycled
    assert all(isinstance(v, int) and 0 <= v <= 255 for c in range(16) for v in class_color(c))


def test_default_palette_matches_pascal_voc():
    palette = default_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert palette[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert palette[15].tolist() == [192, 128, 128]  # person
    assert palette[255].tolist() == [224, 224, 192]  # the VOC "void" border colour


def test_colorize_mask_and_out_of_palette_values():
    mask = np.array([[0, 1], [2, 255]])
    palette = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    rgb = colorize_mask(mask, palette)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb.tolist() == [[[0, 0, 0], [255, 0, 0]], [[0, 255, 0], [0, 0, 0]]]


def test_draw_segmentation_blends_classes_not_background_or_ignore():
    image = _grey(4, 4, value=100)
    mask = np.zeros((4, 4), dtype=np.int64)
    mask[0, :] = 1
    mask[1, :] = 255
    palette = [(0, 0, 0), (200, 0, 0)]
    out = draw_segmentation(image, mask, palette, alpha=0.5)
    assert out[0].tolist() == [[150, 50, 50]] * 4
    assert np.all(out[1:] == 100)
    everything = draw_segmentation(image, mask, palette, alpha=1.0, background=None)
    assert np.all(everything[2:] == 0)
    with pytest.raises(ValueError, match="differ in size"):
        draw_segmentation(image, np.zeros((3, 4), dtype=np.int64))


def test_image_grid_layout_and_mixed_inputs():
    images = [np.full((10, 20, 3), 10 * i, dtype=np.uint8) for i in range(5)]
    grid = image_grid(images, ncols=4, pad=4)
    assert grid.dtype == np.uint8
    assert grid.shape == (2 * (10 + 4) + 4, 4 * (20 + 4) + 4, 3)
    assert np.all(grid[4:14, 4:24] == 0) and np.all(grid[4:14, 28:48] == 10)
    assert np.all(grid[18:28, 4:24] == 40)
    assert np.all(grid[18:28, 28:] == 255), "empty cells stay white"
    # Grey and float images are accepted; smaller images are centred in the cell.
    mixed = image_grid([np.zeros((10, 20)), np.ones((4, 6, 3), dtype=np.float32)], pad=0)
    assert mixed.shape == (10, 40, 3)
    assert np.all(mixed[3:7, 27:33] == 255) and np.all(mixed[:3, 20:] == 255)
    titled = image_grid(images[:2], titles=["a", "b"])
    assert titled.shape[0] > image_grid(images[:2]).shape[0]
    with pytest.raises(ValueError):
        image_grid(images, titles=["only one"])


def test_save_grid_writes_readable_png(tmp_path: Path):
    images = [
        np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8) for i in range(3)
    ]
    path = save_grid(images, tmp_path / "sub" / "grid.png", titles=["x", "y", "z"])
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert np.array_equal(read_image(path), image_grid(images, titles=["x", "y", "z"]))


def test_history_series_rows_and_columns():
    rows = [
        {"epoch": 0, "loss": 1.0, "lr": 0.1, "note": "warm-up"},
        {"epoch": 1, "loss": 0.5, "lr": 0.01, "mAP": 0.2},
    ]
    series = history_series(rows)
    assert series == {"loss": ([0.0, 1.0], [1.0, 0.5]), "lr": ([0.0, 1.0], [0.1, 0.01]),
                      "mAP": ([1.0], [0.2])}  # fmt: skip
    columns = history_series({"train_loss": [3, 2, 1], "val_iou": [0.1, 0.2]})
    assert columns["train_loss"] == ([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert columns["val_iou"][0] == [1.0, 2.0]
    assert [history_group(k) for k in ("loss_box_reg", "lr", "epoch_time", "mAP50")] == [
        "loss", "lr", "time", "metric",
    ]  # fmt: skip


def test_plot_history_one_subplot_per_group(tmp_path: Path):
    rows = [{"epoch": e, "loss": 1 / (e + 1), "loss_cls": 0.5 / (e + 1), "lr": 0.1 * 0.5**e,
             "mAP": 0.1 * e} for e in range(5)]  # fmt: skip
    three = plot_history(rows, tmp_path / "h3.png", title="run", dpi=50)
    one = plot_history({"loss": [3.0, 2.0]}, tmp_path / "h1.png", dpi=50)
    assert three.read_bytes()[:8] == PNG_MAGIC
    width3 = cv2.imread(str(three)).shape[1]
    width1 = cv2.imread(str(one)).shape[1]
    assert width3 == pytest.approx(3 * width1, abs=2)
    with pytest.raises(ValueError, match="no numeric"):
        plot_history([{"epoch": 1, "note": "x"}], tmp_path / "none.png")


@pytest.fixture
def saved_figures(monkeypatch):
    """The matplotlib Figures that detseg.viz.plots saves, kept for a look at their content."""
    from detseg.viz import plots

    figures = []
    save = plots._save

    def keep(fig, path, dpi):
        figures.append(fig)
        return save(fig, path, dpi)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def test_plot_pr_curves_and_confusion_matrix(tmp_path: Path, saved_figures):
    recall = np.linspace(0, 1, 101)
    pr = plot_pr_curves(
        recall, {"cat": 1 - recall**2, "dog": np.full(101, -1.0)}, tmp_path / "pr.png"
    )
    assert cv2.imread(str(pr)) is not None
    [axis] = saved_figures[-1].axes
    cat, dog = axis.get_lines()
    np.testing.assert_allclose(cat.get_xdata(), recall)
    np.testing.assert_allclose(cat.get_ydata(), 1 - recall**2)
    assert np.isnan(dog.get_ydata()).all()  # COCO's -1 ("no ground truth") is not drawn
    # mean of 1 - r^2 over r = 0, 0.01 .. 1: 1 - 100 * 101 * 201 / 6 / 100^2 / 101 = 0.665
    labels = [text.get_text() for text in axis.get_legend().get_texts()]
    assert labels == ["cat (0.665)", "dog (nan)"]
    with pytest.raises(ValueError, match="101 recalls"):
        plot_pr_curves(recall, {"cat": [1.0, 0.5]}, tmp_path / "bad.png")
    cm = np.array([[5, 1, 0], [0, 0, 0], [2, 0, 3]])
    path = plot_confusion_matrix(cm, ["a", "b", "background"], tmp_path / "cm.png")
    raw = plot_confusion_matrix(cm, ["a", "b", "c"], tmp_path / "cm_raw.png", normalize=False)
    assert cv2.imread(str(path)) is not None and cv2.imread(str(raw)) is not None
    normalised, counts = (figure.axes[0] for figure in saved_figures[-2:])
    # rows divided by their sums (the empty row stays 0); raw counts as they are
    expected = [[5 / 6, 1 / 6, 0], [0, 0, 0], [0.4, 0, 0.6]]
    np.testing.assert_allclose(normalised.get_images()[0].get_array(), expected)
    np.testing.assert_allclose(counts.get_images()[0].get_array(), cm)
    assert [t.get_text() for t in normalised.texts] == [
        "0.83", "0.17", "0.00", "0.00", "0.00", "0.00", "0.40", "0.00", "0.60"
    ]  # fmt: skip
    assert [t.get_text() for t in counts.texts][:3] == ["5", "1", "0"]
    assert [t.get_text() for t in normalised.get_xticklabels()] == ["a", "b", "background"]
    with pytest.raises(ValueError, match="3 class names"):
        plot_confusion_matrix(np.eye(2), ["a", "b", "c"], tmp_path / "cm_bad.png")


def test_plots_need_no_display_and_no_pyplot(tmp_path: Path):
    code = (
        "import sys; from detseg.viz import plot_history; "
        f"plot_history({{'loss': [1.0, 0.5]}}, {str(tmp_path / 'h.png')!r}); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'"
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND", "WAYLAND_DISPLAY")
    }
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "h.png").read_bytes()[:8] == PNG_MAGIC
