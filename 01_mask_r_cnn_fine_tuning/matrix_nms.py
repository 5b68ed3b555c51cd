"""Matrix NMS (SOLOv2, Wang et al. 2020) on Mask R-CNN's pasted masks: duplicates lose their score.

Box NMS cannot tell two detections of one person from two people standing one behind the other:
both pairs have boxes that overlap a lot. Their *masks* differ: a duplicate covers the same pixels,
while a person behind another shows only what the nearer one leaves visible. Matrix NMS therefore
decays each detection's score by how much its mask overlaps the mask of a higher-scored detection
of the same class, and forgives the overlap that the higher-scored one itself has with an even
higher one (it may be a duplicate that is about to fall). Nothing is removed, so it is
one matrix product and stays exportable to ONNX.

For detections sorted by score and their mask IoU ``iou[i, j]`` (``i`` scored higher than ``j``),
with ``c_i = max_k iou[k, i]`` the largest IoU of ``i`` with a detection above it, the Gaussian
decay of ``j`` is ``min_i exp(-(iou[i, j]^2 - c_i^2) / sigma)`` over the detections above ``j``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.transform import GeneralizedRCNNTransform


def mask_iou(masks1: Tensor, masks2: Tensor) -> Tensor:
    """Pairwise IoU of binary masks.

    Args:
        masks1: bool or 0/1 Tensor[N, H, W].
        masks2: the same, Tensor[M, H, W].
    Returns:
        Tensor[N, M] of IoU values in [0, 1] (0 where both masks are empty).
    """
    flat1, flat2 = masks1.flatten(1).float(), masks2.flatten(1).float()  # [N, HW], [M, HW]
    inter = flat1 @ flat2.T  # [N, M]
    union = flat1.sum(dim=1)[:, None] + flat2.sum(dim=1)[None, :] - inter
    return inter / union.clamp(min=1.0)


def matrix_nms_decay(masks: Tensor, labels: Tensor, sigma: float) -> Tensor:
    """The factor that each detection's score is multiplied by.

    Args:
        masks: bool or 0/1 Tensor[N, H, W], sorted by descending score.
        labels: Tensor[N] class of each mask; masks of different classes do not decay each other.
        sigma: Gaussian width (smaller: a given overlap decays more).
    Returns:
        Tensor[N] in (0, 1]; the first (best) detection always keeps 1.
    """
    iou = mask_iou(masks, masks)  # [N, N]
    same_class = labels[:, None] == labels[None, :]
    iou = (iou * same_class).triu(diagonal=1)  # [i, j]: only i scored above j
    # A row of zeros under the max and a row of ones under the min change nothing (IoU >= 0, and
    # each column's minimum is <= 1) but keep both reductions defined when an image has no
    # detection at all (N = 0), without a data-dependent branch that ONNX tracing would freeze.
    n = iou.shape[1]
    compensation = torch.cat([iou.new_zeros(1, n), iou]).max(dim=0).values  # [N]: c_i
    decay = torch.exp(-(iou**2 - compensation[:, None] ** 2) / sigma)  # [i, j]
    # [N]: min over i; terms with i >= j are >= 1, and i = 0 is <= 1
    return torch.cat([decay, decay.new_ones(1, n)]).min(dim=0).values


class MatrixNMSTransform(GeneralizedRCNNTransform):
    """torchvision's transform whose ``postprocess`` also applies Matrix NMS to the pasted masks.

    Each image's detections get ``scores * matrix_nms_decay(masks > mask_threshold, ...)`` and are
    sorted again by the new score. Training is unchanged (``postprocess`` returns losses there).
    """

    def __init__(self, *args: object, sigma: float, mask_threshold: float = 0.5, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.sigma = sigma
        self.mask_threshold = mask_threshold

    @classmethod
    def like(cls, transform: GeneralizedRCNNTransform, *, sigma: float) -> MatrixNMSTransform:
        """The same resize and normalisation as ``transform``, with Matrix NMS of ``sigma``."""
        return cls(
            transform.min_size,
            transform.max_size,
            transform.image_mean,
            transform.image_std,
            size_divisible=transform.size_divisible,
            fixed_size=transform.fixed_size,
            _skip_resize=transform._skip_resize,
            sigma=sigma,
        )

    def postprocess(
        self,
        result: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        result = super().postprocess(result, image_shapes, original_image_sizes)
        if self.training:
            return result
        for index, detections in enumerate(result):
            binary = detections["masks"][:, 0] > self.mask_threshold  # [N, H, W]
            scores = detections["scores"] * matrix_nms_decay(
                binary, detections["labels"], self.sigma
            )
            order = scores.argsort(descending=True)
            result[index] = {key: value[order] for key, value in detections.items()}
            result[index]["scores"] = scores[order]
        return result
