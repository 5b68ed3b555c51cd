"""U-Net, FCN-8s and PSPNet: shapes, the papers' sizes and parameter counts, bilinear initialisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from fcn8s import FCN8s, bilinear_kernel, load_vgg16_imagenet
from pspnet import PSPNet, PyramidPooling, adaptive_avg_pool
from segmentation_models import build_model, count_multiply_adds, load_weights
from unet import UNET_PAPER, UNet, center_crop, count_parameters

from detseg.errors import UserError


def test_unet_paper_configuration_sizes_and_parameters():
    with torch.device("meta"):  # shapes and counts only: no memory, no compute
        model = UNet(in_channels=1, num_classes=2, **UNET_PAPER)
        # the paper's figure 1: a 572x572 tile gives a 388x388 map; 31,030,658 weights for 2 classes
        assert count_parameters(model) == 31_030_658
        assert model(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)


@pytest.mark.parametrize("size", [(64, 64), (101, 101), (37, 90)])
@pytest.mark.parametrize("bilinear", [False, True])
def test_unet_same_padding_keeps_size(size, bilinear):
    model = UNet(in_channels=1, num_classes=3, base_width=4, depth=3, bilinear=bilinear)
    assert model(torch.zeros(2, 1, *size)).shape == (2, 3, *size)


def test_center_crop_takes_the_middle():
    grid = torch.arange(36.0).view(1, 1, 6, 6)
    assert center_crop(grid, 2, 2).flatten().tolist() == [14.0, 15.0, 20.0, 21.0]


def test_bilinear_transposed_convolution_equals_interpolation_inside():
    images = torch.rand(2, 3, 16, 16)
    layer = torch.nn.ConvTranspose2d(3, 3, 16, stride=8, padding=4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(3, 3, 16))
        upsampled = layer(images)
    reference = F.interpolate(images, scale_factor=8, mode="bilinear", align_corners=False)
    assert upsampled.shape == reference.shape
    torch.testing.assert_close(upsampled[..., 8:-8, 8:-8], reference[..., 8:-8, 8:-8])


@pytest.mark.parametrize("size", [(160, 480), (100, 130)])
def test_fcn8s_output_matches_input_size(size):
    model = FCN8s(num_classes=2, width=0.125)
    assert model(torch.zeros(1, 3, *size)).shape == (1, 2, *size)


def test_fcn8s_full_width_is_vgg16_and_takes_imagenet_weights():
    with torch.device("meta"):  # skip the slow random init of 2 x 134M weights
        model = FCN8s(num_classes=2, width=1.0)
        vgg = torchvision.models.vgg16(weights=None)
    model, vgg = model.to_empty(device="cpu"), vgg.to_empty(device="cpu")
    with torch.no_grad():  # only what is compared below needs defined values
        for param in [vgg.features[28].weight, *vgg.classifier[0].parameters()]:
            param.uniform_(-0.01, 0.01)
    load_vgg16_imagenet(model, vgg.state_dict())
    assert torch.equal(model.features[28].weight, vgg.features[28].weight)
    assert torch.equal(model.fc6.weight.flatten(1), vgg.classifier[0].weight)
    # fc6 as a 7x7 convolution on a 7x7 pool5 map == the Linear layer on the flattened map
    pool5 = torch.rand(1, 512, 7, 7)
    conv_out = F.conv2d(pool5, model.fc6.weight, model.fc6.bias)[:, :, 0, 0]
    torch.testing.assert_close(conv_out, vgg.classifier[0](pool5.flatten(1)), rtol=1e-4, atol=1e-4)
    assert 134_000_000 < count_parameters(model) < 134_400_000
    with pytest.raises(ValueError, match="width=1.0"):
        load_vgg16_imagenet(FCN8s(num_classes=2, width=0.125), vgg.state_dict())


def test_pyramid_pooling_doubles_channels():
    assert PyramidPooling(64)(torch.rand(2, 64, 9, 11)).shape == (2, 128, 9, 11)


def test_pspnet_returns_out_and_aux_at_input_size():
    model = PSPNet(num_classes=5)
    result = model(torch.rand(2, 3, 96, 128))  # training mode: both heads
    assert list(result) == ["out", "aux"]
    assert result["out"].shape == result["aux"].shape == (2, 5, 96, 128)
    with torch.no_grad():
        assert list(model.eval()(torch.rand(1, 3, 96, 128))) == ["out"]  # inference: no aux head
    model.load_backbone(torchvision.models.resnet18(weights=None).state_dict())


def test_pspnet_output_stride_16_halves_the_feature_map():
    with torch.device("meta"):
        for stride, side in ((8, 16), (16, 8)):
            model = PSPNet(num_classes=3, output_stride=stride).eval()
            features = model.layer4(
                model.layer3(model.layer2(model.layer1(model.stem(torch.zeros(1, 3, 128, 128)))))
            )
            assert features.shape[-2:] == (side, side)
    with pytest.raises(ValueError, match="output_stride"):
        PSPNet(num_classes=3, output_stride=32)


def test_count_multiply_adds_by_hand():
    # conv 3->4, 3x3 on 5x5 (padded): 5*5*4 output values x 3*3*3 multiply-adds each;
    # transposed conv 4->2, 4x4, stride 2: each of the 4*5*5 input values meets 2*4*4 weights
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)
    )
    expected = (5 * 5 * 4) * (3 * 3 * 3) + (4 * 5 * 5) * (2 * 4 * 4)
    assert count_multiply_adds(model, (5, 5)) == expected
    assert model.training  # restored


def test_build_model_defaults_and_errors(tmp_path):
    assert (
        8_300_000 < count_parameters(build_model("fcn8s", num_classes=2)) < 8_500_000
    )  # width 0.25
    assert count_parameters(build_model("unet", num_classes=1, width=0.5)) == 486_553
    with pytest.raises(UserError, match="unknown model"):
        build_model("segformer", num_classes=2)
    with pytest.raises(UserError, match="no pretrained weights"):
        build_model("unet", num_classes=1, weights="pretrained")
    with pytest.raises(UserError, match="full-width"):
        build_model("fcn8s", num_classes=2, weights="pretrained")
    small = build_model("unet", num_classes=1, width=0.25)
    with pytest.raises(UserError, match="do not fit"):
        load_weights(
            small,
            {"model": build_model("unet", num_classes=2, width=0.25).state_dict()},
            path="x.pt",
        )


@pytest.mark.parametrize("size", [(8, 8), (7, 11), (16, 5)])
def test_adaptive_avg_pool_by_slices_equals_torch(size):
    features = torch.rand(2, 3, *size)
    for bins in (1, 2, 3, 6):
        expected = F.adaptive_avg_pool2d(features, bins)
        torch.testing.assert_close(adaptive_avg_pool(features, bins), expected)


def test_pspnet_exports_to_onnx_with_parity(tmp_path):
    # adaptive pooling to 3x3 / 6x6 bins of an 8x8 map: the exporter's own op refuses it
    from segmentation_models import LogitsOnly

    from detseg.export import check_parity, export_onnx, ort_session

    torch.manual_seed(0)
    model = LogitsOnly(PSPNet(num_classes=3, output_stride=16)).eval()
    images = torch.rand(1, 3, 128, 128)
    path = export_onnx(
        model, images, tmp_path / "psp.onnx", input_names=["images"], output_names=["logits"]
    )
    session = ort_session(path)
    assert check_parity(model, session, images) <= 1e-4
    # and on inputs other than the traced one: fresh noise, and a brighter, shifted image
    generator = torch.Generator().manual_seed(1)
    for other in (torch.rand(1, 3, 128, 128, generator=generator), images.roll(17, -1) * 3 - 1):
        with torch.no_grad():
            assert model(other).std() > 1e-3  # not a constant map
        assert check_parity(model, session, other) <= 1e-4


def test_a_foreign_backbone_file_is_one_line_not_a_traceback():
    state = torchvision.models.resnet18(weights=None).state_dict()
    del state["layer4.1.bn2.weight"]
    with pytest.raises(UserError, match='ResNet-18 weights do not fit.*"layer4.1.bn2.weight"'):
        PSPNet(num_classes=3).load_backbone(state)
