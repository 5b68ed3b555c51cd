"""Segment an image, a folder of images, a video or a webcam with a trained model; write overlays.

    python 05_unet_segmentation/predict.py --source data/salt-0/train/images        # a folder
    python 05_unet_segmentation/predict.py --weights runs/05_unet_segmentation/fcn8s-road/best.pt \\
        --source data/road-0/data_road/testing/image_2/um_000000.png                 # one image
    python 05_unet_segmentation/predict.py --weights runs/05_unet_segmentation/unet-street/best.pt \\
        --source drive.mp4                                                           # a video
    python 05_unet_segmentation/predict.py --source synthetic --max-frames 30        # no file needed
    python 05_unet_segmentation/predict.py --source 0 --show                         # webcam

The model is rebuilt from the checkpoint alone (``--weights``, default the salt U-Net's ``best.pt``):
its ``config`` names the architecture, the classes, their colours and the input size. Images get
``<name>_overlay.png`` (classes painted over the image) and ``<name>_mask.png`` (class index per
pixel); videos, webcams and the synthetic stream get one overlaid video.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from seg_training import predict_classes
from segmentation_models import load_trained, predict_logits

from detseg import settings
from detseg.cli.common import HelpFormatter, add_checkpoint_arg
from detseg.data.imageio import IMAGE_SUFFIXES, read_image, write_image
from detseg.data.torch_datasets import image_to_tensor
from detseg.data.transforms import Normalize, resize
from detseg.devices import select_device
from detseg.errors import UserError, run_cli
from detseg.video import SOURCE_HELP, run_loop
from detseg.viz import default_palette, draw_segmentation

EXAMPLE = "05_unet_segmentation"
BINARY_PALETTE = [(0, 0, 0), (255, 40, 40)]  # background, foreground (salt)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Segment images, folders, videos or a webcam; writes overlays",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--source", required=True, help=f"an image file, or {SOURCE_HELP}")
    add_checkpoint_arg(parser, example=EXAMPLE, run="unet-salt")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=settings.runs_root() / EXAMPLE / "predict",
        help="where overlays, masks and videos go",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:<index> or mps")
    parser.add_argument(
        "--threshold", type=float, default=None, help="probability threshold (binary models)"
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the class colours")
    parser.add_argument("--max-frames", type=int, default=None, help="stop a video after N frames")
    parser.add_argument("--show", action="store_true", help="show video frames in a window")
    parser.add_argument("--dry-run", action="store_true", help="one image / frame only")
    parser.add_argument(
        "--debug", action="store_true", help="tracebacks instead of one-line errors"
    )
    return parser


@torch.no_grad()
def segment(
    model: torch.nn.Module,
    image: np.ndarray,
    config: dict[str, Any],
    device: torch.device,
    threshold: float = 0.5,
) -> np.ndarray:
    """Class map of one image, at the image's own size.

    Args:
        image: RGB uint8 [H, W, 3].
        config: the checkpoint's config: ``image_size`` (the model sees the image resized to it,
            as in training), ``binary``.
    Returns:
        int64 [H, W] class indices (``0`` / ``1`` for a binary model at ``threshold``).
    """
    height, width = image.shape[:2]
    size = config.get("image_size")
    if size is not None and (height, width) != tuple(size):
        image, _ = resize(image, {}, *size)
    normalized, _ = Normalize()(image, {})
    batch = image_to_tensor(normalized)[None].to(device)  # [1, 3, h, w]
    logits = predict_logits(model, batch)
    mask = predict_classes(logits, binary=bool(config["binary"]), threshold=threshold)[0]
    mask = mask.cpu().numpy()
    if mask.shape != (height, width):
        _, target = resize(image, {"semantic_mask": mask}, height, width)
        mask = target["semantic_mask"]
    return mask.astype(np.int64)


def palette_of(config: dict[str, Any]) -> list[tuple[int, int, int]]:
    """Colours per class: the dataset's own (Cityscapes colours ...), red salt, or a default."""
    if config.get("binary"):
        return BINARY_PALETTE
    if config.get("palette"):
        return [tuple(int(v) for v in color) for color in config["palette"]]
    return [tuple(int(v) for v in color) for color in default_palette(len(config["classes"]))]


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Predict; returns ``{"images", "frames", "ms_per_image", "class_fractions", "outputs"}``."""
    args = get_args_parser().parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be in [0, 1], got {args.alpha}", fix="e.g. 0.5")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames must be >= 1, got {args.max_frames}", fix="e.g. 100")
    device = select_device(args.device)
    model, config = load_trained(args.weights, device=device)
    threshold = config.get("threshold", 0.5) if args.threshold is None else args.threshold
    if not 0.0 < threshold < 1.0:
        raise UserError(f"--threshold must be in (0, 1), got {threshold}", fix="e.g. 0.5")
    palette = palette_of(config)
    out_dir = Path(args.output_dir)
    timings: list[float] = []
    pixels = np.zeros(len(palette), dtype=np.int64)

    def overlay(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        mask = segment(model, image, config, device, threshold)
        timings.append(time.perf_counter() - start)
        pixels[:] += np.bincount(mask.ravel(), minlength=len(palette))[: len(palette)]
        background = 0 if config.get("binary") else None  # binary: leave sediment unpainted
        drawn = draw_segmentation(image, mask, palette, alpha=args.alpha, background=background)
        return drawn, mask

    source = Path(args.source)
    outputs: list[str] = []
    frames = 0
    if _is_image(source) or (source.is_dir() and not args.source.isdigit()):
        paths = (
            [source] if source.is_file() else sorted(p for p in source.iterdir() if _is_image(p))
        )
        if not paths:
            raise UserError(
                "no images in this folder", path=source, fix=f"--source takes {SOURCE_HELP}"
            )
        for path in paths[: 1 if args.dry_run else None]:
            drawn, mask = overlay(read_image(path))
            outputs.append(str(write_image(out_dir / f"{path.stem}_overlay.png", drawn)))
            write_image(out_dir / f"{path.stem}_mask.png", mask.astype(np.uint8))
        images = len(outputs)
    else:
        if args.source.isdigit():
            name = f"webcam{args.source}"
        else:
            name = "synthetic" if args.source == "synthetic" else source.stem
        loop = run_loop(
            args.source,
            lambda frame: overlay(frame.image)[0],
            writer_path=out_dir / f"{name}.mp4",
            show=args.show,
            max_frames=1 if args.dry_run else args.max_frames,
        )
        frames, images = loop["frames"], 0
        if loop["output"] is not None:
            outputs.append(str(loop["output"]))
    classes = list(config["classes"])
    total = max(int(pixels.sum()), 1)
    result = {
        "images": images,
        "frames": frames,
        "ms_per_image": float(np.median(timings) * 1e3) if timings else float("nan"),
        "class_fractions": {name: float(pixels[i] / total) for i, name in enumerate(classes)},
        "outputs": outputs,
    }
    print(
        f"{images or frames} {'image(s)' if images else 'frame(s)'} in {out_dir} | "
        f"{result['ms_per_image']:.1f} ms per image (median) | classes: "
        + ", ".join(f"{k} {v:.1%}" for k, v in result["class_fractions"].items())
    )
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
