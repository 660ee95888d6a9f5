"""Delivery to module inputs, end to end: a delivery leaves the store only when the module's
SDK acknowledges it (after its handler returned), never merely when the broker took it.

``ModuleInputSink`` implements ``Sink`` for one endpoint ``module:M/INPUT``: it publishes a
batch to the input topic (as batch PUBLISHes, ``outpost.wire.batch``, when the module announced
it reads them and more than one delivery is due) and waits (bounded) for the module's acks; unacknowledged
deliveries stay retryable and are sent again (the SDK drops the repeated ids). ``Modules``
tracks which modules are online (their retained status) and routes acks to the sinks.
Called by ``service.HubService``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence

from outpost.hub.endpoint import Endpoint
from outpost.hub.sinks import FailureKind, SinkResult
from outpost.hub.store import Stored
from outpost.wire import batch as batches
from outpost.wire import topics
from outpost.wire.link import Link

__all__ = ["ModuleInputSink", "Modules", "ack_key"]

log = logging.getLogger(__name__)


def ack_key(input_name: str, message_id: str) -> str:
    """What a module acks: ``INPUT/ID``, so one message routed to two inputs is acked per input."""
    return f"{input_name}/{message_id}"


class Modules:
    """Online state of each module and the sinks waiting for its acks; fed by the hub's link."""

    def __init__(self) -> None:
        self._online: dict[str, bool] = {}
        self._batches: dict[str, bool] = {}
        self._sessions: dict[str, int] = {}
        self._sinks: dict[str, list[ModuleInputSink]] = {}
        self._lock = threading.Lock()
        self.on_online: Callable[[str], None] = lambda _module: None

    def register(self, sink: ModuleInputSink) -> None:
        with self._lock:
            self._sinks.setdefault(sink.module, []).append(sink)

    def unregister(self, sink: ModuleInputSink) -> None:
        with self._lock:
            if sink in self._sinks.get(sink.module, []):
                self._sinks[sink.module].remove(sink)

    def online(self, module: str) -> bool:
        return self._online.get(module, False)

    def reads_batches(self, module: str) -> bool:
        return self._batches.get(module, False)

    def session(self, module: str) -> int:
        """Counts the module's ``online`` announcements: a new value means a new connection, and
        QoS 0 deliveries sent to the old one are gone (no point waiting for their acks)."""
        return self._sessions.get(module, 0)

    def set_status(self, module: str, payload: bytes, properties: Sequence[tuple[str, str]] = ()) -> None:
        online = payload.strip() == b"online"
        was = self._online.get(module, False)
        self._batches[module] = online and batches.READS_BATCHES in properties
        if online:
            self._sessions[module] = self._sessions.get(module, 0) + 1
        self._online[module] = online
        with self._lock:
            sinks = list(self._sinks.get(module, []))
        for sink in sinks:
            sink.status_changed()
        if online and not was:
            self.on_online(module)

    def acked(self, module: str, payload: bytes) -> None:
        try:
            keys = json.loads(payload)
        except ValueError:
            log.warning("module %s sent acks that are not JSON; ignored", module)
            return
        if not isinstance(keys, list):
            return
        with self._lock:
            sinks = list(self._sinks.get(module, []))
        for sink in sinks:
            sink.acked({str(k) for k in keys})


class ModuleInputSink:
    """A ``Sink`` for one module input."""

    def __init__(
        self,
        link: Link,
        modules: Modules,
        *,
        device: str,
        module: str,
        input_name: str,
        ack_timeout: float = 5.0,
    ) -> None:
        self.link = link
        self.modules = modules
        self.device = device
        self.module = module
        self.input = input_name
        self.name = str(Endpoint.module_input(module, input_name))
        self.ack_timeout = ack_timeout
        self._pending: dict[str, int] = {}
        self._done: set[int] = set()
        self._cond = threading.Condition()
        modules.register(self)

    def connected(self) -> bool:
        return self.modules.online(self.module)

    def status_changed(self) -> None:
        """The module went offline or (re)connected: a waiting ``send`` looks again at once."""
        with self._cond:
            self._cond.notify_all()

    def acked(self, keys: set[str]) -> None:
        with self._cond:
            for key in keys & self._pending.keys():
                self._done.add(self._pending.pop(key))
            self._cond.notify_all()

    def send(self, batch: Sequence[Stored]) -> SinkResult:
        if not self.connected():
            return SinkResult(retryable=[s.seq for s in batch], failure=FailureKind.UNREACHABLE, detail="offline")
        topic = topics.input_topic(self.device, self.module, self.input)
        session = self.modules.session(self.module)
        with self._cond:
            self._done.clear()
            self._pending = {ack_key(self.input, s.message.id): s.seq for s in batch}
        # QoS 0 is enough on this hop: the delivery stays in the store until the module's SDK acks
        # it, and is sent again otherwise; QoS 1 would add two packets per PUBLISH.
        try:
            if len(batch) > 1 and self.modules.reads_batches(self.module):
                framed = [
                    batches.Framed(
                        self.input,
                        tuple(s.message.user_properties()),
                        s.message.system.get("contentType"),
                        s.message.body,
                    )
                    for s in batch
                ]
                batch_topic = topics.batch_inputs(self.device, self.module)
                for run in batches.chunks(framed):
                    self.link.publish(batch_topic, batches.encode(run), qos=0)
            else:
                for stored in batch:
                    message = stored.message
                    self.link.publish(
                        topic,
                        message.body,
                        qos=0,
                        user_properties=message.user_properties(),
                        content_type=message.system.get("contentType"),
                    )
        except OSError as exc:
            return SinkResult(retryable=[s.seq for s in batch], failure=FailureKind.UNREACHABLE, detail=str(exc))
        deadline = time.monotonic() + self.ack_timeout
        with self._cond:
            while self._pending and self.connected() and self.modules.session(self.module) == session:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.5))
            done = set(self._done)
            self._pending = {}
        succeeded = [s.seq for s in batch if s.seq in done]
        # In order: everything after the first unacked delivery is retried too (keeps per-priority order).
        first_missing = next((i for i, s in enumerate(batch) if s.seq not in done), len(batch))
        ordered_ok = [s.seq for s in batch[:first_missing]]
        retry = [s.seq for s in batch[first_missing:]]
        if retry:
            kind = FailureKind.UNREACHABLE if not self.connected() else FailureKind.THROTTLED
            log.info("%s: %d of %d deliveries not acked in time", self.name, len(retry), len(batch))
            return SinkResult(succeeded=ordered_ok, retryable=retry, failure=kind, detail="not acknowledged")
        return SinkResult(succeeded=succeeded)

    def close(self) -> None:
        self.modules.unregister(self)
        with self._cond:
            self._pending = {}
            self._cond.notify_all()
