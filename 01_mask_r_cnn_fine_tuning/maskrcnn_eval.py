"""COCO evaluation of a torchvision detector: its outputs as COCO results, then the core evaluator.

torchvision's detectors return, per image, ``{"boxes": [N, 4] xyxy pixels, "labels": [N] in 1..C,
"scores": [N], "masks": [N, 1, H, W] probabilities}`` (masks only for Mask R-CNN).
:func:`predictions_to_coco` writes them the way ``COCO.loadRes`` reads results (``bbox`` as
``[x, y, w, h]``, masks thresholded at 0.5 and RLE-encoded, labels mapped back to the dataset's
category ids), and :func:`evaluate_model` scores them with :func:`detseg.metrics.evaluate_coco`, which
gives the same numbers as pycocotools (a test checks it on this lesson's model).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matrix_nms import mask_iou
from pycocotools import mask as mask_utils
from torch import nn

from detseg.boxes import box_convert, box_iou
from detseg.data.formats import coco
from detseg.data.types import DetectionDataset
from detseg.metrics import evaluate_coco

MASK_THRESHOLD = 0.5
REPORTED_STATS = ("AP", "AP50", "AP75", "AR100")


def label_to_category(dataset: DetectionDataset) -> list[int]:
    """COCO category id of each torchvision label ``1..C`` (index ``label - 1``).

    The dataset's own ids when it was read from COCO JSON (they may have gaps), else ``1..C``: the
    ids that :func:`detseg.data.formats.coco.to_dict` writes for the ground truth.
    """
    if dataset.category_ids is not None:
        return [int(c) for c in dataset.category_ids]
    return list(range(1, dataset.num_classes + 1))


def predictions_to_coco(
    outputs: Sequence[Mapping[str, torch.Tensor]],
    image_ids: Sequence[int],
    category_ids: Sequence[int],
    *,
    mask_threshold: float = MASK_THRESHOLD,
) -> list[dict[str, Any]]:
    """torchvision detector outputs -> COCO result dicts (one per detection).

    Args:
        outputs: per image ``{"boxes" [N, 4] xyxy, "labels" [N] 1..C, "scores" [N]}`` and optionally
            ``"masks"`` ``[N, 1, H, W]`` float in [0, 1] (already pasted at the image's size).
        image_ids: the COCO image id of each output.
        category_ids: category id of label ``l`` at index ``l - 1`` (:func:`label_to_category`).
        mask_threshold: probability above which a pixel belongs to the mask.
    Returns:
        ``[{"image_id", "category_id", "score", "bbox": [x, y, w, h]}, ...]``, with ``"segmentation"``
        (compressed RLE, ``counts`` as str) when masks are present.
    """
    results: list[dict[str, Any]] = []
    for output, image_id in zip(outputs, image_ids):
        boxes = output["boxes"].detach().cpu().numpy().astype(np.float64).reshape(-1, 4)
        xywh = box_convert(boxes, "xyxy", "xywh")
        scores = output["scores"].detach().cpu().numpy()
        labels = output["labels"].detach().cpu().numpy()
        rles = None
        if output.get("masks") is not None:
            binary = (output["masks"].detach().cpu().numpy()[:, 0] > mask_threshold).astype(
                np.uint8
            )
            rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))  # [H, W, N]
        for index in range(len(scores)):
            result: dict[str, Any] = {
                "image_id": int(image_id),
                "category_id": int(category_ids[int(labels[index]) - 1]),
                "score": float(scores[index]),
                "bbox": [float(v) for v in xywh[index]],
            }
            if rles is not None:
                rle = rles[index]
                result["segmentation"] = {
                    "size": [int(s) for s in rle["size"]],
                    "counts": rle["counts"].decode("ascii"),
                }
            results.append(result)
    return results


@torch.no_grad()
def predict_batches(
    model: nn.Module, loader: Iterable[Any], device: torch.device | str
) -> tuple[list[dict[str, torch.Tensor]], list[int]]:
    """Run ``model`` (in eval mode) over ``(images, targets)`` batches; outputs on the CPU, with ids."""
    was_training = model.training
    model.eval()
    outputs: list[dict[str, torch.Tensor]] = []
    image_ids: list[int] = []
    for images, targets in loader:
        batch_out = model([image.to(device) for image in images])
        outputs += [{key: value.cpu() for key, value in out.items()} for out in batch_out]
        image_ids += [int(target["image_id"]) for target in targets]
    model.train(was_training)
    return outputs, image_ids


def evaluate_outputs(
    outputs: Sequence[Mapping[str, torch.Tensor]],
    image_ids: Sequence[int],
    dataset: DetectionDataset,
    *,
    iou_types: Sequence[str] = ("bbox", "segm"),
    stat_names: Sequence[str] = REPORTED_STATS,
) -> dict[str, float]:
    """COCO AP of outputs against ``dataset``'s ground truth (every image of it).

    Args:
        stat_names: which of the 12 COCO numbers (:data:`detseg.metrics.STAT_NAMES`) to return.
    Returns:
        ``{"bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_AR100", "segm_AP", ...}``: the chosen numbers
        per IoU type, prefixed; ``segm`` is skipped when the outputs have no masks.
    """
    gt = coco.to_dict(dataset)
    results = predictions_to_coco(outputs, image_ids, label_to_category(dataset))
    has_masks = bool(outputs) and outputs[0].get("masks") is not None
    metrics: dict[str, float] = {}
    for iou_type in iou_types:
        if iou_type == "segm" and not has_masks:
            continue
        stats = evaluate_coco(gt, results, iou_type).stats
        metrics.update({f"{iou_type}_{name}": float(stats[name]) for name in stat_names})
    return metrics


def evaluate_model(
    model: nn.Module,
    loader: Iterable[Any],
    dataset: DetectionDataset,
    device: torch.device | str,
    *,
    iou_types: Sequence[str] = ("bbox", "segm"),
) -> dict[str, float]:
    """:func:`predict_batches` then :func:`evaluate_outputs` (``loader`` must cover ``dataset``)."""
    outputs, image_ids = predict_batches(model, loader, device)
    return evaluate_outputs(outputs, image_ids, dataset, iou_types=iou_types)


OCCLUSION_GROUPS = ("alone", "in_front", "behind")


def people_by_occlusion(
    outputs: Sequence[Mapping[str, torch.Tensor]],
    targets: Sequence[Mapping[str, torch.Tensor]],
    *,
    overlap: float = 0.05,
    mask_threshold: float = MASK_THRESHOLD,
) -> dict[str, dict[str, int]]:
    """How many ground-truth objects some detection's mask finds (mask IoU >= 0.5), by occlusion.

    On a street the object whose box ends lower stands nearer. An object is ``"behind"`` when the
    box of an object ending lower overlaps its box (box IoU > ``overlap``), ``"in_front"`` when only
    boxes ending higher overlap it, else ``"alone"``. Scores are ignored: this counts what the masks
    can find at all, the ceiling of segm recall at IoU 0.5.

    Args:
        outputs: per image ``{"masks": [M, 1, H, W]`` probabilities, ...}`` (torchvision's output).
        targets: per image ``{"boxes": [N, 4]`` xyxy, ``"masks": [N, H, W]`` 0/1}``.
    Returns:
        ``{group: {"objects": n, "found": k}}`` for each of :data:`OCCLUSION_GROUPS`.
    """
    counts = {group: {"objects": 0, "found": 0} for group in OCCLUSION_GROUPS}
    for output, target in zip(outputs, targets):
        boxes = target["boxes"].float()
        ious = mask_iou(target["masks"], output["masks"][:, 0] > mask_threshold)  # [N, M]
        best = ious.amax(dim=1) if ious.shape[1] else torch.zeros(len(boxes))
        overlaps = box_iou(boxes, boxes).fill_diagonal_(0) > overlap  # [N, N]
        lower = boxes[:, 3][None, :] > boxes[:, 3][:, None]  # [i, j]: j ends lower than i
        for index in range(len(boxes)):
            if (overlaps[index] & lower[index]).any():
                group = "behind"
            elif overlaps[index].any():
                group = "in_front"
            else:
                group = "alone"
            counts[group]["objects"] += 1
            counts[group]["found"] += int(best[index] >= 0.5)
    return counts
