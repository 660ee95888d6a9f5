"""Content digests of a build's inputs, so an unchanged module is neither rebuilt nor re-pushed.

A job's key covers everything that decides its image: the context's files (names, contents and the
executable bit), the Dockerfile, the build options, the platform, the base image's id and the wheel
set. Provenance labels (revision, creation time) are deliberately not in it: an unchanged module
keeps the image, and the provenance, of the build that made it. Called by :mod:`outpost.builder.plan`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["IGNORED_DIRS", "digest_strings", "file_digest", "tree_digest"]

# Never part of a build's inputs: caches, and the wheels/ folder the build stages itself.
IGNORED_DIRS = frozenset({"__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache", "wheels"})
_IGNORED_SUFFIXES = (".pyc", ".pyo")


def digest_strings(parts: Iterable[str]) -> str:
    """sha256 of the parts, each length-prefixed so ``("ab", "c")`` and ``("a", "bc")`` differ."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode()
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def tree_digest(root: Path) -> str:
    """Digest of the files under ``root`` (relative names, modes' x bit, contents), in a stable order."""
    h = hashlib.sha256()
    for path in sorted(_files(root)):
        relative = path.relative_to(root).as_posix()
        mode = "x" if os.access(path, os.X_OK) else "-"
        h.update(f"{relative}\0{mode}\0".encode())
        with path.open("rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def _files(root: Path) -> Iterable[Path]:
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in IGNORED_DIRS and not d.endswith(".egg-info")]
        for name in files:
            if not name.endswith(_IGNORED_SUFFIXES):
                yield Path(directory, name)


def file_digest(path: Path) -> str:
    """sha256 of one file's bytes."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
