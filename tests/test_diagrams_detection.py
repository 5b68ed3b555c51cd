"""detseg.viz.diagrams_detection: each figure draws what its numbers say, and the numbers are right."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from detseg.boxes import box_iou
from detseg.viz import diagrams
from detseg.viz import diagrams_detection as dd
from detseg.yolo_decode import decode_output


@pytest.mark.parametrize("name", list(dd.DETECTION_DIAGRAMS))
def test_each_figure_draws_a_reproducible_png(name):
    figure = dd.DETECTION_DIAGRAMS[name]()
    assert isinstance(figure, Figure)
    first = diagrams.png_bytes(figure)
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and len(first) > 5000
    assert first == diagrams.png_bytes(dd.DETECTION_DIAGRAMS[name]())


def _rectangles(axis) -> list[tuple[float, float, float, float]]:
    """(x, y, width, height) of every Rectangle patch of ``axis``."""
    return [
        (p.get_x(), p.get_y(), p.get_width(), p.get_height())
        for p in axis.patches
        if isinstance(p, Rectangle)
    ]


# ------------------------------------------------------------------------- methods comparison


def test_coin_instances_are_the_24_coins_and_the_figure_shows_them():
    image, labels = dd.coin_instances()
    assert image.shape == labels.shape == (303, 384)
    assert labels.max() == 24  # the photo has 24 coins
    areas = np.bincount(labels.ravel())[1:]
    assert areas.min() > 1000 and areas.max() < 3500  # no coin merged with the background
    assert image[labels > 0].mean() > image[labels == 0].mean() + 60  # coins are the bright parts
    boxes = dd.instance_boxes(labels)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int), start=1):
        rows, cols = np.nonzero(labels == k)
        assert (x1, y1, x2, y2) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    figure = dd.methods_comparison_figure()
    assert len(_rectangles(figure.axes[1])) == 24  # one box per coin in the detection panel
    semantic = figure.axes[2].images[-1].get_array()
    instance = figure.axes[3].images[-1].get_array()
    np.testing.assert_array_equal(semantic[..., 3] > 0, labels > 0)  # union of the instances
    colours = {tuple(np.round(instance[labels == k][0], 3)) for k in range(1, 25)}
    assert len(colours) > 1 and all(instance[labels == 0][:, 3] == 0)


def test_instance_boxes_of_a_hand_case():
    labels = np.zeros((6, 8), dtype=int)
    labels[1:3, 2:5] = 1
    labels[4, 7] = 2
    np.testing.assert_array_equal(dd.instance_boxes(labels), [[2, 1, 5, 3], [7, 4, 8, 5]])


# ------------------------------------------------------------------------ sliding windows


def test_pyramid_and_windows_by_hand():
    assert dd.pyramid_sizes(256, 256, 1.5, (64, 64)) == [(256, 256), (170, 170), (113, 113),
                                                         (75, 75)]  # fmt: skip
    windows = dd.sliding_windows(128, 96, window=64, stride=32)
    # x positions 0, 32 (96 - 64 = 32); y positions 0, 32, 64
    assert len(windows) == 2 * 3
    np.testing.assert_array_equal(windows[:2], [[0, 0, 64, 64], [32, 0, 96, 64]])
    assert windows[:, 2].max() <= 96 and windows[:, 3].max() <= 128
    assert np.all(windows[:, 2] - windows[:, 0] == 64)


def test_sliding_windows_figure_counts_what_it_draws():
    figure = dd.sliding_windows_figure()
    sizes = dd.pyramid_sizes(256, 256)
    assert len(figure.axes) == len(sizes) == 4
    total = 0
    for axis, (h, w) in zip(figure.axes, sizes):
        drawn = _rectangles(axis)
        count = ((h - 64) // 32 + 1) * ((w - 64) // 32 + 1)
        assert len(drawn) == count + 1  # every window, and the highlighted one again
        assert f"{count} window" in axis.get_title()
        total += count
    assert f": {total} windows" in figure._suptitle.get_text()


# ------------------------------------------------------------------------------ R-CNN family


def test_rcnn_family_rows_read_left_to_right_in_order():
    axis = dd.rcnn_family_figure().axes[0]
    texts = {t.get_text(): t.get_position() for t in axis.texts}
    for name, stages in dd.RCNN_FAMILY.items():
        xs = [texts[stage][0] for stage in stages if list(stages).count(stage) == 1]
        assert xs == sorted(xs)
        assert name in texts
    faster = dd.RCNN_FAMILY["Faster R-CNN (2015)"]
    assert not any("selective" in s for s in faster) and any("RPN" in s for s in faster)


# -------------------------------------------------------------------------------- RPN anchors


def test_rpn_anchors_have_the_stated_areas_and_ratios_and_are_torchvision_s():
    sizes, ratios = (128, 256, 512), (0.5, 1.0, 2.0)
    anchors = dd.rpn_anchors((0.0, 0.0), sizes, ratios)
    w, h = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    np.testing.assert_allclose(w * h, np.tile(np.square(sizes), 3), rtol=1e-12)
    np.testing.assert_allclose(h / w, np.repeat(ratios, 3), rtol=1e-12)
    generator = AnchorGenerator(sizes=(sizes,), aspect_ratios=(ratios,))
    theirs = generator.cell_anchors[0].numpy() if generator.cell_anchors else None
    if theirs is None:  # older torchvision builds them lazily
        theirs = generator.generate_anchors(sizes, ratios).numpy()
    np.testing.assert_allclose(anchors, theirs, atol=0.5)  # torchvision rounds the corners


def test_rpn_anchor_figure_draws_the_nine_anchors_around_the_cell_centre():
    figure = dd.rpn_anchors_figure(stride=16, image_size=1024)
    rects = _rectangles(figure.axes[0])
    cell, anchors = rects[0], rects[1:]
    assert cell == (512, 512, 16, 16)
    assert len(anchors) == 9
    for (x, y, w, h), size in zip(anchors, [128, 256, 512] * 3):
        assert (x + w / 2, y + h / 2) == pytest.approx((520, 520))
        assert w * h == pytest.approx(size**2)
    # and torchvision puts one of its anchors there too: image 1024, stride 16, cell (32, 32)
    generator = AnchorGenerator(sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    features = [torch.zeros(1, 1, 64, 64)]
    all_anchors = generator(ImageList(torch.zeros(1, 3, 1024, 1024), [(1024, 1024)]), features)[0]
    per_cell = all_anchors.view(64, 64, 9, 4)[32, 32].numpy()
    centres = (per_cell[:, :2] + per_cell[:, 2:]) / 2
    np.testing.assert_allclose(centres, 512, atol=0.5)  # torchvision: top-left corner of the cell


# --------------------------------------------------------------------------------------- YOLO


def test_responsible_cell_and_best_anchor_by_hand():
    assert dd.responsible_cell((150, 40, 330, 250), 32) == (4, 7)  # centre (240, 145)
    assert dd.responsible_cell((0, 0, 64, 64), 32) == (1, 1)  # centre on a corner: the next cell
    # box 180 x 210 vs anchors: IoUs 0.276, 0.817, 0.312
    assert dd.best_anchor((150, 40, 330, 250), dd.YOLOV3_ANCHORS_13) == 1
    assert dd.best_anchor((0, 0, 116, 90), dd.YOLOV3_ANCHORS_13) == 0


def test_yolo_channels_and_cell_are_those_the_decoder_reads():
    """Logits put at yolo_channel(anchor, field) of the responsible cell decode to the box."""
    box, stride, anchors = dd.YOLO_BOX, 32, dd.YOLOV3_ANCHORS_13
    row, col = dd.responsible_cell(box, stride)
    anchor = dd.best_anchor(box, anchors)
    cx, cy, w, h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
    raw = torch.full((1, 255, 13, 13), -20.0, dtype=torch.float64)
    fx, fy = cx / stride - col, cy / stride - row
    assert 0 < fx < 1 and 0 < fy < 1  # the centre is inside the cell
    values = [np.log(fx / (1 - fx)), np.log(fy / (1 - fy)), np.log(w / anchors[anchor][0]),
              np.log(h / anchors[anchor][1]), 20.0]  # fmt: skip
    for field, value in enumerate(values):
        raw[0, dd.yolo_channel(anchor, field), row, col] = value
    raw[0, dd.yolo_channel(anchor, 5 + 0), row, col] = 20.0  # class 0 ("person" in COCO)
    decoded = decode_output(raw, anchors, stride)[0]
    best = int(decoded[:, 4].argmax())
    assert best == (row * 13 + col) * 3 + anchor  # rows ordered (row, column, anchor)
    np.testing.assert_allclose(decoded[best, :4].numpy(), [cx, cy, w, h], atol=1e-9)
    assert int(decoded[best, 5:].argmax()) == 0
    figure = dd.yolo_grid_figure()
    cell = _rectangles(figure.axes[0])[0]
    assert cell == (col * stride, row * stride, stride, stride)
    assert "255 = 3 x (5 + 80)" in figure._suptitle.get_text()


# ------------------------------------------------------------------------------ precision / AP


def test_shaded_area_is_detseg_s_and_pycocotools_ap50(tmp_path):
    gt, detections = dd.pr_case()
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    evaluator = COCOeval(coco, coco.loadRes(detections), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    figure = dd.precision_recall_figure()
    shaded = sum(w * h for _, _, w, h in _rectangles(figure.axes[0]))
    assert shaded == pytest.approx(evaluator.stats[1], abs=1e-12)
    assert 0.6 < shaded < 0.7  # a case with misses: neither 0 nor 1
    assert f"AP50 = {evaluator.stats[1]:.4f}" in figure._suptitle.get_text()


def test_pr_case_hits_are_what_the_table_says():
    gt, detections = dd.pr_case()
    objects = np.array([a["bbox"] for a in gt["annotations"]], dtype=np.float64)
    images = np.array([a["image_id"] for a in gt["annotations"]])
    for det, hit in zip(detections, dd.PR_HITS):
        same = images == det["image_id"]
        xyxy = lambda b: np.c_[b[:, :2], b[:, :2] + b[:, 2:]]  # noqa: E731
        ious = box_iou(xyxy(np.array([det["bbox"]])), xyxy(objects[same]))
        assert (ious.max() >= 0.5) == hit
    recall, precision = dd.raw_pr(dd.PR_HITS, 6)
    assert recall[-1] == pytest.approx(5 / 6) and precision[2] == pytest.approx(2 / 3)
