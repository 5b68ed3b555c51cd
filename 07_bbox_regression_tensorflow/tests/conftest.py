"""This folder's test setup: the shared example fixtures of :mod:`detseg.testing`, and one trained
07b run.

``script("train_bbox")`` imports this folder's ``train_bbox.py`` by path (scripts share their names
across folders); the modules (``bbox_data``, ``bbox_models``, ``bbox_training``, ``bbox_cli``) have
unique names and import normally. Every test runs in smoke mode with one torch and one TensorFlow
thread (``DETSEG_TF_THREADS=1``), data generated once per session, and one runs folder for the
session (the trained run below and the pretrained backbone live there).
"""

import pytest

from detseg.testing import example_fixtures

_fixtures = example_fixtures(__file__, tf_threads=True, shared_runs=True)
script = _fixtures.script
shared_data = _fixtures.shared_data
shared_runs = _fixtures.shared_runs
example_env = _fixtures.env


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


@pytest.fixture
def train_argv() -> list[str]:
    """The smoke training flags of the trained run below, for tests that train the same way."""
    return list(TRAIN)


@pytest.fixture(scope="session")
def trained(shared_data, shared_runs):
    """07b trained for 3 epochs on the smoke data: the run that predict / export / resume use."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETSEG_SMOKE", "1")
        patch.setenv("DETSEG_DATA", str(shared_data))
        patch.setenv("DETSEG_RUNS", str(shared_runs))
        patch.setenv("DETSEG_TF_THREADS", "1")
        folder = shared_runs / "multi"
        result = _fixtures.load("train_multiclass").main(
            [*TRAIN, "--epochs", "3", "--output-dir", str(folder)]
        )
    return folder, result
