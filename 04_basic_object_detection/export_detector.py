"""Export a trained SSDlite's network body to ONNX and check it on three runtimes.

    python 04_basic_object_detection/export_detector.py                    # runs/.../ssdlite320/best.pt
    python 04_basic_object_detection/export_detector.py --weights best.pt --images 8

Writes ``<output-dir>/ssd_body.onnx`` (input ``images [1, 3, 320, 320]`` in [0, 1]; outputs
``regressions [1, A, 4]`` and ``logits [1, A, C]``) and ``ssd_decode.json`` (anchors, decoding
settings, class names). Then, on ``--images`` validation images that were not used for tracing:

- raw outputs: max abs difference of ONNX Runtime and OpenCV DNN to eager PyTorch;
- detections: PyTorch, ONNX Runtime and OpenCV DNN bodies, each decoded by the same numpy code
  (``detector_body.postprocess``), matched pairwise by IoU (``detseg.export.match_detections``);
- milliseconds per 320 x 320 frame of each runtime.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from detector_body import DecodeConfig, SSDBody, to_body_input
from detector_runtime import body_predictor, save_decode_config, time_predictors

from detseg import settings
from detseg.cli.common import HelpFormatter, add_checkpoint_arg, existing_path
from detseg.data.imageio import read_image
from detseg.errors import UserError, run_cli
from detseg.export import export_onnx, match_detections, ort_session, run_opencv_dnn
from detseg.scripts import load_script

EXAMPLE = "04_basic_object_detection"
FOLDER = Path(__file__).resolve().parent


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export an SSDlite body to ONNX; parity and speed on PyTorch / ORT / OpenCV DNN",
        formatter_class=HelpFormatter,
    )
    add_checkpoint_arg(parser, example=EXAMPLE, run="ssdlite320")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=settings.runs_root() / EXAMPLE / "export",
        help="where ssd_body.onnx, ssd_decode.json and parity.json go",
    )
    parser.add_argument("--images", type=int, default=4, help="validation images to compare on")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="detections compared")
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one line")
    return parser


def export_body(model: torch.nn.Module, path: Path) -> tuple[SSDBody, Path]:
    """``SSDBody(model).exportable()`` (1 x 1 maps' convolutions as 1 x 1 ones, for OpenCV DNN)
    traced on a fixed random image and written to ``path``; returns the body as it is (eager
    PyTorch, the reference the runtimes are compared with) and the path."""
    body = SSDBody(model).eval()
    size = int(model.transform.fixed_size[0])
    example = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    export_onnx(body.exportable(), example, path, input_names=["images"],
                output_names=["regressions", "logits"])  # fmt: skip
    return body, path


def compare_runtimes(
    body: SSDBody,
    onnx_path: Path,
    config: DecodeConfig,
    classes: list[str],
    images: Sequence[np.ndarray],
    *,
    score_threshold: float = 0.3,
) -> dict[str, Any]:
    """Raw-output differences and pairwise detection matching of the three runtimes on ``images``."""
    session = ort_session(onnx_path)
    raw_ort, raw_cv = 0.0, 0.0
    for image in images:
        blob = to_body_input(image, config.size)
        with torch.no_grad():
            eager = [t.numpy() for t in body(torch.from_numpy(blob))]
        ort = session.run(None, {"images": blob})
        cv = run_opencv_dnn(onnx_path, blob)
        raw_ort = max(raw_ort, *(float(np.abs(a - b).max()) for a, b in zip(eager, ort)))
        raw_cv = max(raw_cv, *(float(np.abs(a - b).max()) for a, b in zip(eager, cv)))
    predictors = {
        runtime: body_predictor(
            runtime,
            config,
            classes,
            body=body,
            onnx_path=onnx_path,
            score_threshold=score_threshold,
        )  # fmt: skip
        for runtime in ("torch", "onnxruntime", "opencv")
    }
    matches = []
    for image in images:
        found = {runtime: predictor(image) for runtime, predictor in predictors.items()}
        for other in ("onnxruntime", "opencv"):
            matches.append({"runtime": other, **match_detections(found["torch"], found[other])})
    return {
        "max_abs_diff_onnxruntime": raw_ort,
        "max_abs_diff_opencv": raw_cv,
        "detections_torch": sum(m["count_a"] for m in matches) // 2,
        "all_matched": all(m["matched"] == m["count_a"] == m["count_b"] for m in matches),
        "max_box_err_px": max((m["max_box_err"] or 0.0) for m in matches),
        "max_score_err": max((m["max_score_err"] or 0.0) for m in matches),
        "matches": matches,
        "predictors": predictors,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Returns ``{"onnx", "decode", "max_abs_diff_onnxruntime", "max_abs_diff_opencv",
    "all_matched", "max_box_err_px", "ms_per_frame": {runtime: ms}, ...}``."""
    args = get_args_parser().parse_args(argv)
    existing_path(args.weights, "--weights", kind="file")
    if args.images < 1:
        raise UserError(f"--images must be >= 1, got {args.images}", fix="e.g. 4")
    model, config = load_script(FOLDER, "train_detector").load_detector(args.weights)
    if config["model"] != "ssdlite320":
        raise UserError(
            f"only SSD bodies are exported here; this checkpoint is {config['model']}",
            path=args.weights,
            fix="train with --model ssdlite320",
        )
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    body, onnx_path = export_body(model, out / "ssd_body.onnx")
    decode = DecodeConfig.from_ssd(model)
    classes = ["__background__", *config["classes"]]
    save_decode_config(decode, classes, out / "ssd_decode.json")
    from detector_data import load_splits

    data_path = None if "built-in" in config["data_source"] else config["data_path"]
    _, val, _ = load_splits(data_path, num_images=config.get("data_num_images"))
    images = [read_image(val.image_path(r)) for r in val.records[: args.images]]
    report = compare_runtimes(body, onnx_path, decode, classes, images,
                              score_threshold=args.score_threshold)  # fmt: skip
    timing = time_predictors(list(report.pop("predictors").values()), images, warmup=1)
    result = {
        "onnx": str(onnx_path),
        "decode": str(out / "ssd_decode.json"),
        **report,
        "ms_per_frame": {name: row["median_ms"] for name, row in timing.items()},
    }
    (out / "parity.json").write_text(json.dumps(result, indent=2, default=str))
    print(
        f"ONNX body: {onnx_path}; max |diff| ORT {result['max_abs_diff_onnxruntime']:.2e}, OpenCV "
        f"{result['max_abs_diff_opencv']:.2e}; detections matched on all runtimes: "
        f"{result['all_matched']} (max box error {result['max_box_err_px']:.2e} px); ms per frame "
        + ", ".join(f"{k} {v:.1f}" for k, v in result["ms_per_frame"].items())
    )
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
