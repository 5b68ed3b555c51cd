"""Darknet ``.cfg`` files: parse, check, infer every layer's shape, count the weights, and write
a cfg for custom classes.

A cfg is a list of ``[section]`` blocks of ``key=value`` lines (``#`` / ``;`` start a comment). The
first block is ``[net]`` (input size, training settings); every other block is one layer, numbered
0, 1, 2 ... in file order. Routes and shortcuts name other layers by that number, absolute
(``61``) or relative to themselves (``-4``). The layer types of YOLOv3, YOLOv3-tiny and YOLOv3-SPP:

=================  ==========================================================================
``convolutional``  ``filters``, ``size``, ``stride``, ``pad`` (1 = ``size // 2``), optional
                   ``batch_normalize=1`` (then no bias), ``activation`` = ``leaky`` / ``linear``
``shortcut``       ``from``: adds that layer's output to the previous one (residual)
``route``          ``layers``: concatenates the outputs of one or more layers along channels
``upsample``       ``stride``: nearest-neighbour upsampling
``maxpool``        ``size``, ``stride``; darknet pads ``size - 1`` pixels (half before, half after)
``yolo``           ``mask`` (which of ``anchors`` this scale uses), ``anchors``, ``classes``;
                   optional ``scale_x_y`` (YOLOv4's; 1 by default): the box centre is
                   ``col + scale_x_y * sigmoid(tx) - (scale_x_y - 1) / 2`` cells, so 2 lets it
                   reach -0.5..1.5 (what YOLOv5-style assignment to neighbour cells needs)
=================  ==========================================================================

Everything here is plain Python (no torch): ``darknet.py`` builds the model from :class:`LayerSpec`.
Bad input raises :class:`~detseg.errors.UserError` naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detseg.errors import UserError

FOLDER = Path(__file__).resolve().parent
CFG_DIR = FOLDER / "cfg"
OFFICIAL_CFGS = {name: CFG_DIR / f"{name}.cfg" for name in ("yolov3", "yolov3-tiny", "yolov3-spp")}
LAYER_TYPES = ("convolutional", "shortcut", "route", "upsample", "maxpool", "yolo")
ACTIVATIONS = ("leaky", "linear")
HEADER_BYTES = 20  # int32 major, minor, revision + int64 images seen (format version >= 0.2)
# which keys each layer type must have (darknet has silent defaults; we prefer a clear error)
REQUIRED = {
    "convolutional": ("filters", "size"),
    "shortcut": ("from",),
    "route": ("layers",),
    "upsample": (),
    "maxpool": ("size",),
    "yolo": ("mask", "anchors", "classes"),
}


@dataclass
class Section:
    """One ``[kind]`` block: its options as written, and the line of the header and of each key."""

    kind: str
    line: int
    options: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)


@dataclass
class LayerSpec:
    """One layer with its shapes resolved.

    Attributes:
        index: 0-based layer number (the numbers routes and shortcuts use).
        kind: section name (``convolutional``, ``route`` ...).
        line: line of the section header in the cfg.
        in_shape, out_shape: (channels, height, width) for a batch of one.
        sources: absolute indices of the layers a route / shortcut reads.
        params: how many float32 numbers this layer stores in a ``.weights`` file.
        options: the section's raw options.
    """

    index: int
    kind: str
    line: int
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    sources: list[int] = field(default_factory=list)
    params: int = 0
    options: dict[str, str] = field(default_factory=dict)
    # convolutional
    filters: int = 0
    size: int = 0
    stride: int = 1
    padding: int = 0
    batch_normalize: bool = False
    activation: str = "linear"
    # yolo
    anchors: list[tuple[float, float]] = field(default_factory=list)
    num_classes: int = 0
    scale_xy: float = 1.0


@dataclass
class NetSpec:
    """A parsed cfg: input size, layers, and where it came from."""

    path: str
    width: int
    height: int
    channels: int
    layers: list[LayerSpec]
    options: dict[str, str] = field(default_factory=dict)

    @property
    def yolo_layers(self) -> list[LayerSpec]:
        return [layer for layer in self.layers if layer.kind == "yolo"]

    @property
    def num_params(self) -> int:
        """float32 numbers in the weights file = darknet's parameter count."""
        return sum(layer.params for layer in self.layers)

    @property
    def weights_bytes(self) -> int:
        """Size of the ``.weights`` file this cfg implies (20-byte header + 4 bytes a number)."""
        return HEADER_BYTES + 4 * self.num_params

    @property
    def num_classes(self) -> int:
        return self.yolo_layers[0].num_classes if self.yolo_layers else 0


