"""RFC 6901 JSON pointers: every problem Outpost reports names its place with one."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["escape", "join", "pointer"]


def escape(part: str | int) -> str:
    """Escape one reference token (``~`` then ``/``, in that order, as the RFC requires)."""
    return str(part).replace("~", "~0").replace("/", "~1")


def pointer(parts: Iterable[str | int]) -> str:
    """The pointer of a path given as keys and indexes; ``""`` is the whole document."""
    return "".join("/" + escape(part) for part in parts)


def join(base: str, *parts: str | int) -> str:
    """Extend an existing pointer by more keys or indexes."""
    return base + pointer(parts)
