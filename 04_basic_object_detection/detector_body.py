"""An SSD split in two: the network body (exported to ONNX) and the decoding (numpy, shared).

OpenCV 4's DNN module cannot import torchvision's whole detection graph (data-dependent loops,
per-class top-k, NMS), but it runs the body: backbone + heads at a fixed 320 x 320 input, which
return one box regression and one row of class logits per default box (anchor). Everything after
that is a few lines of numpy, written here once and used for every runtime::

    image (any size) -> resize to 320 x 320, [0, 1] -> SSDBody (PyTorch, ONNX Runtime or OpenCV DNN)
        -> regressions [A, 4], logits [A, C] -> decode_boxes(anchors) -> softmax
        -> per class: score > threshold, top-k -> batched NMS (detseg.boxes) -> scale to the image

A test proves :func:`postprocess` on the body's outputs equals torchvision's own ``SSD.forward``.

What is exported is :meth:`SSDBody.exportable`: the same body with each convolution that sees a
1 x 1 map (SSDlite320's last map, in both heads) replaced by the 1 x 1 convolution it equals there.
OpenCV DNN 4.14 computes a depthwise 3 x 3 convolution with padding wrong on a map one pixel high
or wide: it reads the next channels' pixels where the padding's zeros should be (see
:func:`detseg.export.single_pixel_convs_as_1x1`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from detseg.boxes import batched_nms
from detseg.export import single_pixel_convs_as_1x1

BBOX_XFORM_CLIP = math.log(1000.0 / 16)  # torchvision's clamp on the predicted log-scales


class SSDBody(nn.Module):
    """Normalisation + backbone + heads of a torchvision SSD, at its fixed input size.

    ``forward(images [B, 3, S, S] in [0, 1]) -> (regressions [B, A, 4], logits [B, A, C])``.
    """

    def __init__(self, ssd: nn.Module) -> None:
        super().__init__()
        self.backbone = ssd.backbone  # shared with ``ssd``: the body follows its training
        self.head = ssd.head
        self.size = int(ssd.transform.fixed_size[0])
        self.register_buffer("mean", torch.tensor(ssd.transform.image_mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(ssd.transform.image_std).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = list(self.backbone((images - self.mean) / self.std).values())
        outputs = self.head(features)
        return outputs["bbox_regression"], outputs["cls_logits"]

    def exportable(self) -> SSDBody:
        """A copy to export (eval mode), equal in PyTorch, that OpenCV DNN also runs right: every
        convolution that sees a 1 x 1 map at ``size`` is the 1 x 1 convolution it equals there
        (:func:`single_pixel_convs_as_1x1`; their names in ``.single_pixel_convs``)."""
        body = copy.deepcopy(self).eval()
        example = torch.zeros(1, 3, self.size, self.size)
        body.single_pixel_convs = single_pixel_convs_as_1x1(body, example)
        return body


@dataclass
class DecodeConfig:
    """What :func:`postprocess` needs besides the body's outputs (read from the SSD it came from).

    Attributes:
        anchors: [A, 4] xyxy default boxes in pixels of the ``size`` x ``size`` input.
        weights: the box coder's (wx, wy, ww, wh), (10, 10, 5, 5) for SSD.
        size: the fixed input side.
        score_thresh, nms_thresh, topk_candidates, detections_per_img: as torchvision's SSD.
    """

    anchors: np.ndarray
    weights: tuple[float, float, float, float]
    size: int
    score_thresh: float
    nms_thresh: float
    topk_candidates: int
    detections_per_img: int

    @classmethod
    def from_ssd(cls, ssd: nn.Module, score_thresh: float | None = None) -> DecodeConfig:
        from torchvision.models.detection.image_list import ImageList

        size = int(ssd.transform.fixed_size[0])
        images = torch.zeros(1, 3, size, size)
        with torch.no_grad():
            features = list(ssd.backbone(images).values())
            anchors = ssd.anchor_generator(ImageList(images, [(size, size)]), features)[0]
        return cls(
            anchors=anchors.numpy().astype(np.float32),
            weights=tuple(float(w) for w in ssd.box_coder.weights),
            size=size,
            score_thresh=float(ssd.score_thresh if score_thresh is None else score_thresh),
            nms_thresh=float(ssd.nms_thresh),
            topk_candidates=int(ssd.topk_candidates),
            detections_per_img=int(ssd.detections_per_img),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "anchors": self.anchors.tolist(),
            "weights": list(self.weights),
            "size": self.size,
            "score_thresh": self.score_thresh,
            "nms_thresh": self.nms_thresh,
            "topk_candidates": self.topk_candidates,
            "detections_per_img": self.detections_per_img,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecodeConfig:
        return cls(
            **{
                **data,
                "anchors": np.asarray(data["anchors"], np.float32),
                "weights": tuple(data["weights"]),
            }
        )


def decode_boxes(
    regressions: np.ndarray, anchors: np.ndarray, weights: tuple[float, float, float, float]
) -> np.ndarray:
    """Faster R-CNN box decoding: offsets relative to anchors -> xyxy boxes.

    Args:
        regressions: [A, 4] ``(dx, dy, dw, dh)`` times ``weights``.
        anchors: [A, 4] xyxy.
    Returns:
        [A, 4] xyxy: centre ``c_a + d / w * size_a``, size ``exp(min(d / w, clip)) * size_a``.
    """
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    centre_x = anchors[:, 0] + 0.5 * widths
    centre_y = anchors[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx, dy = regressions[:, 0] / wx, regressions[:, 1] / wy
    dw = np.minimum(regressions[:, 2] / ww, BBOX_XFORM_CLIP)
    dh = np.minimum(regressions[:, 3] / wh, BBOX_XFORM_CLIP)
    pred_x, pred_y = dx * widths + centre_x, dy * heights + centre_y
    pred_w, pred_h = np.exp(dw) * widths, np.exp(dh) * heights
    return np.stack(
        [
            pred_x - 0.5 * pred_w,
            pred_y - 0.5 * pred_h,
            pred_x + 0.5 * pred_w,
            pred_y + 0.5 * pred_h,
        ],
        axis=1,
    ).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def postprocess(
    regressions: np.ndarray,
    logits: np.ndarray,
    config: DecodeConfig,
    image_size: tuple[int, int] | None = None,
) -> dict[str, np.ndarray]:
    """The body's outputs for one image -> detections, as torchvision's ``SSD.postprocess_detections``.

    Args:
        regressions: [A, 4]; logits: [A, C] (class 0 = background).
        image_size: ``(height, width)`` of the original image: boxes are scaled from the
            ``size`` x ``size`` input to it (None: left in input pixels).
    Returns:
        ``{"boxes": [N, 4] xyxy, "scores": [N], "labels": [N] in 1..C-1}`` sorted by score.
    """
    size = config.size
    boxes = np.clip(decode_boxes(regressions, config.anchors, config.weights), 0, size)
    scores = softmax(logits.astype(np.float32))
    kept_boxes, kept_scores, kept_labels = [], [], []
    for label in range(1, scores.shape[1]):
        score = scores[:, label]
        keep = np.flatnonzero(score > config.score_thresh)
        order = keep[np.argsort(-score[keep], kind="stable")][: config.topk_candidates]
        kept_boxes.append(boxes[order])
        kept_scores.append(score[order])
        kept_labels.append(np.full(len(order), label, dtype=np.int64))
    all_boxes = np.concatenate(kept_boxes)
    all_scores = np.concatenate(kept_scores)
    all_labels = np.concatenate(kept_labels)
    keep = np.asarray(batched_nms(all_boxes, all_scores, all_labels, config.nms_thresh))
    keep = keep[: config.detections_per_img]
    out_boxes = all_boxes[keep]
    if image_size is not None:
        height, width = image_size
        out_boxes = out_boxes * np.array([width, height, width, height], np.float32) / size
    return {"boxes": out_boxes, "scores": all_scores[keep], "labels": all_labels[keep]}


def to_body_input(image: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> float32 ``[1, 3, size, size]`` in [0, 1] (bilinear resize)."""
    import cv2

    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
