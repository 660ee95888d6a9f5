"""The read-only view of a message that route conditions evaluate.

Properties arrive as strings; the body is bytes and is only JSON (and only queryable
with ``$body``) when ``$contentType`` is ``application/json`` and ``$contentEncoding`` is
UTF-8, UTF-16 or UTF-32, as IoT Hub requires. The body is decoded lazily, at most once per
message, because most routes never look at it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from outpost.lang.values import UNDEFINED

__all__ = ["RoutingMessage"]

_UNSET: Final = object()
_CODECS: Final = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "utf-16": "utf-16",
    "utf16": "utf-16",
    "utf-32": "utf-32",
    "utf32": "utf-32",
}
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_CODEC_CACHE: dict[tuple[object, object], object] = {}  # (contentType, contentEncoding) -> codec | None
_CODEC_CACHE_SIZE: Final = 256


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


class RoutingMessage:
    """A message as routing sees it: application properties, system properties, body bytes.

    ``system`` keys carry no ``$``: ``connectionDeviceId``, ``connectionModuleId``,
    ``contentType``, ``contentEncoding``, ``messageId``, ``correlationId``, ``userId``...
    """

    __slots__ = ("_json", "body", "properties", "system")

    def __init__(self, properties: Mapping[str, str], system: Mapping[str, str], body: bytes) -> None:
        self.properties = properties
        self.system = system
        self.body = body
        self._json: object = _UNSET

    def json_body(self) -> object:
        """The decoded JSON body, or UNDEFINED if the body is not queryable; never raises."""
        value = self._json
        if value is _UNSET:
            value = self._json = _decode(self.system, self.body)
        return value

    def __repr__(self) -> str:
        return f"RoutingMessage(properties={self.properties!r}, system={self.system!r}, body={self.body!r})"


def _decode(system: Mapping[str, str], body: bytes) -> object:
    try:
        key = (system.get("contentType"), system.get("contentEncoding"))
        codec = _CODEC_CACHE.get(key, _UNSET)
        if codec is _UNSET:
            codec = _codec(*key)
            if len(_CODEC_CACHE) < _CODEC_CACHE_SIZE:
                _CODEC_CACHE[key] = codec
        if codec is None:
            return UNDEFINED
        if codec == "utf-8" and body[:3] == _UTF8_BOM:
            body = body[3:]
        return _DECODER.decode(body.decode(codec))  # type: ignore[arg-type]
    except Exception:  # invalid JSON, bad bytes, deep nesting, odd mappings: all "not queryable"
        return UNDEFINED


def _codec(content_type: object, encoding: object) -> str | None:
    """The codec to decode a body with, or None when IoT Hub would not query the body."""
    if type(content_type) is not str or type(encoding) is not str:
        return None
    if content_type.partition(";")[0].strip().lower() != "application/json":
        return None
    return _CODECS.get(encoding.strip().lower())