def resolve_cfg(cfg: str | Path) -> Path:
    """``yolov3`` / ``yolov3-tiny`` / ``yolov3-spp`` -> this folder's cfg; anything else is a path."""
    if str(cfg) in OFFICIAL_CFGS:
        return OFFICIAL_CFGS[str(cfg)]
    path = Path(cfg)
    if not path.is_file():
        raise UserError(
            "cfg file not found",
            path=path,
            fix=f"pass a darknet .cfg file or one of {', '.join(OFFICIAL_CFGS)}",
        )
    return path


def parse_sections(text: str, path: str = "<cfg>") -> list[Section]:
    """Split cfg text into sections (comments and blank lines dropped)."""
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise UserError(
                    f"malformed section header {line!r}", path=path, line=number,
                    fix="write it as [name], e.g. [convolutional]",
                )  # fmt: skip
            sections.append(Section(line[1:-1].strip().lower(), number))
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise UserError(
                f"expected key=value or [section], got {line!r}", path=path, line=number,
                fix="fix the line or comment it out with #",
            )  # fmt: skip
        if not sections:
            raise UserError(
                f"option {key.strip()!r} before the first [section]", path=path, line=number,
                fix="start the file with [net]",
            )  # fmt: skip
        sections[-1].options[key.strip()] = value.strip()
        sections[-1].lines[key.strip()] = number
    return sections


def _int(section: Section, key: str, path: str, default: int | None = None) -> int:
    if key not in section.options:
        if default is None:
            raise UserError(
                f"[{section.kind}] has no {key}=", path=path, line=section.line,
                fix=f"add {key}=<number> to this section",
            )  # fmt: skip
        return default
    text = section.options[key]
    try:
        return int(text)
    except ValueError:
        raise UserError(
            f"{key}={text!r} is not an integer", path=path, line=section.lines[key],
            fix=f"write {key}=<integer>",
        ) from None  # fmt: skip


def _ints(section: Section, key: str, path: str) -> list[int]:
    text = section.options[key]
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(
            f"{key}={text!r} is not a comma-separated list of integers", path=path,
            line=section.lines[key], fix=f"e.g. {key}=-1, 61",
        ) from None  # fmt: skip


def _floats(section: Section, key: str, path: str) -> list[float]:
    text = section.options[key]
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(
            f"{key}={text!r} is not a comma-separated list of numbers", path=path,
            line=section.lines[key], fix="e.g. anchors = 10,14,  23,27,  37,58",
        ) from None  # fmt: skip


def _source(section: Section, key: str, path: str, index: int, value: int) -> int:
    """A route / shortcut reference -> absolute layer index, checked to exist before ``index``."""
    absolute = index + value if value < 0 else value
    if not 0 <= absolute < index:
        raise UserError(
            f"layer {index} [{section.kind}] {key} refers to layer {absolute} (from {value}), "
            f"which does not exist before it (layers 0..{index - 1})",
            path=path, line=section.lines.get(key, section.line),
            fix="use a negative offset or the number of an earlier layer",
        )  # fmt: skip
    return absolute


