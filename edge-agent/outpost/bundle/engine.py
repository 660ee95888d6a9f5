"""The container engine as bundles see it: save images out, load them in, say what it runs.

One Protocol for the seam; ``adapters/docker_images.py`` implements it over the Docker
engine. Used by ``create`` and ``apply``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["ImageEngine", "ImageInfo"]


@dataclass(frozen=True)
class ImageInfo:
    id: str  # sha256:<config digest>
    platform: str  # os/architecture[/variant]
    size: int


class ImageEngine(Protocol):
    def platform(self) -> str:
        """``os/architecture`` of the engine (what it runs natively)."""
        ...

    def inspect(self, ref: str) -> ImageInfo | None:
        """The local image ``ref`` names, or None when the engine does not have it."""
        ...

    def save(self, ref: str) -> Iterator[bytes]:
        """The engine's archive of one image (``docker save`` format), streamed."""
        ...

    def load(self, archive: Path) -> None:
        """Load a ``docker save``-format archive (several images)."""
        ...
