"""One HTTP GET of a Prometheus endpoint (the hub's metrics) for ``outpost watch``.

urllib from the standard library, a short timeout, and no proxy (``http_proxy`` in the
environment must not send a scrape of 127.0.0.1 elsewhere). Every failure becomes a
:class:`ScrapeError` whose text says what went wrong, for the view to show.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request

__all__ = ["MAX_BYTES", "ScrapeError", "scrape"]

MAX_BYTES = 4 * 1024 * 1024  # the hub's exposition is a few KiB; more is not a hub
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ScrapeError(Exception):
    """The endpoint could not be read; the message is the reason, short enough for one line."""


def scrape(url: str, timeout: float = 1.0) -> str:
    """The text at ``url`` (http or https), or :class:`ScrapeError`."""
    if not url.startswith(("http://", "https://")):
        raise ScrapeError(f"not an http(s) URL: {url!r}")
    request = urllib.request.Request(url, headers={"Accept": "text/plain"})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            body: bytes = response.read(MAX_BYTES + 1)
            charset = response.headers.get_content_charset() or "utf-8"
    except urllib.error.HTTPError as exc:
        raise ScrapeError(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ConnectionRefusedError):
            raise ScrapeError("connection refused (is the hub running, with this metrics port?)") from exc
        if isinstance(reason, TimeoutError):
            raise ScrapeError(f"no answer within {timeout:g} s") from exc
        raise ScrapeError(str(reason)) from exc
    except TimeoutError as exc:
        raise ScrapeError(f"no answer within {timeout:g} s") from exc
    except (OSError, ValueError, http.client.HTTPException) as exc:  # resets, bad URLs, not HTTP
        raise ScrapeError(str(exc) or type(exc).__name__) from exc
    if len(body) > MAX_BYTES:
        raise ScrapeError(f"more than {MAX_BYTES} bytes: not the hub's metrics")
    try:
        return body.decode(charset)
    except (UnicodeDecodeError, LookupError) as exc:
        raise ScrapeError(f"the answer is not text: {exc}") from exc
