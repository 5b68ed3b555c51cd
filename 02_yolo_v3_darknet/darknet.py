"""A PyTorch model built from a darknet ``.cfg``, and darknet ``.weights`` read and written exactly.

    python darknet.py yolov3                 # layer table, then `parameters: N`, `weights_bytes: N`
    python darknet.py cfg/yolov3-tiny.cfg --size 320

The model returns the raw inputs of the ``[yolo]`` layers, one tensor [B, A * (5 + C), H, W] per
scale (A anchors per cell, C classes): exactly what darknet and OpenCV feed their YOLO layers, so
they can be compared number for number. :meth:`Darknet.decode` turns them into boxes.

The ``.weights`` format (darknet ``parser.c``): a header of int32 ``major, minor, revision`` and the
number of images seen in training (int64 when ``major * 10 + minor >= 2``, else int32), then for
every ``[convolutional]`` layer in file order: with batch norm ``beta [F], gamma [F], running mean
[F], running variance [F]``, without it ``bias [F]``; then the kernel ``[F, C, k, k]``, all float32
little-endian. Nothing else: a file's size follows from the cfg alone (:attr:`NetSpec.weights_bytes`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from darknet_cfg import LayerSpec, NetSpec, describe, layer_table, parse_cfg
from torch import Tensor, nn

from detseg.cli.common import HelpFormatter
from detseg.errors import UserError, run_cli
from detseg.yolo_decode import decode_output, split_raw

BN_EPS = 1e-6  # darknet divides by sqrt(variance) + .000001; OpenCV uses sqrt(variance + 1e-6)
LEAKY_SLOPE = 0.1


class ConvLayer(nn.Module):
    """``[convolutional]``: conv (bias only without batch norm), batch norm, leaky / linear."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        in_channels = spec.in_shape[0]
        self.conv = nn.Conv2d(
            in_channels, spec.filters, spec.size, spec.stride, spec.padding,
            bias=not spec.batch_normalize,
        )  # fmt: skip
        self.bn = nn.BatchNorm2d(spec.filters, eps=BN_EPS) if spec.batch_normalize else None
        self.leaky = spec.activation == "leaky"

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.leaky_relu(x, LEAKY_SLOPE) if self.leaky else x


class MaxPoolLayer(nn.Module):
    """``[maxpool]`` with darknet's padding: ``padding`` pixels in all, ``padding // 2`` before.

    With ``size=2 stride=1`` (YOLOv3-tiny) that is one pixel after only, so 13 x 13 stays 13 x 13;
    the SPP block's ``size=5/9/13 stride=1`` pads symmetrically.
    """

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.size, self.stride = spec.size, spec.stride
        before = spec.padding // 2
        self.pad = (before, spec.padding - before, before, spec.padding - before)

    def forward(self, x: Tensor) -> Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad, mode="constant", value=float("-inf"))
        return F.max_pool2d(x, self.size, self.stride)


class Upsample(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=float(self.stride), mode="nearest")


