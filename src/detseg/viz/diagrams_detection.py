"""Detection figures drawn by code: the methods, sliding windows, the R-CNN family, anchors, YOLO, AP.

Each ``*_figure()`` function draws one figure on a bare ``matplotlib.figure.Figure`` (as
:mod:`detseg.viz.diagrams`, whose helpers and colours it shares) and :data:`DETECTION_DIAGRAMS`
lists them for ``assets/make_assets.py``. The numbers in the pictures come from small functions
next to them, which the tests check against the libraries the examples use:

- :func:`coin_instances`: the 24 coins of ``skimage.data.coins()`` as instance masks (watershed of
  the Sobel edges between dark-background and bright-coin markers, holes filled, blobs under
  500 px dropped): the image of the classification / detection / segmentation comparison.
- :func:`pyramid_sizes`, :func:`sliding_windows`: the windows a classic detector scores.
- :func:`rpn_anchors`: Faster R-CNN's 3 sizes x 3 aspect ratios on one feature-map cell
  (torchvision's ``AnchorGenerator`` convention: ratio = height / width, area = size^2).
- :func:`responsible_cell`, :func:`best_anchor`, :func:`yolo_channel`: YOLOv3's 13 x 13 grid on a
  416 x 416 input, its three largest anchors and the 255 = 3 x (5 + 80) output channels.
- :func:`pr_case`: a fixed 2-image case evaluated by :func:`detseg.metrics.evaluate_coco`; the
  figure shades COCO's 101-point interpolated precision, whose area is the AP50.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from detseg.viz.diagrams import COLORS, _arrow, _block, _canvas

PALETTE = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#999999")

# ------------------------------------------------------------------------- methods comparison


def coin_instances(min_area: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """``skimage.data.coins()`` and its coins as a label image (0 = background, 1..N = coins).

    Markers: background where the grey level is below 30, coin above 150; a watershed of the Sobel
    edge map grows them, holes are filled and components under ``min_area`` pixels dropped.
    Labels are numbered in raster order of the components.
    """
    from scipy import ndimage
    from skimage import data, filters, segmentation

    image = data.coins()
    markers = np.zeros(image.shape, dtype=np.int32)
    markers[image < 30] = 1
    markers[image > 150] = 2
    coins = ndimage.binary_fill_holes(segmentation.watershed(filters.sobel(image), markers) == 2)
    labels, count = ndimage.label(coins)
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    keep = np.flatnonzero(areas >= min_area)
    keep = keep[keep > 0]
    relabel = np.zeros(count + 1, dtype=np.int32)
    relabel[keep] = np.arange(1, len(keep) + 1)
    return image, relabel[labels]


def instance_boxes(labels: np.ndarray) -> np.ndarray:
    """Tight ``xyxy`` box (pixel edges, exclusive right / bottom) of each label 1..N: [N, 4]."""
    boxes = []
    for index in range(1, int(labels.max()) + 1):
        rows, cols = np.nonzero(labels == index)
        boxes.append((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def methods_comparison_figure() -> Figure:
    """One photo, four tasks: classification, detection, semantic and instance segmentation."""
    image, labels = coin_instances()
    boxes = instance_boxes(labels)
    count = len(boxes)
    figure = Figure(figsize=(12, 3.4), dpi=100)
    figure.suptitle(
        f"Four tasks on one photo (skimage.data.coins, {count} coins)", fontsize=11, y=0.99
    )
    titles = (
        'classification:\n"coins" (one label per image)',
        f"object detection:\n{count} boxes, one per object",
        "semantic segmentation:\nclass per pixel (coin / background)",
        f"instance segmentation:\n{count} masks, one per object",
    )
    for index, title in enumerate(titles):
        axis = figure.add_axes((0.005 + index * 0.25, 0.02, 0.24, 0.72))
        axis.axis("off")
        axis.set_title(title, fontsize=9)
        axis.imshow(image, cmap="gray", interpolation="nearest")
        if index == 0:
            axis.text(8, 24, "label: coins", color="white", fontsize=9,
                      bbox={"facecolor": "#3182bd", "edgecolor": "none"})  # fmt: skip
        elif index == 1:
            for x1, y1, x2, y2 in boxes:
                axis.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                         edgecolor="#e6550d", lw=1.2))  # fmt: skip
        elif index == 2:
            overlay = np.zeros((*labels.shape, 4))
            overlay[labels > 0] = (0.19, 0.51, 0.74, 0.6)
            axis.imshow(overlay, interpolation="nearest")
        else:
            overlay = np.zeros((*labels.shape, 4))
            for k in range(1, count + 1):
                red, green, blue = (int(PALETTE[k % len(PALETTE)][i : i + 2], 16) / 255
                                    for i in (1, 3, 5))  # fmt: skip
                overlay[labels == k] = (red, green, blue, 0.65)
            axis.imshow(overlay, interpolation="nearest")
    return figure


# ------------------------------------------------------------ sliding windows and the pyramid


def pyramid_sizes(
    height: int, width: int, scale: float = 1.5, min_size: tuple[int, int] = (64, 64)
) -> list[tuple[int, int]]:
    """(height, width) of each pyramid level: divide by ``scale`` until smaller than ``min_size``."""
    sizes = []
    while height >= min_size[0] and width >= min_size[1]:
        sizes.append((height, width))
        height, width = int(height / scale), int(width / scale)
    return sizes


def sliding_windows(height: int, width: int, window: int = 64, stride: int = 32) -> np.ndarray:
    """``xyxy`` of every ``window`` x ``window`` position at ``stride``, row by row: [N, 4]."""
    ys = np.arange(0, height - window + 1, stride)
    xs = np.arange(0, width - window + 1, stride)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    corners = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1).astype(np.float64)
    return np.concatenate([corners, corners + window], axis=1)


def sliding_windows_figure(window: int = 64, stride: int = 32, scale: float = 1.5) -> Figure:
    """An image pyramid (scale 1.5) and the 64 x 64 windows, stride 32, scored at every level."""
    from skimage import data, transform

    photo = data.astronaut().mean(axis=2) / 255.0
    base = transform.resize(photo, (256, 256), anti_aliasing=True, order=1)
    sizes = pyramid_sizes(256, 256, scale, (window, window))
    figure = Figure(figsize=(12, 3.6), dpi=100)
    total = sum(len(sliding_windows(h, w, window, stride)) for h, w in sizes)
    figure.suptitle(
        f"Sliding windows ({window} x {window}, stride {stride}) over an image pyramid "
        f"(each level 1/{scale} of the last): {total} windows for one 256 x 256 image",
        fontsize=10.5,
    )
    for level, (h, w) in enumerate(sizes):
        axis = figure.add_axes((0.01 + level * 0.245, 0.04, 0.235 * h / 256, 0.78 * h / 256))
        image = transform.resize(base, (h, w), anti_aliasing=True, order=1)
        axis.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
        windows = sliding_windows(h, w, window, stride)
        for x1, y1, x2, y2 in windows:
            axis.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                     edgecolor="#9ecae1", lw=0.5))  # fmt: skip
        x1, y1, x2, y2 = windows[len(windows) // 2]
        axis.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                 edgecolor="#e6550d", lw=2))  # fmt: skip
        plural = "s" if len(windows) != 1 else ""
        axis.set_title(f"level {level}: {h} x {w}\n{len(windows)} window{plural}", fontsize=9)
    return figure


# ----------------------------------------------------------------------- the R-CNN family

RCNN_FAMILY: dict[str, tuple[str, ...]] = {
    "R-CNN (2014)": (
        "image",
        "selective search:\n~2000 regions",
        "warp each\nto 227 x 227",
        "CNN once\nper region",
        "SVM per class\n+ box regressor",
    ),
    "Fast R-CNN (2015)": (
        "image",
        "selective search:\n~2000 regions",
        "CNN once\nper image",
        "RoI pooling\n7 x 7 per region",
        "FC: softmax\n+ box regressor",
    ),
    "Faster R-CNN (2015)": (
        "image",
        "CNN once\nper image",
        "RPN: anchors ->\n~300 proposals",
        "RoI pooling\n7 x 7 per region",
        "FC: softmax\n+ box regressor",
    ),
}


def rcnn_family_figure() -> Figure:
    """R-CNN -> Fast R-CNN -> Faster R-CNN: what runs how many times, and where proposals come from."""
    figure, axis = _canvas(11, 4.6, (0, 21), (0, 10), "The R-CNN family: where the work moved")
    kinds = {"image": "input", "CNN": "backbone", "RPN": "neck", "selective": "pool", "RoI": "neck"}
    for row, (name, stages) in enumerate(RCNN_FAMILY.items()):
        y = 7.4 - row * 3.3
        axis.text(0.1, y + 1.75, name, fontsize=9.5, fontweight="bold")
        for index, stage in enumerate(stages):
            x = 0.2 + index * 4.2
            kind = next((v for k, v in kinds.items() if stage.startswith(k)), "head")
            _block(axis, x, y, 3.2, 1.4, stage, COLORS[kind], 8)
            if index:
                _arrow(axis, (x - 1.0, y + 0.7), (x, y + 0.7))
    return figure


# --------------------------------------------------------------------------------- RPN anchors


def rpn_anchors(
    center: tuple[float, float],
    sizes: Sequence[float] = (128, 256, 512),
    ratios: Sequence[float] = (0.5, 1.0, 2.0),
) -> np.ndarray:
    """Anchors ``xyxy`` [len(ratios) * len(sizes), 4] centred on one cell, ratio-major order.

    As torchvision's ``AnchorGenerator``: ratio = height / width, width = size / sqrt(ratio),
    height = size * sqrt(ratio), so every anchor of one size has the area size^2 (torchvision
    rounds the corners to integers; these are exact).
    """
    cx, cy = center
    anchors = []
    for ratio in ratios:
        for size in sizes:
            w, h = size / np.sqrt(ratio), size * np.sqrt(ratio)
            anchors.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return np.asarray(anchors, dtype=np.float64)


def rpn_anchors_figure(stride: int = 16, image_size: int = 1024) -> Figure:
    """The 9 anchors (3 sizes x 3 ratios) of one feature-map cell, on the stride-16 grid."""
    figure = Figure(figsize=(10, 5), dpi=100)
    figure.suptitle(
        f"RPN anchors: 3 sizes x 3 aspect ratios on one cell of the stride-{stride} feature map",
        fontsize=11,
    )
    axis = figure.add_axes((0.02, 0.03, 0.5, 0.85))
    axis.set(xlim=(0, image_size), ylim=(image_size, 0), aspect="equal")
    axis.set_xticks([0, image_size // 2, image_size])
    axis.set_yticks([0, image_size // 2, image_size])
    axis.tick_params(labelsize=7)
    for line in range(0, image_size + 1, stride):
        axis.plot([line, line], [0, image_size], color="#dddddd", lw=0.3)
        axis.plot([0, image_size], [line, line], color="#dddddd", lw=0.3)
    cell = image_size // 2 // stride
    center = ((cell + 0.5) * stride, (cell + 0.5) * stride)
    axis.add_patch(Rectangle((cell * stride, cell * stride), stride, stride, color="black"))
    sizes, ratios = (128, 256, 512), (0.5, 1.0, 2.0)
    anchors = rpn_anchors(center, sizes, ratios)
    styles = {0.5: "--", 1.0: "-", 2.0: ":"}
    for index, (x1, y1, x2, y2) in enumerate(anchors):
        ratio, size = ratios[index // len(sizes)], sizes[index % len(sizes)]
        axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.4,
                                 edgecolor=PALETTE[index % len(sizes)],
                                 linestyle=styles[ratio], label=f"{size}, h/w {ratio}"))  # fmt: skip
    table = figure.add_axes((0.55, 0.03, 0.43, 0.85))
    table.axis("off")
    lines = [f"cell ({cell}, {cell}), centre ({center[0]:.0f}, {center[1]:.0f}) px", ""]
    lines.append("size  h/w   width x height   area")
    for index, (x1, y1, x2, y2) in enumerate(anchors):
        ratio, size = ratios[index // len(sizes)], sizes[index % len(sizes)]
        w, h = x2 - x1, y2 - y1
        lines.append(f"{size:>4}  {ratio:<4}  {w:6.1f} x {h:6.1f}   {w * h:8.0f}")
    lines += [
        "",
        "colour = size (red 128, blue 256, green 512);",
        "line = h/w (dashed 0.5, solid 1, dotted 2)",
        "",
        "per cell: 9 anchors -> the RPN predicts",
        "9 objectness scores + 9 x 4 box deltas;",
        f"a {image_size // stride} x {image_size // stride} map has "
        f"{(image_size // stride) ** 2 * 9:,} anchors.",
    ]
    table.text(0, 0.95, "\n".join(lines), family="monospace", fontsize=8.5, va="top")
    return figure


# ------------------------------------------------------------------------ YOLO grid and anchors

YOLOV3_ANCHORS_13 = ((116, 90), (156, 198), (373, 326))  # yolov3.cfg, mask = 6,7,8 (stride 32)
YOLO_FIELDS = ("tx", "ty", "tw", "th", "obj")


def responsible_cell(box: Sequence[float], stride: float) -> tuple[int, int]:
    """(row, column) of the grid cell that contains the centre of ``box`` (xyxy)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return int(cy // stride), int(cx // stride)


def best_anchor(box: Sequence[float], anchors: Sequence[tuple[float, float]]) -> int:
    """Index of the anchor (w, h) with the highest IoU with ``box`` when both share a centre."""
    w, h = box[2] - box[0], box[3] - box[1]
    ious = [min(w, aw) * min(h, ah) / (w * h + aw * ah - min(w, aw) * min(h, ah))
            for aw, ah in anchors]  # fmt: skip
    return int(np.argmax(ious))


def yolo_channel(anchor: int, field: int, num_classes: int = 80) -> int:
    """Channel of ``field`` (0-3 box, 4 objectness, 5 + c class c) for ``anchor`` in the head output."""
    return anchor * (5 + num_classes) + field


YOLO_BOX = (150.0, 40.0, 330.0, 250.0)  # xyxy on the 416 x 416 astronaut: head and shoulders


def yolo_grid_figure(size: int = 416, grid: int = 13, num_classes: int = 80) -> Figure:
    """YOLOv3's coarsest scale: 13 x 13 cells, the responsible cell, 3 anchors, 255 channels."""
    from skimage import data, transform

    stride = size // grid
    photo = transform.resize(data.astronaut(), (size, size), anti_aliasing=True, order=1)
    row, col = responsible_cell(YOLO_BOX, stride)
    best = best_anchor(YOLO_BOX, YOLOV3_ANCHORS_13)
    figure = Figure(figsize=(11, 5.2), dpi=100)
    channels = len(YOLOV3_ANCHORS_13) * (5 + num_classes)
    figure.suptitle(
        f"YOLOv3 at stride {stride}: a {grid} x {grid} grid, 3 anchors per cell, "
        f"{channels} = 3 x (5 + {num_classes}) channels",
        fontsize=11,
    )
    axis = figure.add_axes((0.01, 0.03, 0.48, 0.86))
    axis.imshow(photo, interpolation="nearest")
    axis.set(xlim=(-0.5, size - 0.5), ylim=(size - 0.5, -0.5))
    axis.set_xticks([])
    axis.set_yticks([])
    for line in range(0, size + 1, stride):
        axis.plot([line, line], [0, size], color="white", lw=0.5)
        axis.plot([0, size], [line, line], color="white", lw=0.5)
    axis.add_patch(Rectangle((col * stride, row * stride), stride, stride, color="#e6550d",
                             alpha=0.7, label=f"responsible cell (row {row}, col {col})"))  # fmt: skip
    x1, y1, x2, y2 = YOLO_BOX
    axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="#31a354", lw=2.2,
                             label="ground-truth box"))  # fmt: skip
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    axis.plot([cx], [cy], marker="o", color="#31a354", markersize=5)
    for index, (aw, ah) in enumerate(YOLOV3_ANCHORS_13):
        ax_c, ay_c = (col + 0.5) * stride, (row + 0.5) * stride
        axis.add_patch(Rectangle((ax_c - aw / 2, ay_c - ah / 2), aw, ah, fill=False,
                                 edgecolor="#3182bd" if index == best else "#9ecae1",
                                 lw=2 if index == best else 1, linestyle="--",
                                 label=f"anchor {aw} x {ah}" + (" (best IoU)" if index == best
                                                                 else "")))  # fmt: skip
    axis.legend(loc="lower left", fontsize=7)
    # the channel layout of one cell
    lay = figure.add_axes((0.52, 0.03, 0.47, 0.86))
    lay.set(xlim=(0, 100), ylim=(-2.5, 10))
    lay.axis("off")
    for anchor in range(3):
        y = 7.4 - anchor * 3.0
        for field, name in enumerate(YOLO_FIELDS):
            color = COLORS["head"] if name == "obj" else COLORS["backbone"]
            _block(lay, field * 7, y, 7, 1.5, name, color, 7.5)
        first, last = yolo_channel(anchor, 5, num_classes), yolo_channel(anchor, 4 + num_classes)
        _block(lay, 35, y, 63, 1.5, f"{num_classes} class scores (channels {first}-{last})",
               COLORS["neck"], 8)  # fmt: skip
        lay.text(0, y + 1.8, f"anchor {anchor} ({YOLOV3_ANCHORS_13[anchor][0]} x "
                 f"{YOLOV3_ANCHORS_13[anchor][1]}): channels {yolo_channel(anchor, 0)}-{last}",
                 fontsize=8.5)  # fmt: skip
    lay.text(0, -2.3, f"output [B, {channels}, {grid}, {grid}]: each cell predicts 3 boxes:\n"
             f"cx = (sigmoid(tx) + col) x {stride}, cy = (sigmoid(ty) + row) x {stride},\n"
             "w = anchor_w x exp(tw), h = anchor_h x exp(th);\n"
             "score = sigmoid(obj) x sigmoid(class); then NMS", fontsize=8.5)  # fmt: skip
    return figure


