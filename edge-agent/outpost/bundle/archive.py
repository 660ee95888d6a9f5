"""Docker's image archive (``docker save`` / ``docker load``) taken apart into blobs and put back.

``docker save`` of one image gives ``manifest.json`` (config file and layer files in order),
the config ``<id>.json`` and one ``layer.tar`` per layer (uncompressed, so its sha256 is the
layer's diff id in the config). ``split`` stores the config and layers as blobs, checks each
layer against the config's ``rootfs.diff_ids`` and reads the platform from the config;
``join`` writes the archive ``docker load`` takes for several images at once, each layer once.
Why this and not the OCI image layout: Docker 20.10 (Debian 12's engine) loads only its own
archive format, and skopeo would be one more package for the same bytes. Pure (stdlib tarfile).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from outpost.bundle.blobs import BlobDir
from outpost.bundle.layout import BundleError, ImageEntry, Progress, load_tag, no_progress, offset

__all__ = ["join", "platform_of", "split"]


class _Chunks(io.RawIOBase):
    """A readable file over an iterator of byte chunks (the engine's streamed archive)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it: Iterator[bytes] = iter(chunks)
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            try:
                self._rest = next(self._it)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


def platform_of(config: dict[str, Any]) -> str:
    """``os/architecture[/variant]`` from an image config."""
    text = f"{config.get('os', '?')}/{config.get('architecture', '?')}"
    return f"{text}/{config['variant']}" if config.get("variant") else text


def split(
    ref: str, chunks: Iterable[bytes], blobs: BlobDir, *, size: int, progress: Progress = no_progress
) -> ImageEntry:
    """Store one saved image's config and layers in ``blobs``; ``size`` only scales ``progress``."""
    by_member: dict[str, str] = {}
    links: dict[str, str] = {}
    manifest: list[dict[str, Any]] | None = None
    done = 0
    stream = io.BufferedReader(_Chunks(chunks), buffer_size=1 << 20)
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.issym() or member.islnk():
                links[member.name] = str(
                    Path(member.name).parent.parent / Path(member.linkname).parent.name / "layer.tar"
                )
                continue
            if not member.isfile():
                continue
            handle = tar.extractfile(member)
            assert handle is not None
            if member.name == "manifest.json":
                manifest = json.loads(handle.read())
            elif member.name.endswith("layer.tar") or member.name.endswith(".json"):
                by_member[member.name] = blobs.put(handle, what=ref, total=size, progress=offset(progress, done))
                done += member.size
    if not manifest or len(manifest) != 1:
        raise BundleError(f"{ref}: the engine's archive has no single-image manifest.json")
    entry = manifest[0]
    config_hex = by_member.get(entry["Config"])
    if config_hex is None:
        raise BundleError(f"{ref}: the engine's archive lacks the image config")
    config = json.loads(blobs.path(config_hex).read_bytes())
    layers = []
    for name in entry["Layers"]:
        layer = by_member.get(links.get(name, name))
        if layer is None:
            raise BundleError(f"{ref}: the engine's archive lacks layer {name}")
        layers.append(layer)
    diff_ids = [d.removeprefix("sha256:") for d in config.get("rootfs", {}).get("diff_ids", [])]
    if diff_ids != layers:
        raise BundleError(f"{ref}: the saved layers do not match the image config's diff ids (engine problem?)")
    return ImageEntry(ref=ref, config=config_hex, layers=tuple(layers), platform=platform_of(config))


def join(images: list[ImageEntry], blobs: BlobDir, out: IO[bytes]) -> None:
    """Write a ``docker load`` archive of ``images`` (tagged by ``load_tag``), each blob once."""
    manifest = [
        {
            "Config": f"{i.config}.json",
            "RepoTags": [load_tag(i.ref)],
            "Layers": [f"{layer}/layer.tar" for layer in i.layers],
        }
        for i in images
    ]
    written: set[str] = set()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for image in images:
            for name, hex_ in [(f"{image.config}.json", image.config)] + [
                (f"{layer}/layer.tar", layer) for layer in image.layers
            ]:
                if name in written:
                    continue
                written.add(name)
                path = blobs.path(hex_)
                info = tar.gettarinfo(str(path), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mode = 0o644
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
