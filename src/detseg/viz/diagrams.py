"""Architecture diagrams drawn by code: the figures of the lessons and of ``assets/``.

Each ``*_figure()`` function draws one diagram on a bare ``matplotlib.figure.Figure`` (no pyplot, no
global state) and returns it; a notebook shows it with :func:`show`, and
``assets/make_assets.py`` saves every entry of :data:`DIAGRAMS` with :func:`save_figure`, whose PNG
bytes depend only on the drawing (no timestamp, no software version in the file).

The pictures follow the numbers of the models they describe: the RoIAlign grid is computed by
:func:`roi_align_sample_points`, the same points that ``torchvision.ops.roi_align`` averages (a
test checks it); the U-Net, FCN-8s and pyramid-pooling shapes are those of ``05_unet_segmentation``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

# one colour per kind of block, the same in every diagram
COLORS = {
    "input": "#d9d9d9",
    "backbone": "#9ecae1",
    "neck": "#a1d99b",
    "head": "#fdae6b",
    "output": "#bcbddc",
    "pool": "#fdd0a2",
    "skip": "#e6550d",
}


def _block(axis, x, y, width, height, text, color, fontsize=8.5, **kwargs) -> None:
    """A labelled rectangle with its lower-left corner at (x, y)."""
    axis.add_patch(Rectangle((x, y), width, height, facecolor=color, edgecolor="black", lw=0.8))
    axis.text(
        x + width / 2, y + height / 2, text, ha="center", va="center", fontsize=fontsize, **kwargs
    )


def _arrow(axis, start, end, color="black", style="-|>", lw=1.0, **kwargs) -> None:
    axis.add_patch(
        FancyArrowPatch(
            start, end, arrowstyle=style, mutation_scale=9, color=color, lw=lw, **kwargs
        )
    )


def _canvas(width_in: float, height_in: float, xlim, ylim, title: str) -> tuple[Figure, object]:
    figure = Figure(figsize=(width_in, height_in), dpi=100)
    axis = figure.add_axes((0.01, 0.01, 0.98, 0.9))
    axis.set(xlim=xlim, ylim=ylim)
    axis.axis("off")
    figure.suptitle(title, fontsize=11)
    return figure, axis


# ------------------------------------------------------------------------------------------ IoU


def iou_figure() -> Figure:
    """Two boxes, their intersection and union, and IoU = intersection / union (a worked case)."""
    figure = Figure(figsize=(9, 3), dpi=100)
    box_a, box_b = (1.0, 1.0, 6.0, 5.0), (3.0, 2.0, 8.0, 7.0)  # xyxy
    inter = (3.0, 2.0, 6.0, 5.0)
    area_a = (box_a[2] - box_a[0]) * (box_a[3] - box_a[1])
    area_b = (box_b[2] - box_b[0]) * (box_b[3] - box_b[1])
    area_i = (inter[2] - inter[0]) * (inter[3] - inter[1])
    union = area_a + area_b - area_i
    panels = [
        ("two boxes", [(box_a, "#3182bd", 0.25), (box_b, "#e6550d", 0.25)]),
        (f"intersection = {area_i:.0f}", [(inter, "#31a354", 0.6)]),
        (f"union = {area_a:.0f} + {area_b:.0f} - {area_i:.0f} = {union:.0f}", [
            (box_a, "#756bb1", 0.5), (box_b, "#756bb1", 0.5)]),
    ]  # fmt: skip
    for index, (title, patches) in enumerate(panels):
        axis = figure.add_subplot(1, 3, index + 1)
        for x1, y1, x2, y2 in (box_a, box_b):
            axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.2))
        for (x1, y1, x2, y2), color, alpha in patches:
            axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, color=color, alpha=alpha, lw=0))
        axis.set(xlim=(0, 9), ylim=(8, 0), aspect="equal", xticks=[], yticks=[])
        axis.set_title(title, fontsize=9)
    figure.suptitle(
        f"IoU = intersection / union = {area_i:.0f} / {union:.0f} = {area_i / union:.3f}",
        fontsize=11,
    )
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.03, top=0.8, wspace=0.1)
    return figure


# ----------------------------------------------------------------------------------- Mask R-CNN


def maskrcnn_pipeline_figure() -> Figure:
    """Mask R-CNN's stages: transform, backbone + FPN, RPN, RoIAlign, box head, mask head."""
    figure, axis = _canvas(11, 3.6, (0, 22), (0, 7.2), "Mask R-CNN (torchvision's MaskRCNN)")
    _block(axis, 0.2, 2.8, 2.2, 1.6, "image\n+ targets\n(train)", COLORS["input"])
    _block(axis, 3.0, 2.8, 2.4, 1.6, "transform\nresize,\nnormalise, pad", COLORS["input"])
    _block(axis, 6.0, 2.8, 2.6, 1.6, "backbone\nResNet\n+ FPN", COLORS["backbone"])
    _block(axis, 9.4, 4.8, 3.0, 1.6, "RPN: anchors,\nobjectness,\nbox deltas, NMS", COLORS["neck"])
    _block(axis, 9.4, 0.8, 3.0, 1.6, "feature maps\nP2..P5\n(strides 4..32)", COLORS["backbone"])
    _block(axis, 13.2, 2.8, 2.6, 1.6, "RoIAlign\n7x7 (box)\n14x14 (mask)", COLORS["pool"])
    _block(axis, 16.6, 4.6, 2.6, 1.6, "box head\n2 FC layers\n-> class, deltas", COLORS["head"])
    _block(axis, 16.6, 1.0, 2.6, 1.6, "mask head\n4 conv 3x3\n-> 28x28 mask", COLORS["head"])
    _block(axis, 19.8, 2.8, 2.0, 1.6, "boxes,\nlabels, scores,\nmasks", COLORS["output"])
    _arrow(axis, (2.4, 3.6), (3.0, 3.6))
    _arrow(axis, (5.4, 3.6), (6.0, 3.6))
    _arrow(axis, (8.6, 3.9), (9.4, 5.4))
    _arrow(axis, (8.6, 3.3), (9.4, 1.8))
    _arrow(axis, (10.9, 2.4), (10.9, 4.8))
    _arrow(axis, (12.4, 5.4), (13.6, 4.4))
    axis.text(12.5, 5.7, "~1000 proposals", fontsize=7.5)
    _arrow(axis, (12.4, 1.6), (13.6, 2.8))
    _arrow(axis, (15.8, 3.9), (16.6, 5.2))
    _arrow(axis, (15.8, 3.3), (16.6, 1.9))
    _arrow(axis, (19.2, 5.2), (20.3, 4.4))
    _arrow(axis, (19.2, 1.9), (20.3, 2.8))
    losses = [
        (10.9, 6.75, "loss_objectness, loss_rpn_box_reg"),
        (17.9, 6.75, "loss_classifier, loss_box_reg"),
        (17.9, 0.35, "loss_mask"),
    ]
    for x, y, text in losses:
        axis.text(x, y, text, ha="center", fontsize=7.5, color="#a50f15", style="italic")
    return figure


