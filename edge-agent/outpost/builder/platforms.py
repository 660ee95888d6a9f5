"""The target platforms ``outpost build`` knows, under each of the names the tools use for them.

iotedgedev names platforms in ``module.json`` (``amd64``, ``arm64v8``, ``arm32v7``); Docker and BuildKit
say ``linux/arm/v7``; pip wheel tags and ``platform.machine()`` say ``armv7l``; Debian says ``armhf``.
Everything else in the package goes through :func:`platform_named` so those names never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from outpost.errors import InputError

__all__ = ["PLATFORMS", "Platform", "parse_platforms", "platform_named"]


@dataclass(frozen=True, slots=True)
class Platform:
    """One target architecture of a module image."""

    key: str  # iotedgedev's module.json key and the image tag suffix: arm64v8
    docker: str  # Docker/OCI platform: linux/arm64
    os: str
    architecture: str  # OCI architecture: arm64
    variant: str  # OCI variant: v7 (or "")
    machine: str  # platform.machine() inside the image, and the manylinux wheel tag suffix: aarch64
    debian: str  # Debian architecture of the base image: arm64

    def wheel_tags(self, glibc_minor: int = 36) -> list[str]:
        """pip ``--platform`` values a Debian bookworm image (glibc 2.36) can install, newest first.

        pip does not expand ``manylinux_2_36`` to the older tags itself when ``--platform`` is given.
        """
        tags = [f"manylinux_2_{minor}_{self.machine}" for minor in range(glibc_minor, 16, -1)]
        return [*tags, f"manylinux2014_{self.machine}", f"linux_{self.machine}"]


PLATFORMS: tuple[Platform, ...] = (
    Platform("amd64", "linux/amd64", "linux", "amd64", "", "x86_64", "amd64"),
    Platform("arm64v8", "linux/arm64", "linux", "arm64", "", "aarch64", "arm64"),
    Platform("arm32v7", "linux/arm/v7", "linux", "arm", "v7", "armv7l", "armhf"),
)
_BY_NAME = {
    name: p for p in PLATFORMS for name in (p.key, p.docker, p.machine, p.debian, p.architecture + p.variant)
} | {"linux/arm64/v8": PLATFORMS[1], "arm64": PLATFORMS[1], "linux/arm": PLATFORMS[2]}


def platform_named(name: str) -> Platform:
    """The platform called ``name`` in any of the tools' vocabularies (``arm64v8``, ``linux/arm64``, ...)."""
    try:
        return _BY_NAME[name.strip().lower()]
    except KeyError:
        known = ", ".join(p.docker for p in PLATFORMS)
        raise InputError(f"unknown platform {name!r}: use one of {known} (or amd64, arm64v8, arm32v7)") from None


def parse_platforms(text: str) -> tuple[Platform, ...]:
    """``linux/amd64,linux/arm64`` -> platforms in the order given, without duplicates."""
    result: list[Platform] = []
    for part in text.split(","):
        if part.strip():
            platform = platform_named(part)
            if platform not in result:
                result.append(platform)
    if not result:
        raise InputError("--platform names no platform")
    return tuple(result)
