"""Export a trained model to ONNX, check ONNX Runtime against eager PyTorch, time both.

    python 05_unet_segmentation/export.py                                   # the salt U-Net
    python 05_unet_segmentation/export.py --weights runs/05_unet_segmentation/fcn8s-road/best.pt
    python 05_unet_segmentation/export.py --weights ... --output model.onnx --height 256 --width 256

The ONNX graph takes ``images`` float32 [N, 3, H, W] (ImageNet-normalised, as in training; N is
dynamic, H and W are fixed at export) and returns ``logits`` [N, C, H, W]; models that return a dict
(PSPNet, torchvision's) export their ``"out"`` entry only. The parity check runs both on the same
random batch and fails (exit 2) when the largest absolute difference exceeds ``--tolerance``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from segmentation_models import LogitsOnly, load_trained

from detseg.cli.common import HelpFormatter, add_checkpoint_arg, positive_int
from detseg.errors import UserError, run_cli
from detseg.export import check_parity, export_onnx, ort_run, ort_session, time_inference

EXAMPLE = "05_unet_segmentation"
NATIVE_SIZE = {"salt": (101, 101), "road": (160, 480), "street": (256, 256)}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export a trained segmentation model to ONNX and check it against PyTorch",
        formatter_class=HelpFormatter,
    )
    add_checkpoint_arg(parser, example=EXAMPLE, run="unet-salt")
    parser.add_argument(
        "--output", type=Path, default=None, help="ONNX file (default: next to --weights)"
    )
    parser.add_argument(
        "--height", type=int, default=None, help="input height (default: training size)"
    )
    parser.add_argument(
        "--width", type=int, default=None, help="input width (default: training size)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, help="batch of the parity check / timing"
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="largest allowed |eager - ONNX|"
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of each")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for both (default: their own choice)"
    )
    parser.add_argument("--dry-run", action="store_true", help="export, check, time 2 runs")
    parser.add_argument(
        "--debug", action="store_true", help="tracebacks instead of one-line errors"
    )
    return parser


def input_size(config: dict[str, Any], height: int | None, width: int | None) -> tuple[int, int]:
    """The export's (H, W): the flags, else the training size, else the dataset's native size."""
    size = config.get("image_size") or NATIVE_SIZE.get(config.get("dataset", ""), (256, 256))
    return int(height or size[0]), int(width or size[1])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Export and check; returns ``{"onnx", "max_abs_diff", "eager_ms", "onnxruntime_ms",
    "speed_ratio"}`` (``speed_ratio`` = eager time / ONNX Runtime time: above 1, ORT is faster)."""
    args = get_args_parser().parse_args(argv)
    for flag in ("height", "width", "batch_size", "opset", "repeats", "threads"):
        if getattr(args, flag) is not None:
            positive_int(getattr(args, flag), "--" + flag.replace("_", "-"))
    if not args.tolerance > 0:
        raise UserError(f"--tolerance must be > 0, got {args.tolerance}", fix="e.g. 1e-4")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, config = load_trained(args.weights, device="cpu")
    wrapped = LogitsOnly(model).eval()
    height, width = input_size(config, args.height, args.width)
    images = torch.randn(
        args.batch_size, 3, height, width, generator=torch.Generator().manual_seed(0)
    )
    output = args.output or Path(args.weights).with_suffix(".onnx")
    try:
        path = export_onnx(
            wrapped,
            images,
            output,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset=args.opset,
        )
    except UserError:
        raise
    except Exception as err:  # the exporter's own errors: unsupported operator, opset ...
        first_line = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise UserError(
            f"ONNX export of {config['model']} failed ({type(err).__name__}: {first_line})",
            path=args.weights,
            fix="try another --opset or input size; --debug shows the exporter's traceback",
        ) from err
    session = ort_session(path, threads=args.threads)
    max_abs_diff = check_parity(wrapped, session, images)
    repeats = 2 if args.dry_run else args.repeats
    with torch.no_grad():
        eager = time_inference(wrapped, images, warmup=1, repeats=repeats)
    onnx = time_inference(lambda batch: ort_run(session, batch), images, warmup=1, repeats=repeats)
    result = {
        "onnx": str(path),
        "input_shape": list(images.shape),
        "max_abs_diff": max_abs_diff,
        "eager_ms": eager["median_ms"],
        "onnxruntime_ms": onnx["median_ms"],
        "speed_ratio": eager["median_ms"] / onnx["median_ms"],
    }
    print(
        f"{path} | input {list(images.shape)} | max |eager - onnxruntime| {max_abs_diff:.2e} | "
        f"eager {eager['median_ms']:.1f} ms, onnxruntime {onnx['median_ms']:.1f} ms "
        f"(x{result['speed_ratio']:.2f})"
    )
    if max_abs_diff > args.tolerance:
        raise UserError(
            f"ONNX Runtime differs from PyTorch by {max_abs_diff:.2e} > --tolerance {args.tolerance}",
            path=path,
            fix="try another --opset, or report the model; the file is kept for inspection",
        )
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
