"""The inbox of ``ModuleClient``: inputs, their acknowledgements, and desired properties.

Inputs are handed to the input worker (``work``) and acknowledged (PUBACK, and to the hub on
the ``acks`` topic, batched) only once their handler returned; duplicates are dropped and
acknowledged again. Desired properties are kept whole and patches handed to the same worker, so
handlers see them in arrival order. The ``on_*`` methods run under the client's lock on the
event thread; ``run`` runs on the input worker.
"""

from __future__ import annotations

import json
import logging
import queue
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from outpost.sdk.messages import InputMessage
from outpost.wire import batch as batches
from outpost.wire import topics
from outpost.wire.link import Link
from outpost.wire.message import split_properties
from outpost.wire.patch import merge_patch

__all__ = ["Handled", "Inbox", "InputHandler", "TwinHandler"]

log = logging.getLogger("outpost.sdk.client")

InputHandler = Callable[[InputMessage], None]
TwinHandler = Callable[[dict[str, Any]], None]

_SEEN = 10_000  # handled input ids remembered for duplicate detection


@dataclass(frozen=True)
class Handled:
    """The input worker finished a message: acknowledge it (if the connection is the same one)."""

    key: str  # INPUT/ID: what the hub's ack matching and our duplicate check use
    token: int  # the PUBLISH to PUBACK (QoS 1 single deliveries; 0 for batched ones, which are QoS 0)
    qos: int
    generation: int


class Inbox:
    """One module's inputs and desired properties. ``work``: the input worker's queue;
    ``events``: the event thread's (where ``Handled`` goes back)."""

    def __init__(self, *, device_id: str, module_id: str, work: queue.Queue[object], events: queue.Queue[object]):
        self.device_id = device_id
        self.module_id = module_id
        self._work = work
        self._events = events
        self.handlers: dict[str, InputHandler] = {}
        self.twin_handlers: list[TwinHandler] = []
        self.desired: dict[str, Any] | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.in_progress: set[str] = set()
        self._acks: list[str] = []
        self._acks_since = 0.0
        self.duplicates = 0
        self.batches_received = 0  # batch PUBLISHes of inputs

    def subscriptions(self) -> list[str]:
        d, m = self.device_id, self.module_id
        return [topics.input_topic(d, m, name) for name in self.handlers]

    # -- inputs (event thread) ------------------------------------------------------------------

    def on_batch(self, link: Link, payload: bytes, *, closing: bool, generation: int) -> None:
        try:
            items = batches.decode(payload)
        except batches.BatchError as exc:
            log.warning("%s: ignoring an unreadable batch of inputs (the hub sends it again): %s", self.module_id, exc)
            return
        self.batches_received += 1
        for item in items:  # batched deliveries travel at QoS 0: nothing to PUBACK per message
            self.on_message(link, item, 0, 0, closing=closing, generation=generation)

    def on_message(
        self, link: Link, item: batches.Framed, token: int, qos: int, *, closing: bool, generation: int
    ) -> None:
        if closing:
            return  # not acknowledged: the broker (QoS 1) or the hub delivers it again
        input_name = item.name
        app, system = split_properties(item.user_properties)
        if item.content_type and "contentType" not in system:
            system["contentType"] = item.content_type
        message_id = system.get("messageId", "")
        # Per input: the same message routed to two inputs is two deliveries, each acked on its own.
        key = f"{input_name}/{message_id}" if message_id else ""
        if key and (key in self._seen or key in self.in_progress):
            self.duplicates += 1
            link.ack(token, qos)
            if key in self._seen:
                self._ack_later(key)  # the hub missed our ack: say it again
            return
        if input_name not in self.handlers:
            log.warning("%s: no handler for input %r; the hub will deliver it again", self.module_id, input_name)
            link.ack(token, qos)
            return
        if key:
            self.in_progress.add(key)
        message = InputMessage(message_id, input_name, item.body, app, system)
        self._work.put(("input", message, token, qos, generation))

    def on_handled(self, done: Handled, link: Link | None, generation: int) -> None:
        if link is not None and done.generation == generation:
            link.ack(done.token, done.qos)  # after a reconnect the broker redelivers; the duplicate is acked
        if done.key:
            self.in_progress.discard(done.key)
            self._seen[done.key] = None
            while len(self._seen) > _SEEN:
                self._seen.popitem(last=False)
            self._ack_later(done.key)

    # -- acks to the hub (event thread) ---------------------------------------------------------

    def _ack_later(self, key: str) -> None:
        if not self._acks:
            self._acks_since = time.monotonic()
        self._acks.append(key)

    def acks_due_at(self) -> float | None:
        """When the pending acks must go out at the latest (None: there are none)."""
        return self._acks_since if self._acks else None

    def take_acks(self) -> list[str]:
        acks, self._acks = self._acks, []
        return acks

    @property
    def acks_pending(self) -> int:
        return len(self._acks)

    # -- desired properties (event thread) ------------------------------------------------------

    def on_desired(self, payload: bytes, *, full: bool) -> None:
        try:
            doc = json.loads(payload) if payload else {}
        except ValueError:
            log.warning("ignoring malformed desired properties: %r", payload[:200])
            return
        if not isinstance(doc, dict):
            return
        current = self.desired
        version = doc.get("$version")
        known = None if current is None else current.get("$version")
        if full:
            self.desired = doc
            if current is not None and version != known:
                self._work.put(("twin", doc))
        elif current is not None and isinstance(version, int) and isinstance(known, int) and version <= known:
            return  # already part of the full document we hold
        else:
            self.desired = merge_patch(current or {}, doc)
            self._work.put(("twin", doc))

    # -- the input worker -----------------------------------------------------------------------

    def run(self, item: object) -> bool:
        """Handle one work item if it is an inbox's (an input or a desired change); False if not."""
        match item:
            case ("input", InputMessage() as message, int(token), int(qos), int(generation)):
                self._run_input(message, token, qos, generation)
            case ("twin", dict(doc)):
                for handler in list(self.twin_handlers):
                    handler(dict(doc))
            case _:
                return False
        return True

    def _run_input(self, message: InputMessage, token: int, qos: int, generation: int) -> None:
        handler = self.handlers.get(message.input_name)
        try:
            if handler is not None:
                handler(message)
        except Exception:
            log.exception("%s: input %r handler failed on message %s", self.module_id, message.input_name, message.id)
        finally:
            key = f"{message.input_name}/{message.id}" if message.id else ""
            self._events.put(Handled(key, token, qos, generation))