def parse_cfg(cfg: str | Path, *, size: int | tuple[int, int] | None = None) -> NetSpec:
    """Read a cfg file and resolve every layer (shapes, sources, weight counts).

    Args:
        cfg: a path, or ``yolov3`` / ``yolov3-tiny`` / ``yolov3-spp`` for this folder's copies.
        size: input size overriding ``[net] width / height`` (int or (height, width)); must be a
            multiple of the network's total stride (32 for YOLOv3).
    Raises:
        UserError: unknown section, missing or malformed key, reference to a missing layer,
            shapes that do not fit, a conv before [yolo] with the wrong number of filters.
    """
    path = resolve_cfg(cfg)
    text = path.read_text(encoding="utf-8", errors="replace")
    return parse_cfg_text(text, str(path), size=size)


def parse_cfg_text(
    text: str, path: str = "<cfg>", *, size: int | tuple[int, int] | None = None
) -> NetSpec:
    """:func:`parse_cfg` on cfg text (``path`` is only used in messages)."""
    sections = parse_sections(text, path)
    if not sections or sections[0].kind not in ("net", "network"):
        line = sections[0].line if sections else 1
        raise UserError("the first section must be [net]", path=path, line=line,
                        fix="start the file with [net] and width=, height=, channels=")  # fmt: skip
    net = sections[0]
    width, height = _int(net, "width", path), _int(net, "height", path)
    if size is not None:
        height, width = (size, size) if isinstance(size, int) else size
    channels = _int(net, "channels", path, default=3)
    layers: list[LayerSpec] = []
    shape = (channels, height, width)
    for index, section in enumerate(sections[1:]):
        if section.kind not in LAYER_TYPES:
            raise UserError(
                f"unknown section [{section.kind}]", path=path, line=section.line,
                fix=f"this reader knows [net] and {', '.join(f'[{t}]' for t in LAYER_TYPES)}",
            )  # fmt: skip
        for key in REQUIRED[section.kind]:
            if key not in section.options:
                raise UserError(
                    f"layer {index} [{section.kind}] has no {key}=", path=path,
                    line=section.line, fix=f"add {key}=... to this section",
                )  # fmt: skip
        layer = _build_layer(section, index, shape, layers, path)
        layers.append(layer)
        shape = layer.out_shape
    spec = NetSpec(path, width, height, channels, layers, dict(net.options))
    _check_heads(spec, sections[1:], path)
    return spec