class Darknet(nn.Module):
    """The network a cfg describes.

    Args:
        spec: from :func:`darknet_cfg.parse_cfg`.
    Attributes:
        spec: the cfg (layer shapes at the cfg's input size; any multiple of 32 works too).
        anchors: per [yolo] layer, its anchors in input pixels [(w, h), ...].
        strides: per [yolo] layer, input pixels per grid cell (32, 16, 8 for YOLOv3 at any size).
        scale_xy: per [yolo] layer, darknet's ``scale_x_y`` (1 in the YOLOv3 cfgs).
        num_classes: C.
    """

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.layers = nn.ModuleList()
        for layer in spec.layers:
            if layer.kind == "convolutional":
                self.layers.append(ConvLayer(layer))
            elif layer.kind == "maxpool":
                self.layers.append(MaxPoolLayer(layer))
            elif layer.kind == "upsample":
                self.layers.append(Upsample(layer.stride))
            else:  # route, shortcut, yolo: handled in forward
                self.layers.append(nn.Identity())
        self.kinds = [layer.kind for layer in spec.layers]
        self.sources = [layer.sources for layer in spec.layers]
        needed = {s for layer in spec.layers for s in layer.sources}
        self.keep = [i in needed for i in range(len(spec.layers))]
        self.anchors = [list(layer.anchors) for layer in spec.yolo_layers]
        self.strides = [spec.height // layer.in_shape[1] for layer in spec.yolo_layers]
        self.scale_xy = [layer.scale_xy for layer in spec.yolo_layers]
        self.num_classes = spec.num_classes

    def forward(self, images: Tensor) -> list[Tensor]:
        """images float [B, 3, H, W] in [0, 1] (H, W multiples of 32) -> raw [yolo] inputs."""
        return self._run(images, len(self.layers))[1]

    def features(self, images: Tensor, layers: int) -> Tensor:
        """The output of layer ``layers - 1`` after running the first ``layers`` layers (what the
        layers of a partial ``<cfg>.conv.<layers>`` file compute), e.g. [B, 512, H/32, W/32] for
        YOLOv3-tiny's first 15."""
        if not 0 < layers <= len(self.layers):
            raise ValueError(f"layers must be in 1..{len(self.layers)}, got {layers}")
        return self._run(images, layers)[0]

    def _run(self, images: Tensor, stop: int) -> tuple[Tensor, list[Tensor]]:
        saved: dict[int, Tensor] = {}
        outputs: list[Tensor] = []
        x = images
        for index, (kind, module) in enumerate(zip(self.kinds[:stop], self.layers[:stop])):
            if kind == "route":
                parts = [saved[s] for s in self.sources[index]]
                x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
            elif kind == "shortcut":
                for source in self.sources[index]:
                    x = x + saved[source]
            elif kind == "yolo":
                outputs.append(x)
            else:
                x = module(x)
            if self.keep[index]:
                saved[index] = x
        return x, outputs

    def decode(self, raws: Sequence[Tensor]) -> Tensor:
        """Raw outputs -> [B, N, 5 + C] (``cx, cy, w, h`` input pixels, objectness, class
        probabilities), as darknet's [yolo] layers decode them: :func:`detseg.yolo_decode.
        decode_outputs` (YOLOv3 style), with the centre moved for ``scale_x_y = s != 1``:
        ``cx = (col + s sigmoid(tx) - (s - 1) / 2) stride`` (darknet's and OpenCV's formula)."""
        parts = []
        for raw, anchors, stride, scale in zip(raws, self.anchors, self.strides, self.scale_xy):
            decoded = decode_output(raw, anchors, stride)  # [B, H * W * A, 5 + C]
            if scale != 1:
                # same (row, col, anchor) order as decode_output's rows
                sig_xy = split_raw(raw, len(anchors))[..., :2].sigmoid().reshape(len(raw), -1, 2)
                centre = decoded[..., :2] + (scale - 1) * (sig_xy - 0.5) * stride
                decoded = torch.cat([centre, decoded[..., 2:]], dim=-1)
            parts.append(decoded)
        return torch.cat(parts, dim=1)

    def conv_layers(self) -> list[ConvLayer]:
        return [m for m in self.layers if isinstance(m, ConvLayer)]


def build_model(cfg: str | Path, *, size: int | tuple[int, int] | None = None) -> Darknet:
    """``Darknet(parse_cfg(cfg, size=size))``."""
    return Darknet(parse_cfg(cfg, size=size))


# ---------------------------------------------------------------------------------------------
# .weights files


def _conv_arrays(layer: ConvLayer) -> list[Tensor]:
    """The tensors of one conv layer in the order the .weights file stores them."""
    if layer.bn is not None:
        bn = layer.bn
        assert bn.running_mean is not None and bn.running_var is not None
        return [bn.bias, bn.weight, bn.running_mean, bn.running_var, layer.conv.weight]
    assert layer.conv.bias is not None
    return [layer.conv.bias, layer.conv.weight]


def expected_bytes(model: Darknet) -> int:
    return model.spec.weights_bytes


def read_header(data: bytes) -> tuple[tuple[int, int, int], int, int]:
    """``((major, minor, revision), images_seen, header_bytes)`` of a .weights file's bytes."""
    if len(data) < 16:
        raise ValueError("shorter than a darknet header")
    major, minor, revision = (int(v) for v in np.frombuffer(data[:12], dtype="<i4"))
    if major * 10 + minor >= 2 and major < 1000 and minor < 1000:
        return (major, minor, revision), int(np.frombuffer(data[12:20], dtype="<i8")[0]), 20
    return (major, minor, revision), int(np.frombuffer(data[12:16], dtype="<i4")[0]), 16


def partial_layers(path: str | Path) -> int | None:
    """N of a partial weights file named darknet's way, ``<anything>.conv.<N>`` (e.g.
    ``yolov3-tiny.conv.15``: the first 15 layers); None for any other name."""
    prefix, _, suffix = Path(path).name.rpartition(".conv.")
    return int(suffix) if prefix and suffix.isdigit() else None


def _prefix_floats(model: Darknet, layers: int) -> int:
    """float32 numbers of the first ``layers`` layers."""
    return sum(layer.params for layer in model.spec.layers[:layers])


def load_weights(model: Darknet, path: str | Path, *, layers: int | None = None) -> dict[str, Any]:
    """Fill ``model`` from a darknet .weights file; strict about the size.

    Args:
        layers: read a *partial* file (darknet's ``partial`` command): only the first ``layers``
            layers are in it and are filled; the rest of ``model`` is left as it is.
            Default: the whole cfg.
    Returns:
        ``{"version": (major, minor, revision), "seen": images seen, "layers": layers read}``.
    Raises:
        UserError: missing file, ``layers`` outside the cfg, or a size other than the cfg (or its
            first ``layers`` layers) implies (both sizes named).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError("weights file not found", path=path, fix="pass a darknet .weights file")
    name = Path(model.spec.path).name
    total = len(model.spec.layers)
    layers = total if layers is None else layers
    if not 0 < layers <= total:
        raise UserError(
            f"a partial file of {layers} layers, but {name} has {total}", path=path,
            fix=f"cut it with 1..{total} layers (darknet partial CFG WEIGHTS OUT N)",
        )  # fmt: skip
    data = path.read_bytes()
    try:
        version, seen, header = read_header(data)
    except ValueError:
        header, version, seen = 20, (0, 0, 0), 0
    floats = _prefix_floats(model, layers)
    expected = header + 4 * floats
    if len(data) != expected:
        what = name if layers == total else f"the first {layers} layers of {name}"
        raise UserError(
            f"weights file has {len(data):,} bytes but {what} implies "
            f"{expected:,} ({header}-byte header + {floats:,} float32)",
            path=path,
            fix="use the weights trained with this cfg (same layers, filters and classes)",
        )
    values = np.frombuffer(data, dtype="<f4", offset=header)
    position = 0
    with torch.no_grad():
        for layer in model.conv_layers()[: _conv_count(model, layers)]:
            for tensor in _conv_arrays(layer):
                count = tensor.numel()
                chunk = values[position : position + count].reshape(tensor.shape)
                tensor.copy_(torch.from_numpy(chunk.copy()))
                position += count
    assert position == floats
    return {"version": version, "seen": seen, "layers": layers}


def _conv_count(model: Darknet, layers: int) -> int:
    """How many [convolutional] layers are among the first ``layers``."""
    return sum(kind == "convolutional" for kind in model.kinds[:layers])


def save_weights(
    model: Darknet,
    path: str | Path,
    *,
    seen: int = 0,
    version: tuple[int, int, int] = (0, 2, 0),
    layers: int | None = None,
) -> Path:
    """Write ``model`` as a darknet .weights file (the 20-byte header of format 0.2).

    ``layers``: only the first ``layers`` layers, as darknet's ``partial`` command writes them
    (``darknet partial cfg/yolov3-tiny.cfg yolov3-tiny.weights yolov3-tiny.conv.15 15``).
    """
    if version[0] * 10 + version[1] < 2:
        raise ValueError("only the 64-bit 'seen' header (version >= 0.2) is written")
    layers = len(model.layers) if layers is None else layers
    if not 0 < layers <= len(model.layers):
        raise ValueError(f"layers must be in 1..{len(model.layers)}, got {layers}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [np.asarray(version, dtype="<i4").tobytes(), np.asarray([seen], dtype="<i8").tobytes()]
    for layer in model.conv_layers()[: _conv_count(model, layers)]:
        for tensor in _conv_arrays(layer):
            parts.append(tensor.detach().cpu().numpy().astype("<f4").tobytes())
    temp = path.with_name(path.name + ".tmp")
    temp.write_bytes(b"".join(parts))
    temp.replace(path)
    return path


def randomize(model: Darknet, seed: int = 0) -> Darknet:
    """Random weights with sane batch-norm statistics (variance in [0.5, 1.5]), for tests."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.conv_layers():
            fan_in = layer.conv.weight[0].numel()
            layer.conv.weight.copy_(
                torch.randn(layer.conv.weight.shape, generator=generator) / fan_in**0.5
            )
            if layer.bn is not None:
                n = layer.bn.num_features
                layer.bn.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                layer.bn.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                layer.bn.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                layer.bn.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            else:
                assert layer.conv.bias is not None
                layer.conv.bias.copy_(torch.randn(layer.conv.bias.shape, generator=generator))
    return model


def count_parameters(model: nn.Module) -> int:
    """Trainable PyTorch parameters (darknet's count also includes the batch-norm statistics)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Print a darknet cfg's layer table, parameter count and weights file size",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("cfg", help="a .cfg file, or yolov3 / yolov3-tiny / yolov3-spp")
    parser.add_argument("--size", type=int, default=None, help="input size (default: the cfg's)")
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one line")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = get_args_parser().parse_args(argv)
    if args.size is not None and (args.size < 32 or args.size % 32):
        raise UserError(
            f"--size must be a positive multiple of 32, got {args.size}", fix="e.g. 416"
        )
    spec = parse_cfg(args.cfg, size=args.size)
    print(layer_table(spec))
    summary = describe(spec)
    print(f"parameters: {summary['parameters']}")
    print(f"weights_bytes: {summary['weights_bytes']}")
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
