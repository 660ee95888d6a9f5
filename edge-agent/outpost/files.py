"""Atomic file writes: a crash at any instant leaves the old file or the new one, never a torn one.

Write a temporary file beside the target (created with the final mode, so secrets are never
readable by others, not even briefly), fsync it, rename it over the target, and optionally
fsync the directory so the rename itself survives a power loss. Used for agent state, process
records, twins, broker configuration, passwords and certificates.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["read_or_create", "write_atomic"]


def write_atomic(path: Path, data: str | bytes, mode: int = 0o600, *, sync_dir: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically (see the module docstring)."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if sync_dir:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The content of ``path``, which ``make()`` creates (mode 0600) on first use.

    Safe when several processes race (agent and hub both want the device key): the first
    hard link wins and everyone reads the winner's content.
    """
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(make())
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink()
    return path.read_bytes()