# ---------------------------------------------------------------------- precision, recall, AP

# one class, two images, six objects; eight detections in score order, True = a hit (IoU >= 0.5)
PR_HITS = (True, True, False, True, False, True, False, True)


def pr_case() -> tuple[dict, list[dict]]:
    """COCO ground truth and detections of the AP figure: hits and misses as :data:`PR_HITS`.

    Objects are 40 x 40 squares 100 px apart; a hit is its object shifted by 4 px (IoU 0.82), a
    miss a square far from every object. ``PR_HITS`` has 5 hits, so one object is never found
    and recall stops at 5/6.
    """
    images = [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in (1, 2)]
    objects = [(image, 20.0 + 100 * k, 30.0) for image in (1, 2) for k in range(3)]
    annotations = [
        {"id": n + 1, "image_id": image, "category_id": 1, "bbox": [x, y, 40.0, 40.0],
         "area": 1600.0, "iscrowd": 0}
        for n, (image, x, y) in enumerate(objects)
    ]  # fmt: skip
    detections, found = [], 0
    for index, hit in enumerate(PR_HITS):
        score = round(0.95 - 0.08 * index, 2)
        if hit:
            image, x, y = objects[found]
            found += 1
            box = [x + 4.0, y + 4.0, 40.0, 40.0]
        else:
            image, box = 1 + index % 2, [20.0 + 60 * index, 300.0, 40.0, 40.0]
        detections.append({"image_id": image, "category_id": 1, "bbox": box, "score": score})
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": 1, "name": "object"}]}  # fmt: skip
    return gt, detections


