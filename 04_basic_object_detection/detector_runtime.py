"""One interface for every detector of this folder: ``predictor(image) -> detections``.

A predictor takes an RGB uint8 image of any size and returns ``{"boxes": [N, 4] xyxy pixels of that
image, "scores": [N], "labels": [N]}`` (numpy), with ``predictor.classes`` naming the labels. Kinds:

- :func:`torch_predictor`: any torchvision detector, eager PyTorch (pretrained or trained here).
- :func:`body_predictor`: an exported SSD body run by ``"torch"``, ``"onnxruntime"`` or ``"opencv"``
  (``cv2.dnn``), decoded by :func:`detector_body.postprocess`, the same numpy code for all three.
- :func:`classic_predictor`: OpenCV's Haar face cascade or HOG + linear SVM people detector.

:func:`time_predictors` measures frames per second of several on the same frames.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from detector_body import DecodeConfig, SSDBody, postprocess, to_body_input

from detseg.errors import UserError

Detections = dict[str, np.ndarray]
RUNTIMES = ("torch", "onnxruntime", "opencv")


class Predictor:
    """``predictor(image RGB uint8 [H, W, 3]) -> Detections``; ``classes[label]`` names a label."""

    def __init__(self, name: str, fn: Callable[[np.ndarray], Detections], classes: list[str]):
        self.name, self.fn, self.classes = name, fn, classes

    def __call__(self, image: np.ndarray) -> Detections:
        return self.fn(image)


def keep_scores(detections: Detections, score_threshold: float) -> Detections:
    keep = detections["scores"] >= score_threshold
    return {key: value[keep] for key, value in detections.items()}


def torch_predictor(
    model: torch.nn.Module, classes: list[str], *, score_threshold: float = 0.5, name: str = "torch"
) -> Predictor:
    """Eager torchvision detector; ``classes`` indexed by torchvision label (0 = background)."""
    from detseg.data.torch_datasets import image_to_tensor

    model.eval()

    @torch.no_grad()
    def run(image: np.ndarray) -> Detections:
        output = model([image_to_tensor(image)])[0]
        detections = {key: output[key].numpy() for key in ("boxes", "scores", "labels")}
        return keep_scores(detections, score_threshold)

    return Predictor(name, run, classes)


def body_runner(runtime: str, body: SSDBody | None, onnx_path: Path | None) -> Callable:
    """``blob [1, 3, S, S] -> (regressions [A, 4], logits [A, C])`` for one runtime."""
    if runtime == "torch":
        assert body is not None
        body.eval()

        def run_torch(blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with torch.no_grad():
                regressions, logits = body(torch.from_numpy(blob))
            return regressions[0].numpy(), logits[0].numpy()

        return run_torch
    if onnx_path is None:
        raise UserError(
            f"runtime {runtime} needs an exported ONNX body", fix="run export_detector.py"
        )
    if runtime == "onnxruntime":
        from detseg.export import ort_session

        session = ort_session(onnx_path, threads=torch.get_num_threads())

        def run_ort(blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            regressions, logits = session.run(None, {session.get_inputs()[0].name: blob})
            return regressions[0], logits[0]

        return run_ort
    if runtime == "opencv":
        import cv2

        net = cv2.dnn.readNetFromONNX(str(onnx_path))
        names = ["regressions", "logits"]

        def run_cv(blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            net.setInput(blob)
            regressions, logits = net.forward(names)
            return regressions[0], logits[0]

        return run_cv
    raise UserError(f"unknown runtime {runtime!r}", fix=f"use one of {list(RUNTIMES)}")


def body_predictor(
    runtime: str,
    config: DecodeConfig,
    classes: list[str],
    *,
    body: SSDBody | None = None,
    onnx_path: Path | None = None,
    score_threshold: float = 0.5,
) -> Predictor:
    """SSD body on ``runtime`` + the shared numpy decoding; ``classes`` by label (0 = background)."""
    run = body_runner(runtime, body, onnx_path)
    # threshold before the top-k and the cap of detections_per_img, so that near-equal scores at
    # the cap (which float differences between runtimes may order differently) do not decide
    config = replace(config, score_thresh=max(config.score_thresh, score_threshold))

    def predict(image: np.ndarray) -> Detections:
        regressions, logits = run(to_body_input(image, config.size))
        return postprocess(regressions, logits, config, image.shape[:2])

    return Predictor(f"ssd body, {runtime}", predict, classes)


def save_decode_config(config: DecodeConfig, classes: list[str], path: Path) -> Path:
    """The JSON beside an exported body: anchors, decoding settings, class names."""
    path.write_text(json.dumps({**config.to_dict(), "classes": classes}))
    return path


def load_decode_config(path: Path) -> tuple[DecodeConfig, list[str]]:
    if not path.is_file():
        raise UserError("decode config not found", path=path, fix="run export_detector.py first")
    data = json.loads(path.read_text())
    classes = data.pop("classes")
    return DecodeConfig.from_dict(data), classes


def haar_faces(
    image: np.ndarray, *, scale_factor: float = 1.1, min_neighbors: int = 5
) -> Detections:
    """Viola-Jones (2001) frontal-face Haar cascade shipped with OpenCV 4 (``cv2.data``)."""
    import cv2

    cascade = _cascade()
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    found = cascade.detectMultiScale(grey, scaleFactor=scale_factor, minNeighbors=min_neighbors)
    boxes = np.asarray(found, dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
    return {"boxes": boxes, "scores": np.ones(len(boxes), np.float32),
            "labels": np.ones(len(boxes), np.int64)}  # fmt: skip


_CASCADE: list[Any] = []


def _cascade() -> Any:
    import cv2

    if not _CASCADE:
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        cascade = cv2.CascadeClassifier(str(path))
        if cascade.empty():
            raise UserError(
                "cannot load the Haar cascade", path=path, fix="reinstall opencv-contrib-python<5"
            )
        _CASCADE.append(cascade)
    return _CASCADE[0]


def hog_people(image: np.ndarray, *, score_threshold: float = 0.0) -> Detections:
    """Dalal-Triggs (2005) HOG + linear SVM people detector shipped with OpenCV 4."""
    import cv2

    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    found, weights = hog.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=1.05)
    boxes = np.asarray(found, dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    scores = np.asarray(weights, dtype=np.float32).reshape(-1)
    return keep_scores(
        {"boxes": boxes, "scores": scores, "labels": np.ones(len(boxes), np.int64)}, score_threshold
    )


CLASSIC: dict[str, tuple[Callable[[np.ndarray], Detections], list[str]]] = {
    "haar_face": (haar_faces, ["__background__", "face"]),
    "hog_people": (hog_people, ["__background__", "person"]),
}


def classic_predictor(name: str) -> Predictor:
    if name not in CLASSIC:
        raise UserError(f"unknown classic detector {name!r}", fix=f"use one of {list(CLASSIC)}")
    fn, classes = CLASSIC[name]
    return Predictor(name, fn, classes)


def time_predictors(
    predictors: Sequence[Predictor], frames: Sequence[np.ndarray], *, warmup: int = 2
) -> dict[str, dict[str, float]]:
    """Frames per second of each predictor over ``frames`` (after ``warmup`` untimed frames).

    Returns:
        ``{name: {"fps", "median_ms", "detections_per_frame"}}``.
    """
    table = {}
    for predictor in predictors:
        for frame in frames[:warmup]:
            predictor(frame)
        times, counts = [], []
        for frame in frames:
            start = time.perf_counter()
            detections = predictor(frame)
            times.append(time.perf_counter() - start)
            counts.append(len(detections["boxes"]))
        median = float(np.median(times))
        table[predictor.name] = {
            "fps": len(times) / float(np.sum(times)),
            "median_ms": median * 1e3,
            "detections_per_frame": float(np.mean(counts)),
        }
    return table