def fpn_figure() -> Figure:
    """Feature Pyramid Network: bottom-up ResNet stages, lateral 1x1, top-down 2x upsampling."""
    figure, axis = _canvas(8, 4.6, (0, 16), (0, 9.4), "Feature Pyramid Network (Lin et al., 2017)")
    strides = [4, 8, 16, 32]
    for level, stride in enumerate(strides):
        size = 3.2 - 0.6 * level
        y = 0.6 + 2.1 * level
        _block(axis, 1.6 - size / 2 + 1.2, y, size, 1.4, f"C{level + 2}\nstride {stride}",
               COLORS["backbone"])  # fmt: skip
        _block(axis, 11.6 - size / 2 + 1.2, y, size, 1.4, f"P{level + 2}\nstride {stride}",
               COLORS["neck"])  # fmt: skip
        _arrow(axis, (2.8 + size / 2, y + 0.7), (12.8 - size / 2, y + 0.7), color="#3182bd")
        axis.text(7.8, y + 0.85, "1x1 conv (lateral)", ha="center", fontsize=7.5, color="#3182bd")
        if level:
            _arrow(axis, (2.8, y - 0.7), (2.8, y), color="black")
            _arrow(axis, (13.9, y), (13.9, y - 0.7), color="#31a354")
            axis.text(14.05, y - 0.45, "2x up, +", fontsize=7.5, color="#31a354")
    _block(axis, 1.2, 9.0 - 0.4, 3.2, 0.5, "bottom-up path: ResNet stages", COLORS["input"], 7.5)
    axis.text(12.8, 9.0, "top-down path; each P: 3x3 conv,\nsame channels (256; 64 in the slim model)",
              ha="center", fontsize=7.5)  # fmt: skip
    axis.text(15.2, 0.1, "P6 = max-pool of P5 (RPN only)", ha="right", fontsize=7.5)
    return figure


