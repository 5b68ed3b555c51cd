"""MobileNet-SSD in Caffe (20 VOC classes + background, 300 x 300) run by ``cv2.dnn.readNetFromCaffe``.

The seed's lessons 3 and 4 load chuanqi305's MobileNet-SSD (Howard et al. 2017's MobileNet v1 with
width 1.0 as the SSD backbone of Liu et al. 2016, trained on VOC07+12, BatchNorm folded into the
convolutions) with OpenCV's DNN module. This file holds that network in three visible pieces:

- :data:`BACKBONE`, :data:`EXTRAS`, :data:`HEADS`: the published deploy network as tables (layer
  names as in the published ``MobileNetSSD_deploy.prototxt``, so the published weights bind to them),
  from which :func:`deploy_prototxt` writes the prototxt of this folder
  (``MobileNetSSD_deploy.prototxt``, tested equal to the generator's output);
- :func:`caffe_weights`: the weights by URL, hash-checked, in the torch hub cache
  (:func:`detseg.pretrained.cache_path`); offline, one line names the URL, where to put the file
  and the alternative that needs no download;
- :func:`prior_boxes` and :func:`decode_detection_out`: the default boxes written from the
  prototxt's ``PriorBox`` settings (tested equal to OpenCV's layer) and the decoding of the
  network's ``[1, 1, N, 7]`` output ``(image, label, score, x0, y0, x1, y1)`` (normalised) to pixels.

:func:`random_caffemodel` writes a ``.caffemodel`` with random weights for this prototxt by encoding
Caffe's ``NetParameter`` protobuf by hand (tests, and the lesson offline).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detseg.errors import UserError

FOLDER = Path(__file__).resolve().parent
PROTOTXT = FOLDER / "MobileNetSSD_deploy.prototxt"

VOC_CLASSES: list[str] = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]  # fmt: skip

INPUT_SIZE = 300
# the published preprocessing: (pixel - 127.5) * 0.007843, BGR channel order, 300 x 300
MEAN, SCALE = 127.5, 0.007843

# The published weights (chuanqi305/MobileNet-SSD, the BN-folded deploy model). No SHA-256 is
# published for this file; OpenCV's samples/dnn/download_models.py pins its SHA-1, checked here.
WEIGHTS_URL = (
    "https://github.com/PINTO0309/MobileNet-SSD-RealSense/raw/master/caffemodel/MobileNetSSD/"
    "MobileNetSSD_deploy.caffemodel"
)
WEIGHTS_SHA1 = "994d30a8afaa9e754d17d2373b2d62a7dfbaaf7a"
OFFLINE_HINT = (
    "or run the same OpenCV DNN path on a detector trained here without any download: "
    "python 04_basic_object_detection/train_detector.py, then detect_image.py --weights <best.pt> "
    "--runtime opencv"
)

# MobileNet v1 (width 1.0): conv0 is a full 3 x 3 conv, stride 2; then 13 depthwise-separable
# blocks (3 x 3 depthwise "convN/dw" + 1 x 1 pointwise "convN"): (name, stride, output channels)
BACKBONE: list[tuple[str, int, int]] = [
    ("conv1", 1, 64), ("conv2", 2, 128), ("conv3", 1, 128), ("conv4", 2, 256), ("conv5", 1, 256),
    ("conv6", 2, 512), ("conv7", 1, 512), ("conv8", 1, 512), ("conv9", 1, 512),
    ("conv10", 1, 512), ("conv11", 1, 512), ("conv12", 2, 1024), ("conv13", 1, 1024),
]  # fmt: skip
# SSD's extra feature layers: 1 x 1 reduce ("_1") then 3 x 3 stride 2 ("_2"): (name, reduce, out)
EXTRAS: list[tuple[str, int, int]] = [
    ("conv14", 256, 512), ("conv15", 128, 256), ("conv16", 128, 256), ("conv17", 64, 128),
]  # fmt: skip
# the six maps that predict (19, 10, 5, 3, 2, 1 cells at 300 px): (layer, min size, max size or
# None, aspect ratios besides 1 (each also flipped)); sizes in input pixels
HEADS: list[tuple[str, float, float | None, tuple[float, ...]]] = [
    ("conv11", 60.0, None, (2.0,)),
    ("conv13", 105.0, 150.0, (2.0, 3.0)),
    ("conv14_2", 150.0, 195.0, (2.0, 3.0)),
    ("conv15_2", 195.0, 240.0, (2.0, 3.0)),
    ("conv16_2", 240.0, 285.0, (2.0, 3.0)),
    ("conv17_2", 285.0, 300.0, (2.0, 3.0)),
]
VARIANCES = (0.1, 0.1, 0.2, 0.2)
NMS_THRESHOLD, TOP_K, KEEP_TOP_K, CONFIDENCE_THRESHOLD = 0.45, 100, 100, 0.3


def priors_per_cell(max_size: float | None, ratios: Sequence[float]) -> int:
    """Default boxes per cell: the square of ``min_size``, the square of sqrt(min * max) when a
    ``max_size`` is given, and one box per ratio and its flip."""
    return 1 + (max_size is not None) + 2 * len(ratios)


# ---------------------------------------------------------------------------------------------
# the prototxt


def _conv_layers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """One Convolution (+ ReLU unless ``relu`` is False); spec keys: name, bottom, out, kernel,
    stride, pad, group."""
    layers = [{"name": spec["name"], "type": "Convolution", "bottom": [spec["bottom"]],
               "top": [spec["name"]], "conv": spec}]  # fmt: skip
    if spec.get("relu", True):
        layers.append({"name": f"{spec['name']}/relu", "type": "ReLU",
                       "bottom": [spec["name"]], "top": [spec["name"]]})  # fmt: skip
    return layers


def conv_specs() -> list[dict[str, Any]]:
    """Every convolution of the deploy network in order, with the shape of its weights.

    Returns:
        dicts with ``name, bottom, out, in, kernel, stride, pad, group, relu``; the weight blob is
        ``[out, in / group, kernel, kernel]``, the bias ``[out]``.
    """
    specs = [dict(name="conv0", bottom="data", out=32, kernel=3, stride=2, pad=1, group=1)]
    specs[0]["in"] = 3
    channels, bottom = 32, "conv0"
    for name, stride, out in BACKBONE:
        specs.append(dict(name=f"{name}/dw", bottom=bottom, out=channels, kernel=3,
                          stride=stride, pad=1, group=channels, **{"in": channels}))  # fmt: skip
        specs.append(dict(name=name, bottom=f"{name}/dw", out=out, kernel=1, stride=1, pad=0,
                          group=1, **{"in": channels}))  # fmt: skip
        channels, bottom = out, name
    outputs = {name: out for name, _, out in BACKBONE}
    for name, reduce, out in EXTRAS:
        specs.append(dict(name=f"{name}_1", bottom=bottom, out=reduce, kernel=1, stride=1, pad=0,
                          group=1, **{"in": channels}))  # fmt: skip
        specs.append(dict(name=f"{name}_2", bottom=f"{name}_1", out=out, kernel=3, stride=2,
                          pad=1, group=1, **{"in": reduce}))  # fmt: skip
        channels, bottom = out, f"{name}_2"
        outputs[f"{name}_2"] = out
    for layer, _, max_size, ratios in HEADS:
        priors = priors_per_cell(max_size, ratios)
        for kind, per_prior in (("loc", 4), ("conf", len(VOC_CLASSES))):
            specs.append(dict(name=f"{layer}_mbox_{kind}", bottom=layer, out=priors * per_prior,
                              kernel=1, stride=1, pad=0, group=1, relu=False,
                              **{"in": outputs[layer]}))  # fmt: skip
    return specs


def network_layers() -> list[dict[str, Any]]:
    """The deploy network as a list of layer dicts, in prototxt order."""
    specs = conv_specs()
    heads = {s["name"] for s in specs if "_mbox_" in s["name"]}
    layers: list[dict[str, Any]] = []
    for spec in specs:
        if spec["name"] not in heads:
            layers += _conv_layers(spec)
    for layer, min_size, max_size, ratios in HEADS:
        for kind in ("loc", "conf"):
            name = f"{layer}_mbox_{kind}"
            layers += _conv_layers(next(s for s in specs if s["name"] == name))
            layers.append({"name": f"{name}_perm", "type": "Permute", "bottom": [name],
                           "top": [f"{name}_perm"], "permute": (0, 2, 3, 1)})  # fmt: skip
            layers.append({"name": f"{name}_flat", "type": "Flatten", "bottom": [f"{name}_perm"],
                           "top": [f"{name}_flat"], "axis": 1})  # fmt: skip
        layers.append({"name": f"{layer}_mbox_priorbox", "type": "PriorBox",
                       "bottom": [layer, "data"], "top": [f"{layer}_mbox_priorbox"],
                       "prior": (min_size, max_size, ratios)})  # fmt: skip
    for kind, axis in (("loc", 1), ("conf", 1), ("priorbox", 2)):
        suffix = "" if kind == "priorbox" else "_flat"
        layers.append({"name": f"mbox_{kind}", "type": "Concat",
                       "bottom": [f"{h[0]}_mbox_{kind}{suffix}" for h in HEADS],
                       "top": [f"mbox_{kind}"], "axis": axis})  # fmt: skip
    layers += [
        {"name": "mbox_conf_reshape", "type": "Reshape", "bottom": ["mbox_conf"],
         "top": ["mbox_conf_reshape"], "shape": (0, -1, len(VOC_CLASSES))},
        {"name": "mbox_conf_softmax", "type": "Softmax", "bottom": ["mbox_conf_reshape"],
         "top": ["mbox_conf_softmax"], "axis": 2},
        {"name": "mbox_conf_flatten", "type": "Flatten", "bottom": ["mbox_conf_softmax"],
         "top": ["mbox_conf_flatten"], "axis": 1},
        {"name": "detection_out", "type": "DetectionOutput",
         "bottom": ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"], "top": ["detection_out"]},
    ]  # fmt: skip
    return layers


def _layer_text(layer: dict[str, Any]) -> list[str]:
    lines = ["layer {", f'  name: "{layer["name"]}"', f'  type: "{layer["type"]}"']
    lines += [f'  bottom: "{b}"' for b in layer["bottom"]]
    lines += [f'  top: "{t}"' for t in layer["top"]]
    kind = layer["type"]
    if kind == "Convolution":
        conv = layer["conv"]
        body = [f"num_output: {conv['out']}"]
        body += [f"pad: {conv['pad']}"] if conv["pad"] else []
        body += [f"kernel_size: {conv['kernel']}"]
        body += [f"stride: {conv['stride']}"] if conv["stride"] != 1 else []
        body += [f"group: {conv['group']}"] if conv["group"] != 1 else []
        lines += ["  convolution_param {", *(f"    {b}" for b in body), "  }"]
    elif kind == "Permute":
        lines += ["  permute_param {", *(f"    order: {o}" for o in layer["permute"]), "  }"]
    elif kind in ("Flatten", "Concat", "Softmax"):
        param = {"Flatten": "flatten_param", "Concat": "concat_param", "Softmax": "softmax_param"}
        lines += [f"  {param[kind]} {{", f"    axis: {layer['axis']}", "  }"]
    elif kind == "Reshape":
        dims = [f"      dim: {d}" for d in layer["shape"]]
        lines += ["  reshape_param {", "    shape {", *dims, "    }", "  }"]
    elif kind == "PriorBox":
        min_size, max_size, ratios = layer["prior"]
        body = [f"min_size: {min_size}"] + ([f"max_size: {max_size}"] if max_size else [])
        body += [f"aspect_ratio: {r}" for r in ratios]
        body += ["flip: true", "clip: false", *(f"variance: {v}" for v in VARIANCES)]
        body += ["offset: 0.5"]
        lines += ["  prior_box_param {", *(f"    {b}" for b in body), "  }"]
    elif kind == "DetectionOutput":
        lines += [
            "  detection_output_param {",
            f"    num_classes: {len(VOC_CLASSES)}",
            "    share_location: true",
            "    background_label_id: 0",
            "    nms_param {",
            f"      nms_threshold: {NMS_THRESHOLD}",
            f"      top_k: {TOP_K}",
            "    }",
            "    code_type: CENTER_SIZE",
            f"    keep_top_k: {KEEP_TOP_K}",
            f"    confidence_threshold: {CONFIDENCE_THRESHOLD}",
            "  }",
        ]
    return [*lines, "}"]


def deploy_prototxt() -> str:
    """The text of ``MobileNetSSD_deploy.prototxt`` (deploy network, BatchNorm folded)."""
    lines = ['name: "MobileNet-SSD"', 'input: "data"', "input_shape {", "  dim: 1", "  dim: 3",
             f"  dim: {INPUT_SIZE}", f"  dim: {INPUT_SIZE}", "}"]  # fmt: skip
    for layer in network_layers():
        lines += _layer_text(layer)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# weights: the published file, or random ones written by hand in Caffe's protobuf format


def weights_path() -> Path:
    """Where the published weights are kept: ``<torch hub>/checkpoints/MobileNetSSD_deploy.caffemodel``."""
    from detseg.pretrained import cache_path

    return cache_path(WEIGHTS_URL)


def _sha1(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha1").hexdigest()


def caffe_weights(*, progress: bool = True) -> Path:
    """The path of the published ``.caffemodel``: the cached file (trusted as it is, like
    torchvision's hub cache), else downloaded from :data:`WEIGHTS_URL` and SHA-1-checked.

    Raises:
        UserError: offline (names the URL, the path and the alternative) or a hash mismatch.
    """
    import urllib.error

    import torch.hub

    path = weights_path()
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        torch.hub.download_url_to_file(WEIGHTS_URL, str(partial), progress=progress)
    except (urllib.error.URLError, OSError) as err:
        partial.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        raise UserError(
            f"could not download the MobileNet-SSD weights from {WEIGHTS_URL} ({reason})",
            path=path,
            fix=f"download the file on a machine with internet and put it at {path}, "
            + OFFLINE_HINT,
        ) from err
    digest = _sha1(partial)
    if digest != WEIGHTS_SHA1:
        partial.unlink(missing_ok=True)
        raise UserError(
            f"the file from {WEIGHTS_URL} has SHA-1 {digest}, expected {WEIGHTS_SHA1}",
            path=path,
            fix="retry; if it persists the server copy changed",
        )
    partial.replace(path)
    print(f"MobileNet-SSD weights: {path} (SHA-256 {_sha256(path)})", file=sys.stderr)
    return path


def _sha256(path: Path) -> str:
    from detseg.data.download import sha256_of

    return sha256_of(path)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 -> two's complement, as protobuf does
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2): key, length, bytes."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_blob(array: np.ndarray) -> bytes:
    """Caffe ``BlobProto``: ``shape`` (field 7, a ``BlobShape`` of packed int64 ``dim``, field 1)
    and ``data`` (field 5, packed little-endian float32)."""
    dims = b"".join(_varint(int(d)) for d in array.shape)
    data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    return _field(7, _field(1, dims)) + _field(5, data)


def encode_net(name: str, blobs: dict[str, list[np.ndarray]]) -> bytes:
    """Caffe ``NetParameter``: ``name`` (field 1) and one ``LayerParameter`` (field 100: ``name``
    1, ``type`` 2, ``blobs`` 7) per layer that has weights. OpenCV binds them to the prototxt's
    layers by name."""
    message = _field(1, name.encode())
    for layer_name, arrays in blobs.items():
        layer = _field(1, layer_name.encode()) + _field(2, b"Convolution")
        layer += b"".join(_field(7, encode_blob(a)) for a in arrays)
        message += _field(100, layer)
    return message


def random_blobs(seed: int = 0, *, conf_bias: dict[int, float] | None = None) -> dict[str, list]:
    """He-normal weights and zero biases for every convolution of :func:`conv_specs` (the
    activations keep their scale through the ReLUs). ``conf_bias`` ``{class: value}`` adds a bias
    to that class's logit in every confidence head (tests: a known winner)."""
    rng = np.random.default_rng(seed)
    blobs = {}
    for spec in conv_specs():
        fan_in = spec["in"] // spec["group"] * spec["kernel"] ** 2
        shape = (spec["out"], spec["in"] // spec["group"], spec["kernel"], spec["kernel"])
        weight = rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32)
        bias = np.zeros(spec["out"], np.float32)
        if spec["name"].endswith("_mbox_conf") and conf_bias:
            for label, value in conf_bias.items():
                bias[label :: len(VOC_CLASSES)] += value
        blobs[spec["name"]] = [weight, bias]
    return blobs


def random_caffemodel(path: str | Path, seed: int = 0, **options: Any) -> Path:
    """Write a ``.caffemodel`` with :func:`random_blobs` for this folder's prototxt."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_net("MobileNet-SSD", random_blobs(seed, **options)))
    return path


# ---------------------------------------------------------------------------------------------
# running it: priors, the network, decoding


def load_net(weights: str | Path | None = None) -> Any:
    """``cv2.dnn.readNetFromCaffe(<this folder's prototxt>, weights or caffe_weights())``."""
    import cv2

    weights = Path(weights) if weights is not None else caffe_weights()
    try:
        return cv2.dnn.readNetFromCaffe(str(PROTOTXT), str(weights))
    except cv2.error as err:
        raise UserError(
            f"OpenCV cannot read these Caffe weights ({str(err).strip().splitlines()[-1]})",
            path=weights,
            fix=f"delete it and download again from {WEIGHTS_URL}",
        ) from err


def to_blob(image: np.ndarray) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> ``[1, 3, 300, 300]`` float32: resized, BGR, (x - 127.5) * 0.007843."""
    import cv2

    resized = cv2.resize(image, (INPUT_SIZE, INPUT_SIZE))
    return cv2.dnn.blobFromImage(resized, SCALE, (INPUT_SIZE, INPUT_SIZE), MEAN, swapRB=True)


def feature_sizes(size: int = INPUT_SIZE) -> list[int]:
    """Cells per side of the six predicting maps: each stride-2 3 x 3 conv with pad 1 maps n to
    (n - 1) // 2 + 1: 300 -> 150 -> 75 -> 38 -> 19 (conv11) -> 10 (conv13) -> 5 -> 3 -> 2 -> 1."""
    sizes, n = {}, (size - 1) // 2 + 1  # conv0
    for name, stride, _ in BACKBONE:
        n = (n - 1) // stride + 1
        sizes[name] = n
    for name, _, _ in EXTRAS:
        n = (n - 1) // 2 + 1
        sizes[f"{name}_2"] = n
    return [sizes[layer] for layer, *_ in HEADS]


def prior_boxes(size: int = INPUT_SIZE) -> np.ndarray:
    """SSD's default boxes as Caffe's ``PriorBox`` makes them, all maps concatenated.

    Per cell (row-major) of a ``n x n`` map with step ``size / n``, centre ``(j + 0.5) * step``:
    the square of side ``min``, the square of side ``sqrt(min * max)``, then for each ratio r a
    box ``min * sqrt(r)`` wide and ``min / sqrt(r)`` high and its flip; not clipped.

    Returns:
        [P, 4] xyxy normalised by ``size`` (1917 boxes at 300 px).
    """
    boxes = []
    for (_, min_size, max_size, ratios), cells in zip(HEADS, feature_sizes(size)):
        step = size / cells
        shapes = [(min_size, min_size)]
        if max_size is not None:
            side = np.sqrt(min_size * max_size)
            shapes.append((side, side))
        for ratio in ratios:
            root = np.sqrt(ratio)
            shapes += [(min_size * root, min_size / root), (min_size / root, min_size * root)]
        centres = (np.arange(cells) + 0.5) * step
        cy, cx = np.meshgrid(centres, centres, indexing="ij")  # [n, n] each
        centre = np.stack([cx, cy], -1).reshape(-1, 1, 2)  # [n * n, 1, 2]
        half = np.asarray(shapes).reshape(1, -1, 2) / 2  # [1, priors per cell, 2]
        boxes.append(np.concatenate([centre - half, centre + half], -1).reshape(-1, 4))
    return (np.concatenate(boxes) / size).astype(np.float32)


def detection_output(
    loc: np.ndarray, conf: np.ndarray, priors: np.ndarray | None = None
) -> np.ndarray:
    """Caffe's ``DetectionOutput`` layer written out: what the network's last layer computes from
    ``mbox_loc`` and ``mbox_conf_flatten`` (tested equal to OpenCV's layer).

    Box decoding ``CENTER_SIZE`` with the prior's variances ``(0.1, 0.1, 0.2, 0.2)``: centre
    ``p_c + 0.1 * d_c * p_size``, size ``p_size * exp(0.2 * d_size)``; then for each class but the
    background: scores above ``confidence_threshold``, the best ``top_k``, greedy NMS at 0.45;
    then the best ``keep_top_k`` of all classes.

    Args:
        loc: [P * 4] or [P, 4] regressions; conf: [P * 21] or [P, 21] softmax scores.
        priors: [P, 4] normalised xyxy (default :func:`prior_boxes`).
    Returns:
        [1, 1, N, 7] rows ``(0, label, score, x0, y0, x1, y1)``, sorted by score (OpenCV's
        layer adds rows of zeros up to ``keep_top_k``; these are not written here).
    """
    from detseg.boxes import nms

    priors = prior_boxes() if priors is None else priors
    loc = loc.reshape(-1, 4)
    conf = conf.reshape(len(loc), -1)
    prior_size = priors[:, 2:] - priors[:, :2]
    prior_centre = priors[:, :2] + prior_size / 2
    centre = prior_centre + np.asarray(VARIANCES[:2]) * loc[:, :2] * prior_size
    size = prior_size * np.exp(np.asarray(VARIANCES[2:]) * loc[:, 2:])
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1).astype(np.float32)
    rows = []
    for label in range(1, conf.shape[1]):
        score = conf[:, label]
        keep = np.flatnonzero(score > CONFIDENCE_THRESHOLD)
        keep = keep[np.argsort(-score[keep], kind="stable")][:TOP_K]
        if len(keep):
            kept = keep[np.asarray(nms(boxes[keep], score[keep], NMS_THRESHOLD), dtype=np.int64)]
            rows += [(0.0, float(label), float(score[i]), *boxes[i]) for i in kept]
    table = np.asarray(rows, np.float32).reshape(-1, 7)
    table = table[np.argsort(-table[:, 2], kind="stable")][:KEEP_TOP_K]
    return table[None, None]


def decode_detection_out(
    output: np.ndarray, image_size: tuple[int, int], score_threshold: float = 0.5
) -> dict[str, np.ndarray]:
    """The ``detection_out`` blob ``[1, 1, N, 7]`` -> detections in pixels of the original image.

    Each row is ``(image index, label, score, x0, y0, x1, y1)`` with corners normalised to [0, 1]
    (not clipped: boxes may reach past the border). OpenCV pads the blob to ``keep_top_k`` rows
    with zeros (label 0, the background); those and rows below ``score_threshold`` are dropped.

    Args:
        output: the network's output, float32 ``[1, 1, N, 7]``.
        image_size: ``(height, width)`` of the image that was resized to 300 x 300.
    Returns:
        ``{"boxes": [K, 4] xyxy pixels clipped to the image, "scores": [K], "labels": [K]}``
        (labels index :data:`VOC_CLASSES`), sorted by score.
    """
    if output.ndim != 4 or output.shape[:2] != (1, 1) or output.shape[3] != 7:
        raise ValueError(f"expected a [1, 1, N, 7] detection output, got {output.shape}")
    rows = output[0, 0]
    rows = rows[(rows[:, 1] >= 1) & (rows[:, 2] >= score_threshold)]
    rows = rows[np.argsort(-rows[:, 2], kind="stable")]
    height, width = image_size
    scale = np.array([width, height, width, height], np.float32)
    boxes = np.clip(rows[:, 3:7] * scale, 0, scale).astype(np.float32)
    return {"boxes": boxes, "scores": rows[:, 2].astype(np.float32),
            "labels": rows[:, 1].astype(np.int64)}  # fmt: skip


def caffe_predictor(weights: str | Path | None = None, *, score_threshold: float = 0.5) -> Any:
    """A :class:`detector_runtime.Predictor` for MobileNet-SSD on OpenCV DNN (VOC class names)."""
    from detector_runtime import Predictor

    net = load_net(weights)

    def predict(image: np.ndarray) -> dict[str, np.ndarray]:
        net.setInput(to_blob(image))
        return decode_detection_out(net.forward(), image.shape[:2], score_threshold)

    return Predictor("mobilenet-ssd caffe, opencv", predict, VOC_CLASSES)


if __name__ == "__main__":  # regenerate the prototxt of this folder
    PROTOTXT.write_text(deploy_prototxt())
    print(PROTOTXT)
