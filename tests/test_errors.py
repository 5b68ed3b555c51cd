"""The one-line error contract shared by every CLI: `error: file[:line]: what; fix`, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from detseg.cli import get_args_parser
from detseg.cli import main as detseg_main
from detseg.errors import EXIT_USER_ERROR, UserError, run_cli

SRC = Path(__file__).resolve().parents[1] / "src"


def test_message_with_file_line_and_fix():
    err = UserError("box 3 has zero width", path="a/labels/x.txt", line=4, fix="remove the line")
    assert err.message() == "a/labels/x.txt:4: box 3 has zero width; remove the line"
    assert str(err) == err.message()


def test_message_without_location_or_fix():
    assert UserError("epochs must be positive").message() == "epochs must be positive"
    assert UserError("bad", path="f.json").message() == "f.json: bad"


def _fails(argv):
    raise UserError("not JSON", path="gt.json", line=1, fix="check the file")


def test_run_cli_prints_one_line_and_returns_2(capsys):
    assert run_cli(_fails, []) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err == "error: gt.json:1: not JSON; check the file\n"


def test_run_cli_debug_shows_the_exception():
    with pytest.raises(UserError):
        run_cli(_fails, ["--debug"])


def test_run_cli_success_returns_0():
    seen = []
    assert run_cli(seen.append, ["a", "b"]) == 0
    assert seen == [["a", "b"]]


def test_detseg_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        detseg_main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    parser = get_args_parser()
    assert parser.prog == "detseg"
    assert "COMMAND" in out


def test_detseg_unknown_command_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "detseg", "no-such-command"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC), "PATH": ""},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_closed_pipe_exits_quietly():
    code = (
        "import sys\n"
        "from detseg.errors import run_cli\n"
        "def main(argv):\n"
        "    raise BrokenPipeError\n"
        "sys.exit(run_cli(main, []))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)}
    )
    assert proc.returncode == 141
    assert proc.stderr == ""
