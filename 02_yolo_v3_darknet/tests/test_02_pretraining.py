"""Partial darknet weights (``yolov3-tiny.conv.15``): written, sized, loaded into the first 15
layers only, refused when they do not fit; the shape-crop pretraining that makes them offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from darknet import load_weights, partial_layers, randomize, save_weights
from darknet_pretraining import PartialClassifier, PretrainConfig, ensure_partial
from yolo_training import build_custom_model

from detseg.data import recipes
from detseg.errors import UserError

# yolov3-tiny's convolutions 0-14 (batch norm: 4 numbers a filter, then the k x k x C x F kernel):
# 3x3 3->16, 16->32, 32->64, 64->128, 128->256, 256->512, 512->1024, 1x1 1024->256, 3x3 256->512
CONV15_FLOATS = sum(
    k * k * c * f + 4 * f
    for k, c, f in [(3, 3, 16), (3, 16, 32), (3, 32, 64), (3, 64, 128), (3, 128, 256),
                    (3, 256, 512), (3, 512, 1024), (1, 1024, 256), (3, 256, 512)]
)  # fmt: skip
CONV15_BYTES = 20 + 4 * CONV15_FLOATS  # 30,973,396


def _pretrained_body(seed: int = 1) -> torch.nn.Module:
    return randomize(PartialClassifier("yolov3-tiny", 15, 5, side=64).body, seed=seed)


def test_partial_file_has_the_size_of_the_first_15_layers(tmp_path: Path) -> None:
    """The classifier's body written whole, and the detector written with ``layers=15`` (what
    ``darknet partial ... 15`` does), are the same bytes: header + layers 0-14, nothing else."""
    assert CONV15_BYTES == 30_973_396
    body = _pretrained_body()
    path = save_weights(body, tmp_path / "yolov3-tiny.conv.15")
    assert path.stat().st_size == CONV15_BYTES
    detector, _ = build_custom_model("yolov3-tiny", 5, image_size=64)
    load_weights(detector, path, layers=15)
    cut = save_weights(detector, tmp_path / "cut.conv.15", layers=15)
    assert cut.read_bytes() == path.read_bytes()
    assert partial_layers(path) == 15 and partial_layers(tmp_path / "a.weights") is None


def test_loading_fills_the_first_15_layers_exactly_and_nothing_else(tmp_path: Path) -> None:
    body = _pretrained_body()
    path = save_weights(body, tmp_path / "yolov3-tiny.conv.15")
    detector, _ = build_custom_model("yolov3-tiny", 5, image_size=64)
    before = {k: v.clone() for k, v in detector.state_dict().items()}
    info = load_weights(detector, path, layers=15)
    assert info["layers"] == 15 and info["version"] == (0, 2, 0)
    loaded = detector.state_dict()
    for key, value in body.state_dict().items():  # layers.0 ... layers.14: identical
        assert torch.equal(loaded[key], value), key
    later = [k for k in loaded if int(k.split(".")[1]) >= 15]
    assert later and all(torch.equal(loaded[k], before[k]) for k in later)
    # the detector's first 15 layers now compute what the pretrained body computes
    body.eval()
    detector.eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(detector.features(images, 15), body.features(images, 15))


def test_a_partial_file_that_does_not_fit_is_one_clear_error(tmp_path: Path) -> None:
    path = save_weights(_pretrained_body(), tmp_path / "yolov3-tiny.conv.15")
    detector, _ = build_custom_model("yolov3-tiny", 5, image_size=64)
    with pytest.raises(UserError, match=r"30,973,396 bytes but the first 14 layers .* implies"):
        load_weights(detector, path, layers=14)
    (tmp_path / "short.conv.15").write_bytes(path.read_bytes()[:-4])
    with pytest.raises(UserError) as error:
        load_weights(detector, tmp_path / "short.conv.15", layers=15)
    message = error.value.message()
    assert "30,973,392 bytes" in message and "30,973,396" in message and "\n" not in message
    with pytest.raises(UserError, match="24 layers"):
        load_weights(detector, path, layers=30)


def test_train_refuses_a_wrong_partial_file_with_exit_2(script, tmp_path: Path, capsys) -> None:
    from detseg.errors import run_cli

    bad = tmp_path / "yolov3-tiny.conv.15"
    bad.write_bytes(save_weights(_pretrained_body(), tmp_path / "x.conv.15").read_bytes()[:-8])
    train = script("train")
    code = run_cli(train.main, ["--weights", str(bad), "--dry-run", "--image-size", "64"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {bad}: ") and "the first 15 layers" in err[0]


def test_pretraining_is_cached_with_its_seconds_and_refuses_the_detectors_images(
    tmp_path: Path,
) -> None:
    config = PretrainConfig(num_images=16, epochs=1, max_steps=1, side=32)
    detector = {s: recipes.load("shapes", split=s, num_images=16) for s in ("train", "val")}
    path, info = ensure_partial(tmp_path / "yolov3-tiny.conv.15", config, held_out=detector,
                                log=lambda text: None)  # fmt: skip
    assert not info["cached"] and info["steps"] == 1 and info["seconds"] > 0
    assert path.stat().st_size == info["bytes"] == CONV15_BYTES  # the side changes no weight
    first = path.read_bytes()
    again, info_again = ensure_partial(path, config, held_out=detector, log=lambda text: None)
    assert info_again["cached"] and info_again["seconds"] == info["seconds"]
    assert again.read_bytes() == first
    # pretraining on the detector's own scenes (data seed 0) is refused, cached file or not
    same = {s: recipes.load("shapes", split=s, seed=1, num_images=16) for s in ("train", "val")}
    with pytest.raises(UserError, match="pretraining images include"):
        ensure_partial(path, config, held_out={"detector val": same["val"]})


def test_train_starts_from_the_pretrained_partial_file(trained_run: dict) -> None:
    """The default run pretrains (smoke size), and says so; its time is not the training's."""
    pretraining = trained_run["backbone_pretraining"]
    assert pretraining["path"].endswith("yolov3-tiny.conv.15")
    assert trained_run["start_weights"] == pretraining["path"]
    assert trained_run["pretrain_s"] == pretraining["seconds"] > 0
    assert Path(pretraining["path"]).stat().st_size == CONV15_BYTES
