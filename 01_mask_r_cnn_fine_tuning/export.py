"""Export a trained Mask R-CNN to ONNX, check it against the eager model, and time both.

    python export.py                                  # runs/.../train/best.pt -> runs/.../export/
    python export.py --weights run/best.pt --num-images 20

The whole detector is exported, pre- and post-processing included (resize + normalise, RPN,
RoIAlign, NMS, mask pasting), with the TorchScript tracer: input one image ``float32 [3, H, W]`` in
[0, 1] of any size, outputs ``boxes [N, 4]``, ``labels [N]``, ``scores [N]`` and ``masks [N, 1, H, W]``.

Parity: thresholds, top-k and NMS make detections a discontinuous function of the input, so the two
runtimes are compared by matching detections by IoU (:func:`detseg.export.match_detections`) on the
validation images, then the largest error on matched boxes (pixels), scores and mask probabilities
is reported with the number of detections either side failed to match.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from maskrcnn_data import load_splits
from models_maskrcnn import has_masks, load_trained

from detseg import settings
from detseg.cli.common import HelpFormatter, add_checkpoint_arg
from detseg.data.imageio import IMAGE_SUFFIXES, read_image
from detseg.errors import UserError, run_cli

EXAMPLE = "01_mask_r_cnn_fine_tuning"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="ONNX export of a trained Mask R-CNN, parity with eager PyTorch, ORT timing",
        formatter_class=HelpFormatter,
    )
    add_checkpoint_arg(parser, example=EXAMPLE)
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=settings.runs_root() / EXAMPLE / "export",
        help="where model.onnx and export.json go",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="image or folder for the parity check (default: the run's validation images)",
    )
    parser.add_argument("--num-images", type=int, default=10, help="images compared")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per runtime")
    parser.add_argument("--threads", type=int, default=None, help="ORT and torch CPU threads")
    parser.add_argument("--dry-run", action="store_true", help="one image, few timing runs")
    parser.add_argument(
        "--debug", action="store_true", help="tracebacks instead of one-line errors"
    )
    return parser


def parity_images(config: dict[str, Any], source: Path | None, count: int) -> list[np.ndarray]:
    """RGB uint8 images for the check: ``source`` (an image or a folder), else the run's val split."""
    if source is not None:
        if source.is_file():
            files = [source]
        elif source.is_dir():
            files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            raise UserError("--source: no such file or folder", path=source, fix="check the path")
        if not files:
            raise UserError("--source holds no images", path=source, fix=f"use {IMAGE_SUFFIXES}")
        return [read_image(path) for path in files[:count]]
    splits = load_splits(
        config.get("data", "pedestrians"),
        config.get("data_path"),
        val_fraction=float(config.get("val_fraction", 0.2)),
        seed=int(config.get("seed", 0)),
        num_images=config.get("num_images"),
    )
    dataset = splits.val
    return [read_image(dataset.image_path(record)) for record in dataset.records[:count]]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = get_args_parser().parse_args(argv)
    if args.num_images < 1 or args.repeats < 1:
        raise UserError("--num-images and --repeats must be >= 1", fix="e.g. --num-images 10")
    import torch

    from detseg.data.torch_datasets import image_to_tensor
    from detseg.export import export_onnx, match_detections, ort_run, ort_session, time_inference

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, config = load_trained(args.weights, device="cpu")
    masks = has_masks(model)
    count = 1 if args.dry_run else args.num_images
    images = [image_to_tensor(im) for im in parity_images(config, args.source, count)]
    output_names = ["boxes", "labels", "scores"] + (["masks"] if masks else [])
    dynamic = {"image": {1: "height", 2: "width"}} | {
        name: {0: "detections"} for name in output_names
    }
    out_dir = Path(args.output_dir)
    with warnings.catch_warnings():
        # torchvision's detection code builds tensors from traced sizes (expected while tracing)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|torchvision)\.")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        onnx_path = export_onnx(
            model,
            ([images[0]],),
            out_dir / "model.onnx",
            input_names=["image"],
            output_names=output_names,
            dynamic_axes=dynamic,
            opset=args.opset,
        )
    session = ort_session(onnx_path, threads=args.threads)
    worst = {"max_box_err": 0.0, "max_score_err": 0.0, "max_mask_err": 0.0}
    eager_count = onnx_count = matched = 0
    for image in images:
        with torch.no_grad():
            eager = model([image])[0]
        onnx_out = dict(zip(output_names, ort_run(session, [image])))
        match = match_detections(eager, onnx_out, iou_threshold=0.5)
        eager_count += match["count_a"]
        onnx_count += match["count_b"]
        matched += match["matched"]
        for key in worst:
            if match[key] is not None:
                worst[key] = max(worst[key], match[key])
    repeats = 2 if args.dry_run else args.repeats
    warmup = 1 if args.dry_run else 2
    with torch.no_grad():
        eager_time = time_inference(lambda x: model([x]), images[0], warmup, repeats)
    ort_time = time_inference(lambda x: ort_run(session, [x]), images[0], warmup, repeats)
    result = {
        "onnx": str(onnx_path),
        "onnx_mb": onnx_path.stat().st_size / 2**20,
        "images": len(images),
        "image_size": list(images[0].shape[1:]),
        "detections_eager": eager_count,
        "detections_onnx": onnx_count,
        "matched": matched,
        "unmatched": eager_count + onnx_count - 2 * matched,
        **worst,
        "eager_ms": eager_time["median_ms"],
        "ort_ms": ort_time["median_ms"],
        "speedup": eager_time["median_ms"] / ort_time["median_ms"],
        "threads": torch.get_num_threads(),
    }
    if not masks:
        result.pop("max_mask_err")
    (out_dir / "export.json").write_text(json.dumps(result, indent=1))
    print(
        f"{onnx_path} ({result['onnx_mb']:.1f} MB): {matched} of {eager_count} eager / "
        f"{onnx_count} ORT detections matched on {len(images)} image(s); max error box "
        f"{worst['max_box_err']:.2e} px, score {worst['max_score_err']:.2e}"
        + (f", mask {worst['max_mask_err']:.2e}" if masks else "")
        + f"; eager {result['eager_ms']:.0f} ms, ORT {result['ort_ms']:.0f} ms "
        f"({result['speedup']:.2f}x)",
        file=sys.stderr,
    )
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
