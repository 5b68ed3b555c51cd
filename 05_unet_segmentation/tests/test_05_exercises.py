"""The exercises of lessons 1-4 work as written: every model knob, attribute and flag they name exists
and does what the exercise says (each built and run once on a tiny input, no training)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fcn8s import POOL3, POOL4, POOL5, FCN8s
from seg_training import segmentation_loss
from segmentation_models import build_model, count_parameters
from torchvision.models import segmentation as tv_seg
from unet import UNet


def test_lesson1_shallow_and_bilinear_unet():
    default = UNet(in_channels=3, num_classes=1, base_width=8)
    shallow = UNet(in_channels=3, num_classes=1, base_width=8, depth=2)  # exercise 2
    bilinear = UNet(in_channels=3, num_classes=1, base_width=8, bilinear=True)  # exercise 4
    images = torch.rand(1, 3, 101, 101)
    for model in (shallow, bilinear):
        assert model.eval()(images).shape == (1, 1, 101, 101)
        assert count_parameters(model) < count_parameters(default)
    assert len(shallow.down) < len(default.down)


class FCN32s(FCN8s):
    """Lesson 2, exercise 1: FCN8s.forward with its last three lines replaced as the text says."""

    def forward(self, images):
        height, width = images.shape[-2:]
        pad_h, pad_w = (-height) % 32, (-width) % 32
        features = F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images
        pool3 = self.features[: POOL3 + 1](features)
        pool4 = self.features[POOL3 + 1 : POOL4 + 1](pool3)
        pool5 = self.features[POOL4 + 1 : POOL5 + 1](pool4)
        fc = self.drop(F.relu(self.fc6(pool5), inplace=True))
        fc = self.drop(F.relu(self.fc7(fc), inplace=True))
        return F.interpolate(self.score_fr(fc), scale_factor=32, mode="bilinear")[
            ..., :height, :width
        ]


def test_lesson2_fcn32s_and_frozen_upsampling():
    model = FCN32s(num_classes=2, width=0.25).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 160, 480)).shape == (1, 2, 160, 480)
    fcn8s = build_model("fcn8s", num_classes=2, width=0.25)
    before = sum(p.numel() for p in fcn8s.parameters() if p.requires_grad)
    for up in (fcn8s.upscore2, fcn8s.upscore_pool4, fcn8s.upscore8):  # exercise 2
        up.requires_grad_(False)
    frozen = sum(p.numel() for up in (fcn8s.upscore2, fcn8s.upscore_pool4, fcn8s.upscore8)
                 for p in up.parameters())  # fmt: skip
    trainable = sum(p.numel() for p in fcn8s.parameters() if p.requires_grad)
    assert frozen > 0 and trainable == before - frozen


def test_lesson3_pspnet_without_pyramid_pooling():
    model = build_model("pspnet_os16", num_classes=7)
    model.ppm = torch.nn.Conv2d(512, 1024, 1)  # exercise 2, as written
    output = model.train()(torch.rand(2, 3, 64, 64))
    assert output["out"].shape == output["aux"].shape == (2, 7, 64, 64)


def test_lesson4_deeplab_with_aux_loss():
    model = tv_seg.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=7, aux_loss=True
    )  # exercise 3, as written
    output = model.train()(torch.rand(2, 3, 64, 64))
    losses = segmentation_loss(output, torch.randint(0, 7, (2, 64, 64)), binary=False)
    assert set(losses) == {"ce", "aux"}


def test_flags_named_by_the_exercises_parse(script):
    parser = script("train").get_args_parser()
    for argv in (
        ["--dataset", "road", "--width", "1", "--pretrained", "pretrained"],  # lesson 2, ex. 3
        ["--dataset", "street", "--model", "pspnet_os16", "--pretrained", "pretrained"],  # 3, 1
        ["--dataset", "street", "--image-size", "256", "256"],  # lesson 3, ex. 3
        ["--dataset", "street", "--model", "pspnet_os16", "--image-size", "256", "256"],
        ["--dataset", "street", "--time-budget", "5"],  # lesson 3, ex. 4
    ):
        args = parser.parse_args(argv)
        assert args.dataset == argv[1]
    assert parser.parse_args(["--time-budget", "5"]).time_budget == 5.0
    assert parser.parse_args(["--image-size", "256", "256"]).image_size == [256, 256]
