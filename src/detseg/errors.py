"""User-facing errors and the one place that turns them into a clean exit.

Every CLI (``detseg ...`` and each example's ``train.py`` / ``predict.py`` / ``export.py``) validates its
input at the boundary and raises :class:`UserError`. :func:`run_cli` prints it as one line::

    error: <file>[:<line>]: <what is wrong>; <how to fix>

and exits with status 2. A traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input from the user (a file, a flag, a config): said in one line, with the fix.

    Args:
        what: what is wrong, e.g. ``"box 3 has zero width"``.
        path: the file concerned, if any.
        line: 1-based line number in that file, if known.
        fix: how to fix it, e.g. ``"run 'detseg data validate DIR' to list every problem"``.
    """

    def __init__(
        self,
        what: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.what = what
        self.path = None if path is None else str(path)
        self.line = line
        self.fix = fix
        super().__init__(self.message())

    def message(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        text = f"{where}{self.what}"
        if self.fix:
            text += f"; {self.fix}"
        return text


def run_cli(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` and turn a :class:`UserError` into one line on stderr and exit status 2.

    ``--debug`` anywhere in ``argv`` lets the exception through with its traceback (the scripts'
    parsers accept and ignore that flag). ``KeyboardInterrupt`` exits 130 without a traceback.
    An argparse error (unknown flag, invalid choice, a number that is not one) is a UserError too:
    one line naming the flag, instead of argparse's usage text and error on several lines.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        with _argparse_errors_in_one_line():
            main(args)
    except UserError as err:
        if debug:
            raise
        print(f"error: {err.message()}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `detseg ... | head` closed the pipe: stop quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return 0


@contextlib.contextmanager
def _argparse_errors_in_one_line() -> Iterator[None]:
    """While it is active, ``ArgumentParser.error`` raises a :class:`UserError` (and prints nothing)."""

    def error(parser: argparse.ArgumentParser, message: str) -> None:
        raise UserError(message, fix=f"see '{parser.prog} --help'")

    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = error  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original  # type: ignore[method-assign]
