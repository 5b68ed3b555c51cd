"""Reading and writing images at the file boundary: RGB uint8 HWC in memory, whatever is on disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from detseg.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: str | Path, *, grey: bool = False) -> np.ndarray:
    """Read an image file.

    Args:
        path: image file.
        grey: return a single channel [H, W] instead of RGB.
    Returns:
        uint8 [H, W, 3] RGB, or [H, W] when ``grey``.
    Raises:
        UserError: the file is missing or is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            "image file not found", path=path, fix="check the path or re-create the dataset"
        )
    data = np.fromfile(str(path), dtype=np.uint8)
    flag = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
    image = cv2.imdecode(data, flag) if data.size else None
    if image is None:
        raise UserError(
            "not a readable image (corrupt or unsupported format)",
            path=path,
            fix="replace or delete the file; 'detseg data validate' lists every such file",
        )
    return image if grey else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label_png(path: str | Path) -> np.ndarray:
    """Read a label / mask PNG exactly as stored (palette indices or grey values, no colour conversion).

    Returns:
        uint8 or uint16 [H, W] for single-channel files, uint8 [H, W, 3] RGB for colour-coded labels.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError("mask file not found", path=path, fix="check the dataset layout")
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode == "P":  # palette PNG (e.g. PennFudan): keep the indices
                return np.asarray(img)
            if img.mode in ("RGB", "RGBA"):
                return np.asarray(img.convert("RGB"))
            return np.asarray(img)
    except OSError as err:
        raise UserError(
            f"not a readable mask image ({err})", path=path, fix="replace the file"
        ) from err


def write_image(path: str | Path, image: np.ndarray, *, jpeg_quality: int = 95) -> Path:
    """Write an RGB [H, W, 3] or grey [H, W] uint8 image; the suffix picks the format. Creates parents."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"write_image expects uint8, got {image.dtype}")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = (
        [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    )
    ok, buf = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise ValueError(f"could not encode image as {path.suffix}")
    buf.tofile(str(path))
    return path
