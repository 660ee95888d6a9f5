"""``DockerImages``: the bundle's ``ImageEngine`` over the Docker engine API (docker-py).

Save is ``GET /images/{name}/get`` and load ``POST /images/load``: the engine's own archive,
so no extra tool is needed on the device or the packing machine. Errors become
``BundleError`` with what to do next.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors

from outpost.bundle.archive import platform_of
from outpost.bundle.engine import ImageInfo
from outpost.bundle.layout import BundleError

__all__ = ["DockerImages"]

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armhf": "arm"}


class DockerImages:
    def __init__(self, base_url: str | None = None, *, timeout: float = 600.0) -> None:
        try:
            self.client = (
                docker.DockerClient(base_url=base_url, timeout=int(timeout))
                if base_url
                else (docker.from_env(timeout=int(timeout)))
            )
            self.client.ping()
        except docker.errors.DockerException as exc:
            raise BundleError(
                f"the Docker engine does not answer ({exc}); start it (scripts/services/docker.sh)"
            ) from exc

    def platform(self) -> str:
        info = self.client.info()
        arch = str(info.get("Architecture", ""))
        return f"{info.get('OSType', 'linux')}/{_ARCH.get(arch, arch)}"

    def inspect(self, ref: str) -> ImageInfo | None:
        try:
            data = self.client.api.inspect_image(ref)  # type: ignore[no-untyped-call]
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.DockerException as exc:
            raise BundleError(f"cannot inspect image {ref}: {exc}") from exc
        config = {"os": data.get("Os"), "architecture": data.get("Architecture"), "variant": data.get("Variant")}
        return ImageInfo(id=str(data["Id"]), platform=platform_of(config), size=int(data.get("Size", 0)))

    def save(self, ref: str) -> Iterator[bytes]:
        try:
            yield from self.client.api.get_image(ref)
        except docker.errors.DockerException as exc:
            raise BundleError(f"cannot save image {ref} from the engine: {exc}") from exc

    def load(self, archive: Path) -> None:
        try:
            with archive.open("rb") as handle:
                for event in self.client.api.load_image(handle):  # type: ignore[no-untyped-call]
                    if isinstance(event, dict) and event.get("error"):
                        raise BundleError(f"the engine refused to load the bundle's images: {event['error']}")
        except docker.errors.DockerException as exc:
            raise BundleError(f"the engine refused to load the bundle's images: {exc}") from exc
