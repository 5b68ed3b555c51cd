"""A detail branch for the slim model's mask head: refine each mask at 28 x 28 with fine features.

The slim mask head reads 14 x 14 cells of an FPN level of stride 8 (a person 45 px wide is 6 cells),
so where a person behind another shows only thin slivers, it can only guess a person-shaped blob.
This branch adds what a stride of 8 loses (after the fine-grained features of PointRend, Kirillov
et al. 2020, here on a regular 28 x 28 grid):

    FPN levels ──RoIAlign 14x14──> slim mask head ──2x up-convolution──┐
    ResNet stage 1 (stride 4) ──1x1 conv──RoIAlign 28x28──────────────┼─ concat ─ 2 x conv3x3 ─> predictor
    the input image (stride 1) ──────────RoIAlign 28x28───────────────┘

Pieces, each a drop-in part of torchvision's ``MaskRCNN``:

- :class:`DetailBackbone`: ResNet + FPN (the same state-dict keys as ``BackboneWithFPN``) that also
  returns ``"detail"`` (stage 1, projected) and ``"image"`` (the normalised input) in its dict;
- :class:`FPNLevelsRPN`: the RPN on the FPN levels only (the detail maps have no anchors);
- :class:`DetailRoIPool` -> :class:`DetailMaskHead` -> :class:`PixelMaskPredictor`: the mask branch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

DETAIL_KEYS = ("detail", "image")  # feature-dict entries that are not FPN levels
DETAIL_STRIDE = 4  # ResNet stage 1
DETAIL_SIZE = 28  # the mask grid (torchvision's mask targets take the logits' size)


class DetailBackbone(nn.Module):
    """ResNet + FPN returning the FPN levels and, for the mask head, two fine maps.

    ``forward(images [B, 3, H, W])`` -> ordered dict: the FPN levels (``"0"``, ``"1"``, ...,
    ``"pool"``, as ``BackboneWithFPN``), ``"detail"`` ``[B, detail_channels, H/4, W/4]`` (ResNet
    stage 1 through a 1x1 convolution + ReLU) and ``"image"`` ``[B, 3, H, W]`` (the input itself).
    """

    def __init__(
        self,
        resnet: nn.Module,
        return_layers: dict[str, str],
        in_channels_list: list[int],
        out_channels: int,
        *,
        stage1_channels: int,
        detail_channels: int,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if "layer1" in return_layers:
            raise ValueError("stage 1 is the detail map here; give the FPN stages 2-4")
        self.body = IntermediateLayerGetter(resnet, {"layer1": "detail", **return_layers})
        self.fpn = FeaturePyramidNetwork(
            in_channels_list, out_channels, extra_blocks=LastLevelMaxPool(), norm_layer=norm_layer
        )
        self.detail = nn.Conv2d(stage1_channels, detail_channels, kernel_size=1)
        self.out_channels = out_channels

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        stages = self.body(images)
        detail = stages.pop("detail")
        features = self.fpn(stages)
        features["detail"] = F.relu(self.detail(detail))
        features["image"] = images
        return features


class FPNLevelsRPN(RegionProposalNetwork):
    """torchvision's RPN, given only the FPN levels of the backbone's dict (not ``DETAIL_KEYS``)."""

    def forward(  # type: ignore[override]
        self,
        images: object,
        features: dict[str, Tensor],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        levels = OrderedDict((k, v) for k, v in features.items() if k not in DETAIL_KEYS)
        return super().forward(images, levels, targets)  # type: ignore[arg-type]

    @classmethod
    def like(cls, rpn: RegionProposalNetwork) -> FPNLevelsRPN:
        """The same RPN (same anchor generator and head modules, same settings) as this class."""
        return cls(
            rpn.anchor_generator,
            rpn.head,
            rpn.proposal_matcher.high_threshold,
            rpn.proposal_matcher.low_threshold,
            rpn.fg_bg_sampler.batch_size_per_image,
            rpn.fg_bg_sampler.positive_fraction,
            rpn._pre_nms_top_n,
            rpn._post_nms_top_n,
            rpn.nms_thresh,
            score_thresh=rpn.score_thresh,
        )


class DetailRoIPool(nn.Module):
    """The mask branch's RoI pooling: coarse FPN cells and fine detail cells of each box.

    ``forward(features, boxes, image_shapes)`` with ``boxes`` a list of ``[R_i, 4]`` xyxy in the
    resized image's pixels -> ``(coarse [R, C, 14, 14], fine [R, D + 3, 28, 28])``: ``coarse`` is
    ``MultiScaleRoIAlign`` over the FPN levels, ``fine`` the ``"detail"`` map (stride 4) and the
    ``"image"`` (stride 1), each pooled on a 28 x 28 grid, concatenated.
    """

    def __init__(self, levels: list[str], coarse_size: int = 14) -> None:
        super().__init__()
        self.coarse = MultiScaleRoIAlign(levels, output_size=coarse_size, sampling_ratio=2)

    def forward(
        self,
        features: dict[str, Tensor],
        boxes: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> tuple[Tensor, Tensor]:
        coarse = self.coarse(features, boxes, image_shapes)
        fine = [
            roi_align(features[key], boxes, DETAIL_SIZE, 1.0 / stride, sampling_ratio=2)
            for key, stride in (("detail", DETAIL_STRIDE), ("image", 1))
        ]
        return coarse, torch.cat(fine, dim=1)  # [R, C, 14, 14], [R, D + 3, 28, 28]


class DetailMaskHead(nn.Module):
    """``(coarse [R, C, 14, 14], fine [R, F, 28, 28])`` -> features ``[R, fuse_channels, 28, 28]``.

    The slim model's mask head on ``coarse``, a 2x up-convolution (as torchvision's predictor),
    then concatenation with ``fine`` and two 3x3 convolutions + ReLU.
    """

    def __init__(
        self, coarse_head: nn.Module, coarse_channels: int, fine_channels: int, fuse_channels: int
    ) -> None:
        super().__init__()
        self.coarse_head = coarse_head
        self.upsample = nn.ConvTranspose2d(coarse_channels, fuse_channels, 2, stride=2)
        self.fuse = nn.Sequential(
            nn.Conv2d(fuse_channels + fine_channels, fuse_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(fuse_channels, fuse_channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        for module in (self.upsample, *self.fuse):
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, pooled: tuple[Tensor, Tensor]) -> Tensor:
        coarse, fine = pooled
        up = F.relu(self.upsample(self.coarse_head(coarse)))  # [R, fuse, 28, 28]
        return self.fuse(torch.cat([up, fine], dim=1))


class PixelMaskPredictor(nn.Sequential):
    """A 1x1 convolution: ``[R, C, 28, 28]`` -> mask logits ``[R, num_classes, 28, 28]``."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(OrderedDict(mask_fcn_logits=nn.Conv2d(in_channels, num_classes, 1)))
        nn.init.kaiming_normal_(self.mask_fcn_logits.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.mask_fcn_logits.bias)
