"""YOLOv7 and YOLOv7-tiny (Wang, Bochkovskiy and Liao, 2022), written from scratch.

Both variants are a numbered list of layers, exactly like the authors' ``cfg/training/yolov7.yaml``
and ``yolov7-tiny.yaml`` (P5 models, 640 px): layer ``i`` reads the outputs of earlier layers named
in ``sources`` and the index of every layer equals the authors' index, so their checkpoints map
tensor by tensor (see ``yolov7_checkpoint.py``). The descriptions below build the list block by
block so that each idea of the paper has a name:

- **ELAN** (tiny) / **E-ELAN** (base): two 1x1 branches, a chain of 3x3 convolutions on one of
  them, and a 1x1 "transition" over the concatenation of the branch outputs and some chain
  outputs. Gradient paths of different lengths, which the paper argues makes a deep net learn well.
- **MP** downsampling (base): max-pool -> 1x1 next to 1x1 -> 3x3 stride 2, concatenated.
- **SPPCSPC** (base) / SPP-tiny: spatial pyramid pooling (max-pools 5, 9, 13) inside a CSP block.
- **RepConv** (base, before the head): 3x3 + 1x1 (+ identity) branches while training, fused into one
  3x3 convolution for deployment (:meth:`RepConv.fuse`).
- **IDetect**: the detection head with implicit knowledge (:class:`ImplicitA` added before the
  1x1 prediction, :class:`ImplicitM` multiplied after it), folded into the convolution on fuse.
- **Auxiliary head** (optional, base only, training only: :class:`AuxHead`): a second head on
  earlier neck features that learns from the coarse labels of the lead-guided assignment.

``python yolov7.py --variant tiny|base --num-classes N [--fused]`` prints the layer table, then
``parameters: N`` and ``gflops_640: X``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detseg.cli.common import HelpFormatter
from detseg.errors import UserError, run_cli
from detseg.yolo_decode import decode_outputs

# Anchors (width, height in pixels at 640 px) per level P3/8, P4/16, P5/32, as in the authors' yaml.
ANCHORS = {
    "tiny": [[9, 6, 13, 16, 29, 11], [29, 28, 66, 26, 51, 62], [115, 54, 134, 119, 308, 147]],
    "base": [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]],
}
STRIDES = (8, 16, 32)
# The authors' model summaries for 80 classes (see README "Model" for where each comes from).
AUTHORS_PARAMETERS = {"tiny": 6_228_762, "base": 37_622_682}  # training form (IDetect)
AUTHORS_PARAMETERS_FUSED = {"tiny": 6_219_709, "base": 36_905_341}  # after fuse()
BN_EPS, BN_MOMENTUM = 1e-3, 0.03  # the authors' BatchNorm settings


def _activation(name: str) -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=True) if name == "leaky" else nn.SiLU(inplace=True)


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One convolution with bias equal to ``bn(conv(x))`` in eval mode."""
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        groups=conv.groups, bias=True,
    )  # fmt: skip
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # [C_out]
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused.to(conv.weight.device)


