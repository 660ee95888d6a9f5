"""The hub's durable message store: the Protocol the router and pumps use.

The implementation is ``adapters/sqlite_store.py`` (SQLite in WAL mode). Semantics, which the
tests pin down:

- ``put_batch`` stores messages and their deliveries in ONE transaction that is on disk when it
  returns (only then may ingress acknowledge them). A message id already stored (and not yet
  forgotten) is a duplicate: not stored again, counted.
- Each endpoint (``module:M/INPUT`` or ``upstream``) has its own queue; ``next_batch`` returns
  the oldest deliveries of the highest priority (lowest number) first, never expired ones, and
  none of ``skip`` (a pump's previous batch whose ack is still being written).
- ``ack`` removes deliveries; a message body is deleted when no delivery needs it any more.
- ``purge_expired`` deletes expired deliveries whether or not their endpoint still exists.
- The disk cap (``max_bytes``) applies with ``full_policy``: ``reject-new`` (``put_batch``
  reports the messages as rejected) or ``drop-oldest`` (lowest priority, oldest first, counted).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from outpost.hub.endpoint import UPSTREAM, Endpoint
from outpost.wire.message import Message

__all__ = ["UPSTREAM", "Delivery", "FullPolicy", "MessageStore", "PutResult", "Stored", "module_endpoint"]


def module_endpoint(module: str, input_name: str) -> str:
    """The store's name of a module input's queue (``Endpoint`` as text)."""
    return str(Endpoint.module_input(module, input_name))


class FullPolicy(StrEnum):
    REJECT_NEW = "reject-new"
    DROP_OLDEST = "drop-oldest"


@dataclass(frozen=True)
class Delivery:
    """One destination of a message: endpoint, route priority (0 first), absolute expiry."""

    endpoint: str
    priority: int
    expires_at: float


@dataclass(frozen=True)
class Stored:
    """A queued delivery read back from the store."""

    seq: int
    endpoint: str
    priority: int
    enqueued_at: float
    expires_at: float
    message: Message


@dataclass
class PutResult:
    """Message ids by what ``put_batch`` did with them."""

    stored: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    dropped: int = 0  # deliveries dropped by drop-oldest to make room


class MessageStore(Protocol):
    def put_batch(self, items: Sequence[tuple[Message, Sequence[Delivery]]], now: float) -> PutResult: ...

    def next_batch(self, endpoint: str, limit: int, now: float, skip: Collection[int] = ()) -> list[Stored]: ...

    def ack(self, endpoint: str, seqs: Sequence[int]) -> None: ...

    def dead_letter(self, endpoint: str, seqs: Sequence[int], reason: str) -> None:
        """Move deliveries that can never succeed out of the queue, keeping them for inspection."""
        ...

    def purge_expired(self, now: float) -> int: ...

    def depth(self, endpoint: str) -> int: ...

    def oldest_enqueued(self, endpoint: str) -> float | None: ...

    def endpoints(self) -> list[str]: ...

    def size_bytes(self) -> int: ...

    def close(self) -> None: ...
