"""ONNX export of a darknet model with parity checks, and timing of eager PyTorch, ONNX Runtime and
OpenCV DNN (reading the darknet cfg + weights itself)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from darknet import Darknet, save_weights
from torch import Tensor, nn

from detseg.export import check_parity, export_onnx, match_detections, ort_run, ort_session
from detseg.export import time_inference as time_call
from detseg.yolo_decode import postprocess


class RawHeads(nn.Module):
    """The model with its list of outputs as a tuple (what ONNX export traces)."""

    def __init__(self, model: Darknet) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.model(images))


def detections(model: Darknet, raws: Sequence[Any], score_threshold: float = 0.25) -> dict:
    """Decoded, NMS-filtered detections of one image from raw outputs (torch or numpy)."""
    tensors = [torch.as_tensor(np.asarray(r)) if not isinstance(r, Tensor) else r for r in raws]
    decoded = model.decode(tensors)
    return postprocess(decoded, score_threshold=score_threshold)[0]


def export_and_check(
    model: Darknet,
    path: Path,
    check_images: Sequence[Tensor],
    *,
    cfg_text: str | None = None,
    repeats: int = 20,
    score_threshold: float = 0.25,
) -> dict[str, Any]:
    """Export ``model`` (input [1, 3, S, S]) to ``path``, check it and time it.

    Args:
        check_images: [1, 3, S, S] inputs other than the traced one (a random image); on each the raw
            outputs are compared and the detections of ONNX Runtime matched to eager's.
        cfg_text: the model's darknet cfg: when given, OpenCV DNN reads cfg + weights written here
            and is timed (and its raw outputs compared) too.
    Returns:
        ``{"onnx", "max_abs_diff" (over all check images), "detections", "matched",
        "max_box_err", "eager_ms", "onnxruntime_ms", "speedup" (eager / ORT), "opencv_ms",
        "opencv_max_abs_diff"}``.
    """
    model = model.eval()
    wrapped = RawHeads(model).eval()
    size = model.spec.height
    traced = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(123))
    names = [f"yolo_{layer.index}" for layer in model.spec.yolo_layers]
    onnx_path = export_onnx(wrapped, traced, path, input_names=["images"], output_names=names)
    session = ort_session(onnx_path, threads=torch.get_num_threads())
    diffs, found, matched, box_errors = [], 0, 0, []
    with torch.no_grad():
        for image in check_images:
            diffs.append(check_parity(wrapped, session, image))
            eager = detections(model, model(image), score_threshold)
            onnx = detections(model, ort_run(session, image), score_threshold)
            match = match_detections(eager, onnx)
            found += match["count_a"]
            matched += match["matched"] if match["count_a"] == match["count_b"] else 0
            if match["max_box_err"] is not None:
                box_errors.append(match["max_box_err"])
        eager_time = time_call(wrapped, traced, warmup=2, repeats=repeats)
    ort_time = time_call(lambda batch: ort_run(session, batch), traced, warmup=2, repeats=repeats)
    result = {
        "onnx": str(onnx_path),
        "max_abs_diff": float(max(diffs)) if diffs else float("nan"),
        "detections": found,
        "matched": matched,
        "max_box_err": float(max(box_errors)) if box_errors else 0.0,
        "eager_ms": eager_time["median_ms"],
        "onnxruntime_ms": ort_time["median_ms"],
        "speedup": eager_time["median_ms"] / ort_time["median_ms"],
        "opencv_ms": None,
        "opencv_max_abs_diff": None,
    }
    if cfg_text is not None:
        result.update(_opencv(model, wrapped, cfg_text, path, traced, repeats))
    return result


def _opencv(
    model: Darknet, wrapped: nn.Module, cfg_text: str, path: Path, images: Tensor, repeats: int
) -> dict[str, float]:
    import cv2

    cfg_path = path.with_suffix(".cfg")
    cfg_path.write_text(cfg_text, encoding="utf-8")
    weights_path = save_weights(model, path.with_suffix(".weights"))
    net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
    raw_names = [f"conv_{layer.index - 1}" for layer in model.spec.yolo_layers]
    blob = images.numpy()

    def forward(batch: np.ndarray) -> list[np.ndarray]:
        net.setInput(batch)
        return list(net.forward(raw_names))

    theirs = forward(blob)
    with torch.no_grad():
        ours = wrapped(images)
    diff = max(float(np.abs(t - o.numpy()).max()) for t, o in zip(theirs, ours))
    timing = time_call(forward, blob, warmup=2, repeats=repeats)
    return {"opencv_ms": timing["median_ms"], "opencv_max_abs_diff": diff}
