"""``outpost bundle create``: pack deployment content and everything it needs into one tar.

Validates the manifest, signs it (``--sign-key``), saves every image it runs from the engine
(refusing one built for another platform), gathers model files its module twins point to,
stores each blob once, then writes the index (signed with the same key), ``SHA256SUMS`` and
the blobs. The tar is written beside the target and renamed into place, so a failed create
leaves no half bundle. Called by the CLI with a Docker ``ImageEngine`` and a source opener.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from outpost.bundle.archive import split
from outpost.bundle.blobs import CHUNK, BlobDir
from outpost.bundle.engine import ImageEngine
from outpost.bundle.layout import (
    CONTENT,
    INDEX,
    SIGNATURE,
    SUMS,
    BundleError,
    FileEntry,
    Index,
    ModelEntry,
    Progress,
    blob_name,
    no_progress,
)
from outpost.bundle.models import file_refs, twins
from outpost.manifest import load_manifest
from outpost.trust.canonical import canonical_bytes
from outpost.trust.content import sign_document
from outpost.trust.images import image_refs, is_pinned
from outpost.trust.signing import Context, sign

__all__ = ["Created", "create_bundle"]

Opener = Callable[[str], IO[bytes]]


@dataclass
class Created:
    path: Path
    index: Index
    warnings: list[str] = field(default_factory=list)
    size: int = 0


def _images(document: dict[str, Any], platform: str, engine: ImageEngine, warnings: list[str]) -> list[str]:
    refs: list[str] = []
    for ref in image_refs(document):
        if ref.image in refs:
            continue
        info = engine.inspect(ref.image)
        if info is None:
            raise BundleError(f"{ref.pointer}: image {ref.image} is not in this engine; build it for {platform} first")
        if info.platform != platform and not info.platform.startswith(platform + "/"):
            raise BundleError(
                f"{ref.pointer}: image {ref.image} is {info.platform}, not {platform}; build it for {platform} "
                f"(e.g. DOCKER_BUILDKIT=1 /usr/bin/docker build --platform {platform} ...) and create the bundle again"
            )
        if not is_pinned(ref.image):
            warnings.append(f"{ref.pointer}: {ref.image} is named by tag; the bundle pins it to {info.id}")
        refs.append(ref.image)
    return refs


def create_bundle(
    document: dict[str, Any],
    *,
    platform: str,
    output: Path,
    engine: ImageEngine,
    opener: Opener,
    sign_key: Ed25519PrivateKey | None = None,
    name: str = "bundle",
    progress: Progress = no_progress,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Created:
    """Write the bundle to ``output``; ``BundleError``/``ManifestError`` say what is wrong (nothing written)."""
    load_manifest(document)
    content = sign_document(document, sign_key) if sign_key is not None else document
    warnings: list[str] = []
    refs = _images(content, platform, engine, warnings)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bundle-", dir=output.parent) as tmp:
        blobs = BlobDir(Path(tmp))
        index = Index(platform=platform, created_at=now().isoformat(timespec="seconds"), deployment=name)
        for ref in refs:
            info = engine.inspect(ref)
            size = info.size if info else 0
            index.images.append(split(ref, engine.save(ref), blobs, size=size, progress=progress))
        index.twins = sorted(twins(content))
        for file in file_refs(content):
            try:
                source = opener(file.source)
            except BundleError:
                if file.target is not None and file.source.startswith("/"):
                    warnings.append(
                        f"{file.pointer}: {file.source} is not on this machine (not packed; inside the image?)"
                    )
                    continue
                raise
            with source:
                hex_ = blobs.put(source, what=file.source, progress=progress)
            if file.sha256 is not None and file.sha256 != hex_:
                raise BundleError(f"{file.pointer}: {file.source} has sha256 {hex_}, but the twin says {file.sha256}")
            index.models.append(ModelEntry(file.module, file.pointer, file.source, hex_, file.target))
        content_bytes = json.dumps(content, indent=2, ensure_ascii=False).encode() + b"\n"
        (Path(tmp) / CONTENT).write_bytes(content_bytes)
        files = {CONTENT: Path(tmp) / CONTENT}
        for hex_ in sorted({*(i.config for i in index.images), *(x for i in index.images for x in i.layers),
                            *(m.sha256 for m in index.models)}):  # fmt: skip
            files[blob_name(hex_)] = blobs.path(hex_)
        for member, path in files.items():
            index.files[member] = FileEntry(_hex_of(member, path, blobs), path.stat().st_size)
        sums = index.sums_text().encode()
        (Path(tmp) / SUMS).write_bytes(sums)
        files[SUMS] = Path(tmp) / SUMS
        index.files[SUMS] = FileEntry(blobs.put_bytes(sums), len(sums))
        index_bytes = canonical_bytes(index.to_json())
        signatures = [sign(Context.BUNDLE, index_bytes, sign_key).to_json()] if sign_key is not None else []
        signature_bytes = json.dumps({"signatures": signatures}, indent=2).encode() + b"\n"
        total = sum(f.size for f in index.files.values())
        partial = output.with_name(f".{output.name}.partial")
        with partial.open("wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, INDEX, index_bytes)
            _add_bytes(tar, SIGNATURE, signature_bytes)
            written = 0
            for member in [SUMS, CONTENT, *sorted(n for n in files if n not in (SUMS, CONTENT))]:
                written = _add_file(tar, member, files[member], written=written, total=total, progress=progress)
        os.replace(partial, output)
    return Created(output, index, warnings, output.stat().st_size)


def _hex_of(member: str, path: Path, blobs: BlobDir) -> str:
    if member.startswith("blobs/"):
        return member.rsplit("/", 1)[1]  # content-addressed already: named by what put() hashed
    with path.open("rb") as handle:
        return blobs.put(handle)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


class _Counting(io.RawIOBase):
    def __init__(self, handle: IO[bytes], on_read: Callable[[int], None]) -> None:
        self._handle = handle
        self._on_read = on_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._handle.read(min(len(buffer), CHUNK))
        buffer[: len(data)] = data
        self._on_read(len(data))
        return len(data)


def _add_file(tar: tarfile.TarFile, name: str, path: Path, *, written: int, total: int, progress: Progress) -> int:
    info = tarfile.TarInfo(name)
    info.size = path.stat().st_size
    info.mode = 0o644
    count = [written]

    def seen(n: int) -> None:
        count[0] += n
        progress("writing bundle", count[0], total)

    with path.open("rb") as handle:
        tar.addfile(info, io.BufferedReader(_Counting(handle, seen), buffer_size=CHUNK))
    return count[0]
