"""02's rows of the bad-input suite (``tests/test_bad_input.py``; row format in ``detseg.bad_input``)."""

from __future__ import annotations

from detseg.bad_input import Case

S = "02_yolo_v3_darknet"
DARKNET, DETECT, TRAIN, EXPORT = (
    f"{S}/{name}.py" for name in ("darknet", "detect", "train", "export")
)
NET = b"[net]\nwidth=64\nheight=64\nchannels=3\n\n"
UNKNOWN_SECTION = (
    NET + b"[convolutional]\nfilters=8\nsize=3\nactivation=leaky\n\n[dropout]\nprobability=.5\n"
)
BAD_ROUTE = (
    NET + b"[convolutional]\nfilters=8\nsize=3\nactivation=leaky\n\n[route]\nlayers = -1, 7\n"
)
MISSING_KEY = NET + b"[convolutional]\nsize=3\nstride=1\n"
WRONG_FILTERS = NET + (
    b"[convolutional]\nfilters=20\nsize=1\nactivation=linear\n\n"
    b"[yolo]\nmask=0,1,2\nanchors=1,1, 2,2, 3,3\nclasses=2\n"
)
BAD_SCALE_XY = NET + (
    b"[convolutional]\nfilters=21\nsize=1\nactivation=linear\n\n"
    b"[yolo]\nmask=0,1,2\nanchors=1,1, 2,2, 3,3\nclasses=2\nscale_x_y=0.5\n"
)
# a darknet 0.2 header (major 0, minor 2, revision 0, 64-bit images seen), then too few numbers
SHORT_WEIGHTS = (0).to_bytes(4, "little") + (2).to_bytes(4, "little") + bytes(4 + 8 + 988)
BAD_YAML = b"names: [a, b\ntrain: x\n"

CASES = [
    Case("02-darknet-unknown-section", DARKNET, ["{tmp}/a.cfg"],
         ["{tmp}/a.cfg:11", "unknown section [dropout]"], files={"a.cfg": UNKNOWN_SECTION}),
    Case("02-darknet-route-to-missing-layer", DARKNET, ["{tmp}/a.cfg"],
         ["{tmp}/a.cfg:12", "layer 7", "does not exist"], files={"a.cfg": BAD_ROUTE}),
    Case("02-darknet-missing-key", DARKNET, ["{tmp}/a.cfg"],
         ["{tmp}/a.cfg:6", "no filters="], files={"a.cfg": MISSING_KEY}),
    Case("02-darknet-wrong-filters-before-yolo", DARKNET, ["{tmp}/a.cfg"],
         ["{tmp}/a.cfg:7", "filters=21"], files={"a.cfg": WRONG_FILTERS}),
    Case("02-darknet-bad-scale-x-y", DARKNET, ["{tmp}/a.cfg"],
         ["{tmp}/a.cfg:15", "scale_x_y=0.5"], files={"a.cfg": BAD_SCALE_XY}),
    Case("02-darknet-no-such-cfg", DARKNET, ["{tmp}/nope.cfg"], ["{tmp}/nope.cfg", "not found"]),
    Case("02-darknet-text-cfg", DARKNET, ["{tmp}/a.cfg"], ["{tmp}/a.cfg:1"], files={"a.cfg": "text"}),
    Case("02-darknet-size-not-multiple", DARKNET, ["yolov3-tiny", "--size", "100"], "--size"),
    Case("02-detect-weights-wrong-size", DETECT,
         ["--cfg", "yolov3-tiny", "--darknet-weights", "{tmp}/w.weights", "--source", "{tmp}/a.png"],
         ["{tmp}/w.weights", "1,008 bytes", "35,434,956"],
         files={"w.weights": SHORT_WEIGHTS, "a.png": "png"}),
    Case("02-detect-bad-cfg", DETECT,
         ["--cfg", "{tmp}/a.cfg", "--darknet-weights", "{tmp}/w.weights", "--source", "{tmp}/a.png"],
         ["{tmp}/a.cfg:11", "unknown section"],
         files={"a.cfg": UNKNOWN_SECTION, "w.weights": bytes(8), "a.png": "png"}),
    Case("02-detect-no-checkpoint", DETECT, ["--weights", "{tmp}/none.pt", "--source", "{tmp}/a.png"],
         ["{tmp}/none.pt", "checkpoint not found"], files={"a.png": "png"}),
    Case("02-detect-text-checkpoint", DETECT, ["--weights", "{tmp}/w.pt", "--source", "{tmp}/a.png"],
         ["{tmp}/w.pt"], files={"w.pt": "text checkpoint", "a.png": "png"}),
    Case("02-detect-score-threshold", DETECT,
         ["--weights", "{tmp}/w.pt", "--source", "{tmp}/a.png", "--score-threshold", "2"],
         "--score-threshold", files={"w.pt": "text", "a.png": "png"}),
    Case("02-train-image-size", TRAIN, ["--image-size", "100"], "--image-size"),
    Case("02-train-mosaic", TRAIN, ["--mosaic", "1.5"], "--mosaic"),
    Case("02-train-time-budget", TRAIN, ["--time-budget", "-1"], "--time-budget"),
    Case("02-train-negative-cls-weight", TRAIN, ["--cls-weight", "-1"], "--cls-weight"),
    Case("02-train-pretrain-epochs", TRAIN, ["--pretrain-epochs", "0"], "--pretrain-epochs"),
    Case("02-train-partial-weights-wrong-size", TRAIN, ["--weights", "{tmp}/yolov3-tiny.conv.15"],
         ["{tmp}/yolov3-tiny.conv.15", "1,008 bytes", "the first 15 layers", "30,973,396"],
         files={"yolov3-tiny.conv.15": SHORT_WEIGHTS}),
    Case("02-train-bad-data-yaml", TRAIN, ["--data-path", "{tmp}/data.yaml"],
         ["{tmp}/data.yaml", "YAML"], files={"data.yaml": BAD_YAML}),
    Case("02-export-weights-wrong-size", EXPORT,
         ["--cfg", "yolov3-tiny", "--darknet-weights", "{tmp}/w.weights"],
         ["{tmp}/w.weights", "1,008 bytes", "35,434,956"], files={"w.weights": SHORT_WEIGHTS}),
]  # fmt: skip
