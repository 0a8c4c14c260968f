"""The kit's error types and its one error path for command lines.

Every error a user can act on (a bad setting, a malformed file, a stage that has not run, an endpoint that keeps
failing) is a :class:`StecaError` whose message is the whole story. :func:`run_cli` turns one into a single line
on stderr and exit code 2; ``--debug`` or ``STECA_DEBUG=1`` shows the traceback instead. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

#: Exit code of a command that stopped on a :class:`StecaError` (argparse uses the same for bad arguments).
EXIT_USER_ERROR = 2


class StecaError(Exception):
    """An error caused by input or state the user controls; the message says what is wrong and what would do."""


class ConfigError(StecaError, ValueError):
    """A stage setting is unknown or out of range; raised when the config is made, before any work starts."""


class UnknownParameter(ConfigError, TypeError):
    """A parameter name that the stage config does not have (a typo in a parameters cell or ``--set``)."""


class StageNotFinished(StecaError, FileNotFoundError):
    """A stage needs the output of an earlier stage that has not finished in this run folder."""


class MissingExtra(StecaError, ImportError):
    """An optional dependency (an extra: vLLM, ALFWorld, openai, …) is not installed; the message says how."""


class DegenerateOutput(StecaError, RuntimeError):
    """A stage would produce nothing usable (no rows, no records); it is not marked finished."""


def one_line(err: BaseException) -> str:
    """The error's message on one line (continuation lines joined)."""
    return " ".join(str(err).split()) or type(err).__name__


def debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get("STECA_DEBUG", "") not in ("", "0")


def run_cli(main: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run a command line's ``main(argv)``; a :class:`StecaError` ends it with ``error: <message>`` on stderr and
    exit code 2, or its traceback with ``--debug`` (removed from ``argv``) or ``STECA_DEBUG=1``."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    try:
        return main([a for a in args if a != "--debug"])
    except StecaError as err:
        if debug:
            raise
        print(f"error: {one_line(err)} [--debug for the traceback]", file=sys.stderr)
        return EXIT_USER_ERROR
