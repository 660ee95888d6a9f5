"""The read-only view of a message that route conditions evaluate.

Properties arrive as strings; the body is bytes and is only JSON (and only queryable
with ``$body``) when ``$contentType`` is exactly ``application/json`` and
``$contentEncoding`` exactly ``utf-8``, ``utf-16`` or ``utf-32`` (any case; UTF-16 and
UTF-32 little-endian, as .NET's Encoding.Unicode and UTF32), as edgeHub requires, and
when it is a JSON object (edgeHub parses it with JObject.Parse). The body is decoded
lazily, at most once per message, because most routes never look at it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from outpost.lang.values import UNDEFINED

__all__ = ["UNSET", "RoutingMessage"]

UNSET: Final = object()
"""``RoutingMessage._json`` before the body is decoded (generated conditions read the slot directly)."""
_CODECS: Final = {"utf-8": "utf-8", "utf-16": "utf-16-le", "utf-32": "utf-32-le"}
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
        self._json: object = UNSET

    def json_body(self) -> object:
        """The decoded JSON body, or UNDEFINED if the body is not queryable; never raises."""
        value = self._json
        if value is UNSET:
            value = self._json = _decode(self.system, self.body)
        return value

    def __repr__(self) -> str:
        return f"RoutingMessage(properties={self.properties!r}, system={self.system!r}, body={self.body!r})"


def _decode(system: Mapping[str, str], body: bytes) -> object:
    try:
        key = (system.get("contentType"), system.get("contentEncoding"))
        codec = _CODEC_CACHE.get(key, UNSET)
        if codec is UNSET:
            codec = _codec(*key)
            if len(_CODEC_CACHE) < _CODEC_CACHE_SIZE:
                _CODEC_CACHE[key] = codec
        if codec is None:
            return UNDEFINED
        text = body.decode(codec, errors="replace")  # type: ignore[arg-type]
        if text[:1] == "\ufeff":
            text = text[1:]
        document = _DECODER.decode(text)
        return document if type(document) is dict else UNDEFINED
    except Exception:  # invalid JSON, bad bytes, deep nesting, odd mappings: all "not queryable"
        return UNDEFINED


def _codec(content_type: object, encoding: object) -> str | None:
    """The codec to decode a body with, or None when IoT Hub would not query the body."""
    if type(content_type) is not str or type(encoding) is not str:
        return None
    if content_type.lower() != "application/json":
        return None
    return _CODECS.get(encoding.lower())