def _build_layer(
    section: Section, index: int, shape: tuple[int, int, int], layers: list[LayerSpec], path: str
) -> LayerSpec:
    channels, height, width = shape
    layer = LayerSpec(index, section.kind, section.line, shape, shape, options=section.options)
    kind = section.kind
    if kind == "convolutional":
        layer.filters = _int(section, "filters", path)
        layer.size = _int(section, "size", path)
        layer.stride = _int(section, "stride", path, default=1)
        pad = _int(section, "pad", path, default=0)
        layer.padding = layer.size // 2 if pad else _int(section, "padding", path, default=0)
        layer.batch_normalize = bool(_int(section, "batch_normalize", path, default=0))
        layer.activation = section.options.get("activation", "logistic")
        if layer.activation not in ACTIVATIONS:
            raise UserError(
                f"activation={layer.activation} is not supported", path=path,
                line=section.lines.get("activation", section.line),
                fix=f"use one of {', '.join(ACTIVATIONS)} (the activations of YOLOv3)",
            )  # fmt: skip
        if min(layer.filters, layer.size, layer.stride) < 1:
            raise UserError(f"layer {index}: filters, size and stride must be >= 1", path=path,
                            line=section.line, fix="fix the numbers of this section")  # fmt: skip
        out_h = (height + 2 * layer.padding - layer.size) // layer.stride + 1
        out_w = (width + 2 * layer.padding - layer.size) // layer.stride + 1
        layer.out_shape = (layer.filters, out_h, out_w)
        weights = layer.filters * channels * layer.size * layer.size
        layer.params = weights + layer.filters * (4 if layer.batch_normalize else 1)
    elif kind == "maxpool":
        layer.size = _int(section, "size", path)
        layer.stride = _int(section, "stride", path, default=1)
        layer.padding = _int(section, "padding", path, default=layer.size - 1)
        out_h = (height + layer.padding - layer.size) // layer.stride + 1
        out_w = (width + layer.padding - layer.size) // layer.stride + 1
        layer.out_shape = (channels, out_h, out_w)
    elif kind == "upsample":
        layer.stride = _int(section, "stride", path, default=2)
        layer.out_shape = (channels, height * layer.stride, width * layer.stride)
    elif kind == "shortcut":
        values = _ints(section, "from", path)
        layer.sources = [_source(section, "from", path, index, v) for v in values]
        layer.activation = section.options.get("activation", "linear")
        if layer.activation != "linear":
            raise UserError(f"shortcut activation={layer.activation} is not supported", path=path,
                            line=section.line, fix="use activation=linear")  # fmt: skip
        for source in layer.sources:
            if layers[source].out_shape != shape:
                raise UserError(
                    f"layer {index} [shortcut] adds layer {source} of shape "
                    f"{layers[source].out_shape} to the previous layer's {shape}",
                    path=path, line=section.line, fix="shortcut layers must have equal shapes",
                )  # fmt: skip
    elif kind == "route":
        values = _ints(section, "layers", path)
        if not values:
            raise UserError("route with no layers", path=path, line=section.line,
                            fix="e.g. layers = -1, 61")  # fmt: skip
        layer.sources = [_source(section, "layers", path, index, v) for v in values]
        shapes = [layers[s].out_shape for s in layer.sources]
        if len({s[1:] for s in shapes}) != 1:
            raise UserError(
                f"layer {index} [route] joins layers {layer.sources} of different sizes "
                f"{[s[1:] for s in shapes]}", path=path, line=section.line,
                fix="route only layers of the same height and width",
            )  # fmt: skip
        layer.out_shape = (sum(s[0] for s in shapes), *shapes[0][1:])
    elif kind == "yolo":
        mask = _ints(section, "mask", path)
        values = _floats(section, "anchors", path)
        if len(values) % 2:
            raise UserError("anchors needs pairs of numbers (width, height)", path=path,
                            line=section.lines["anchors"], fix="give an even count")  # fmt: skip
        pairs = list(zip(values[0::2], values[1::2]))
        if not mask or any(not 0 <= m < len(pairs) for m in mask):
            raise UserError(
                f"mask={section.options['mask']} must pick anchors 0..{len(pairs) - 1}",
                path=path, line=section.lines["mask"], fix="e.g. mask = 0,1,2",
            )  # fmt: skip
        layer.anchors = [pairs[m] for m in mask]
        layer.num_classes = _int(section, "classes", path)
        if "scale_x_y" in section.options:
            values = _floats(section, "scale_x_y", path)
            if len(values) != 1 or not 1 <= values[0] <= 4:
                raise UserError(
                    f"scale_x_y={section.options['scale_x_y']} is not one number in 1..4", path=path,
                    line=section.lines["scale_x_y"], fix="use 1 (YOLOv3) or 2 (YOLOv5-style)",
                )  # fmt: skip
            layer.scale_xy = values[0]
    return layer


def _check_heads(spec: NetSpec, sections: list[Section], path: str) -> None:
    """The layer before each [yolo] must output ``len(mask) * (5 + classes)`` channels."""
    for layer in spec.yolo_layers:
        expected = len(layer.anchors) * (5 + layer.num_classes)
        if layer.in_shape[0] != expected:
            before = spec.layers[layer.index - 1]
            raise UserError(
                f"layer {before.index} feeds [yolo] layer {layer.index} {layer.in_shape[0]} "
                f"channels, but {len(layer.anchors)} anchors x (5 + {layer.num_classes} classes) "
                f"= {expected}",
                path=path, line=sections[before.index].lines.get("filters", before.line),
                fix=f"set filters={expected} in the [convolutional] before each [yolo]",
            )  # fmt: skip
    if not spec.yolo_layers:
        raise UserError(
            "the cfg has no [yolo] layer", path=path, fix="this reader builds YOLO nets"
        )


