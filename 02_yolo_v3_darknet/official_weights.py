"""darknet's official COCO weights: URL, size and SHA-256, downloaded once and checked.

- ``yolov3``: https://pjreddie.com/media/files/yolov3.weights, 248,007,048 bytes,
  SHA-256 ``523e4e69e1d0...``
- ``yolov3-tiny``: https://pjreddie.com/media/files/yolov3-tiny.weights, 35,434,956 bytes,
  SHA-256 ``dccea06f59b7...``
- ``yolov3-spp``: https://pjreddie.com/media/files/yolov3-spp.weights, size from the cfg, no
  published hash found

The two hashes are the ones that many independent projects pin for these files (e.g. package
recipes of darknet-based tools); for yolov3-spp we found none to pin, so only its size (which the
cfg implies) is checked. Files live in ``<DETSEG_DATA>/weights/``; a file put there by hand is
checked the same way. Offline, the error names the URL, the path and the built-in alternative.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from darknet_cfg import parse_cfg

from detseg import settings
from detseg.data.download import sha256_of
from detseg.errors import UserError


@dataclass(frozen=True)
class OfficialWeights:
    url: str
    sha256: str | None


OFFICIAL_WEIGHTS = {
    "yolov3": OfficialWeights(
        "https://pjreddie.com/media/files/yolov3.weights",
        "523e4e69e1d015393a1b0a441cef1d9c7659e3eb2d7e15f793f060a21b32f297",
    ),
    "yolov3-tiny": OfficialWeights(
        "https://pjreddie.com/media/files/yolov3-tiny.weights",
        "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
    ),
    "yolov3-spp": OfficialWeights("https://pjreddie.com/media/files/yolov3-spp.weights", None),
}
OFFLINE_HINT = (
    "or train your own model on the built-in data with train.py and pass "
    "--weights runs/02_yolo_v3_darknet/train/best.pt"
)


def weights_path(name: str) -> Path:
    return settings.data_root() / "weights" / f"{name}.weights"


def check_file(name: str, path: Path) -> Path:
    """Size from the cfg, then SHA-256 where one is pinned; a bad file is named, not deleted."""
    entry = OFFICIAL_WEIGHTS[name]
    size = parse_cfg(name).weights_bytes
    if path.stat().st_size != size:
        raise UserError(
            f"has {path.stat().st_size:,} bytes, {name}.weights has {size:,}", path=path,
            fix=f"delete it and download it again from {entry.url}",
        )  # fmt: skip
    if entry.sha256 is not None and sha256_of(path) != entry.sha256:
        raise UserError(
            f"SHA-256 differs from the published {entry.sha256[:12]}...", path=path,
            fix=f"delete it and download it again from {entry.url}",
        )  # fmt: skip
    return path


def official_weights(name: str, *, timeout: float = 30.0) -> Path:
    """Path of darknet's official ``<name>.weights``, downloaded (and checked) on first use.

    Raises:
        UserError: unknown name; offline (naming URL, path and the alternative); a bad file.
    """
    if name not in OFFICIAL_WEIGHTS:
        raise UserError(f"no official weights for {name!r}",
                        fix=f"use one of {', '.join(OFFICIAL_WEIGHTS)}")  # fmt: skip
    path = weights_path(name)
    if path.is_file():
        return check_file(name, path)
    url = OFFICIAL_WEIGHTS[name].url
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "detseg"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        part.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err.__class__.__name__
        raise UserError(
            f"cannot download {url} ({reason})", path=path,
            fix=f"download it on a machine with internet and put it at this path, {OFFLINE_HINT}",
        ) from err  # fmt: skip
    try:
        check_file(name, part)
    except UserError:
        part.unlink(missing_ok=True)
        raise
    part.replace(path)
    return path
