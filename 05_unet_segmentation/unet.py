"""U-Net (Ronneberger, Fischer and Brox, 2015), written from scratch.

The encoder halves the resolution ``depth`` times and doubles the width each time; the decoder
upsamples back and concatenates the encoder feature map of the same level (the skip connection).

- ``padding="same"`` (default): 3x3 convolutions padded by 1, output size == input size when the input
  side is a multiple of ``2 ** depth`` (other sizes are handled by interpolating the upsampled map to the
  skip's size).
- ``padding="valid"``: the paper's unpadded convolutions; each skip is centre-cropped to the decoder's
  size and the output is smaller than the input (572 -> 388 for the paper's configuration).

``UNET_PAPER`` holds the paper's configuration (depth 4, width 64, valid convolutions, no batch norm,
transposed-convolution upsampling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

UNET_PAPER = {
    "base_width": 64,
    "depth": 4,
    "padding": "valid",
    "batch_norm": False,
    "bilinear": False,
}


class DoubleConv(nn.Sequential):
    """(conv 3x3 -> [BN] -> ReLU) x 2."""

    def __init__(
        self, in_channels: int, out_channels: int, *, padding: int, batch_norm: bool
    ) -> None:
        layers: list[nn.Module] = []
        for channels_in in (in_channels, out_channels):
            layers.append(
                nn.Conv2d(channels_in, out_channels, 3, padding=padding, bias=not batch_norm)
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def center_crop(features: Tensor, height: int, width: int) -> Tensor:
    """Crop [N, C, H, W] to the centred [N, C, height, width] window (the paper's skip cropping)."""
    top = (features.shape[-2] - height) // 2
    left = (features.shape[-1] - width) // 2
    return features[..., top : top + height, left : left + width]


class UNet(nn.Module):
    """U-Net for semantic segmentation.

    Args:
        in_channels: image channels (1 for the grey TGS salt images, 3 for RGB).
        num_classes: output channels; 1 for a binary mask trained with BCE on logits.
        base_width: channels of the first level; level ``i`` has ``base_width * 2**i``.
        depth: number of 2x downsamplings (the paper uses 4).
        padding: ``"same"`` or ``"valid"`` (see the module docstring).
        batch_norm: BatchNorm after every convolution (not in the paper; trains faster).
        bilinear: upsample with bilinear interpolation + 1x1 conv instead of a transposed convolution.
    Shapes:
        input [N, in_channels, H, W] -> logits [N, num_classes, H', W'] (H' = H with ``"same"``).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 1,
        base_width: int = 64,
        depth: int = 4,
        padding: str = "same",
        batch_norm: bool = True,
        bilinear: bool = False,
    ) -> None:
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        pad = 1 if padding == "same" else 0
        widths = [base_width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.down.append(DoubleConv(channels, width, padding=pad, batch_norm=batch_norm))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for width in reversed(widths[:-1]):
            if bilinear:
                self.up.append(
                    nn.Sequential(
                        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                        nn.Conv2d(channels, width, 1),
                    )
                )
            else:
                self.up.append(nn.ConvTranspose2d(channels, width, 2, stride=2))
            self.up_conv.append(DoubleConv(2 * width, width, padding=pad, batch_norm=batch_norm))
            channels = width
        self.head = nn.Conv2d(channels, num_classes, 1)
        self.valid = padding == "valid"

    def forward(self, images: Tensor) -> Tensor:
        skips = []
        features = images
        for level, block in enumerate(self.down):
            if level > 0:
                features = self.pool(features)
            features = block(features)
            skips.append(features)
        skips.pop()  # the bottleneck is not a skip
        for up, conv in zip(self.up, self.up_conv):
            features = up(features)
            skip = skips.pop()
            if self.valid:
                skip = center_crop(skip, features.shape[-2], features.shape[-1])
            elif skip.shape[-2:] != features.shape[-2:]:  # odd input sizes in "same" mode
                features = F.interpolate(features, size=skip.shape[-2:], mode="bilinear")
            features = conv(
                torch.cat([skip, features], dim=1)
            )  # [N, 2*width, h, w] -> [N, width, h, w]
        return self.head(features)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
