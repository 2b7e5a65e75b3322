"""One exception type for bad user input, and the wrapper that turns it into one line.

Every check on user input (config, lists, images, checkpoints) raises :class:`UserError` with a
message that names the file/key and says what to do. Entry points run through :func:`run_main`,
which prints that single line to stderr and exits non-zero instead of a traceback wall.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input from the user: a one-line, actionable message."""


def _one_line(message: str) -> str:
    """Recover the original message when a DataLoader worker re-raised the error with its traceback."""
    if "Original Traceback" in message:
        last = message.strip().splitlines()[-1]
        prefix = f"{UserError.__module__}.{UserError.__name__}: "
        message = last.removeprefix(prefix)
    return " ".join(message.split())


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors (a missing or mistyped argument) are a :class:`UserError`: one line
    through :func:`run_main` instead of the usage text."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message}; run it with --help for its arguments")


def run_main(main: Callable[[], object]) -> None:
    """Run an entry point; a :class:`UserError` ends it with one line on stderr and exit code 2."""
    try:
        main()
    except UserError as err:
        print(f"error: {_one_line(str(err))}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def check_creatable(path: str, key: str) -> None:
    """UserError (before anything is written) when folder ``path``, config key ``key``, cannot be created: a
    regular file on its way, or no permission to write in its nearest existing folder."""
    folder = os.path.abspath(path)
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"{key} '{path}' cannot be created: '{existing}' is a file; choose another {key}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(
            f"{key} '{path}' cannot be created: no permission to write in '{existing}'; choose another {key}"
        )
