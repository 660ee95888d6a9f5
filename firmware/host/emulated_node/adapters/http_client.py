"""HTTP for the node: the activation request and ranged model downloads (urllib, no extra library)."""

from __future__ import annotations

import urllib.error
import urllib.request


class TransportError(OSError):
    """No HTTP answer (refused, timed out, reset)."""


def post_json(url: str, body: bytes, *, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of a JSON POST; HTTP error statuses are answers, not exceptions."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read() or b"")
    except (urllib.error.URLError, OSError) as exc:
        raise TransportError(str(exc)) from None


def get_range(url: str, offset: int, length: int, *, timeout: float = 10.0) -> bytes:
    """Bytes ``[offset, offset + length)`` of ``url`` (a server without ranges: sliced here)."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-{offset + length - 1}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = bytes(response.read())
            return data if response.status == 206 else data[offset : offset + length]
    except urllib.error.HTTPError as exc:
        raise TransportError(f"HTTP {exc.code} for {url}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise TransportError(str(exc)) from None
