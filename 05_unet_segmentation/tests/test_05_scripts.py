"""Every script's main() on tiny built-in data (smoke mode), and one-line errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detseg.data import recipes
from detseg.data.imageio import read_image
from detseg.errors import run_cli


@pytest.fixture
def salt_checkpoint(script, tmp_path):
    """A U-Net trained for one batch on salt (``train.py --dry-run``): what predict / export load."""
    result = script("train").main(
        ["--dataset", "salt", "--width", "0.25", "--dry-run", "--output-dir", str(tmp_path / "t")]
    )
    return tmp_path / "t" / "dry-run" / "best.pt", result


@pytest.mark.parametrize(
    ("dataset", "model", "metric"),
    [
        ("road", "fcn8s", "iou_road"),
        ("street", "pspnet_os16", "mean_iou"),
        ("street", "lraspp_mobilenet_v3_large", "mean_iou"),
    ],
)
def test_train_dry_run(script, tmp_path, dataset, model, metric):
    argv = ["--dataset", dataset, "--model", model, "--dry-run", "--batch-size", "2"]
    result = script("train").main([*argv, "--output-dir", str(tmp_path)])
    [epoch] = result["history"]
    assert epoch["steps"] == 1 and 0.0 <= epoch["eval"][metric] <= 1.0
    assert result["main_metric"] == metric and result["parameters"] > 0
    assert (tmp_path / "dry-run" / "last.pt").is_file()


def test_train_salt_dry_run_and_real_layout_from_data_path(script, salt_checkpoint, tmp_path):
    _, result = salt_checkpoint
    assert set(result["final"]) >= {"eval/iou_salt", "eval/mean_dice", "eval/pixel_accuracy"}
    # the built-in folder is the real TGS layout: the same reader takes it through --data-path
    folder = recipes.ensure("salt")
    argv = ["--data-path", str(folder), "--width", "0.25", "--dry-run"]
    again = script("train").main([*argv, "--output-dir", str(tmp_path / "real")])
    assert again["final"]["eval/iou_salt"] == result["final"]["eval/iou_salt"]


def test_train_bad_input_is_one_line_exit_2(script, tmp_path, capsys):
    train = script("train")
    assert run_cli(train.main, ["--data-path", str(tmp_path / "missing"), "--dry-run"]) == 2
    assert run_cli(train.main, ["--num-images", "0", "--dry-run"]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(train.main, ["--data-path", str(empty), "--dry-run"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
    assert "missing" in errors[0] and "--num-images" in errors[1]


def test_predict_image_folder_and_video(script, salt_checkpoint, tmp_path):
    weights, _ = salt_checkpoint
    predict = script("predict")
    folder = recipes.ensure("salt") / "train" / "images"
    first = sorted(folder.iterdir())[0]
    out = tmp_path / "pred"
    one = predict.main(
        ["--weights", str(weights), "--source", str(first), "--output-dir", str(out)]
    )
    assert one["images"] == 1 and sum(one["class_fractions"].values()) == pytest.approx(1.0)
    overlay = read_image(out / f"{first.stem}_overlay.png")
    mask = read_image(out / f"{first.stem}_mask.png", grey=True)
    assert overlay.shape == (101, 101, 3) and set(np.unique(mask)) <= {0, 1}
    many = predict.main(
        ["--weights", str(weights), "--source", str(folder), "--output-dir", str(out)]
    )
    assert many["images"] == recipes.SMOKE_IMAGES
    video = predict.main(
        ["--weights", str(weights), "--source", "synthetic", "--max-frames", "3",
         "--output-dir", str(out)]
    )  # fmt: skip
    assert video["frames"] == 3 and video["outputs"][0].endswith((".mp4", ".avi"))


def test_predict_bad_input_is_one_line_exit_2(script, salt_checkpoint, tmp_path, capsys):
    weights, _ = salt_checkpoint
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    predict = script("predict")
    assert run_cli(predict.main, ["--weights", str(weights), "--source", str(corrupt)]) == 2
    assert run_cli(predict.main, ["--weights", str(tmp_path / "no.pt"), "--source", "x"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "corrupt.png" in errors[0] and "no.pt" in errors[1]


def lively_checkpoint(weights, images, path):
    """``weights`` with BatchNorm statistics measured on ``images``: after one training step the
    running statistics still shrink every activation, the logits are all ~0.002 and parity on them
    would prove nothing."""
    from segmentation_models import load_trained

    from detseg.engine import load_checkpoint, save_checkpoint

    model = load_trained(weights, device="cpu")[0]
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one pass sets the batch statistics
    model.train()
    with torch.no_grad():
        model(images)
    state = load_checkpoint(weights)
    state["model"] = model.state_dict()
    save_checkpoint(state, path)
    return path


def test_export_parity(script, salt_checkpoint, tmp_path):
    from segmentation_models import LogitsOnly, load_trained

    from detseg.data.torch_datasets import image_to_tensor
    from detseg.data.transforms import Normalize
    from detseg.export import check_parity, ort_run, ort_session

    folder = recipes.ensure("salt") / "train" / "images"
    paths = sorted(folder.iterdir())
    real = torch.stack([image_to_tensor(Normalize()(read_image(p), {})[0]) for p in paths])
    weights = lively_checkpoint(salt_checkpoint[0], real[2:], tmp_path / "lively.pt")
    out = tmp_path / "unet.onnx"
    argv = ["--weights", str(weights), "--output", str(out), "--dry-run", "--tolerance", "1e-3"]
    result = script("export").main(argv)
    assert out.is_file() and result["input_shape"] == [1, 3, 101, 101]
    assert result["max_abs_diff"] <= 1e-3 and result["speed_ratio"] > 0
    # (logits up to ~17 here: float32 rounding reaches 1.3e-4 on the traced input)
    # the file on inputs other than the traced N(0, 1) noise: two real salt images in one batch
    # (the dynamic batch axis), and brighter noise of another batch size
    model = LogitsOnly(load_trained(weights, device="cpu")[0]).eval()
    session = ort_session(out, threads=1)
    noise = 3 * torch.rand(3, 3, 101, 101, generator=torch.Generator().manual_seed(1))
    for images in (real[:2], noise):
        with torch.no_grad():
            eager = model(images)
        assert eager.shape == (len(images), 1, 101, 101) and eager.std() > 0.05, eager.std()
        # float32 rounding relative to the logits' size (measured 4e-6 and 6e-6 of the largest)
        assert check_parity(model, session, images) <= 2e-5 * float(eager.abs().max())
        assert ort_run(session, images)[0].shape == tuple(eager.shape)


def test_tour_quick_path(script, tmp_path):
    result = script("tour").run(tmp_path)
    assert 0.0 <= result["iou_salt"] <= 1.0 and result["onnx_max_abs_diff"] <= 1e-4
    assert all(path.is_file() for path in map(type(tmp_path), result["pictures"]))


def test_bench_case_runs_in_smoke_mode(script):
    result = script("bench_cases").case_ort_vs_eager()
    assert result["max_abs_diff"] <= 1e-4 and result["main"] == "speedup"


def test_train_defaults_follow_the_dataset(script):
    train = script("train")

    def resolved(*argv):
        return train.resolve_defaults(train.get_args_parser().parse_args(list(argv)))

    road = resolved("--dataset", "road")
    assert (road.model, road.width, road.epochs, road.batch_size) == ("fcn8s", None, 8, 4)
    salt = resolved("--dataset", "salt", "--epochs", "2")
    assert (salt.model, salt.width, salt.epochs, salt.num_images) == ("unet", 0.5, 2, 2000)
    other_model = resolved("--dataset", "salt", "--model", "fcn8s")
    assert other_model.width is None  # fcn8s keeps its own default width
    assert str(resolved("--dataset", "street").output_dir).endswith("unet-street")
