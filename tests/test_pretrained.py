"""Pretrained weights: cached file used as is, real download path with hash check, offline message."""

from __future__ import annotations

import socket

import pytest
import torch
import torchvision
from torchvision.models import ResNet18_Weights

from detseg import pretrained
from detseg.errors import UserError


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def _closed_port_url(name: str) -> str:
    with socket.socket() as sock:  # bind then close: nothing listens there any more
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/models/{name}"


def test_cache_path_is_torch_hub_checkpoint_name(torch_home):
    path = pretrained.cache_path(ResNet18_Weights.IMAGENET1K_V1)
    assert path == torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"


def test_state_dict_saved_at_the_cache_name_is_loaded(torch_home):
    model = torchvision.models.resnet18(weights=None)
    path = pretrained.cache_path(ResNet18_Weights.IMAGENET1K_V1)
    path.parent.mkdir(parents=True)
    torch.save(model.state_dict(), path)
    state = pretrained.load_state_dict(ResNet18_Weights.IMAGENET1K_V1)
    fresh = torchvision.models.resnet18(weights=None)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.conv1.weight, model.conv1.weight)


def test_corrupt_cached_file_is_one_clear_error(torch_home):
    path = pretrained.cache_path(ResNet18_Weights.IMAGENET1K_V1)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError) as info:
        pretrained.load_state_dict(ResNet18_Weights.IMAGENET1K_V1)
    assert str(path) in info.value.message()
    assert "delete it" in info.value.message()


def test_offline_names_url_path_and_alternative(torch_home):
    url = _closed_port_url("resnet18-f37072fd.pth")
    with pytest.raises(UserError) as info:
        pretrained.load_state_dict(url, progress=False, offline_hint="or pass --pretrained none")
    message = info.value.message()
    assert url in message
    assert str(torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert message.endswith("or pass --pretrained none")


@pytest.fixture
def http_dir(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www, stopped after the test."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _serve_state_dict(root, hash_prefix=None):
    import hashlib

    state = {"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    blob = root / "blob.pth"
    torch.save(state, blob)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    name = f"tiny-{hash_prefix or digest[:8]}.pth"
    blob.rename(root / name)
    return state, name


def test_download_checks_hash_and_caches(torch_home, http_dir):
    root, base = http_dir
    state, name = _serve_state_dict(root)
    loaded = pretrained.load_state_dict(f"{base}/{name}", progress=False)
    torch.testing.assert_close(loaded["weight"], state["weight"])
    assert (torch_home / "hub" / "checkpoints" / name).is_file()


def test_download_with_wrong_hash_is_refused(torch_home, http_dir):
    root, base = http_dir
    _, name = _serve_state_dict(root, hash_prefix="deadbeef")
    with pytest.raises(UserError) as info:
        pretrained.load_state_dict(f"{base}/{name}", progress=False)
    assert "SHA-256" in info.value.message()
    assert not (torch_home / "hub" / "checkpoints" / name).exists()
