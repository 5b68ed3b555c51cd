"""yolov7.py: the authors' parameter counts, layer wiring, fuse() exactness, FLOPs, the CLI."""

from __future__ import annotations

import pytest
import torch
from yolov7 import (
    AUTHORS_PARAMETERS,
    AUTHORS_PARAMETERS_FUSED,
    IDetect,
    RepConv,
    build_model,
    count_flops,
    count_parameters,
    fuse_conv_bn,
)


def randomise_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and implicit vectors, so fusing has something to fold."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(shape, generator=generator) * 0.1)
        for name, param in model.named_parameters():
            if "implicit" in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.2)


@pytest.mark.parametrize("variant", ["tiny", "base"])
def test_parameter_counts_equal_the_authors(variant):
    """80 classes: training form (IDetect) and after fuse(); the fused numbers are the ones the
    authors' scripts print after 'Fusing layers...' (6,219,709 and 36,905,341)."""
    model = build_model(variant, 80)
    assert count_parameters(model) == AUTHORS_PARAMETERS[variant]
    assert count_parameters(model.fuse()) == AUTHORS_PARAMETERS_FUSED[variant]


def test_head_parameters_follow_the_number_of_classes():
    """Only the head changes with C: (128 + 256 + 512 + 3) * 3 * (5 + C) conv weights and biases,
    3 * 3 * (5 + C) ImplicitM values (tiny)."""
    grow = count_parameters(build_model("tiny", 4)) - count_parameters(build_model("tiny", 3))
    assert grow == (896 + 3) * 3 + 3 * 3


def test_layer_wiring_of_tiny():
    model = build_model("tiny", 3)
    assert len(model.layers) == 78 and isinstance(model.layers[77], IDetect)
    assert model.sources[77] == [74, 75, 76]
    assert model.sources[34] == [33, 32, 31, 30]  # SPP pools concatenated with their input
    assert model.sources[36] == [35, 29] and model.sources[40] == [21] and model.sources[50] == [14]
    assert model.sources[6] == [5, 4, 3, 2]  # ELAN: both 3x3 outputs, branch b, branch a


def test_layer_wiring_of_base():
    model = build_model("base", 3)
    assert len(model.layers) == 106
    assert model.sources[10] == [9, 7, 5, 4]  # E-ELAN concat [-1, -3, -5, -6]
    assert model.sources[16] == [15, 13] and model.sources[14] == [11]  # MP block
    assert model.sources[80] == [79, 77, 63] and model.sources[93] == [92, 90, 51]
    assert [type(model.layers[i]).__name__ for i in (51, 102, 103, 104)] == ["SPPCSPC"] + [
        "RepConv"
    ] * 3
    assert model.sources[105] == [102, 103, 104]


@torch.no_grad()
def test_output_shapes():
    model = build_model("tiny", 3)
    images = torch.rand(1, 3, 64, 96)
    raw = model(images)
    assert [tuple(r.shape) for r in raw] == [(1, 24, 8, 12), (1, 24, 4, 6), (1, 24, 2, 3)]
    decoded = model.eval()(images)
    assert decoded.shape == (1, 3 * (8 * 12 + 4 * 6 + 2 * 3), 8)
    assert float(decoded[..., 4:].min()) >= 0 and float(decoded[..., 4:].max()) <= 1


@pytest.mark.parametrize("variant", ["tiny", "base"])
def test_fuse_leaves_outputs_unchanged(variant):
    torch.manual_seed(1)
    model = build_model(variant, 3).eval()
    randomise_norms(model)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = model(images)
        model.fuse()
        after = model(images)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model.head.fused and not hasattr(model.head, "ia")


def test_repconv_fuse_with_identity_branch():
    torch.manual_seed(2)
    block = RepConv(8, 8, 3, 1).eval()  # c_in == c_out, stride 1: identity branch present
    assert block.rbr_identity is not None
    randomise_norms(block, seed=3)
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        before = block(x)
        block.fuse()
        after = block(x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)
    assert block.rbr_reparam is not None and block.rbr_reparam.kernel_size == (3, 3)


def test_fuse_conv_bn_hand_computed():
    conv = torch.nn.Conv2d(1, 1, 1, bias=False)
    bn = torch.nn.BatchNorm2d(1, eps=0.0).eval()
    with torch.no_grad():
        conv.weight.fill_(2.0)
        bn.running_mean.fill_(1.0)
        bn.running_var.fill_(4.0)
        bn.weight.fill_(3.0)
        bn.bias.fill_(0.5)
    fused = fuse_conv_bn(conv, bn)
    # bn(conv(x)) = 3 * (2x - 1) / 2 + 0.5 = 3x - 1
    assert float(fused.weight) == pytest.approx(3.0) and float(fused.bias) == pytest.approx(-1.0)


def test_flops_counter_hand_computed_and_paper_values():
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=True))
    # 4 output channels x 640 x 640 positions x (3 * 9 multiply-adds + 1 bias) x 2
    assert count_flops(conv, 640) == pytest.approx(2 * 4 * 640 * 640 * 28 / 1e9)
    assert count_flops(build_model("tiny", 80), 640) == pytest.approx(13.7, abs=0.05)


def test_cli_prints_table_parameters_and_gflops(script, capsys):
    result = script("yolov7").main(["--variant", "tiny", "--num-classes", "80", "--fused"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == "parameters: 6219709" and lines[-1].startswith("gflops_640: 13.")
    assert result["parameters"] == 6219709 and len(lines) == 78 + 3


def test_auxiliary_head_of_base_is_extra_and_training_only():
    """--aux-head: 3 more raw maps in train mode from layers 75, 63, 51 (P3, P4, P5); the lead
    head's outputs unchanged; gone after fuse(), leaving the authors' deploy count."""
    torch.manual_seed(0)
    plain = build_model("base", 3)
    model = build_model("base", 3, aux_head=True)
    missing = model.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("aux.") for k in missing)
    # hand count: 3x3 Conv + BN per level, then a 1x1 to 3 * (5 + 3) channels with bias
    stems = sum(c * w * 9 + 2 * w for c, w in ((128, 256), (256, 512), (512, 1024)))
    assert count_parameters(model.aux) == stems + (256 + 512 + 1024) * 24 + 3 * 24
    seen = {}
    for index in (51, 63, 75):
        model.layers[index].register_forward_hook(lambda m, i, o, k=index: seen.update({k: o}))
    stem_inputs = []
    for stem in model.aux.stems:
        stem.register_forward_hook(lambda m, i, o: stem_inputs.append(i[0]))
    images = torch.rand(1, 3, 64, 64)
    raw = model.train()(images)
    assert len(raw) == 6 and [tuple(r.shape) for r in raw[3:]] == [
        (1, 24, 8, 8), (1, 24, 4, 4), (1, 24, 2, 2)
    ]  # fmt: skip
    assert [s is seen[k] for s, k in zip(stem_inputs, (75, 63, 51))] == [True] * 3
    plain.train()
    for ours, theirs in zip(raw[:3], plain(images)):
        torch.testing.assert_close(ours, theirs)
    with torch.no_grad():
        model.eval(), plain.eval()
        torch.testing.assert_close(model(images), plain(images))
        model.fuse()
    assert model.aux is None and len(model.train()(images)) == 3
    with pytest.raises(ValueError, match="no auxiliary head"):
        build_model("tiny", 3, aux_head=True)
