"""detseg.yolo_decode: hand-computed decodes in both styles, layout, and NMS equal to torchvision."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from detseg.yolo_decode import decode_output, decode_outputs, postprocess, split_raw


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_split_raw_layout():
    raw = torch.arange(2 * 3 * 7 * 4 * 5, dtype=torch.float32).view(2, 21, 4, 5)  # A=3, 5+C=7
    pred = split_raw(raw, 3)
    assert pred.shape == (2, 4, 5, 3, 7)
    # channel a * 7 + k at row r, col c is pred[b, r, c, a, k]
    assert pred[1, 2, 3, 2, 4] == raw[1, 2 * 7 + 4, 2, 3]
    with pytest.raises(ValueError):
        split_raw(raw, 4)


def test_decode_v3_hand_computed():
    # one anchor (20 x 10), 2 classes, 2 x 3 grid, stride 8
    raw = torch.zeros(1, 7, 2, 3)
    raw[0, 0, 1, 2] = logit(0.25)  # tx at row 1, col 2
    raw[0, 2, 1, 2] = math.log(2.0)  # tw: width doubles
    raw[0, 4, 1, 2] = logit(0.9)  # objectness
    raw[0, 6, 1, 2] = logit(0.8)  # class 1
    out = decode_output(raw, [(20.0, 10.0)], 8)
    assert out.shape == (1, 6, 7)
    row = out[0, 1 * 3 + 2]  # rows ordered (row, col, anchor)
    expected = [(2 + 0.25) * 8, (1 + 0.5) * 8, 40.0, 10.0, 0.9, 0.5, 0.8]
    torch.testing.assert_close(row, torch.tensor(expected), rtol=0, atol=1e-5)
    # an all-zero cell: centre of the cell, the anchor's size
    torch.testing.assert_close(out[0, 0, :4], torch.tensor([4.0, 4.0, 20.0, 10.0]))


def test_decode_v5_hand_computed():
    raw = torch.zeros(1, 6, 1, 2)  # A=1, C=1
    raw[0, 0, 0, 1] = logit(0.75)  # 2 * 0.75 - 0.5 = 1.0 cell past the left edge of col 1
    raw[0, 2, 0, 1] = logit(0.75)  # (2 * 0.75)^2 = 2.25 x anchor
    out = decode_output(raw, [(10.0, 10.0)], (16, 32), style="v5")
    torch.testing.assert_close(
        out[0, 1, :4], torch.tensor([(1 + 1.0) * 32, 0.5 * 16, 22.5, 10.0]), rtol=0, atol=1e-4
    )
    with pytest.raises(ValueError):
        decode_output(raw, [(10.0, 10.0)], 8, style="v4")


def test_decode_outputs_concatenates_scales():
    raws = [torch.zeros(2, 14, 2, 2), torch.zeros(2, 14, 4, 4)]
    out = decode_outputs(raws, [[(1, 1), (2, 2)], [(3, 3), (4, 4)]], [16, 8])
    assert out.shape == (2, 2 * 2 * 2 + 4 * 4 * 2, 7)
    assert out[0, -1, 2] == 4 and out[0, 0, 2] == 1


def test_postprocess_equals_torchvision():
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        decoded = torch.rand(2, 300, 8, generator=generator)
        decoded[..., :2] *= 200
        decoded[..., 2:4] = decoded[..., 2:4] * 60 + 5
        results = postprocess(decoded, score_threshold=0.3, iou_threshold=0.45)
        for pred, result in zip(decoded, results):
            scores, labels = (pred[:, 4:5] * pred[:, 5:]).max(1)
            keep = scores > 0.3
            boxes = torchvision.ops.box_convert(pred[keep, :4], "cxcywh", "xyxy")
            ref = torchvision.ops.batched_nms(boxes, scores[keep], labels[keep], 0.45)
            torch.testing.assert_close(result["boxes"], boxes[ref])
            torch.testing.assert_close(result["labels"], labels[keep][ref])
            assert (result["scores"][:-1] >= result["scores"][1:]).all()


def test_postprocess_multi_label_and_limit():
    decoded = torch.tensor([[[50.0, 50, 20, 20, 1.0, 0.9, 0.8]]])
    one = postprocess(decoded, score_threshold=0.5)[0]
    assert one["labels"].tolist() == [0]
    both = postprocess(decoded, score_threshold=0.5, multi_label=True)[0]
    assert sorted(both["labels"].tolist()) == [0, 1]
    assert (
        len(
            postprocess(decoded, score_threshold=0.5, multi_label=True, max_detections=1)[0][
                "boxes"
            ]
        )
        == 1
    )
