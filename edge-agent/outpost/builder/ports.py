"""The seams of ``outpost build``: one Protocol each for the image engine, the registry and the wheels.

Adapters in :mod:`outpost.builder.adapters` implement them (BuildKit through Debian's docker client,
the registry's HTTP API, pip); :mod:`outpost.builder.runner` only sees these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from outpost.builder.platforms import Platform
from outpost.errors import OutpostError

__all__ = [
    "BuildError",
    "BuildRequest",
    "Credentials",
    "ImageEngine",
    "ImageInfo",
    "ManifestInfo",
    "Registry",
    "RegistryError",
    "RunResult",
    "WheelSource",
]


class BuildError(OutpostError):
    """An image build, smoke test or push failed; ``str()`` is the reason with the tool's last lines."""


class RegistryError(OutpostError):
    """The registry refused or could not be reached; says which and what to do next."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """Registry credentials. The password never appears in ``repr`` or in any message."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ImageInfo:
    id: str
    architecture: str
    variant: str
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class RunResult:
    exit_code: int
    output: str


@dataclass(frozen=True, slots=True)
class BuildRequest:
    context: Path
    dockerfile: Path
    platform: Platform
    tag: str
    build_args: Mapping[str, str]
    labels: Mapping[str, str]
    options: tuple[str, ...] = ()  # module.json buildOptions, already checked


class ImageEngine(Protocol):
    def inspect(self, ref: str) -> ImageInfo | None: ...

    def build(self, request: BuildRequest, log: Callable[[str], None]) -> str:
        """Build and tag; return the image id. Raise BuildError with the build's last lines."""
        ...

    def run(self, ref: str, platform: Platform, command: tuple[str, ...], timeout: float) -> RunResult: ...

    def push(self, ref: str, credentials: Credentials | None, log: Callable[[str], None]) -> str:
        """Push ``ref`` (``registry/repo:tag``), passing progress lines to ``log``; return the pushed
        manifest's digest. Safe to call from several threads at once: pushes overlap."""
        ...

    def tag(self, source: str, target: str) -> None: ...


class Registry(Protocol):
    def manifest(self, repository: str, reference: str) -> ManifestInfo | None:
        """What ``repository:reference`` is in the registry, or None if it has no such manifest."""
        ...

    def put_manifest(self, repository: str, reference: str, content: bytes, media_type: str) -> str: ...


class WheelSource(Protocol):
    """``provided`` (canonical name -> version) is what the base image already has installed: those
    satisfy a requirement without a wheel, as pip in the image will find them (see
    :mod:`outpost.builder.provided`)."""

    def fill(
        self,
        platform: Platform,
        requirements: tuple[str, ...],
        python_version: str,
        wheelhouse: Path,
        *,
        provided: Mapping[str, str],
    ) -> None:
        """Download (once) every wheel ``requirements`` need for ``platform`` into ``wheelhouse``."""
        ...

    def select(
        self,
        platform: Platform,
        requirements: tuple[str, ...],
        python_version: str,
        wheelhouse: Path,
        dest: Path,
        *,
        provided: Mapping[str, str],
    ) -> None:
        """Copy exactly the wheels ``requirements`` need from ``wheelhouse`` to ``dest``, offline."""
        ...
