"""Make this example folder importable, load its scripts under unique names, keep tests light.

The model / data modules (``selective_search``, ``rcnn_models`` ...) have names unique across the repository and
are imported normally. The scripts (``train_rcnn.py``, ``detect.py``, ``tour.py`` ...) share
their names with other folders' scripts, so :func:`load_script` imports them by path as
``ex06_<name>``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

FOLDER = Path(__file__).resolve().parents[1]
if str(FOLDER) not in sys.path:
    sys.path.insert(0, str(FOLDER))


def load_script(name: str) -> ModuleType:
    """Import ``<this folder>/<name>.py`` as the module ``ex06_<name>`` (once per session)."""
    module_name = f"ex06_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, FOLDER / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


@pytest.fixture
def script() -> Callable[[str], ModuleType]:
    """``script("train")`` -> this folder's train.py as a module."""
    return load_script


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One DETSEG_DATA folder for this folder's tests: the smoke-size built-in datasets are generated
    once per session instead of once per test."""
    return tmp_path_factory.mktemp("ex06-data")


@pytest.fixture(autouse=True)
def ex06_env(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Smoke mode, shared data, runs in tmp, headless plots, and one torch / OpenCV thread: the suite
    runs several test processes side by side on a few cores, where extra threads only wait."""
    import cv2
    import torch

    monkeypatch.setenv("DETSEG_SMOKE", "1")
    monkeypatch.setenv("DETSEG_DATA", str(shared_data))
    monkeypatch.setenv("DETSEG_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(threads)
    cv2.setNumThreads(cv_threads)
