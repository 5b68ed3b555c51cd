"""This folder's test setup: the shared example fixtures of :mod:`detseg.testing`, and one trained
smoke run.

``script("train")`` imports this folder's ``train.py`` by path (scripts share their names across
folders); the model / data modules (``darknet``, ``yolo_training`` ...) have unique names and
import normally. Every test runs in smoke mode with one torch thread, data generated once per
session and runs inside its ``tmp_path``.
"""

from pathlib import Path

import pytest

from detseg.testing import example_fixtures

_fixtures = example_fixtures(__file__)
script = _fixtures.script
shared_data = _fixtures.shared_data
example_env = _fixtures.env

QUICK_TRAIN = ["--image-size", "64", "--epochs", "1", "--threads", "1", "--mosaic", "0.5"]


@pytest.fixture(scope="session")
def trained_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One smoke-size ``train.py`` run (YOLOv3-tiny at 64 px, one epoch on 13 images), shared by the
    tests of detect / export / train outputs; returns ``train.main``'s result."""
    import torch

    out = tmp_path_factory.mktemp("ex02-run")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETSEG_SMOKE", "1")
        patch.setenv("DETSEG_DATA", str(shared_data))
        patch.setenv("DETSEG_RUNS", str(out / "runs"))
        patch.setenv("MPLBACKEND", "Agg")
        result = _fixtures.load("train").main([*QUICK_TRAIN, "--output-dir", str(out / "run")])
    torch.set_num_threads(threads)
    return result
