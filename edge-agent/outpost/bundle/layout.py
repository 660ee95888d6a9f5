"""What an offline bundle holds and how its index reads: pure data, no I/O.

A bundle is one uncompressed tar (USB sticks and ``tar tvf`` read it; images are mostly
compressed already) with, in this order::

    outpost-bundle.json     the index: platform, images, model files, twins, sha256 + size of every file
    outpost-bundle.sig      {"signatures": [...]} over the index's RFC 8785 form (context outpost/bundle/v1)
    SHA256SUMS              the same sums for ``sha256sum -c`` after ``tar x``
    content.json            the deployment content (a manifest, usually signed itself)
    blobs/sha256/<hex>      image configs, image layers (uncompressed, = the image's diff ids) and model
                            files, each stored once however many images or modules use it

Signing the index covers every other file through its hash. Used by ``create`` and ``apply``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from outpost.errors import InputError

__all__ = [
    "CONTENT",
    "FORMAT",
    "INDEX",
    "SIGNATURE",
    "SUMS",
    "BundleError",
    "FileEntry",
    "ImageEntry",
    "Index",
    "ModelEntry",
    "Progress",
    "blob_name",
    "load_tag",
    "no_progress",
    "offset",
]

FORMAT = "outpost-bundle/1"
INDEX = "outpost-bundle.json"
SIGNATURE = "outpost-bundle.sig"
SUMS = "SHA256SUMS"
CONTENT = "content.json"
_BLOB = re.compile(r"^blobs/sha256/[0-9a-f]{64}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


class BundleError(InputError):
    """A bundle cannot be made or is refused; ``str()`` says why and what to do. Nothing was applied."""


def blob_name(digest_hex: str) -> str:
    return f"blobs/sha256/{digest_hex}"


#: ``progress(what, done, total)``: ``done`` of ``total`` bytes of the step ``what``; called often.
Progress = Callable[[str, int, int], None]


def no_progress(what: str, done: int, total: int) -> None:
    """A ``Progress`` that shows nothing."""


def offset(progress: Progress, base: int) -> Progress:
    """``progress`` for a part that starts ``base`` bytes into a larger step."""
    return lambda what, done, total: progress(what, base + done, total)


_PINNED = re.compile(r"^(?P<repo>[^@]+)@sha256:(?P<hex>[0-9a-f]{64})$")


def load_tag(ref: str) -> str:
    """The tag an image is loaded under: its own for a tag reference; for a digest reference
    (``name@sha256:HEX``, which ``docker load`` cannot restore) ``name:sha256-HEX``, so the loaded image
    is named, never dangling, and the agent's pins map the digest to it."""
    match = _PINNED.match(ref)
    if match is None:
        return ref
    repo = match["repo"]
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:  # name:tag@sha256:… — the digest decides, the tag goes
        repo = repo[: len(repo) - len(last)] + last.split(":", 1)[0]
    return f"{repo}:sha256-{match['hex']}"


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class ImageEntry:
    """One image as the engine names it, pinned to its config digest (= the engine's image id)."""

    ref: str
    config: str  # hex digest of the config blob
    layers: tuple[str, ...]  # hex digests of the layer blobs (diff ids), bottom first
    platform: str

    @property
    def id(self) -> str:
        return f"sha256:{self.config}"


@dataclass(frozen=True)
class ModelEntry:
    """A file a module's desired properties point to: where it was, and where it goes on the device."""

    module: str
    pointer: str  # JSON pointer into content.json of the url/path member
    source: str
    sha256: str
    target: str | None  # absolute path on the device for ``path`` references; None: into the models dir


@dataclass
class Index:
    platform: str
    images: list[ImageEntry] = field(default_factory=list)
    models: list[ModelEntry] = field(default_factory=list)
    twins: list[str] = field(default_factory=list)
    files: dict[str, FileEntry] = field(default_factory=dict)
    created_at: str = ""
    deployment: str = "bundle"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "createdAt": self.created_at,
            "deployment": self.deployment,
            "platform": self.platform,
            "content": CONTENT,
            "images": [
                {"ref": i.ref, "id": i.id, "platform": i.platform, "config": i.config, "layers": list(i.layers)}
                for i in self.images
            ],
            "twins": list(self.twins),
            "models": [
                {"module": m.module, "pointer": m.pointer, "source": m.source, "sha256": m.sha256, "target": m.target}
                for m in self.models
            ],
            "files": {name: {"sha256": f.sha256, "size": f.size} for name, f in sorted(self.files.items())},
        }

    @classmethod
    def from_json(cls, data: Any) -> Index:
        """Parse an index; ``BundleError`` names the first thing wrong."""
        try:
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise BundleError(f"{INDEX}: not an {FORMAT} index (made by another version of outpost?)")
            files = {}
            for name, entry in dict(data["files"]).items():
                if name not in (SUMS, CONTENT) and not _BLOB.match(name):
                    raise BundleError(f"{INDEX}: /files: unexpected file name {name!r}")
                sha, size = entry["sha256"], entry["size"]
                if not isinstance(sha, str) or not _HEX.match(sha) or not isinstance(size, int) or size < 0:
                    raise BundleError(f"{INDEX}: /files/{name}: needs sha256 (64 hex) and size")
                files[name] = FileEntry(sha, size)
            images = [
                ImageEntry(str(i["ref"]), str(i["config"]), tuple(str(x) for x in i["layers"]), str(i["platform"]))
                for i in data["images"]
            ]
            models = [
                ModelEntry(
                    str(m["module"]),
                    str(m["pointer"]),
                    str(m["source"]),
                    str(m["sha256"]),
                    None if m.get("target") is None else str(m["target"]),
                )
                for m in data["models"]
            ]
            index = cls(
                platform=str(data["platform"]),
                images=images,
                models=models,
                twins=[str(t) for t in data.get("twins", [])],
                files=files,
                created_at=str(data.get("createdAt", "")),
                deployment=str(data.get("deployment", "bundle")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleError(f"{INDEX}: malformed index ({exc!r})") from exc
        for blob in [*(i.config for i in images), *(x for i in images for x in i.layers), *(m.sha256 for m in models)]:
            if blob_name(blob) not in files:
                raise BundleError(f"{INDEX}: blob {blob} is used but not listed in /files")
        if CONTENT not in files:
            raise BundleError(f"{INDEX}: {CONTENT} is not listed in /files")
        return index

    def sums_text(self) -> str:
        """``SHA256SUMS`` for every file but itself (``sha256sum -c`` format)."""
        return "".join(f"{f.sha256}  {name}\n" for name, f in sorted(self.files.items()) if name != SUMS)
