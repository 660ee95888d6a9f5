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
from pathlib import PurePath
from typing import Any, get_args

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
    if isinstance(exc, RecursionError):  # json and friends recurse once per nesting level
        return (
            "an input is nested too deeply to read (a JSON document hundreds of levels deep?)",
            "check the files and values given; if they are ordinary, run again with --debug and report it",
        )
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


def _refuse_empty_paths(command: Any) -> None:
    """Every path parameter of the tree refuses ``""`` as a usage error.

    typer turns ``--state-dir ''`` into ``Path('.')``: a command would then write into the current
    directory, or fail deep inside (``Path('.').name`` is empty). No command means "." by "".
    """
    for param in getattr(command, "params", []):
        if _takes_paths(param):
            param.process_value = _non_empty(param, param.process_value)
    for sub in getattr(command, "commands", {}).values():
        _refuse_empty_paths(sub)


def _takes_paths(param: Any) -> bool:
    desc = getattr(param, "type_descriptor", None)
    if desc is None:
        return False
    if desc.is_path or desc.is_file:
        return True
    element = get_args(desc.annotation)[0] if desc.is_list and get_args(desc.annotation) else None
    return isinstance(element, type) and issubclass(element, PurePath)


def _non_empty(param: Any, process: Any) -> Any:
    def process_value(ctx: Any, value: Any) -> Any:
        values = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            raise typer.BadParameter("an empty path names nothing; give a file or directory", ctx=ctx, param=param)
        return process(ctx, value)

    return process_value


class Boundary(TyperGroup):
    """The root group: runs the whole command chain, so nothing unhandled escapes any command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _refuse_empty_paths(self)  # the whole tree exists by now: sub-groups are built first

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
