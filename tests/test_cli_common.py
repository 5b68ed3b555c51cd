"""detseg.cli.common: the shared flags, their checks, and the one-line error contract."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from detseg.cli import common
from detseg.errors import UserError, run_cli


def parser_for(**defaults) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train.py")
    options = {"example": "05_unet_segmentation", "epochs": 12, "batch_size": 4, "lr": 0.001}
    return common.add_standard_args(parser, **{**options, **defaults})


def test_defaults_come_from_the_example(isolated_dirs):
    _, runs = isolated_dirs
    args = parser_for(workers=0, seed=7).parse_args([])
    assert (args.epochs, args.batch_size, args.lr, args.workers, args.seed) == (12, 4, 0.001, 0, 7)
    assert args.output_dir == runs / "05_unet_segmentation" / "train"
    assert args.device == "auto" and args.tracker == "none"
    assert args.data_path is None and args.weights is None
    assert args.resume is False and not args.dry_run and not args.amp and not args.debug


def test_every_standard_flag_parses(tmp_path):
    argv = [
        "--data-path",
        str(tmp_path),
        "--output-dir",
        str(tmp_path / "run"),
        "--device",
        "cpu",
        "--seed",
        "3",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--lr",
        "0.1",
        "--workers",
        "1",
        "--resume",
        "--weights",
        "w.pt",
        "--dry-run",
        "--tracker",
        "csv",
        "--amp",
        "--debug",
    ]
    args = parser_for().parse_args(argv)
    assert args.data_path == tmp_path and args.output_dir == tmp_path / "run"
    assert (args.seed, args.epochs, args.batch_size, args.lr, args.workers) == (3, 2, 8, 0.1, 1)
    assert args.resume is True and args.weights == Path("w.pt") and args.tracker == "csv"
    assert args.dry_run and args.amp and args.debug
    assert parser_for().parse_args(["--resume", "old/last.pt"]).resume == "old/last.pt"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--batch-size", "-2"], "--batch-size must be a positive integer, got -2"),
        (["--workers", "-1"], "--workers must be 0 or more, got -1"),
        (["--lr", "0"], "--lr must be a positive number, got 0.0"),
        (["--lr", "inf"], "--lr must be a positive number, got inf"),
        (["--seed", "-1"], "--seed must be in [0, 2**32)"),
        (["--data-path", "missing"], "missing: --data-path: no such file or folder"),
        (["--weights", "nowhere.pt"], "nowhere.pt: --weights: no such file"),
        (["--resume"], "--resume: no last.pt in the output folder"),
        (["--resume", "gone.pt"], "gone.pt: --resume: no such file"),
    ],
)
def test_bad_values_are_user_errors(tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    args = parser_for().parse_args(argv)
    with pytest.raises(UserError) as caught:
        common.validate_standard_args(args)
    assert message in caught.value.message()


def test_one_line_error_through_run_cli(tmp_path, capsys):
    def main(argv):
        common.validate_standard_args(parser_for().parse_args(argv))

    assert run_cli(main, ["--epochs", "0", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --epochs must be a positive integer, got 0; pass --epochs 1 or more"


def test_existing_path_kinds(tmp_path):
    file = tmp_path / "a.txt"
    file.write_text("x")
    assert common.existing_path(file, "--weights", kind="file") == file
    assert common.existing_path(str(tmp_path), "--data-path", kind="dir") == tmp_path
    with pytest.raises(UserError, match="expected a folder, found a file"):
        common.existing_path(file, "--data-path", kind="dir")
    with pytest.raises(UserError, match="expected a file, found a folder"):
        common.existing_path(tmp_path, "--weights", kind="file")


def test_train_kwargs_and_dry_run(tmp_path):
    args = parser_for().parse_args(["--output-dir", str(tmp_path), "--tracker", "csv"])
    kwargs = common.train_kwargs(args)
    assert kwargs["epochs"] == 12 and kwargs["max_steps_per_epoch"] is None
    assert kwargs["output_dir"] == tmp_path and kwargs["tracker"] == "csv"
    assert kwargs["resume"] is False and kwargs["amp"] is False
    assert kwargs["config"]["lr"] == 0.001
    dry = common.train_kwargs(parser_for().parse_args(["--dry-run", "--resume", "x.pt"]))
    assert dry["epochs"] == 1 and dry["max_steps_per_epoch"] == 1 and dry["resume"] == Path("x.pt")
    assert dry["output_dir"].name == "dry-run"


def test_checkpoint_flag_defaults_to_the_example_runs_best(isolated_dirs):
    _, runs = isolated_dirs
    parser = common.add_checkpoint_arg(argparse.ArgumentParser(), example="01_mask_r_cnn")
    assert parser.parse_args([]).weights == runs / "01_mask_r_cnn" / "train" / "best.pt"
    named = common.add_checkpoint_arg(argparse.ArgumentParser(), example="05", run="unet-salt")
    assert named.parse_args([]).weights == runs / "05" / "unet-salt" / "best.pt"
    assert named.parse_args(["--weights", "w.pt"]).weights == Path("w.pt")


def test_help_shows_real_defaults_only():
    parser = argparse.ArgumentParser(prog="x.py", formatter_class=common.HelpFormatter)
    parser.add_argument("--size", type=int, default=320, help="input side")
    parser.add_argument("--model", default=None, help="model (per dataset if unset)")
    parser.add_argument("--flip", action="store_true", help="mirror images")
    parser.add_argument("--mode", default="fast", help="how (default: fast unless --exact)")
    parser.add_argument("--level", type=float, default=0.5, help="in [0, 1] (%(default)s)")
    text = " ".join(parser.format_help().split())
    assert "input side (default: 320)" in text
    assert "model (per dataset if unset) --flip" in text  # nothing appended for None
    assert "mirror images --mode" in text  # nor for an on/off flag's False
    assert "how (default: fast unless --exact) --level" in text  # said already: not twice
    assert "in [0, 1] (0.5)" in text and "(default: 0.5)" not in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_every_example_parser_uses_the_shared_help_formatter():
    """Each example script's ``argparse.ArgumentParser(...)`` passes ``formatter_class=HelpFormatter``
    (read from the source: importing every script would import TensorFlow and torch)."""
    import ast

    root = Path(__file__).resolve().parents[1]
    scripts = sorted(
        p for p in root.glob("[0-9][0-9]_*/*.py") if "ArgumentParser(" in p.read_text()
    )
    assert len(scripts) >= 25
    for script in scripts:
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "ArgumentParser":
                formatter = {k.arg: k.value for k in node.keywords}.get("formatter_class")
                assert getattr(formatter, "id", None) == "HelpFormatter", f"{script}:{node.lineno}"
