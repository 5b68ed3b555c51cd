"""detseg.devices: device choice and its errors, MPS fallback, seeding, determinism."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from detseg import devices
from detseg.errors import UserError


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine without CUDA and without MPS, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(devices, "mps_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, no_gpu):
    assert devices.select_device("auto") == torch.device("cpu")
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    assert devices.select_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert devices.select_device("auto") == torch.device("cuda", 0)


def test_explicit_devices(two_gpus):
    assert devices.select_device("cpu") == torch.device("cpu")
    assert devices.select_device("CUDA") == torch.device("cuda", 0)
    assert devices.select_device("cuda:1") == torch.device("cuda", 1)


def test_missing_cuda_is_a_user_error_with_the_fix(no_gpu):
    with pytest.raises(UserError) as caught:
        devices.select_device("cuda")
    message = caught.value.message()
    assert "--device cuda requested" in message
    assert "--device auto or cpu" in message


def test_cuda_index_out_of_range(two_gpus):
    with pytest.raises(UserError, match=r"only 2 CUDA device\(s\) exist \(cuda:0..cuda:1\)"):
        devices.select_device("cuda:2")


def test_missing_mps_and_unknown_names(no_gpu):
    with pytest.raises(UserError, match="--device mps requested"):
        devices.select_device("mps")
    for name in ("gpu", "cuda:", "cuda:x", ""):
        with pytest.raises(UserError, match="unknown device"):
            devices.select_device(name)


def test_mps_fallback_is_set_only_where_it_can_work():
    env: dict[str, str] = {}
    assert devices._enable_mps_fallback(env, is_macos=True, torch_imported=False) is True
    assert env == {"PYTORCH_ENABLE_MPS_FALLBACK": "1"}
    # torch already imported: setting it now would be too late, so it is neither set nor claimed
    env = {}
    assert devices._enable_mps_fallback(env, is_macos=True, torch_imported=True) is False
    assert env == {}
    # exported in the shell: in effect whatever the import order
    env = {"PYTORCH_ENABLE_MPS_FALLBACK": "1"}
    assert devices._enable_mps_fallback(env, is_macos=True, torch_imported=True) is True
    # the user's own choice is kept
    env = {"PYTORCH_ENABLE_MPS_FALLBACK": "0"}
    assert devices._enable_mps_fallback(env, is_macos=True, torch_imported=False) is False
    assert env["PYTORCH_ENABLE_MPS_FALLBACK"] == "0"
    env = {}
    devices._enable_mps_fallback(env, is_macos=False, torch_imported=False)
    assert env == {}


def _draws() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(3)  # noqa: NPY002


def test_seed_everything_repeats_every_generator():
    devices.seed_everything(123)
    first = _draws()
    devices.seed_everything(123)
    second = _draws()
    devices.seed_everything(124)
    other = _draws()
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])
    assert first[0] != other[0] and first[1] != other[1] and not torch.equal(first[2], other[2])
    with pytest.raises(UserError, match="--seed -1 is out of range"):
        devices.seed_everything(-1)


@pytest.fixture
def restore_determinism(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    state = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(state[0], warn_only=state[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = state[2], state[3]


def test_set_deterministic_on_and_off(restore_determinism):
    torch.backends.cudnn.benchmark = True
    devices.set_deterministic(True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    devices.set_deterministic(True, warn_only=False)
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    devices.set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic


def test_describe_device():
    text = devices.describe_device("cpu")
    assert text.startswith("cpu (")
    assert f"{torch.get_num_threads()} threads" in text
    assert torch.__version__.split("+")[0] in text
    if torch.cuda.is_available():
        assert devices.describe_device("cuda").startswith("cuda:0 (")
