"""Make this example folder importable, load its scripts under unique names, keep tests light.

The modules (``bbox_data``, ``bbox_models``, ``bbox_training``, ``bbox_cli``) have names unique across
the repository and are imported normally. The scripts share their names with other folders'
(``predict.py``, ``export.py``, ``tour.py``), so :func:`load_script` imports them by path as
``ex07_<name>``. TensorFlow runs on one thread (``DETSEG_TF_THREADS=1``, read by the scripts; the
test processes run side by side on a few cores).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

FOLDER = Path(__file__).resolve().parents[1]
if str(FOLDER) not in sys.path:
    sys.path.insert(0, str(FOLDER))
os.environ.setdefault("DETSEG_TF_THREADS", "1")


def load_script(name: str) -> ModuleType:
    """Import ``<this folder>/<name>.py`` as the module ``ex07_<name>`` (once per session)."""
    module_name = f"ex07_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, FOLDER / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


@pytest.fixture
def script() -> Callable[[str], ModuleType]:
    """``script("train_bbox")`` -> this folder's train_bbox.py as a module."""
    return load_script


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One DETSEG_DATA folder for this folder's tests (the 24-image smoke data is made once)."""
    return tmp_path_factory.mktemp("ex07-data")


@pytest.fixture(scope="session")
def shared_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One DETSEG_RUNS folder for the session-scoped trained run (and the pretrained backbone)."""
    return tmp_path_factory.mktemp("ex07-runs")


@pytest.fixture(autouse=True)
def ex07_env(
    shared_data: Path, shared_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Smoke mode, shared data and runs folders, headless plots, one TensorFlow thread."""
    monkeypatch.setenv("DETSEG_SMOKE", "1")
    monkeypatch.setenv("DETSEG_DATA", str(shared_data))
    monkeypatch.setenv("DETSEG_RUNS", str(shared_runs))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("DETSEG_TF_THREADS", "1")
    yield


TRAIN = [
    "--backbone",
    "small",
    "--batch-size",
    "8",
    "--pretrain-epochs",
    "2",
    "--lr",
    "3e-3",
    "--lr-schedule",
    "constant",
]  # constant: the resume test stops a run after 1 of 3 epochs


@pytest.fixture(scope="session")
def trained(shared_data, shared_runs):
    """07b trained for 3 epochs on the smoke data: the run that predict / export / resume use."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETSEG_SMOKE", "1")
        patch.setenv("DETSEG_DATA", str(shared_data))
        patch.setenv("DETSEG_RUNS", str(shared_runs))
        patch.setenv("DETSEG_TF_THREADS", "1")
        folder = shared_runs / "multi"
        result = load_script("train_multiclass").main(
            [*TRAIN, "--epochs", "3", "--output-dir", str(folder)]
        )
    return folder, result
