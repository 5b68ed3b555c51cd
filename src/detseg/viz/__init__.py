"""Pictures of data, predictions and training.

- :mod:`detseg.viz.draw` (OpenCV): :func:`draw_detections`, :func:`draw_segmentation`,
  :func:`colorize_mask`, :func:`image_grid` take and return RGB uint8 [H, W, 3] arrays;
  :func:`save_grid` writes a grid as PNG.
- :mod:`detseg.viz.plots` (matplotlib, Agg, no display needed): :func:`plot_history`,
  :func:`plot_pr_curves`, :func:`plot_confusion_matrix` write a PNG and return its path.
"""

from detseg.viz.draw import (
    BOX_COLORS,
    class_color,
    colorize_mask,
    default_palette,
    draw_detections,
    draw_segmentation,
    image_grid,
    save_grid,
)
from detseg.viz.plots import (
    history_group,
    history_series,
    plot_confusion_matrix,
    plot_history,
    plot_pr_curves,
)

__all__ = [
    "BOX_COLORS",
    "class_color",
    "colorize_mask",
    "default_palette",
    "draw_detections",
    "draw_segmentation",
    "history_group",
    "history_series",
    "image_grid",
    "plot_confusion_matrix",
    "plot_history",
    "plot_pr_curves",
    "save_grid",
]
