"""The one place where an exception becomes what the user reads: a line, what to do, an exit code.

``outpost.cli.app`` is built on :class:`Boundary`, so every command, including commands added
later, runs inside it without doing anything itself. The contract, also shown by
``outpost --help``:

- exit 0: done; 1: it failed (the message says why and what to do); 2: the command line was
  wrong (usage, bad option value); 130: interrupted. Commands may document other codes of their
  own (``route check`` exits 1 for "does not match"), never a traceback.
- a traceback only with ``outpost --debug`` or ``OUTPOST_DEBUG=1``.

Usage errors raised by typer (and ``typer.BadParameter`` from our own parsers) keep typer's
"Usage: ... Error: ..." form and exit 2; everything else that escapes a command is mapped here.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Any

import typer
from typer._click.exceptions import ClickException
from typer.core import TyperGroup

from outpost.errors import InputError, ManifestError, ModuleRuntimeError, OutpostError, QueryError

__all__ = ["DEBUG_ENV", "EXIT_CODES_HELP", "Boundary", "debug_enabled", "describe", "enable_debug"]

_DEBUG_META = "outpost.debug"

DEBUG_ENV = "OUTPOST_DEBUG"
EXIT_CODES_HELP = (
    "Exit codes: 0 done, 1 failed (the message says what to do next), 2 usage error, 130 interrupted."
    " A traceback is shown only with --debug or OUTPOST_DEBUG=1."
)
_BUG_HINT = "this is a bug in outpost: run it again with --debug (or OUTPOST_DEBUG=1) and report the traceback"


def enable_debug(ctx: typer.Context) -> None:
    """``outpost --debug``: remembered in the invocation's context (shared by every sub-command)."""
    ctx.meta[_DEBUG_META] = True


def debug_enabled(ctx: Any = None) -> bool:
    if ctx is not None and ctx.meta.get(_DEBUG_META):
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in {"", "0", "false", "no", "off"}


def describe(exc: BaseException) -> tuple[str, str]:
    """``(what happened, what to do)`` for an exception no command handled, in the user's words."""
    if isinstance(exc, ManifestError):
        return str(exc), "fix the places named above and run again"
    if isinstance(exc, QueryError):
        return f"{exc}\n{exc.caret()}", "fix the place marked above and run again"
    if isinstance(exc, InputError):
        return str(exc), "fix the input named above and run again"
    if isinstance(exc, ModuleRuntimeError):
        return str(exc), "see `outpost check` for the runtime, and `outpost list` for the modules"
    if isinstance(exc, OutpostError):
        return str(exc), "see `outpost check`"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename is not None else ""
        reason = exc.strerror or str(exc) or type(exc).__name__
        if isinstance(exc, PermissionError):
            return f"{where}{reason}", "run as a user who may read it (or pass another path)"
        if isinstance(exc, FileNotFoundError | NotADirectoryError | IsADirectoryError):
            return f"{where}{reason}", "check the path and run again"
        if isinstance(exc, ConnectionError | TimeoutError):
            return f"{where}{reason}", "is the service running? `outpost check` probes the broker and the runtime"
        return f"{where}{reason}", "check the disk and the path, then run again"
    if isinstance(exc, MemoryError):
        return "out of memory", "free some memory or give a smaller input"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"unexpected {type(exc).__name__}{f': {text}' if text else ''}", _BUG_HINT


def report(exc: BaseException, *, debug: bool = False) -> None:
    """Print the one-line message (plus its hint), and the traceback first in debug mode, on stderr."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    what, todo = describe(exc)
    sys.stderr.write(f"error: {what}\n  -> {todo}\n")
    sys.stderr.flush()


def _passes_through(exc: BaseException) -> bool:
    """typer's own signals (exit codes, usage errors, aborts) keep their meaning."""
    if isinstance(exc, typer.Exit | typer.Abort | ClickException):
        return True
    return isinstance(exc, OSError) and exc.errno == errno.EPIPE  # typer pacifies a closed pipe (exit 1)


class Boundary(TyperGroup):
    """The root group: runs the whole command chain, so nothing unhandled escapes any command."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            sys.stderr.write("interrupted\n")
            raise typer.Exit(130) from exc
        except Exception as exc:
            if _passes_through(exc):
                raise
            report(exc, debug=debug_enabled(ctx))
            raise typer.Exit(1) from exc
