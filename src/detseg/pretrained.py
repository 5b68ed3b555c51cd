"""Pretrained weights: the real, hash-checked download, and a clear message when it cannot happen.

torchvision publishes each checkpoint at a URL whose file name carries the first hex digits of the file's
SHA-256 (``vgg16-397923af.pth``). :func:`load_state_dict` looks for that file in torch's hub cache
(``$TORCH_HOME/hub/checkpoints/``); if it is missing it downloads it with ``check_hash=True`` (torch.hub
compares the SHA-256 prefix and deletes a mismatching file). A file that is already in the cache is
trusted, exactly as torchvision does, so weights copied there by hand (from a machine with internet)
are used as they are.

Offline, the error names the URL, the path where to put the file, and the alternative that needs no
download (training from scratch on the built-in data with ``--weights none``).
"""

from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from detseg.errors import UserError

NO_DOWNLOAD_HINT = (
    "or train from scratch on the built-in data (the script's flag for no pretrained weights)"
)


def weights_url(weights: Any) -> str:
    """URL of a torchvision ``WeightsEnum`` member, or the string itself when given a URL."""
    return weights if isinstance(weights, str) else weights.url


def cache_path(weights: Any) -> Path:
    """Where torch.hub keeps (or would keep) the file of ``weights``: ``<hub dir>/checkpoints/<name>``."""
    import torch.hub

    name = Path(urlparse(weights_url(weights)).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def load_state_dict(
    weights: Any, *, progress: bool = True, offline_hint: str = NO_DOWNLOAD_HINT
) -> dict[str, Any]:
    """Return the state dict of pretrained ``weights`` (a torchvision ``WeightsEnum`` member or a URL).

    Args:
        weights: a torchvision ``WeightsEnum`` member or the URL of a ``.pth`` file.
        progress: show a download progress bar.
        offline_hint: the alternative named when the download fails, e.g.
            ``"or pass --pretrained none to train from scratch on the built-in data"``.

    Raises:
        UserError: the file is not cached and cannot be downloaded (offline, server error), or the cached
            file is not a readable checkpoint.
    """
    import torch
    import torch.hub

    url = weights_url(weights)
    path = cache_path(weights)
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated or foreign file: say which and how to fix
            raise UserError(
                f"cached weights are not a readable checkpoint ({type(err).__name__})",
                path=path,
                fix=f"delete it and download again from {url}",
            ) from err
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=progress, check_hash=True, weights_only=True
        )
    except RuntimeError as err:
        if "hash" not in str(err).lower():
            raise
        raise UserError(
            f"the file downloaded from {url} failed its SHA-256 check ({err})",
            path=path,
            fix="retry (the download may have been corrupted); if it persists the server copy changed",
        ) from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise UserError(
            f"could not download pretrained weights from {url} ({reason})",
            path=path,
            fix=f"download the file on a machine with internet and put it at {path}, {offline_hint}",
        ) from err
