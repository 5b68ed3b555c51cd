"""Export a trained YOLOv7 to ONNX, with or without NMS in the graph; check it; time it.

    python 03_yolo_v7_tutorial/export.py                        # runs/03_yolo_v7_tutorial/train/best.pt
    python 03_yolo_v7_tutorial/export.py --nms                  # boxes / scores / labels out of the graph
    python 03_yolo_v7_tutorial/export.py --dynamic-batch        # any batch size at run time
    python 03_yolo_v7_tutorial/export.py --weights best.pt --image-size 416 --output yolo.onnx

The model is fused first (Conv+BN, RepConv, implicit layers: :meth:`yolov7.YOLOv7.fuse`).

- Without NMS: ``images`` float32 [N, 3, S, S] in [0, 1] -> ``predictions`` [N, K, 5 + C]
  (cx, cy, w, h in input pixels, objectness, class probabilities). Parity: the largest
  ``|eager - ONNX Runtime|`` on three inputs (the traced random one, another random one, a real
  letterboxed image) must stay under ``--tolerance`` (1e-4), box columns divided by the input
  side (:func:`decoded_parity`; the pixel difference is reported too); OpenCV DNN runs the same file.
- With ``--nms``: ``images`` [1, 3, S, S] -> ``boxes`` [D, 4] xyxy, ``scores`` [D], ``labels`` [D]
  (score = objectness x class probability > ``--score-threshold``, class-wise NMS at
  ``--iou-threshold``, at most ``--max-detections``); checked by matching every detection of
  ONNX Runtime with eager PyTorch (:func:`detseg.export.match_detections`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import Tensor, nn
from yolov7_checkpoint import load_trained
from yolov7_data import read_split
from yolov7_training import predict

from detseg.cli.common import HelpFormatter, add_checkpoint_arg, existing_path, positive_int
from detseg.data.imageio import read_image
from detseg.data.letterbox import letterbox
from detseg.data.torch_datasets import image_to_tensor
from detseg.errors import UserError, run_cli
from detseg.export import (
    export_onnx,
    match_detections,
    ort_run,
    ort_session,
    run_opencv_dnn,
    time_inference,
)

EXAMPLE = "03_yolo_v7_tutorial"


class WithNMS(nn.Module):
    """Decoded predictions -> NMS inside the graph (one image): ``(boxes, scores, labels)``.

    The same rule as :func:`detseg.yolo_decode.postprocess` with ``multi_label=False``, written with
    ``torchvision.ops.batched_nms``, which exports as ONNX ``NonMaxSuppression``.
    """

    def __init__(
        self, model: nn.Module, score_threshold: float, iou_threshold: float, max_detections: int
    ):
        super().__init__()
        self.model = model
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        pred = self.model(images)[0]  # [K, 5 + C]
        scores, labels = (pred[:, 4:5] * pred[:, 5:]).max(dim=1)
        keep = scores > self.score_threshold
        pred, scores, labels = pred[keep], scores[keep], labels[keep]
        xy, half = pred[:, :2], pred[:, 2:4] / 2
        boxes = torch.cat((xy - half, xy + half), dim=1)
        kept = torchvision.ops.batched_nms(boxes, scores, labels, self.iou_threshold)
        kept = kept[: self.max_detections]
        return boxes[kept], scores[kept], labels[kept]


def decoded_parity(
    model: torch.nn.Module, session: Any, images: Tensor, size: int
) -> tuple[float, float]:
    """Eager vs ONNX Runtime on the decoded predictions [N, K, 5 + C]: ``(max difference with the
    box columns divided by the input side, max difference in pixels)``. Boxes are compared in
    units of the image because their float32 spacing grows with their size: a 1,200 px width (an
    untrained or background prediction) is only representable to 1.2e-4 px."""
    with torch.no_grad():
        eager = model(images).numpy()
    diff = np.abs(eager - ort_run(session, images)[0])  # [N, K, 5 + C]
    return float(max(diff[..., :4].max() / size, diff[..., 4:].max())), float(diff.max())


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export a trained YOLOv7 to ONNX (with or without NMS), check and time it",
        formatter_class=HelpFormatter,
    )
    add_checkpoint_arg(parser, example=EXAMPLE)
    parser.add_argument(
        "--output", type=Path, default=None, help="ONNX file (default: next to --weights)"
    )
    parser.add_argument(
        "--image-size", type=int, default=None, help="input side (default: training size)"
    )
    parser.add_argument(
        "--nms", action="store_true", help="put score filtering and NMS in the graph"
    )
    parser.add_argument(
        "--dynamic-batch", action="store_true", help="batch axis dynamic (no --nms)"
    )
    parser.add_argument("--score-threshold", type=float, default=0.25)
    parser.add_argument("--iou-threshold", type=float, default=0.45)
    parser.add_argument("--max-detections", type=int, default=100)
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="largest allowed |eager - ONNX|"
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of each")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both")
    parser.add_argument(
        "--data-path", type=Path, default=None, help="dataset for the real test image"
    )
    parser.add_argument("--dry-run", action="store_true", help="export, check, time 2 runs")
    parser.add_argument(
        "--debug", action="store_true", help="tracebacks instead of one-line errors"
    )
    return parser


def real_input(config: dict[str, Any], data_path: Path | None, size: int) -> Tensor:
    """The first validation image of the training data (or of ``data_path``), letterboxed."""
    if data_path is None and config.get("data_path"):
        data_path = Path(config["data_path"])
    num_images = config.get("num_images") if data_path is None else None
    dataset = read_split(data_path, "val", seed=int(config.get("seed", 0)), num_images=num_images)
    image = read_image(dataset.image_path(dataset.records[0]))
    boxed, _, _ = letterbox(image, size)
    return image_to_tensor(boxed)[None]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = get_args_parser().parse_args(argv)
    if args.nms and args.dynamic_batch:
        raise UserError("--dynamic-batch works without --nms only", fix="drop one of the two")
    for flag, value in (
        ("--score-threshold", args.score_threshold),
        ("--iou-threshold", args.iou_threshold),
    ):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{flag} must be in [0, 1], got {value}", fix=f"e.g. {flag} 0.25")
    positive_int(args.max_detections, "--max-detections")
    if args.image_size is not None and (args.image_size < 32 or args.image_size % 32):
        raise UserError(
            f"--image-size must be a multiple of 32, got {args.image_size}", fix="e.g. 320"
        )
    existing_path(args.weights, "--weights", kind="file")
    if args.threads is not None:
        torch.set_num_threads(positive_int(args.threads, "--threads"))
    model, config = load_trained(args.weights)
    model.fuse()
    size = args.image_size or int(config.get("image_size", 320))
    if size < 32 or size % 32:
        raise UserError(f"--image-size must be a multiple of 32, got {size}", fix="e.g. 320")
    repeats = 2 if args.dry_run else positive_int(args.repeats, "--repeats")
    output = args.output or Path(args.weights).with_name(
        f"yolov7-{config['variant']}-{size}{'-nms' if args.nms else ''}.onnx"
    )
    generator = torch.Generator().manual_seed(0)
    traced = torch.rand(1, 3, size, size, generator=generator)
    checks = [
        torch.rand(1, 3, size, size, generator=generator),
        real_input(config, args.data_path, size),
    ]
    result: dict[str, Any] = {"onnx": str(output), "image_size": size, "nms": args.nms}
    threads = torch.get_num_threads()
    if not args.nms:
        dynamic = (
            {"images": {0: "batch"}, "predictions": {0: "batch"}} if args.dynamic_batch else None
        )
        export_onnx(model, traced, output, input_names=["images"], output_names=["predictions"],
                    dynamic_axes=dynamic, opset=args.opset)  # fmt: skip
        session = ort_session(output, threads=threads)
        inputs = checks + ([torch.cat(checks)] if args.dynamic_batch else [])
        diffs = [decoded_parity(model, session, x, size) for x in inputs]
        result["max_abs_diff"] = max(d[0] for d in diffs)
        result["max_abs_diff_px"] = max(d[1] for d in diffs)
        try:
            blob = checks[1].numpy()
            dnn = run_opencv_dnn(output, blob)[0]
            with torch.no_grad():
                result["opencv_max_abs_diff"] = float(np.abs(dnn - model(checks[1]).numpy()).max())
        except UserError as err:
            result["opencv_max_abs_diff"] = None
            print(f"note: OpenCV DNN: {err.what}", file=sys.stderr)
        if result["max_abs_diff"] > args.tolerance:
            raise UserError(
                f"ONNX Runtime differs from PyTorch by {result['max_abs_diff']:.2e} > {args.tolerance}"
                " (boxes in units of the input side)",
                path=output, fix="report it with the opset and versions; try another --opset",
            )  # fmt: skip
        run_onnx = lambda x: ort_run(session, x)  # noqa: E731
    else:
        wrapped = WithNMS(
            model, args.score_threshold, args.iou_threshold, args.max_detections
        ).eval()
        export_onnx(wrapped, traced, output, input_names=["images"],
                    output_names=["boxes", "scores", "labels"], opset=args.opset)  # fmt: skip
        session = ort_session(output, threads=threads)
        matches = []
        for x in checks:
            eager = predict(model, x, score_threshold=args.score_threshold,
                            iou_threshold=args.iou_threshold, max_detections=args.max_detections)[0]  # fmt: skip
            boxes, scores, labels = ort_run(session, x)
            match = match_detections(eager, {"boxes": boxes, "scores": scores, "labels": labels})
            matches.append(match)
            if not match["count_a"] == match["count_b"] == match["matched"]:
                raise UserError(
                    f"ONNX Runtime kept {match['count_b']} detections, PyTorch {match['count_a']}, "
                    f"{match['matched']} matched", path=output, fix="report it with the versions",
                )  # fmt: skip
        result["matches"] = matches
        result["max_box_err"] = max((m["max_box_err"] or 0.0) for m in matches)
        run_onnx = lambda x: ort_run(session, x)  # noqa: E731
    with torch.no_grad():
        eager_t = time_inference(model, checks[1], warmup=2, repeats=repeats)
    onnx_t = time_inference(run_onnx, checks[1], warmup=2, repeats=repeats)
    result.update(
        eager_ms=eager_t["median_ms"], onnxruntime_ms=onnx_t["median_ms"],
        onnxruntime_fps=1000.0 / onnx_t["median_ms"], threads=threads,
    )  # fmt: skip
    print(
        f"wrote {output}\n"
        + (f"max |eager - ORT| {result['max_abs_diff']:.2e} (boxes / input side; {result['max_abs_diff_px']:.2e} px) over {len(checks)} inputs\n" if not args.nms
           else f"ORT detections matched eager: {[m['matched'] for m in result['matches']]}\n")
        + f"eager {result['eager_ms']:.1f} ms, ONNX Runtime {result['onnxruntime_ms']:.1f} ms "
        f"({result['onnxruntime_fps']:.1f} FPS, {threads} threads, {size} px)"
    )  # fmt: skip
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
