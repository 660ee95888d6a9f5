"""The outbox of ``ModuleClient``: messages sent and not yet receipted by the hub.

It owns flow control (a window of PUBLISHes the broker has not PUBACKed; what waits behind
goes out as batch PUBLISHes), the broker's verdicts (accepted, refused), the hub's receipts and
re-sends with backoff (see ``client``'s docstring for the delivery contract). Every method runs
under the client's lock, on the event thread or in ``send``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from outpost.backoff import Backoff
from outpost.wire import batch as batches
from outpost.wire import topics
from outpost.wire.link import NOT_AUTHORIZED, Link, Published
from outpost.wire.message import new_id

__all__ = ["JSON", "Entry", "Outbox", "entry_for"]

log = logging.getLogger("outpost.sdk.client")

JSON = "application/json"
_MAX_RESEND = 600.0
_WINDOW = 1000  # output PUBLISHes handed to the link and not yet acknowledged, when not batching
_BATCH_WINDOW = 4  # the same when batching: what queues up behind them goes out as batches
#: PUBACK reason codes after which re-sending the same message cannot succeed.
_REFUSED = {0x83, NOT_AUTHORIZED, 0x90, 0x95, 0x99}


@dataclass
class Entry:
    id: str
    output: str
    topic: str
    payload: bytes
    user_properties: tuple[tuple[str, str], ...]
    content_type: str | None
    token: int | None = None  # awaiting the broker's PUBACK
    stored_at: float | None = None  # broker accepted it at (monotonic); awaiting the hub's receipt
    resends: int = 0  # times re-sent for want of a receipt: the next wait is ``Backoff.delay(resends + 1)``


def entry_for(
    topic: str,
    output: str,
    payload: bytes | str | Mapping[str, Any] | list[Any],
    properties: Mapping[str, str] | None,
    content_type: str | None,
) -> Entry:
    """A new outbox entry: the body encoded, system properties (``$.mid``, ``$.ct``, ``$.ce``) added."""
    encoding: str | None = None
    if isinstance(payload, bytes | bytearray):
        body = bytes(payload)
    elif isinstance(payload, str):
        body, encoding = payload.encode(), "utf-8"
    else:
        body, encoding = json.dumps(payload, separators=(",", ":")).encode(), "utf-8"
        content_type = content_type or JSON
    pairs = []
    for key, value in (properties or {}).items():
        if key.startswith("$."):
            raise ValueError(f"application property {key!r}: names starting with '$.' are system properties")
        pairs.append((str(key), str(value)))
    message_id = new_id()
    pairs.append(("$.mid", message_id))
    if content_type:
        pairs.append(("$.ct", content_type))
    if encoding:
        pairs.append(("$.ce", encoding))
    return Entry(message_id, output, topic, body, tuple(pairs), content_type)


class Outbox:
    """Unreceipted outputs of one module, in send order."""

    def __init__(self, *, device_id: str, module_id: str, max_batch: int, resend_after: float) -> None:
        self.device_id = device_id
        self.module_id = module_id
        self.max_batch = max_batch
        self._resend_backoff = Backoff(first=resend_after, cap=_MAX_RESEND)
        self._entries: dict[str, Entry] = {}
        # Flow control: at most a window of output PUBLISHes handed to the link and not yet PUBACKed
        # (token -> the message ids it carries); the rest wait here in send order (paho's own queue
        # is keyed by 16-bit packet ids and must not overflow).
        self._inflight: dict[int, list[str]] = {}
        self._waiting: deque[str] = deque()
        self.resent = 0
        self.rejected = 0
        self.batches_sent = 0  # batch PUBLISHes of outputs

    def __len__(self) -> int:
        return len(self._entries)

    def values(self) -> Iterable[Entry]:
        return self._entries.values()

    def add(self, entry: Entry, link: Link) -> None:
        self._entries[entry.id] = entry
        self._waiting.append(entry.id)
        self.release(link)

    def release(self, link: Link) -> None:
        """Hand waiting outputs to the link, in send order, while the window has room: one PUBLISH
        per message when only one waits (or batches are off), batch PUBLISHes otherwise."""
        window = _WINDOW if self.max_batch == 1 else _BATCH_WINDOW
        while self._waiting and len(self._inflight) < window:
            run: list[Entry] = []
            size = 0
            while self._waiting and len(run) < self.max_batch:
                entry = self._entries.get(self._waiting[0])
                if entry is None or entry.token is not None or entry.stored_at is not None:
                    self._waiting.popleft()  # receipted, in flight or accepted meanwhile
                    continue
                size_of = batches.weight(entry.output, entry.user_properties, entry.payload)
                if run and size + size_of > batches.MAX_BYTES:
                    break
                self._waiting.popleft()
                run.append(entry)
                size += size_of
            if not run:
                return
            self._publish_run(link, run)

    def _publish_run(self, link: Link, run: list[Entry]) -> None:
        if len(run) == 1:
            entry = run[0]
            token = link.publish(
                entry.topic, entry.payload, user_properties=entry.user_properties, content_type=entry.content_type
            )
        else:
            framed = [batches.Framed(e.output, e.user_properties, e.content_type, e.payload) for e in run]
            token = link.publish(topics.batch_outputs(self.device_id, self.module_id), batches.encode(framed))
            self.batches_sent += 1
        for entry in run:
            entry.token = token
        self._inflight[token] = [entry.id for entry in run]

    def on_published(self, event: Published, link: Link | None) -> bool:
        """The broker's PUBACK, if for an output PUBLISH (one message or a batch); False if not ours."""
        ids = self._inflight.pop(event.token, None)
        if ids is None:
            return False
        entries = [e for key in ids if (e := self._entries.get(key)) is not None and e.token == event.token]
        for entry in entries:
            entry.token = None
        if len(ids) > 1 and event.code == NOT_AUTHORIZED:
            # A broker whose ACL predates batch PUBLISHes: send these, and all later ones, singly.
            log.warning("%s: the broker refused a batch PUBLISH (%s); sending singly", self.module_id, event.reason)
            self.max_batch = 1
            for entry in reversed(entries):
                self._waiting.appendleft(entry.id)
        elif event.code in _REFUSED:
            for entry in entries:
                del self._entries[entry.id]
                self.rejected += 1
                log.error("the broker refused message %s on %s: %s", entry.id, entry.topic, event.reason)
        else:
            now = time.monotonic()
            for entry in entries:
                entry.stored_at = now
        if link is not None:
            self.release(link)
        return True

    def on_receipt(self, payload: bytes) -> None:
        """The hub stored these ids: they leave the outbox."""
        try:
            ids = json.loads(payload)
        except ValueError:
            log.warning("ignoring a malformed receipt: %r", payload[:200])
            return
        for message_id in ids if isinstance(ids, list) else []:
            self._entries.pop(str(message_id), None)

    def on_reconnect(self, link: Link) -> None:
        """Messages the broker accepted before but the hub never receipted: the broker may have
        lost them (crash before its autosave). Those still awaiting a PUBACK the link re-sends."""
        self._resend([entry for entry in self._entries.values() if entry.stored_at is not None], link)

    def resend_due(self, now: float, link: Link) -> None:
        wait = self._resend_backoff.delay
        due = [
            e for e in self._entries.values() if e.stored_at is not None and now - e.stored_at >= wait(e.resends + 1)
        ]
        for entry in due:
            entry.resends += 1
        self._resend(due, link)

    def _resend(self, entries: list[Entry], link: Link) -> None:
        """Queue accepted-but-unreceipted outputs again, ahead of new ones, through the window."""
        for entry in reversed(entries):
            entry.stored_at = None
            self._waiting.appendleft(entry.id)
        self.resent += len(entries)
        self.release(link)
