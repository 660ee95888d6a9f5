"""Fetch a model file a module's desired properties point to, for packing into a bundle.

``file://`` URLs and plain paths are read from this machine; ``http(s)://`` only from a
loopback host (127.0.0.0/8, ``localhost``, ``::1``): a bundle is packed from what the
operator has at hand, never from the internet.
"""

from __future__ import annotations

import ipaddress
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO

from outpost.bundle.layout import BundleError

__all__ = ["open_source"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_source(source: str, *, timeout: float = 30.0) -> IO[bytes]:
    """A readable binary stream of ``source`` (a path or a file/http(s) URL)."""
    parts = urllib.parse.urlsplit(source)
    if parts.scheme in ("", "file"):
        path = Path(urllib.request.url2pathname(parts.path)) if parts.scheme else Path(source)
        try:
            return path.open("rb")
        except OSError as exc:
            raise BundleError(f"cannot read {source} ({exc.strerror or exc})") from exc
    if parts.scheme not in ("http", "https"):
        raise BundleError(f"{source}: scheme {parts.scheme!r} is not supported (file, http, https)")
    if not _loopback(parts.hostname or ""):
        raise BundleError(f"{source}: only loopback hosts are fetched; copy the file here and give its path")
    try:
        return urllib.request.urlopen(source, timeout=timeout)  # type: ignore[no-any-return]
    except (urllib.error.URLError, OSError) as exc:
        raise BundleError(f"cannot fetch {source} ({getattr(exc, 'reason', exc)})") from exc
