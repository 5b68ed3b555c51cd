"""PSPNet (Zhao et al., 2017): a dilated ResNet backbone and the pyramid pooling module.

The pyramid pooling module average-pools the backbone's features into 1x1, 2x2, 3x3 and 6x6 bins,
reduces each with a 1x1 convolution, upsamples them back and concatenates them with the features: every
pixel then sees the global context of the scene, which is what separates sky from road or a car from a
building in street scenes. The last ResNet stages use dilation instead of stride (output stride 8), and an
auxiliary head on stage 3 adds a loss weighted 0.4 during training, as in the paper.

The backbone is torchvision's ResNet-18 (ResNet-50 in the paper), so ImageNet weights can be loaded when
available; BasicBlock does not take torchvision's ``replace_stride_with_dilation``, so
:func:`dilate_stage` rewrites the strides and dilations of a built stage.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from detseg.engine.checkpoint import load_model_state


def dilate_stage(stage: nn.Sequential, dilation: int) -> None:
    """Turn a strided ResNet stage into a dilated one: stride 1, 3x3 convolutions dilated (in place)."""
    for module in stage.modules():
        if isinstance(module, nn.Conv2d):
            if module.stride == (2, 2):
                module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation = (dilation, dilation)
                module.padding = (dilation, dilation)


def adaptive_avg_pool(features: Tensor, bins: int) -> Tensor:
    """``F.adaptive_avg_pool2d(features, bins)`` written with slices: bin ``i`` covers rows
    ``floor(i H / b)`` to ``ceil((i + 1) H / b)`` (PyTorch's rule), so bins overlap when ``b`` does not
    divide ``H``. The ONNX exporter refuses adaptive pooling to sizes that do not divide the input
    (a 3x3 bin of an 8x8 map); these slices and means export for any size.

    Shapes: [N, C, H, W] -> [N, C, bins, bins].
    """
    height, width = int(features.shape[-2]), int(features.shape[-1])
    rows = []
    for i in range(bins):
        top, bottom = (i * height) // bins, -(-(i + 1) * height // bins)
        cells = []
        for j in range(bins):
            left, right = (j * width) // bins, -(-(j + 1) * width // bins)
            cells.append(features[..., top:bottom, left:right].mean(dim=(-2, -1)))  # [N, C]
        rows.append(torch.stack(cells, dim=-1))  # [N, C, bins]
    return torch.stack(rows, dim=-2)  # [N, C, bins, bins]


class PyramidPooling(nn.Module):
    """Pool to ``bins`` grids, reduce each to ``in_channels // len(bins)`` channels, upsample, concat.

    Shapes: [N, C, h, w] -> [N, 2C, h, w].
    """

    def __init__(self, in_channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        reduced = in_channels // len(bins)
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(size),
                nn.Conv2d(in_channels, reduced, 1, bias=False),
                nn.BatchNorm2d(reduced),
                nn.ReLU(inplace=True),
            )
            for size in bins
        )

    def forward(self, features: Tensor) -> Tensor:
        size = features.shape[-2:]
        exporting = torch.onnx.is_in_onnx_export()
        pooled = []
        for stage in self.stages:
            pool, reduce = stage[0], stage[1:]
            bins = adaptive_avg_pool(features, pool.output_size) if exporting else pool(features)
            pooled.append(
                F.interpolate(reduce(bins), size=size, mode="bilinear", align_corners=False)
            )
        return torch.cat([features, *pooled], dim=1)


def _head(in_channels: int, mid_channels: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(mid_channels),
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout),
        nn.Conv2d(mid_channels, num_classes, 1),
    )


class PSPNet(nn.Module):
    """PSPNet with a ResNet-18 backbone at output stride 8.

    Args:
        num_classes: output channels.
        aux_loss: in training mode also return ``"aux"`` logits from stage 3 (weight 0.4 in the
            loss); eval mode skips that head.
        bins: pyramid pooling grid sizes.
    Returns (forward):
        ``OrderedDict`` with ``"out"`` [N, num_classes, H, W] (and ``"aux"``), like torchvision's
        segmentation models.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        aux_loss: bool = True,
        bins: tuple[int, ...] = (1, 2, 3, 6),
        output_stride: int = 8,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        resnet = torchvision.models.resnet18(weights=None)
        if output_stride == 8:
            dilate_stage(resnet.layer3, 2)
            dilate_stage(resnet.layer4, 4)
        else:
            dilate_stage(resnet.layer4, 2)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4
        self.ppm = PyramidPooling(512, bins)
        self.head = _head(1024, 256, num_classes, dropout=0.1)
        self.aux = _head(256, 128, num_classes, dropout=0.1) if aux_loss else None

    def load_backbone(self, resnet18_state_dict: dict[str, Tensor]) -> None:
        """Load torchvision ResNet-18 ImageNet weights into the backbone (the fc layer is unused)."""
        resnet = torchvision.models.resnet18(weights=None)
        load_model_state(resnet, resnet18_state_dict, what="the ImageNet ResNet-18 weights")
        self.stem.load_state_dict(
            nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool).state_dict()
        )
        for name in ("layer1", "layer2", "layer3", "layer4"):
            getattr(self, name).load_state_dict(getattr(resnet, name).state_dict())

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        size = images.shape[-2:]
        features = self.layer2(self.layer1(self.stem(images)))  # [N, 128, H/8, W/8]
        stage3 = self.layer3(features)  # [N, 256, H/8, W/8] (dilated)
        stage4 = self.layer4(stage3)  # [N, 512, H/8, W/8] (dilated)
        logits = self.head(self.ppm(stage4))
        result = OrderedDict(out=F.interpolate(logits, size=size, mode="bilinear"))
        if self.aux is not None and self.training:  # the auxiliary loss only trains
            result["aux"] = F.interpolate(self.aux(stage3), size=size, mode="bilinear")
        return result