def raw_pr(hits: Sequence[bool], num_objects: int) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision after each detection in score order (not interpolated)."""
    tp = np.cumsum(np.asarray(hits, dtype=np.float64))
    return tp / num_objects, tp / np.arange(1, len(hits) + 1)


def precision_recall_figure() -> Figure:
    """The PR curve of :func:`pr_case` and COCO's 101-point interpolated precision, shaded = AP50."""
    from detseg.metrics import evaluate_coco

    gt, detections = pr_case()
    result = evaluate_coco(gt, detections)
    recall_points, precision_points = result.pr_curve(1, 0.5)
    ap50 = result.stats["AP50"]
    recall, precision = raw_pr(PR_HITS, len(gt["annotations"]))
    figure = Figure(figsize=(9, 4.4), dpi=100)
    figure.suptitle(
        f"Precision / recall and AP50 = {ap50:.4f} (6 objects, 8 detections; computed by "
        "detseg.metrics.evaluate_coco)",
        fontsize=10.5,
    )
    axis = figure.add_axes((0.08, 0.12, 0.6, 0.76))
    share = 1.0 / len(recall_points)
    for index, value in enumerate(precision_points):
        if value > 0:
            axis.add_patch(Rectangle((index * share, 0), share, value, facecolor="#c6dbef",
                                     edgecolor="none"))  # fmt: skip
    axis.plot(np.r_[0, recall], np.r_[1, precision], "o-", color="#e6550d", ms=4, lw=1,
              label="precision after each detection")  # fmt: skip
    axis.step(recall_points, precision_points, where="post", color="#08519c", lw=1.2,
              label="interpolated: max precision at recall >= r")  # fmt: skip
    axis.plot([], [], "s", color="#c6dbef", ms=9,
              label="101 samples r = 0, 0.01, ..., 1: area = AP50")  # fmt: skip
    axis.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall", ylabel="precision")
    axis.legend(loc="lower left", fontsize=7.5)
    text = ["detections, best score first:", ""]
    for index, hit in enumerate(PR_HITS):
        text.append(f"{detections[index]['score']:.2f}  {'hit ' if hit else 'miss'}  "
                    f"P {precision[index]:.2f}  R {recall[index]:.2f}")  # fmt: skip
    text += ["", "AP50 = mean of the 101", f"interpolated precisions = {ap50:.4f}"]
    side = figure.add_axes((0.71, 0.12, 0.28, 0.76))
    side.axis("off")
    side.text(0, 1, "\n".join(text), family="monospace", fontsize=8, va="top")
    return figure


DETECTION_DIAGRAMS: dict[str, Callable[[], Figure]] = {
    "methods_comparison": methods_comparison_figure,
    "sliding_windows": sliding_windows_figure,
    "rcnn_family": rcnn_family_figure,
    "rpn_anchors": rpn_anchors_figure,
    "yolo_grid": yolo_grid_figure,
    "precision_recall": precision_recall_figure,
}
