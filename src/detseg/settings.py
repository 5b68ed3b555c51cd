"""Process-wide settings read from the environment, in one place.

- ``DETSEG_DATA``: folder where built-in datasets are generated and real ones downloaded (default ``data``).
- ``DETSEG_RUNS``: folder for run outputs (default ``runs``).
- ``DETSEG_SMOKE=1``: smoke mode, used by the tests and notebook checks: data sizes and epochs shrink so
  that a whole lesson runs in seconds. Code reads it through :func:`smoke_mode` only.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """Folder holding ``<recipe>-<seed>/`` built-in datasets and downloads."""
    return Path(os.environ.get("DETSEG_DATA", "data"))


def runs_root() -> Path:
    """Folder holding ``<example>/<name>/`` run outputs."""
    return Path(os.environ.get("DETSEG_RUNS", "runs"))


def smoke_mode() -> bool:
    """True when ``DETSEG_SMOKE`` is set to a non-empty value other than ``0``."""
    return os.environ.get("DETSEG_SMOKE", "") not in ("", "0")