class Conv(nn.Module):
    """Convolution (no bias) -> BatchNorm -> activation; ``padding = kernel // 2``.

    Shapes: [N, c_in, H, W] -> [N, c_out, H / stride, W / stride].
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, act: str = "silu"):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = _activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> None:
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fuse_conv_bn(self.conv, self.bn)
            self.bn = nn.Identity()


class RepConv(nn.Module):
    """Re-parameterisable 3x3 convolution (RepVGG style, as in YOLOv7's head).

    Training: ``act(bn(conv3x3(x)) + bn(conv1x1(x)) [+ bn(x)])`` (identity branch only when
    ``c_in == c_out`` and stride 1). :meth:`fuse` turns the sum into one 3x3 convolution with bias,
    because convolution is linear: the 1x1 kernel is a 3x3 kernel with zeros around its centre, the
    identity a 3x3 kernel with a 1 at the centre of its own channel.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, act: str = "silu"):
        super().__init__()
        self.act = _activation(act)
        self.rbr_identity = (
            nn.BatchNorm2d(c_in, eps=BN_EPS, momentum=BN_MOMENTUM)
            if c_in == c_out and stride == 1
            else None
        )
        self.rbr_dense = nn.Sequential(
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
            nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM),
        )
        self.rbr_1x1 = nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False),
            nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM),
        )
        self.rbr_reparam: nn.Conv2d | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.rbr_reparam is not None:
            return self.act(self.rbr_reparam(x))
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return self.act(out)

    def fuse(self) -> None:
        if self.rbr_reparam is not None:
            return
        dense = fuse_conv_bn(self.rbr_dense[0], self.rbr_dense[1])
        one = fuse_conv_bn(self.rbr_1x1[0], self.rbr_1x1[1])
        k = dense.kernel_size[0]
        weight = dense.weight + nn.functional.pad(one.weight, [k // 2] * 4)  # 1x1 -> centre of kxk
        bias = dense.bias + one.bias
        if self.rbr_identity is not None:
            channels = dense.in_channels
            eye = torch.zeros_like(dense.weight)  # [C, C, k, k]
            eye[torch.arange(channels), torch.arange(channels), k // 2, k // 2] = 1.0
            as_conv = nn.Conv2d(channels, channels, k, 1, k // 2, bias=False).to(eye.device)
            as_conv.weight.data.copy_(eye)
            ident = fuse_conv_bn(as_conv, self.rbr_identity)
            weight, bias = weight + ident.weight, bias + ident.bias
        self.rbr_reparam = dense
        with torch.no_grad():
            self.rbr_reparam.weight.copy_(weight)
            self.rbr_reparam.bias.copy_(bias)
        del self.rbr_dense, self.rbr_1x1
        self.rbr_identity = None


class MaxPool(nn.MaxPool2d):
    """``MP`` (kernel 2, stride 2) or the stride-1 ``SP`` pools of SPP (kernel k, padding k // 2)."""

    def __init__(self, kernel: int = 2, stride: int = 2):
        super().__init__(kernel, stride, padding=kernel // 2 if stride == 1 else 0)


class Concat(nn.Module):
    """Concatenate the source outputs along channels."""

    def forward(self, xs: list[Tensor]) -> Tensor:
        return torch.cat(xs, 1)


class Upsample(nn.Upsample):
    """Nearest-neighbour x2."""

    def __init__(self) -> None:
        super().__init__(scale_factor=2, mode="nearest")


class SPPCSPC(nn.Module):
    """Spatial pyramid pooling in a cross-stage-partial block (base model, layer 51).

    ``cv7(cat(cv6(cv5(cat(x1, pool5(x1), pool9(x1), pool13(x1)))), cv2(x)))`` with
    ``x1 = cv4(cv3(cv1(x)))``; hidden width = ``c_out``.
    """

    def __init__(self, c_in: int, c_out: int, act: str = "silu"):
        super().__init__()
        c = c_out
        self.cv1 = Conv(c_in, c, 1, act=act)
        self.cv2 = Conv(c_in, c, 1, act=act)
        self.cv3 = Conv(c, c, 3, act=act)
        self.cv4 = Conv(c, c, 1, act=act)
        self.m = nn.ModuleList(MaxPool(k, 1) for k in (5, 9, 13))
        self.cv5 = Conv(4 * c, c, 1, act=act)
        self.cv6 = Conv(c, c, 3, act=act)
        self.cv7 = Conv(2 * c, c_out, 1, act=act)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [pool(x1) for pool in self.m], 1)))
        return self.cv7(torch.cat((y1, self.cv2(x)), 1))


class ImplicitA(nn.Module):
    """Implicit knowledge added to a feature map: ``x + a`` with a learned ``a`` [1, C, 1, 1]."""

    def __init__(self, channels: int):
        super().__init__()
        self.implicit = nn.Parameter(torch.zeros(1, channels, 1, 1))
        nn.init.normal_(self.implicit, mean=0.0, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return self.implicit + x


class ImplicitM(nn.Module):
    """Implicit knowledge multiplied into a feature map: ``m * x`` with a learned ``m`` [1, C, 1, 1]."""

    def __init__(self, channels: int):
        super().__init__()
        self.implicit = nn.Parameter(torch.ones(1, channels, 1, 1))
        nn.init.normal_(self.implicit, mean=1.0, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return self.implicit * x


class IDetect(nn.Module):
    """The head: per level ``im * conv1x1(x + ia)`` -> ``num_anchors * (5 + num_classes)`` channels.

    Training output: list of 3 raw maps [N, A * (5 + C), H, W] (A = 3 anchors). Eval output: the
    decoded predictions [N, sum(H * W * A), 5 + C] as ``(cx, cy, w, h)`` in input pixels, objectness and
    class probabilities (sigmoid), the YOLOv5/v7 decoding::

        xy = (2 * sigmoid(t_xy) - 0.5 + cell) * stride      wh = (2 * sigmoid(t_wh)) ** 2 * anchor
    """

    def __init__(self, num_classes: int, anchors: list[list[int]], channels: Sequence[int]):
        super().__init__()
        self.num_classes = num_classes
        self.num_outputs = num_classes + 5
        self.num_levels = len(anchors)
        self.num_anchors = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(3, -1, 2))
        self.m = nn.ModuleList(
            nn.Conv2d(c, self.num_outputs * self.num_anchors, 1) for c in channels
        )
        self.ia = nn.ModuleList(ImplicitA(c) for c in channels)
        self.im = nn.ModuleList(ImplicitM(self.num_outputs * self.num_anchors) for _ in channels)
        self.fused = False
        self._init_biases()

    def _init_biases(self, image_size: int = 640) -> None:
        """Prior biases (YOLOv5's): objectness ~ 8 objects per 640 px image, classes ~ 1 / 0.6C."""
        with torch.no_grad():
            for conv, stride in zip(self.m, STRIDES):
                bias = conv.bias.view(self.num_anchors, -1)
                bias[:, 4] += torch.log(torch.tensor(8 / (image_size / stride) ** 2))
                bias[:, 5:] += torch.log(torch.tensor(0.6 / (self.num_classes - 0.99)))

    def raw(self, xs: list[Tensor]) -> list[Tensor]:
        """The three levels' raw outputs [N, A * (5 + C), H, W] (anchor-major channels)."""
        if self.fused:
            return [conv(x) for conv, x in zip(self.m, xs)]
        return [im(conv(ia(x))) for conv, ia, im, x in zip(self.m, self.ia, self.im, xs)]

    def anchor_pairs(self) -> list[list[tuple[float, float]]]:
        """Per level, the A anchors as (width, height) in input pixels."""
        return [[(float(w), float(h)) for w, h in level] for level in self.anchors.tolist()]

    def decode(self, raw: list[Tensor]) -> Tensor:
        """Raw maps -> [N, sum(H * W * A), 5 + C]: cx, cy, w, h (pixels), objectness, class probs,
        with the core's YOLOv5/v7 decoding (:func:`detseg.yolo_decode.decode_outputs`)."""
        return decode_outputs(raw, self.anchor_pairs(), STRIDES, style="v5")

    def forward(self, xs: list[Tensor]) -> list[Tensor] | Tensor:
        raw = self.raw(xs)
        return raw if self.training else self.decode(raw)

    def fuse(self) -> None:
        """Fold the implicit layers into the 1x1 convolutions: ``m * (W (x + a) + b)`` equals
        ``(m W) x + m (W a + b)``."""
        if self.fused:
            return
        with torch.no_grad():
            for conv, ia, im in zip(self.m, self.ia, self.im):
                weight = conv.weight[:, :, 0, 0]  # [C_out, C_in]
                conv.bias += weight @ ia.implicit.view(-1)
                scale = im.implicit.view(-1)
                conv.weight *= scale[:, None, None, None]
                conv.bias *= scale
        del self.ia, self.im
        self.fused = True


class AuxHead(nn.Module):
    """The auxiliary head of YOLOv7's "coarse-to-fine lead guided" training (the authors'
    ``IAuxDetect`` minus its lead half): per level a 3x3 :class:`Conv` then a plain 1x1 prediction
    (no implicit layers), on features taken *earlier* in the neck than the lead head's.

    It only exists while training: its outputs get the coarse labels (see ``yolov7_loss.py``), its
    gradient reaches the shared layers, and :meth:`YOLOv7.fuse` deletes it (the authors' deploy
    files have no auxiliary head either). Same anchors and raw layout as :class:`IDetect`:
    ``[N, A * (5 + C), H, W]`` per level.
    """

    def __init__(
        self, num_classes: int, channels_in: Sequence[int], widths: Sequence[int], act: str
    ):
        super().__init__()
        self.stems = nn.ModuleList(Conv(c, w, 3, act=act) for c, w in zip(channels_in, widths))
        self.m = nn.ModuleList(nn.Conv2d(w, (num_classes + 5) * 3, 1) for w in widths)
        with torch.no_grad():  # the same priors as the lead head (IDetect._init_biases)
            for conv, stride in zip(self.m, STRIDES):
                bias = conv.bias.view(3, -1)
                bias[:, 4] += torch.log(torch.tensor(8 / (640 / stride) ** 2))
                bias[:, 5:] += torch.log(torch.tensor(0.6 / (num_classes - 0.99)))

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        return [conv(stem(x)) for conv, stem, x in zip(self.m, self.stems, xs)]


# Where the auxiliary head reads (our layer indices) and its widths. The authors' P5 ``yolov7.yaml``
# (trained by their ``train.py``) has NO auxiliary head; only the P6 models (W6, E6, D6, E6E, trained
# by ``train_aux.py``) do, and there it reads the top-down (FPN) path at each scale while the lead
# head reads the final bottom-up (PAN) outputs. ``--aux-head`` transfers that wiring to the P5 base:
# P3 from the head's first ELAN-H (75, shared with the lead), P4 from the top-down ELAN-H (63), P5
# from SPPCSPC (51). YOLOv7-tiny has no auxiliary head (as in the authors' design).
AUX_SOURCES = {"base": ((75, 63, 51), (256, 512, 1024))}


# ----------------------------------------------------------------------------------- descriptions


@dataclass
class LayerSpec:
    """One numbered layer: its sources (absolute indices) and the module."""

    sources: list[int]
    module: nn.Module
    note: str = ""


class Builder:
    """Appends numbered layers and remembers each one's output channels.

    Every method returns the index of the layer whose output is the block's output. ``src`` is an
    absolute index, or negative for "this many layers back" as in the authors' yaml.
    """

    def __init__(self, act: str, in_channels: int = 3):
        self.act = act
        self.layers: list[LayerSpec] = []
        self.channels: list[int] = []
        self.in_channels = in_channels

    def _abs(self, src: int) -> int:
        return len(self.layers) + src if src < 0 else src

    def _c(self, src: int) -> int:
        return self.in_channels if src == -1 and not self.layers else self.channels[self._abs(src)]

    def add(self, sources: list[int], module: nn.Module, c_out: int, note: str = "") -> int:
        absolute = [self._abs(s) for s in sources] if self.layers else [-1]
        self.layers.append(LayerSpec(absolute, module, note))
        self.channels.append(c_out)
        return len(self.layers) - 1

    def conv(
        self, c_out: int, kernel: int = 1, stride: int = 1, src: int = -1, note: str = ""
    ) -> int:
        module = Conv(self._c(src), c_out, kernel, stride, self.act)
        return self.add([src], module, c_out, note)

    def repconv(self, c_out: int, src: int) -> int:
        return self.add([src], RepConv(self._c(src), c_out, 3, 1, self.act), c_out)

    def pool(self, kernel: int = 2, stride: int = 2, src: int = -1, note: str = "") -> int:
        return self.add([src], MaxPool(kernel, stride), self._c(src), note)

    def concat(self, sources: list[int], note: str = "") -> int:
        return self.add(sources, Concat(), sum(self._c(s) for s in sources), note)

    def upsample(self) -> int:
        return self.add([-1], Upsample(), self._c(-1))

    # ------------------------------------------------------------------ blocks of the paper

    def elan(self, hidden: int, c_out: int, depth: int, taps: list[int], note: str) -> int:
        """(E-)ELAN on the last layer's output: 1x1 (branch a), 1x1 (branch b), ``depth`` 3x3
        convolutions chained on b; concatenate the chain outputs at ``taps`` (counted back from the
        chain's end, as in the yaml: -1 = last), b and a; transition 1x1 to ``c_out``."""
        self.conv(hidden, 1, note=note)  # a
        self.conv(hidden, 1, src=-2)  # b: same input as a
        for _ in range(depth):
            self.conv(hidden, 3)
        chain_end = len(self.layers) - 1
        sources = [chain_end + t for t in taps] + [chain_end - depth, chain_end - depth - 1]
        self.concat(sources)
        return self.conv(c_out, 1)

    def head_elan(self, hidden: int, narrow: int, c_out: int) -> int:
        """The head's ELAN-H of the base model: 1x1 ``hidden`` twice, four 3x3 ``narrow``
        convolutions, concatenate all six outputs (wider aggregation than the backbone's)."""
        self.conv(hidden, 1, note="ELAN-H")
        self.conv(hidden, 1, src=-2)
        for _ in range(4):
            self.conv(narrow, 3)
        end = len(self.layers) - 1
        self.concat([end - i for i in range(6)])
        return self.conv(c_out, 1)

    def mp_block(self, c: int, extra: list[int] | None = None, note: str = "MP") -> int:
        """Downsample by 2 in two branches, max-pool -> 1x1 and 1x1 -> 3x3 stride 2, concatenated
        (with ``extra`` layers appended, in the head's PANet path)."""
        x = len(self.layers) - 1
        self.pool(note=note)
        pooled = self.conv(c, 1)
        self.conv(c, 1, src=x)
        strided = self.conv(c, 3, 2)
        return self.concat([strided, pooled] + (extra or []))


def describe_tiny(num_classes: int) -> Builder:
    """YOLOv7-tiny (P5, LeakyReLU 0.1): 78 layers, layer i = the authors' yolov7-tiny.yaml layer i."""
    b = Builder("leaky")
    b.conv(32, 3, 2, note="P1/2")  # 0
    b.conv(64, 3, 2, note="P2/4")  # 1
    tiny_elan = {"depth": 2, "taps": [0, -1]}  # concat [-1, -2, -3, -4]: both 3x3 outputs, b, a
    b.elan(32, 64, **tiny_elan, note="ELAN")  # 2-7
    b.pool(note="MP P3/8")  # 8
    p3 = b.elan(64, 128, **tiny_elan, note="ELAN")  # 9-14
    b.pool(note="MP P4/16")  # 15
    p4 = b.elan(128, 256, **tiny_elan, note="ELAN")  # 16-21
    b.pool(note="MP P5/32")  # 22
    b.elan(256, 512, **tiny_elan, note="ELAN")  # 23-28
    # SPP-tiny in a CSP block: 1x1 branch, 1x1 -> pools 5/9/13 -> concat -> 1x1, concat, 1x1
    csp = b.conv(256, 1, note="SPPCSP-tiny")  # 29
    trunk = b.conv(256, 1, src=-2)  # 30
    pools = [b.pool(k, 1, src=trunk) for k in (5, 9, 13)]  # 31-33
    b.concat(pools[::-1] + [trunk])  # 34
    b.conv(256, 1)  # 35
    b.concat([-1, csp])  # 36
    p5 = b.conv(256, 1)  # 37
    # top-down path (FPN)
    b.conv(128, 1, note="FPN")  # 38
    b.upsample()  # 39
    b.conv(128, 1, src=p4)  # 40
    b.concat([-1, -2])  # 41
    n4 = b.elan(64, 128, **tiny_elan, note="ELAN")  # 42-47
    b.conv(64, 1)  # 48
    b.upsample()  # 49
    b.conv(64, 1, src=p3)  # 50
    b.concat([-1, -2])  # 51
    out3 = b.elan(32, 64, **tiny_elan, note="ELAN")  # 52-57
    # bottom-up path (PAN)
    b.conv(128, 3, 2, note="PAN")  # 58
    b.concat([-1, n4])  # 59
    out4 = b.elan(64, 128, **tiny_elan, note="ELAN")  # 60-65
    b.conv(256, 3, 2)  # 66
    b.concat([-1, p5])  # 67
    out5 = b.elan(128, 256, **tiny_elan, note="ELAN")  # 68-73
    heads = [b.conv(c, 3, src=s) for c, s in ((128, out3), (256, out4), (512, out5))]  # 74-76
    b.add(
        heads, IDetect(num_classes, ANCHORS["tiny"], [b.channels[h] for h in heads]), 0, "IDetect"
    )
    return b


def describe_base(num_classes: int) -> Builder:
    """YOLOv7 (P5, SiLU): 106 layers, layer i = the authors' yolov7.yaml layer i."""
    b = Builder("silu")
    e_elan = {"depth": 4, "taps": [0, -2]}  # concat [-1, -3, -5, -6]: 3x3 #4 and #2, b, a
    b.conv(32, 3, 1, note="stem")  # 0
    b.conv(64, 3, 2, note="P1/2")  # 1
    b.conv(64, 3, 1)  # 2
    b.conv(128, 3, 2, note="P2/4")  # 3
    b.elan(64, 256, **e_elan, note="E-ELAN")  # 4-11
    b.mp_block(128, note="MP P3/8")  # 12-16
    p3 = b.elan(128, 512, **e_elan, note="E-ELAN")  # 17-24
    b.mp_block(256, note="MP P4/16")  # 25-29
    p4 = b.elan(256, 1024, **e_elan, note="E-ELAN")  # 30-37
    b.mp_block(512, note="MP P5/32")  # 38-42
    b.elan(256, 1024, **e_elan, note="E-ELAN")  # 43-50
    sppcspc = b.add([-1], SPPCSPC(1024, 512, "silu"), 512, "SPPCSPC")  # 51
    b.conv(256, 1, note="FPN")  # 52
    b.upsample()  # 53
    b.conv(256, 1, src=p4)  # 54
    b.concat([-1, -2])  # 55
    n4 = b.head_elan(256, 128, 256)  # 56-63
    b.conv(128, 1)  # 64
    b.upsample()  # 65
    b.conv(128, 1, src=p3)  # 66
    b.concat([-1, -2])  # 67
    out3 = b.head_elan(128, 64, 128)  # 68-75
    b.mp_block(128, extra=[n4], note="MP PAN")  # 76-80
    out4 = b.head_elan(256, 128, 256)  # 81-88
    b.mp_block(256, extra=[sppcspc], note="MP PAN")  # 89-93
    out5 = b.head_elan(512, 256, 512)  # 94-101
    heads = [b.repconv(c, s) for c, s in ((256, out3), (512, out4), (1024, out5))]  # 102-104
    b.add(
        heads, IDetect(num_classes, ANCHORS["base"], [b.channels[h] for h in heads]), 0, "IDetect"
    )
    return b


VARIANTS = {"tiny": describe_tiny, "base": describe_base}


class YOLOv7(nn.Module):
    """A YOLOv7 variant as a numbered list of layers.

    Args:
        variant: ``"tiny"`` or ``"base"`` (:data:`VARIANTS`).
        num_classes: number of classes C.
    Shapes:
        images [N, 3, H, W] float in [0, 1], H and W multiples of 32.
        train mode -> list of 3 raw maps [N, 3 * (5 + C), H/s, W/s] for s = 8, 16, 32;
        eval mode -> [N, 3 * (H W / 64 + H W / 256 + H W / 1024), 5 + C] decoded (see :class:`IDetect`).
    """

    def __init__(self, *, variant: str = "tiny", num_classes: int = 80, aux_head: bool = False):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; use one of {sorted(VARIANTS)}")
        if aux_head and variant not in AUX_SOURCES:
            raise ValueError(
                f"variant {variant!r} has no auxiliary head; use {sorted(AUX_SOURCES)}"
            )
        self.variant = variant
        self.num_classes = num_classes
        builder = VARIANTS[variant](num_classes)
        self.layers = nn.ModuleList(spec.module for spec in builder.layers)
        self.sources = [spec.sources for spec in builder.layers]
        self.notes = [spec.note for spec in builder.layers]
        self.channels = builder.channels
        self.aux_sources: list[int] = []
        self.aux: AuxHead | None = None
        if aux_head:
            self.aux_sources, widths = (list(v) for v in AUX_SOURCES[variant])
            channels_in = [self.channels[s] for s in self.aux_sources]
            self.aux = AuxHead(num_classes, channels_in, widths, builder.act)
        used = {s for sources in self.sources for s in sources} | set(self.aux_sources)
        self._keep = [i in used for i in range(len(self.layers))]

    @property
    def head(self) -> IDetect:
        return self.layers[-1]  # type: ignore[return-value]

    def features(self, images: Tensor) -> list[Tensor]:
        """The three inputs of the head (strides 8, 16, 32), then, with an auxiliary head, its three."""
        outputs: list[Tensor | None] = []
        x = images
        for index, layer in enumerate(self.layers[:-1]):
            sources = self.sources[index]
            if isinstance(layer, Concat):
                x = layer([outputs[s] for s in sources])
            else:
                x = layer(x if sources[0] in (-1, index - 1) else outputs[sources[0]])
            outputs.append(x if self._keep[index] else None)
        return [outputs[s] for s in self.sources[-1] + self.aux_sources]  # type: ignore[misc]

    def forward(self, images: Tensor) -> list[Tensor] | Tensor:
        """Train mode: the lead head's 3 raw maps, then the auxiliary head's 3 when it exists (6
        maps, the authors' ``IAuxDetect`` order). Eval mode: the lead head's decoded predictions."""
        xs = self.features(images)
        lead = self.head(xs[:3])
        if self.aux is not None and self.training:
            return lead + self.aux(xs[3:])
        return lead

    def fuse(self) -> YOLOv7:
        """Deployment form, in place: Conv+BN -> conv with bias, RepConv -> one 3x3, implicit
        layers folded into the head, the auxiliary head (training only) removed. Outputs are
        unchanged (eval mode); returns ``self``."""
        self.eval()
        if self.aux is not None:
            self.aux, self.aux_sources = None, []
        for module in list(self.modules()):
            if isinstance(module, (Conv, RepConv, IDetect)):
                module.fuse()
        return self


def build_model(
    variant: str = "tiny", num_classes: int = 80, *, fused: bool = False, aux_head: bool = False
) -> YOLOv7:
    """A fresh :class:`YOLOv7` (fused into its deployment form when ``fused``; with the training-only
    auxiliary head when ``aux_head``, base variant only)."""
    model = YOLOv7(variant=variant, num_classes=num_classes, aux_head=aux_head)
    return model.fuse() if fused else model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not), as the authors' model summary counts them."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int = 640) -> float:
    """GFLOPs of one ``image_size`` x ``image_size`` image: 2 x the multiply-adds of every
    convolution (bias add counted as one), the convention of the authors' summary (thop x 2).
    Pools, activations, BatchNorm and the decoding are not counted."""
    macs = 0

    def hook(module: nn.Module, _inputs: object, output: Tensor) -> None:
        nonlocal macs
        assert isinstance(module, nn.Conv2d)
        per_output = (
            module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        )
        macs += output.numel() * (per_output + (1 if module.bias is not None else 0))

    probe = copy.deepcopy(model).eval()
    handles = [m.register_forward_hook(hook) for m in probe.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        probe(torch.zeros(1, 3, image_size, image_size))
    for handle in handles:
        handle.remove()
    return 2 * macs / 1e9


def layer_table(model: YOLOv7) -> str:
    """One line per layer: index, sources, parameters, module, output channels, note."""
    lines = [f"{'#':>4} {'from':>16} {'params':>10}  {'module':<10} {'c_out':>6}  note"]
    for index, layer in enumerate(model.layers):
        params = sum(p.numel() for p in layer.parameters())
        sources = model.sources[index]
        text = "-1" if sources == [-1] or sources == [index - 1] else ",".join(map(str, sources))
        c_out = model.channels[index] or (model.num_classes + 5) * 3
        name = type(layer).__name__
        lines.append(
            f"{index:>4} {text:>16} {params:>10,}  {name:<10} {c_out:>6}  {model.notes[index]}"
        )
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Print the layer table, parameter count and GFLOPs (640 px) of a YOLOv7 variant",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--variant", choices=list(VARIANTS), default="tiny")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument(
        "--fused", action="store_true", help="count the deployment form (after fuse())"
    )
    parser.add_argument(
        "--aux-head", action="store_true",
        help="base only: add the training-only auxiliary head (fuse() removes it)",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = get_args_parser().parse_args(argv)
    if args.num_classes < 1:
        raise UserError(
            f"--num-classes must be >= 1, got {args.num_classes}", fix="e.g. --num-classes 80"
        )
    if args.aux_head and args.variant not in AUX_SOURCES:
        raise UserError(
            f"--variant {args.variant} has no auxiliary head", fix="use --variant base or drop it"
        )
    model = build_model(args.variant, args.num_classes, fused=args.fused, aux_head=args.aux_head)
    print(layer_table(model))
    if model.aux is not None:
        aux_params = count_parameters(model.aux)
        print(f"auxiliary head (reads layers {model.aux_sources}): {aux_params:,} parameters")
    result = {"parameters": count_parameters(model), "gflops_640": count_flops(model, 640)}
    print(f"parameters: {result['parameters']}")
    print(f"gflops_640: {result['gflops_640']:.1f}")
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