def roi_align_sample_points(
    box_xyxy: tuple[float, float, float, float],
    output_size: int,
    sampling_ratio: int,
    spatial_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Where RoIAlign samples (``aligned=False``, torchvision's Mask R-CNN setting).

    Args:
        box_xyxy: the RoI in input pixels.
        output_size: bins per side.
        sampling_ratio: samples per bin and side.
        spatial_scale: feature-map cells per input pixel (1 / stride).
    Returns:
        ``(ys, xs)``: two arrays ``[output_size * sampling_ratio]`` of feature-map coordinates; bin
        ``i`` averages the bilinear samples at rows ``ys[i*s:(i+1)*s]`` x columns of its bin.
    """
    x_start, y_start, x_end, y_end = (float(v) * spatial_scale for v in box_xyxy)
    bin_h = max(y_end - y_start, 1.0) / output_size
    bin_w = max(x_end - x_start, 1.0) / output_size
    offsets = (np.arange(sampling_ratio) + 0.5) / sampling_ratio
    steps = (np.arange(output_size)[:, None] + offsets[None, :]).reshape(-1)
    return y_start + steps * bin_h, x_start + steps * bin_w


def roi_align_figure(
    box_xyxy: tuple[float, float, float, float] = (1.6, 1.3, 7.1, 6.4),
    output_size: int = 2,
    sampling_ratio: int = 2,
) -> Figure:
    """A RoI on an 8 x 8 feature map: its bins, sample points and the 4 cells of one sample."""
    figure = Figure(figsize=(5.2, 5.2), dpi=100)
    axis = figure.add_axes((0.08, 0.04, 0.9, 0.8))
    cells = 8
    for k in range(cells + 1):
        axis.plot([k, k], [0, cells], color="#bdbdbd", lw=0.7)
        axis.plot([0, cells], [k, k], color="#bdbdbd", lw=0.7)
    x1, y1, x2, y2 = box_xyxy
    axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="#e6550d", lw=2))
    for k in range(1, output_size):  # bin edges, never rounded to the grid
        axis.plot([x1 + k * (x2 - x1) / output_size] * 2, [y1, y2], color="#e6550d", lw=1, ls="--")
        axis.plot([x1, x2], [y1 + k * (y2 - y1) / output_size] * 2, color="#e6550d", lw=1, ls="--")
    ys, xs = roi_align_sample_points(box_xyxy, output_size, sampling_ratio)
    # the feature value at (y, x) sits at the cell's integer corner in torchvision's convention
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    axis.plot(grid_x.ravel(), grid_y.ravel(), "o", color="#3182bd", ms=5)
    y0, x0 = np.floor(ys[0]), np.floor(xs[0])
    for dy in (0, 1):
        for dx in (0, 1):
            _arrow(axis, (xs[0], ys[0]), (x0 + dx, y0 + dy), color="#31a354", style="-", lw=0.8)
    axis.plot([x0, x0 + 1, x0, x0 + 1], [y0, y0, y0 + 1, y0 + 1], "s", color="#31a354", ms=5)
    axis.set(xlim=(-0.2, cells + 0.2), ylim=(cells + 0.2, -0.2), aspect="equal")
    axis.set_xticks(range(cells + 1))
    axis.set_yticks(range(cells + 1))
    axis.tick_params(labelsize=7)
    figure.suptitle(
        f"RoIAlign: {output_size}x{output_size} bins (dashed), {sampling_ratio}x{sampling_ratio} "
        "samples per bin (blue);\neach sample blends its 4 nearest feature values (green);\n"
        "no coordinate is rounded to the grid",
        fontsize=9,
    )
    return figure


# -------------------------------------------------------------------------------- segmentation


def unet_figure(depth: int = 4, base_width: int = 64) -> Figure:
    """U-Net's U: ``depth`` halvings with doubled width, the way back up, and the skips."""
    figure, axis = _canvas(
        9, 5, (0, 20), (0, 11), f"U-Net (Ronneberger et al., 2015), depth {depth}"
    )
    top = 9.5
    for level in range(depth + 1):
        width = base_width * 2**level
        y = top - 1.9 * level
        height = 1.2
        x_down = 1.0 + 1.2 * level
        _block(axis, x_down, y, 2.6, height, f"2x conv 3x3\n{width} ch, 1/{2**level}",
               COLORS["backbone"] if level < depth else COLORS["pool"], 7.5)  # fmt: skip
        if level < depth:
            _arrow(axis, (x_down + 1.3, y), (x_down + 2.5, y - 1.9 + height), color="#3182bd")
            axis.text(x_down + 0.35, y - 0.45, "max-pool 2x2", fontsize=6.5, color="#3182bd")
            x_up = 18.4 - 1.2 * level - 2.6
            _block(axis, x_up, y, 2.6, height, f"concat + 2x conv\n{width} ch, 1/{2**level}",
                   COLORS["neck"], 7.5)  # fmt: skip
            _arrow(axis, (x_down + 2.6, y + 0.6), (x_up, y + 0.6), color=COLORS["skip"])
            axis.text((x_down + 2.6 + x_up) / 2, y + 0.75, "skip: copy", ha="center",
                      fontsize=7, color=COLORS["skip"])  # fmt: skip
            below = level + 1  # the block one level down: the bottleneck or an up block
            below_x = 1.0 + 1.2 * below + 1.3 if below == depth else 18.4 - 1.2 * below - 1.3
            _arrow(axis, (below_x, y - 1.9 + height), (x_up + 1.3, y), color="#31a354")
            axis.text(x_up + 1.5, y - 0.45, "up-conv 2x2", fontsize=6.5, color="#31a354")
    axis.text(19.5, top + 1.4, "1x1 conv -> class scores per pixel", ha="right", fontsize=7.5)
    return figure


def fcn8s_figure() -> Figure:
    """FCN-8s: VGG16 pools, the fc layers as convolutions, scores of pool4 and pool3 added."""
    figure, axis = _canvas(10, 3.8, (0, 21), (0, 8), "FCN-8s (Long, Shelhamer and Darrell, 2015)")
    stages = [("image", 1), ("pool3", 8), ("pool4", 16), ("pool5", 32), ("fc6, fc7\n(conv)", 32)]
    for index, (name, stride) in enumerate(stages):
        x = 0.3 + 2.6 * index
        color = COLORS["input"] if index == 0 else COLORS["backbone"]
        label = name if index == 0 else f"{name}\n1/{stride}"
        _block(axis, x, 5.6, 2.0, 1.5, label, color, 7.5)
        if index:
            _arrow(axis, (x - 0.6, 6.35), (x, 6.35))
    _block(axis, 10.7, 3.3, 2.2, 1.2, "score_fr\n1x1, 1/32", COLORS["head"], 7.5)
    _arrow(axis, (11.7, 5.6), (11.8, 4.5))
    _block(axis, 13.6, 3.3, 2.2, 1.2, "up 2x -> 1/16\n+ score_pool4", COLORS["neck"], 7.5)
    _block(axis, 16.4, 3.3, 2.2, 1.2, "up 2x -> 1/8\n+ score_pool3", COLORS["neck"], 7.5)
    _block(axis, 16.4, 0.6, 2.2, 1.2, "up 8x -> 1/1\nclass scores", COLORS["output"], 7.5)
    _arrow(axis, (12.9, 3.9), (13.6, 3.9))
    _arrow(axis, (15.8, 3.9), (16.4, 3.9))
    _arrow(axis, (17.5, 3.3), (17.5, 1.8))
    for x_from, x_to in ((6.5, 14.7), (3.9, 17.5)):  # from pool4 and pool3 to their sums
        _arrow(axis, (x_from, 5.6), (x_to, 3.3), color=COLORS["skip"],
               connectionstyle="arc3,rad=0.2")  # fmt: skip
    axis.text(3.0, 1.6, "skips: 1x1 conv scores of pool3 and pool4", fontsize=7.5,
              color=COLORS["skip"])  # fmt: skip
    axis.text(0.3, 0.5, "every 'up' is a transposed convolution initialised as bilinear\n"
              "interpolation (stride f, kernel 2f, padding f/2)", fontsize=7.5)  # fmt: skip
    return figure


def pyramid_pooling_figure(bins: tuple[int, ...] = (1, 2, 3, 6)) -> Figure:
    """PSPNet's pyramid pooling module: average into b x b bins, 1x1 conv, upsample, concatenate."""
    figure, axis = _canvas(
        9.5, 4.4, (0, 20), (0, 9.6), "Pyramid pooling module (PSPNet, Zhao et al., 2017)"
    )
    _block(
        axis, 0.3, 3.4, 2.8, 2.8, "feature map\nC x h x w\n(dilated ResNet)", COLORS["backbone"], 8
    )
    for index, size in enumerate(bins):
        y = 7.6 - 2.2 * index
        square = 1.6
        axis.add_patch(Rectangle((5.0, y), square, square, facecolor=COLORS["pool"],
                                 edgecolor="black", lw=0.8))  # fmt: skip
        for k in range(1, size):
            axis.plot([5.0 + k * square / size] * 2, [y, y + square], color="black", lw=0.5)
            axis.plot([5.0, 5.0 + square], [y + k * square / size] * 2, color="black", lw=0.5)
        axis.text(4.85, y + 0.8, f"{size}x{size}", ha="right", va="center", fontsize=8)
        _arrow(axis, (3.1, 4.8), (5.0, y + 0.8), color="#3182bd")
        _block(axis, 7.6, y + 0.2, 2.6, 1.2, "1x1 conv\nC/4 channels", COLORS["head"], 7.5)
        _arrow(axis, (6.6, y + 0.8), (7.6, y + 0.8))
        _block(axis, 11.0, y + 0.2, 2.4, 1.2, "upsample\nto h x w", COLORS["neck"], 7.5)
        _arrow(axis, (10.2, y + 0.8), (11.0, y + 0.8))
        _arrow(axis, (13.4, y + 0.8), (14.6, 4.8), color="#31a354")
    axis.text(3.6, 8.9, "adaptive average pooling", fontsize=7.5, color="#3182bd")
    _block(axis, 14.6, 3.4, 2.4, 2.8, "concat with\nthe map:\n2C x h x w", COLORS["output"], 8)
    _arrow(axis, (1.7, 3.4), (15.8, 3.4), color="#31a354", connectionstyle="arc3,rad=0.12")
    _block(axis, 17.6, 4.0, 2.2, 1.6, "3x3 conv\n-> classes", COLORS["head"], 8)
    _arrow(axis, (17.0, 4.8), (17.6, 4.8))
    return figure


DIAGRAMS: dict[str, Callable[[], Figure]] = {
    "iou": iou_figure,
    "maskrcnn_pipeline": maskrcnn_pipeline_figure,
    "fpn": fpn_figure,
    "roi_align": roi_align_figure,
    "unet": unet_figure,
    "fcn8s_skips": fcn8s_figure,
    "pyramid_pooling": pyramid_pooling_figure,
}


def png_bytes(figure: Figure, dpi: int = 100) -> bytes:
    """``figure`` as PNG bytes that depend only on the drawing (no date, no software version)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def save_figure(figure: Figure, path: Path | str, dpi: int = 100) -> Path:
    """Write ``figure`` as a PNG (:func:`png_bytes`) to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(figure, dpi))
    return path


def show(figure: Figure) -> None:
    """Display ``figure`` in a notebook (a bare Figure has no picture of its own there)."""
    from IPython.display import Image, display

    display(Image(data=png_bytes(figure)))
