"""Ingress: messages from the broker, stored in batches, acknowledged only once on disk.

The broker link's thread only enqueues (``offer``); the ingress thread takes up to
``batch_max`` PUBLISHes or ``batch_bytes`` of payload (waiting at most ``linger_secs`` for more;
a PUBLISH may be a batch of messages, ``outpost.wire.batch``), routes them, stores them in
ONE transaction, and only then sends the MQTT acknowledgements and the receipts that release
the senders' outboxes. Messages the store rejects (disk cap, ``reject-new``) are neither acked
nor receipted and are retried from memory; memory stays bounded because the broker sends at
most ``receive_maximum`` unacknowledged messages. Called by ``service.HubService``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

from outpost.errors import InputError, StoreError
from outpost.hub.metrics import HubMetrics
from outpost.hub.routing import RouteTable
from outpost.hub.store import Delivery, MessageStore
from outpost.wire import batch as batches
from outpost.wire import topics
from outpost.wire.link import Incoming, Link
from outpost.wire.message import Message, new_id, split_properties

__all__ = ["Ingress", "decode"]

log = logging.getLogger(__name__)


def decode(received: Incoming) -> list[Message]:
    """A module output, a module's batch of outputs or leaf telemetry -> its messages, in order.

    ``InputError`` says why a PUBLISH is none of these (unknown topic, unreadable batch).
    """
    match topics.parse(received.topic):
        case topics.BatchOutputs(device, module):
            return [
                _message(
                    device, module, item.name, item.user_properties, content_type=item.content_type, body=item.body
                )
                for item in batches.decode(received.payload)
            ]
        case topics.ModuleOutput(device, module, output) if output:
            pairs: tuple[tuple[str, str], ...] = tuple(received.user_properties)
            source: tuple[str, str | None, str | None] = (device, module, output)
        case topics.ModuleOutput():
            raise InputError(f"topic {received.topic!r} names no output")
        case topics.LeafEvents(device, properties):
            pairs, source = (*properties, *received.user_properties), (device, None, None)
        case _:
            raise InputError(f"topic {received.topic!r} is not a module output or device telemetry topic")
    return [_message(*source, pairs, content_type=received.content_type, body=received.payload)]


def _message(
    device: str,
    module: str | None,
    output: str | None,
    pairs: Sequence[tuple[str, str]],
    *,
    content_type: str | None,
    body: bytes,
) -> Message:
    app, system = split_properties(pairs)
    if content_type and "contentType" not in system:
        system["contentType"] = content_type
    message_id = system.pop("messageId", "") or new_id()
    for key in ("connectionDeviceId", "connectionModuleId", "outputName"):
        system.pop(key, None)  # the hub sets these from the topic: a sender cannot forge them
    return Message(
        id=message_id,
        body=body,
        source_device=device,
        source_module=module,
        output=output,
        properties=app,
        system=system,
    )


class Ingress:
    """Batching, store-then-ack ingress. ``offer`` from any thread; ``run`` on its own thread."""

    def __init__(
        self,
        store: MessageStore,
        routes: Callable[[], RouteTable],
        link: Link,
        *,
        on_stored: Callable[[set[str]], None],
        publisher: Link | None = None,
        metrics: HubMetrics | None = None,
        clock: Callable[[], float] = time.time,
        batch_max: int = 500,
        batch_bytes: int = 256 * 1024,
        linger_secs: float = 0.002,
        retry_secs: float = 1.0,
    ) -> None:
        self.store = store
        self.routes = routes
        self.link = link
        self.publisher = publisher or link  # receipts may go out on another connection
        self.on_stored = on_stored
        self.metrics = metrics
        self.clock = clock
        self.batch_max = batch_max
        self.batch_bytes = batch_bytes
        self.linger_secs = linger_secs
        self.retry_secs = retry_secs
        self._queue: queue.Queue[Incoming] = queue.Queue()
        self._rejected: list[tuple[Incoming, Message]] = []
        self.malformed = 0

    def offer(self, received: Incoming) -> None:
        self._queue.put(received)

    def run(self, stop: threading.Event) -> None:
        retry_at = 0.0
        while not stop.is_set():
            batch = self._take(timeout=0.2)
            if self._rejected and time.monotonic() >= retry_at:
                # A batch PUBLISH may have several rejected messages: retry the PUBLISH once.
                batch = list({id(r): r for r, _ in self._rejected}.values()) + batch
                self._rejected = []
                retry_at = time.monotonic() + self.retry_secs
            if batch:
                try:
                    self.process(batch)
                except StoreError as exc:  # nothing was committed: nothing acked; retried from memory
                    log.error("store failed, %d message(s) kept for retry: %s", len(batch), exc)
                    self._rejected.extend((r, m) for r in batch for m in _decoded_or_none(r))
                    stop.wait(self.retry_secs)

    def _take(self, timeout: float) -> list[Incoming]:
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return []
        batch = [first]
        size = len(first.payload)
        deadline = time.monotonic() + self.linger_secs
        while len(batch) < self.batch_max and size < self.batch_bytes:
            remaining = deadline - time.monotonic()
            try:
                received = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(received)
            size += len(received.payload)
        return batch

    def process(self, batch: list[Incoming]) -> None:
        """Route, store (one transaction), then ack and receipt what was stored."""
        now = self.clock()
        table = self.routes()
        items: list[tuple[Message, Sequence[Delivery]]] = []
        decoded: list[tuple[Incoming, Message]] = []
        for received in batch:
            try:
                messages = decode(received)
            except InputError as exc:
                self.malformed += 1
                if self.metrics:
                    self.metrics.observe_dropped("malformed", 1)
                log.warning("dropped a PUBLISH on %s: %s", received.topic, exc)
                self.link.ack(received.token, received.qos)
                continue
            if not messages:  # an empty batch: nothing to store
                self.link.ack(received.token, received.qos)
            for message in messages:
                deliveries = table.deliveries(message, now)
                if self.metrics:
                    self.metrics.observe_ingress(message, routed=bool(deliveries))
                items.append((message, deliveries))
                decoded.append((received, message))
        if not items:
            return
        result = self.store.put_batch(items, now)
        if self.metrics:
            self.metrics.observe_put(result)
        rejected = set(result.rejected)
        receipts: dict[tuple[str, str], list[str]] = defaultdict(list)
        endpoints: set[str] = set()
        held: set[int] = set()  # PUBLISHes with a rejected message: not acked, retried whole
        for (received, message), (_, targets) in zip(decoded, items, strict=True):
            if message.id in rejected:
                self._rejected.append((received, message))
                held.add(id(received))
                continue
            if message.source_module is not None:
                receipts[(message.source_device, message.source_module)].append(message.id)
            endpoints.update(d.endpoint for d in targets)
        for received in {id(r): r for r, _ in decoded}.values():  # each PUBLISH once, in order
            if id(received) not in held:
                self.link.ack(received.token, received.qos)
        for (device, module), ids in receipts.items():
            self.publisher.publish(topics.receipts(device, module), json.dumps(ids).encode(), qos=1)
        if endpoints:
            self.on_stored(endpoints)


def _decoded_or_none(received: Incoming) -> list[Message]:
    """``decode`` for the retry list: an undecodable PUBLISH was already dropped and acked."""
    try:
        return decode(received)
    except InputError:
        return []
