"""Message batches: several messages in one MQTT PUBLISH (docs/hub.md, "Batches").

Why: on a small device the hub and the modules spend their time in per-packet work (paho is pure
Python, every packet is parsed, acknowledged and dispatched). When messages queue up, the SDK
sends the queued ones as one batch PUBLISH and the hub delivers a module's queued deliveries the
same way, so the per-packet cost is paid once per batch. A lone message is never held back to
form a batch: at low rates every message is its own PUBLISH on the ordinary topics.

Layout (big-endian)::

    b"OPB1" | u32 header length | header (UTF-8 JSON) | bodies, concatenated

    header = [[name, [[key, value], ...], content_type or null, body length], ...]

``name`` is the output (module -> hub) or the input (hub -> module); the pairs are the message's
MQTT 5 user properties, exactly as they would travel on a single PUBLISH. Pure; used by the SDK
(``outpost.sdk.client``) and the hub (``outpost.hub.ingress``, ``outpost.hub.delivery``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from outpost.errors import InputError

__all__ = [
    "MAGIC",
    "MAX_BYTES",
    "MAX_MESSAGES",
    "READS_BATCHES",
    "BatchError",
    "Framed",
    "chunks",
    "decode",
    "encode",
    "weight",
]

MAGIC = b"OPB1"
#: What one batch holds at most: a batch is one PUBLISH the broker and the hub hold in memory
#: (bounded by the receive window), so it stays far below the broker's 1 MiB packet limit.
MAX_MESSAGES = 250
MAX_BYTES = 128 * 1024
_PREFIX = struct.Struct(">4sI")
#: The user property on a module's retained ``online`` status saying its client reads batch
#: PUBLISHes on ``topics.batch_inputs``; the hub sends batches only to such modules.
READS_BATCHES = ("outpost-batches", "1")


class BatchError(InputError):
    """A batch PUBLISH that cannot be read; the message says where it is wrong."""


class Framed(NamedTuple):
    """One message inside a batch."""

    name: str
    user_properties: tuple[tuple[str, str], ...]
    content_type: str | None
    body: bytes


def encode(items: Sequence[Framed]) -> bytes:
    """The payload of one batch PUBLISH holding ``items`` in order."""
    header = json.dumps(
        [[item.name, item.user_properties, item.content_type, len(item.body)] for item in items],
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    return b"".join([_PREFIX.pack(MAGIC, len(header)), header, *(item.body for item in items)])


def decode(payload: bytes) -> list[Framed]:
    """The messages of a batch payload, in order; ``BatchError`` names what is wrong."""
    if len(payload) < _PREFIX.size:
        raise BatchError(f"batch of {len(payload)} bytes is shorter than its {_PREFIX.size}-byte prefix")
    magic, header_len = _PREFIX.unpack_from(payload)
    if magic != MAGIC:
        raise BatchError(f"batch starts with {magic!r}, not {MAGIC!r}")
    start = _PREFIX.size + header_len
    if start > len(payload):
        raise BatchError(f"batch header length {header_len} runs past the end of the {len(payload)}-byte payload")
    try:
        header = json.loads(payload[_PREFIX.size : start])
    except (ValueError, UnicodeDecodeError) as exc:
        raise BatchError(f"batch header is not JSON: {exc}") from None
    if not isinstance(header, list):
        raise BatchError("batch header must be a JSON array of [name, properties, content type, length]")
    items: list[Framed] = []
    offset = start
    for index, entry in enumerate(header):
        name, pairs, content_type, length = _entry(index, entry)
        end = offset + length
        if end > len(payload):
            raise BatchError(f"batch message {index}: its {length}-byte body runs past the end of the payload")
        items.append(Framed(name, pairs, content_type, payload[offset:end]))
        offset = end
    if offset != len(payload):
        raise BatchError(f"batch has {len(payload) - offset} byte(s) after its last message")
    return items


def _entry(index: int, entry: object) -> tuple[str, tuple[tuple[str, str], ...], str | None, int]:
    where = f"batch message {index}"
    if not isinstance(entry, list) or len(entry) != 4:
        raise BatchError(f"{where}: expected [name, properties, content type, length]")
    name, pairs, content_type, length = entry
    if not isinstance(name, str) or not name:
        raise BatchError(f"{where}: the name must be a non-empty string")
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], str) for p in pairs
    ):
        raise BatchError(f"{where}: properties must be a list of [key, value] string pairs")
    if content_type is not None and not isinstance(content_type, str):
        raise BatchError(f"{where}: the content type must be a string or null")
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise BatchError(f"{where}: the body length must be a non-negative integer")
    return name, tuple((k, v) for k, v in pairs), content_type, length


def weight(name: str, user_properties: tuple[tuple[str, str], ...], body: bytes) -> int:
    """About how many bytes a message takes in a batch (body plus its header entry), for ``MAX_BYTES``."""
    return len(body) + len(name) + sum(len(k) + len(v) + 8 for k, v in user_properties) + 32


def chunks(
    items: Sequence[Framed], *, max_messages: int = MAX_MESSAGES, max_bytes: int = MAX_BYTES
) -> Iterator[Sequence[Framed]]:
    """Split ``items`` (in order) into runs that fit one batch; an oversized message runs alone."""
    begin, size = 0, 0
    for index, item in enumerate(items):
        size_of = weight(item.name, item.user_properties, item.body)
        if index > begin and (index - begin >= max_messages or size + size_of > max_bytes):
            yield items[begin:index]
            begin, size = index, 0
        size += size_of
    if begin < len(items):
        yield items[begin:]
