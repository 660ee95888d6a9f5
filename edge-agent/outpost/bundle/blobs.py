"""A content-addressed staging directory: every blob stored once under its sha256.

``put`` hashes while it copies, so a blob is read once; a digest already present is not
written again (layers shared between images, or a model two modules use). Used by ``create``
(to gather a bundle) and ``apply`` (to stage verified blobs before the engine sees them).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import IO

from outpost.bundle.layout import Progress, blob_name, no_progress

__all__ = ["CHUNK", "BlobDir", "sha256_file"]

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class BlobDir:
    """``root/blobs/sha256/<hex>`` files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        self._n = 0

    def path(self, digest_hex: str) -> Path:
        return self.root / blob_name(digest_hex)

    def has(self, digest_hex: str) -> bool:
        return self.path(digest_hex).exists()

    def put(self, source: IO[bytes], *, what: str = "", total: int = 0, progress: Progress = no_progress) -> str:
        """Copy ``source`` in; returns its sha256 hex. ``progress`` sees the bytes copied."""
        self._n += 1
        tmp = self.root / f".incoming-{self._n}"
        digest = hashlib.sha256()
        done = 0
        with tmp.open("wb") as out:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                done += len(chunk)
                progress(what, done, total)
        hex_ = digest.hexdigest()
        if self.has(hex_):
            tmp.unlink()
        else:
            os.replace(tmp, self.path(hex_))
        return hex_

    def put_bytes(self, data: bytes) -> str:
        hex_ = hashlib.sha256(data).hexdigest()
        if not self.has(hex_):
            self.path(hex_).write_bytes(data)
        return hex_

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