def layer_table(spec: NetSpec) -> str:
    """Darknet-style table: index, type, filters, size / stride, input and output shapes."""
    rows = [f"{'layer':>5}  {'type':<14}{'filters':>8}  {'size/strd':<10}{'input':>16}  output"]
    for layer in spec.layers:
        c, h, w = layer.in_shape
        oc, oh, ow = layer.out_shape
        size = f"{layer.size} x {layer.size}/{layer.stride}" if layer.size else ""
        if layer.kind == "upsample":
            size = f"  x{layer.stride}"
        detail = ""
        if layer.kind in ("route", "shortcut"):
            detail = "  <- " + ", ".join(str(s) for s in layer.sources)
        filters = str(layer.filters) if layer.kind == "convolutional" else ""
        rows.append(
            f"{layer.index:>5}  {layer.kind:<14}{filters:>8}  {size:<10}"
            f"{f'{h} x {w} x {c}':>16}  {oh} x {ow} x {oc}{detail}"
        )
    return "\n".join(rows)


def custom_cfg(
    cfg: str | Path,
    num_classes: int,
    *,
    anchors: list[tuple[float, float]] | None = None,
    size: int | None = None,
    scale_xy: float = 1.0,
) -> str:
    """The text of ``cfg`` adapted to ``num_classes`` (and optionally new anchors / input size).

    What darknet's instructions for custom objects say to edit by hand: ``classes=N`` in every
    ``[yolo]``, ``filters = len(mask) x (5 + N)`` in the ``[convolutional]`` right before each, and
    ``anchors`` (e.g. from :func:`anchors.kmeans_anchors`). ``scale_xy != 1`` adds
    ``scale_x_y=...`` to each ``[yolo]`` (darknet and OpenCV read it). Everything else is kept
    line for line.
    """
    if num_classes < 1:
        raise UserError(f"num_classes must be >= 1, got {num_classes}", fix="pass e.g. 5")
    path = resolve_cfg(cfg)
    spec = parse_cfg(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    sections = parse_sections("\n".join(lines), str(path))
    anchor_text = None
    if anchors is not None:
        total = len(spec.yolo_layers[0].options["anchors"].split(",")) // 2
        if len(anchors) != total:
            raise UserError(f"{len(anchors)} anchors given, the cfg has {total}",
                            fix=f"pass {total} (width, height) pairs")  # fmt: skip
        anchor_text = ",  ".join(f"{round(w)},{round(h)}" for w, h in anchors)
    for layer in spec.yolo_layers:
        yolo = sections[layer.index + 1]
        conv = sections[layer.index]  # the layer before (sections[0] is [net])
        filters = len(layer.anchors) * (5 + num_classes)
        lines[conv.lines["filters"] - 1] = f"filters={filters}"
        lines[yolo.lines["classes"] - 1] = f"classes={num_classes}"
        if anchor_text is not None:
            lines[yolo.lines["anchors"] - 1] = f"anchors = {anchor_text}"
        if scale_xy != 1:
            key_line = yolo.lines.get("scale_x_y", yolo.lines["classes"])
            text = f"scale_x_y = {scale_xy:g}"
            if "scale_x_y" in yolo.lines:
                lines[key_line - 1] = text
            else:
                lines[key_line - 1] += f"\n{text}"
    if size is not None:
        for key in ("width", "height"):
            lines[sections[0].lines[key] - 1] = f"{key}={size}"
    return "\n".join(lines) + "\n"


def read_names(path: str | Path) -> list[str]:
    """Class names, one a line (darknet's ``coco.names``)."""
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [name for name in names if name]


def describe(spec: NetSpec) -> dict[str, Any]:
    """Summary numbers of a cfg (for the CLI and the README)."""
    return {
        "layers": len(spec.layers),
        "parameters": spec.num_params,
        "weights_bytes": spec.weights_bytes,
        "input": (spec.channels, spec.height, spec.width),
        "yolo_outputs": [layer.in_shape for layer in spec.yolo_layers],
        "num_classes": spec.num_classes,
    }
