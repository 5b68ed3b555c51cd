"""FCN-8s (Long, Shelhamer and Darrell, 2015) with a VGG16 encoder, written from scratch.

The VGG16 classifier's fully connected layers become convolutions (fc6: 7x7, fc7: 1x1), a 1x1
convolution scores every class at 1/32 resolution, and two skip connections add the 1x1-scored pool4
(1/16) and pool3 (1/8) maps after 2x transposed-convolution upsampling; a final 8x transposed convolution
returns to the input size. The transposed convolutions start as bilinear interpolation
(:func:`bilinear_kernel`), as in the paper.

Differences from the paper, on purpose: 3x3 convolutions are padded by 1 and fc6 by 3 so that sizes line
up without the paper's 100-pixel input padding and cropping (inputs are padded to a multiple of 32 and
the output cropped back); the skips are not pre-scaled (the "at-once" variant scales them by 1e-2/1e-4).

``width`` scales every channel count: ``width=1`` is the real VGG16 (ImageNet weights can be loaded with
:func:`load_vgg16_imagenet`); ``width=0.25`` keeps the topology at 1/16 of the compute for CPU training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detseg.engine.checkpoint import load_model_state

VGG16_CONFIG = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)
# indices of the max-pool layers in torchvision's vgg16().features: outputs of pool3, pool4, pool5
POOL3, POOL4, POOL5 = 16, 23, 30


def bilinear_kernel(in_channels: int, out_channels: int, kernel_size: int) -> Tensor:
    """Weights [in, out, k, k] that make a ConvTranspose2d perform bilinear upsampling, channel-wise."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    grid = torch.arange(kernel_size, dtype=torch.float32)
    profile = 1 - (grid - center).abs() / factor  # [k]
    kernel = profile[:, None] * profile[None, :]  # [k, k]
    weight = torch.zeros(in_channels, out_channels, kernel_size, kernel_size)
    for channel in range(min(in_channels, out_channels)):
        weight[channel, channel] = kernel
    return weight


def _upsample(channels: int, factor: int) -> nn.ConvTranspose2d:
    layer = nn.ConvTranspose2d(
        channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False
    )
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(channels, channels, 2 * factor))
    return layer


class FCN8s(nn.Module):
    """FCN-8s for semantic segmentation.

    Args:
        num_classes: output channels (2 for road / not road).
        width: channel multiplier of the VGG16 encoder and fc6/fc7 (1.0 = VGG16).
        in_channels: image channels.
        dropout: dropout after fc6 and fc7 (0.5 in the paper).
    Shapes:
        images [N, in_channels, H, W] -> logits [N, num_classes, H, W].
    """

    def __init__(
        self, *, num_classes: int, width: float = 1.0, in_channels: int = 3, dropout: float = 0.5
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in VGG16_CONFIG:  # same layer indices as torchvision's vgg16().features
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out = max(8, int(item * width))
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(inplace=True)]
                channels = out
        self.features = nn.Sequential(*layers)
        pool3_channels = self.features[POOL3 - 2].out_channels
        pool4_channels = self.features[POOL4 - 2].out_channels
        fc_channels = max(16, int(4096 * width))
        self.fc6 = nn.Conv2d(channels, fc_channels, 7, padding=3)  # was Linear(512*7*7, 4096)
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)  # was Linear(4096, 4096)
        self.drop = nn.Dropout2d(dropout)
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        self.score_pool4 = nn.Conv2d(pool4_channels, num_classes, 1)
        self.score_pool3 = nn.Conv2d(pool3_channels, num_classes, 1)
        for score in (self.score_pool4, self.score_pool3):
            nn.init.zeros_(score.weight)  # skips start silent, as in the paper
            nn.init.zeros_(score.bias)
        self.upscore2 = _upsample(num_classes, 2)
        self.upscore_pool4 = _upsample(num_classes, 2)
        self.upscore8 = _upsample(num_classes, 8)

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        pad_h, pad_w = (-height) % 32, (-width) % 32
        features = F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images
        pool3 = self.features[: POOL3 + 1](features)  # [N, C3, H/8, W/8]
        pool4 = self.features[POOL3 + 1 : POOL4 + 1](pool3)  # [N, C4, H/16, W/16]
        pool5 = self.features[POOL4 + 1 : POOL5 + 1](pool4)  # [N, C5, H/32, W/32]
        fc = self.drop(F.relu(self.fc6(pool5), inplace=True))
        fc = self.drop(F.relu(self.fc7(fc), inplace=True))
        score = self.upscore2(self.score_fr(fc)) + self.score_pool4(pool4)  # 1/16
        score = self.upscore_pool4(score) + self.score_pool3(pool3)  # 1/8
        return self.upscore8(score)[..., :height, :width]  # [N, num_classes, H, W]


def load_vgg16_imagenet(model: FCN8s, state_dict: dict[str, Tensor]) -> None:
    """Copy torchvision VGG16 ImageNet weights into a ``width=1`` FCN8s, convolutionalising fc6/fc7.

    ``state_dict`` is torchvision's ``vgg16`` state dict (``detseg.pretrained.load_state_dict(
    torchvision.models.VGG16_Weights.IMAGENET1K_V1)``).
    """
    fc6_weight = state_dict["classifier.0.weight"]  # [4096, 25088] = [4096, 512*7*7]
    if model.fc6.weight.shape != (fc6_weight.shape[0], 512, 7, 7):
        raise ValueError("ImageNet VGG16 weights need FCN8s(width=1.0)")
    features = {
        k[len("features.") :]: v for k, v in state_dict.items() if k.startswith("features.")
    }
    load_model_state(model.features, features, what="the ImageNet VGG16 weights")
    with torch.no_grad():
        model.fc6.weight.copy_(fc6_weight.view(-1, 512, 7, 7))
        model.fc6.bias.copy_(state_dict["classifier.0.bias"])
        model.fc7.weight.copy_(state_dict["classifier.3.weight"].view(4096, 4096, 1, 1))
        model.fc7.bias.copy_(state_dict["classifier.3.bias"])
