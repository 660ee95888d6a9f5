"""``ModuleClient``: what a module uses to talk to the edge hub (docs/hub.md), over MQTT 5.

Threads: the link's network thread (``outpost.wire.link.Link``; paho's in production) only
enqueues events; one event thread owns the client's state (outbox, receipts, acks, twin,
method calls); user handlers run on two worker threads, one for inputs and desired-property
changes (in arrival order) and one for direct methods, so a slow handler never stalls the
connection and a handler may call ``send``, ``report`` or ``invoke_method`` itself.

Delivery (at least once, end to end):

- ``send`` puts the message in an in-memory **outbox** and publishes it (QoS 1). It leaves the
  outbox only when the hub's receipt names its id: the hub has stored it. While earlier
  PUBLISHes await the broker's PUBACK (at most ``_BATCH_WINDOW`` of them), new messages wait and
  then go out together as one batch PUBLISH (``outpost.wire.batch``, up to ``max_batch``): a
  lone message is never delayed, a burst costs one packet per batch instead of one per message.
  ``max_batch=1`` sends every message on its own (window ``_WINDOW``) and does not announce
  that the client reads batches, so the hub sends it none either. Messages the broker
  accepted but the hub never receipted are published again after every reconnect and after
  ``resend_after`` seconds (doubling, capped at 10 minutes), covering a broker that crashed or
  dropped them. The hub drops ids it already stored.
- Inputs are acknowledged to the broker (PUBACK) and to the hub (``acks`` topic, batched every
  ``ack_interval`` seconds) only after the handler returned (the hub may deliver several inputs
  in one batch PUBLISH: the client announces it reads them with its ``online`` status); a
  handler exception is logged and still counts as handled (a poison message must not loop
  forever). Redelivered ids are dropped before the handler and acknowledged again.

What a crash of the module process itself loses: the outbox is in memory, so messages that
``send`` returned for but the hub had not yet receipted are lost with the process (anything
receipted is safe in the hub's store). Call ``flush()`` before exiting to wait for receipts;
``close()`` logs how many unreceipted messages it drops. Inputs are never lost by a module crash:
unacknowledged deliveries are re-sent by the hub.

The parts: ``_outbox.Outbox`` (outputs, flow control, receipts, re-sends), ``_inbox.Inbox``
(inputs, their acks, desired properties) and ``_methods.Methods`` (direct methods, both ways).
This class owns the connection, the threads and the lock every part's state is kept under.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from outpost.sdk._inbox import Handled, Inbox, InputHandler, TwinHandler
from outpost.sdk._methods import MethodHandler, Methods, encode
from outpost.sdk._outbox import JSON, Outbox, entry_for
from outpost.sdk.errors import (
    ConnectError,
    MethodTimeoutError,
    OutboxFullError,
    SdkError,
    SdkTimeoutError,
)
from outpost.wire import batch as batches
from outpost.wire import links, topics
from outpost.wire.link import (
    Connected,
    Disconnected,
    Incoming,
    Link,
    LinkFactory,
    LinkSettings,
    Published,
    Subscribed,
)

__all__ = ["InputHandler", "MethodHandler", "ModuleClient", "TwinHandler"]

log = logging.getLogger(__name__)

_STOP = object()


def _check_name(what: str, name: str) -> None:
    if not name or any(c in name for c in "/+#") or name != name.strip():
        raise ValueError(f"{what} {name!r} must be non-empty and contain no '/', '+', '#' or edge spaces")


class ModuleClient:
    """A module's connection to the hub. Use ``from_environment()`` inside a module.

    Example::

        with ModuleClient.from_environment() as client:
            client.on_input("in1", lambda m: client.send("out1", m.json()))
            client.send("telemetry", {"temperature": 21.5})
            client.flush(timeout=10)
    """

    def __init__(
        self,
        *,
        device_id: str,
        module_id: str,
        password: str,
        host: str = "127.0.0.1",
        port: int = 1883,
        username: str | None = None,
        max_outbox: int = 10_000,
        send_timeout: float = 10.0,
        resend_after: float = 60.0,
        ack_interval: float = 0.005,
        session_expiry: int = 86400,
        ca_file: Path | None = None,
        max_batch: int = batches.MAX_MESSAGES,
        link_factory: LinkFactory = links.paho,
    ) -> None:
        """``username`` defaults to the module id (docs/hub.md); ``ca_file`` enables TLS;
        ``max_batch`` caps the messages per batch PUBLISH (1: no batches, either way);
        ``link_factory`` makes the MQTT link (``wire.loopback`` for tests without a broker)."""
        if not 1 <= max_batch <= batches.MAX_MESSAGES:
            raise ValueError(f"max_batch must be between 1 and {batches.MAX_MESSAGES}, not {max_batch}")
        _check_name("device id", device_id)
        _check_name("module id", module_id)
        self.device_id = device_id
        self.module_id = module_id
        self._settings = LinkSettings(
            host=host,
            port=port,
            client_id=f"{device_id}/{module_id}",
            username=username or module_id,
            password=password,
            will_topic=topics.status(device_id, module_id),
            will_payload=b"offline",
            session_expiry=session_expiry,
            ca_file=ca_file,
        )
        self._max_outbox = max_outbox
        self._send_timeout = send_timeout
        self._ack_interval = ack_interval
        self._cond = threading.Condition(threading.RLock())
        self._link_factory = link_factory
        self._link: Link | None = None
        self._events: queue.Queue[object] = queue.Queue()
        self._inputs_q: queue.Queue[object] = queue.Queue()
        self._methods_q: queue.Queue[object] = queue.Queue()
        self._threads: list[threading.Thread] = []
        # state owned by the event thread (read elsewhere under _cond), the parts' included
        self._outbox = Outbox(device_id=device_id, module_id=module_id, max_batch=max_batch, resend_after=resend_after)
        self._inbox = Inbox(device_id=device_id, module_id=module_id, work=self._inputs_q, events=self._events)
        self._methods = Methods(device_id=device_id, module_id=module_id, username=self._settings.username)
        self._connected = False
        self._ready = False
        self._closing = False
        self._generation = 0
        self._connect_error: Connected | None = None
        self._connect_sub = -2  # SUBACK token of the subscriptions made on (re)connect
        self._tokens: dict[int, tuple[str, Any]] = {}  # PUBLISHes awaiting a PUBACK: acks, close, calls
        self._subacks: dict[int, tuple[int, ...]] = {}

    # ------------------------------------------------------------------ counters (diagnostics, tests)

    @property
    def duplicates(self) -> int:
        """Inputs delivered again and dropped before their handler."""
        return self._inbox.duplicates

    @property
    def resent(self) -> int:
        """Outputs published again for want of the hub's receipt."""
        return self._outbox.resent

    @property
    def rejected(self) -> int:
        """Outputs the broker refused for good (dropped from the outbox)."""
        return self._outbox.rejected

    @property
    def batches_sent(self) -> int:
        """Batch PUBLISHes of outputs."""
        return self._outbox.batches_sent

    @property
    def batches_received(self) -> int:
        """Batch PUBLISHes of inputs."""
        return self._inbox.batches_received

    # ------------------------------------------------------------------ construction, lifecycle

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ModuleClient:
        """A client configured from the variables the agent sets (docs/hub.md)."""
        env = os.environ if environ is None else environ
        device = env.get("OUTPOST_DEVICE_ID") or env.get("IOTEDGE_DEVICEID")
        values = {
            "IOTEDGE_MODULEID": env.get("IOTEDGE_MODULEID"),
            "OUTPOST_DEVICE_ID (or IOTEDGE_DEVICEID)": device,
            "OUTPOST_MODULE_PASSWORD": env.get("OUTPOST_MODULE_PASSWORD"),
        }
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise SdkError(f"not running under the Outpost agent? missing environment: {', '.join(missing)}")
        kwargs: dict[str, Any] = {
            "device_id": device,
            "module_id": env["IOTEDGE_MODULEID"],
            "password": env["OUTPOST_MODULE_PASSWORD"],
            "host": env.get("OUTPOST_HUB_HOST") or "127.0.0.1",
            "port": int(env.get("OUTPOST_HUB_PORT") or 1883),
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._connected and self._ready

    @property
    def pending(self) -> int:
        """Messages in the outbox (sent, not yet receipted by the hub)."""
        with self._cond:
            return len(self._outbox)

    def connect(self, timeout: float = 10.0) -> None:
        """Connect (persistent session), subscribe, announce ``online``; reconnects by itself afterwards.

        Raises ``ConnectError`` at once for refused credentials, or after ``timeout`` seconds
        without a broker.
        """
        with self._cond:
            if self._link is not None:
                return
            self._closing = False
            self._link = self._link_factory(self._settings, self._events.put)
        self._threads = [
            threading.Thread(target=self._event_loop, name=f"outpost-sdk-{self.module_id}", daemon=True),
            threading.Thread(target=self._worker, args=(self._inputs_q,), name="outpost-sdk-inputs", daemon=True),
            threading.Thread(target=self._worker, args=(self._methods_q,), name="outpost-sdk-methods", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._link.start()
        with self._cond:
            done = self._cond.wait_for(
                lambda: self._ready or (self._connect_error is not None and self._connect_error.permanent), timeout
            )
            error = self._connect_error
        if not done or not self._ready:
            self.close()
            s = self._settings
            if error is not None and error.permanent:
                raise ConnectError(f"the broker at {s.host}:{s.port} refused {s.username!r}: {error.reason}")
            raise ConnectError(f"no broker answered at {s.host}:{s.port} within {timeout:g} s")

    def close(self, timeout: float = 5.0) -> None:
        """Let inputs already in a handler finish (up to 2 s) and send their acks, announce
        ``offline``, disconnect and stop the threads; idempotent. Inputs arriving meanwhile are
        left to the hub, which delivers them again."""
        with self._cond:
            link = self._link
            if link is None or self._closing:
                return
            self._closing = True
        deadline = time.monotonic() + timeout
        if self.connected:
            with self._cond:
                if threading.current_thread() not in self._threads:  # a handler closing its own client
                    self._cond.wait_for(
                        lambda: not self._inbox.in_progress, max(0.0, min(2.0, deadline - time.monotonic()))
                    )
                self._flush_acks()
                offline = link.publish(topics.status(self.device_id, self.module_id), b"offline", retain=True)
                self._tokens[offline] = ("close", None)
                self._cond.wait_for(
                    lambda: not any(kind in ("close", "ack") for kind, _ in self._tokens.values()),
                    max(0.0, min(2.0, deadline - time.monotonic())),
                )
        with self._cond:
            self._link = None
        link.stop()
        for q in (self._events, self._inputs_q, self._methods_q):
            q.put(_STOP)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.1, deadline - time.monotonic()))
        with self._cond:
            self._connected = self._ready = False
            lost = len(self._outbox)
        if lost:
            log.warning("closing %s with %d unreceipted message(s): they are lost", self.module_id, lost)

    def __enter__(self) -> ModuleClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_link(self) -> Link:
        link = self._link
        if link is None:
            raise SdkError("the client is not connected: call connect() first")
        return link

    # ------------------------------------------------------------------ telemetry

    def send(
        self,
        output: str,
        payload: bytes | str | Mapping[str, Any] | list[Any],
        properties: Mapping[str, str] | None = None,
        *,
        content_type: str | None = None,
    ) -> str:
        """Publish ``payload`` on ``output``; returns its message id (``$.mid``).

        dict/list payloads are sent as JSON (content type application/json, encoding utf-8);
        str as utf-8. Blocks up to ``send_timeout`` while the outbox is full, then raises
        ``OutboxFullError``. The message stays in the outbox until the hub receipts it.
        """
        _check_name("output", output)
        topic = topics.output_topic(self.device_id, self.module_id, output)
        entry = entry_for(topic, output, payload, properties, content_type)
        link = self._require_link()
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._outbox) < self._max_outbox, self._send_timeout):
                raise OutboxFullError(
                    f"outbox full ({self._max_outbox} messages unreceipted for {self._send_timeout:g} s): "
                    "is the hub running and receipting?"
                )
            self._outbox.add(entry, link)
        return entry.id

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until the hub has receipted every sent message; ``SdkTimeoutError`` after ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: not self._outbox, timeout):
                raise SdkTimeoutError(f"{len(self._outbox)} message(s) not receipted by the hub within {timeout:g} s")

    # ------------------------------------------------------------------ handlers

    def on_input(self, name: str, handler: InputHandler) -> None:
        """Call ``handler(message)`` for each message delivered to input ``name`` (subscribes now)."""
        _check_name("input", name)
        with self._cond:
            self._inbox.handlers[name] = handler
            if self._link is not None and self._connected:
                self._link.subscribe([topics.input_topic(self.device_id, self.module_id, name)])

    def on_method(self, name: str, handler: MethodHandler) -> None:
        """Answer direct method ``name`` with ``handler(payload) -> (status, payload)``."""
        _check_name("method", name)
        with self._cond:
            self._methods.handlers[name] = handler

    def on_desired_change(self, handler: TwinHandler) -> None:
        """Call ``handler(patch)`` for each desired-properties patch, and with the full document
        when a reconnect brings a newer version than the one known."""
        with self._cond:
            self._inbox.twin_handlers.append(handler)

    # ------------------------------------------------------------------ twin

    def twin(self, timeout: float = 5.0) -> dict[str, Any]:
        """The full desired properties (with ``$version``), waiting up to ``timeout`` for the hub's first copy."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._inbox.desired is not None, timeout):
                raise SdkTimeoutError(f"no desired properties from the hub within {timeout:g} s")
            copy: dict[str, Any] = json.loads(json.dumps(self._inbox.desired))  # the caller may change it
            return copy

    def report(self, patch: Mapping[str, Any]) -> None:
        """Publish a reported-properties patch (QoS 1; queued while disconnected)."""
        link = self._require_link()
        link.publish(topics.reported(self.device_id, self.module_id), encode(dict(patch)), content_type=JSON)

    # ------------------------------------------------------------------ direct methods (caller side)

    def invoke_method(
        self, target_module: str, method: str, payload: Any = None, timeout: float = 30.0
    ) -> tuple[int, Any]:
        """Call ``method`` on ``target_module``; returns ``(status, payload)``.

        Raises ``MethodTimeoutError`` after ``timeout`` seconds without a response, and
        ``NotAuthorizedError`` when this identity may not call methods (module credentials may
        not under docs/hub.md's ACLs; the hub user may).
        """
        _check_name("module", target_module)
        _check_name("method", method)
        link = self._require_link()
        deadline = time.monotonic() + timeout
        with self._cond:
            if not self._methods.invoker:
                self._methods.invoker = True
                if self._connected:
                    token = link.subscribe([self._methods.response_filter()])
                    self._cond.wait_for(lambda: token in self._subacks, timeout)
                    self._subacks.pop(token, None)
            correlation, call, token = self._methods.call(link, target_module, method, payload, deadline)
            self._tokens[token] = ("call", correlation)
        try:
            if not call.done.wait(max(0.0, deadline - time.monotonic())):
                raise MethodTimeoutError(target_module, method, timeout)
        finally:
            with self._cond:
                self._methods.calls.pop(correlation, None)
        if call.error is not None:
            raise call.error
        return call.status, call.payload

    # ------------------------------------------------------------------ event thread

    def _event_loop(self) -> None:
        next_scan = time.monotonic() + 0.5
        while True:
            with self._cond:
                wait = next_scan - time.monotonic()
                acks_since = self._inbox.acks_due_at()
                if acks_since is not None:
                    wait = min(wait, acks_since + self._ack_interval - time.monotonic())
            try:
                event = self._events.get(timeout=max(0.0, wait))
            except queue.Empty:
                event = None
            if event is _STOP:
                return
            with self._cond:
                try:
                    if event is not None:
                        self._handle(event)
                    now = time.monotonic()
                    # Acks go out when no more inputs wait (the hub's pump waits for them), else
                    # every ack_interval or 256 acks, whichever comes first.
                    idle = isinstance(event, Handled) and not self._inbox.in_progress
                    since = self._inbox.acks_due_at()
                    if since is not None and (
                        idle or now >= since + self._ack_interval or self._inbox.acks_pending >= 256
                    ):
                        self._flush_acks()
                    if now >= next_scan:
                        next_scan = now + 0.5
                        if self._link is not None and self._connected:
                            self._outbox.resend_due(now, self._link)
                except Exception:  # the event thread must survive anything a bad packet causes
                    log.exception("internal error handling %r", event)
                self._cond.notify_all()

    def _handle(self, event: object) -> None:
        match event:
            case Connected():
                self._on_connected(event)
            case Disconnected():
                if self._connected:
                    log.info("%s disconnected from the hub: %s", self.module_id, event.reason)
                self._connected = self._ready = False
            case Published():
                self._on_published(event)
            case Subscribed():
                self._subacks[event.token] = event.codes
                if event.token == self._connect_sub:
                    self._ready = True
            case Incoming():
                self._on_incoming(event)
            case Handled():
                self._inbox.on_handled(event, self._link, self._generation)

    def _on_connected(self, event: Connected) -> None:
        link = self._link
        if not event.ok:
            self._connect_error = event
            if event.permanent:
                log.error("%s: the broker refused the connection: %s", self.module_id, event.reason)
            return
        if link is None:
            return
        self._connect_error = None
        self._connected = True
        self._generation += 1
        d, m = self.device_id, self.module_id
        wanted = [topics.receipts(d, m), topics.desired_all(d, m), topics.method_requests(d, m)]
        wanted += self._inbox.subscriptions()
        wanted.append(topics.batch_inputs(d, m))
        if self._methods.invoker:
            wanted.append(self._methods.response_filter())
        self._connect_sub = link.subscribe(wanted)
        announce = [batches.READS_BATCHES] if self._outbox.max_batch > 1 else []
        link.publish(topics.status(d, m), b"online", retain=True, user_properties=announce)
        self._outbox.on_reconnect(link)
        log.info("%s connected to the hub (session present: %s)", m, event.session_present)

    def _on_published(self, event: Published) -> None:
        if self._outbox.on_published(event, self._link):
            return
        kind, key = self._tokens.pop(event.token, ("", None))
        if kind == "call":
            self._methods.on_request_published(event, key)

    def _flush_acks(self) -> None:
        link = self._link
        if not self._inbox.acks_pending or link is None:
            return
        acks = self._inbox.take_acks()
        token = link.publish(topics.acks(self.device_id, self.module_id), encode(acks), content_type=JSON)
        self._tokens[token] = ("ack", None)

    def _on_incoming(self, event: Incoming) -> None:
        link = self._link
        if link is None:
            return
        parsed = topics.parse(event.topic)
        if isinstance(parsed, topics.ModuleInput) and self._mine(parsed):
            framed = batches.Framed(parsed.input, event.user_properties, event.content_type, event.payload)
            self._inbox.on_message(
                link, framed, event.token, event.qos, closing=self._closing, generation=self._generation
            )
            return
        link.ack(event.token, event.qos)
        if isinstance(parsed, topics.BatchInputs) and self._mine(parsed):
            self._inbox.on_batch(link, event.payload, closing=self._closing, generation=self._generation)
            return
        channel = parsed.channel if isinstance(parsed, topics.ModuleTopic) and self._mine(parsed) else None
        if channel is topics.ModuleChannel.RECEIPTS:
            self._outbox.on_receipt(event.payload)
        elif channel is topics.ModuleChannel.DESIRED:
            self._inbox.on_desired(event.payload, full=True)
        elif channel is topics.ModuleChannel.DESIRED_PATCH:
            self._inbox.on_desired(event.payload, full=False)
        elif isinstance(parsed, topics.MethodRequest) and self._mine(parsed):
            self._methods_q.put((parsed.method, event))
        else:
            self._methods.on_response(event)

    def _mine(self, topic: topics.ModuleInput | topics.BatchInputs | topics.ModuleTopic | topics.MethodRequest) -> bool:
        return topic.device == self.device_id and topic.module == self.module_id

    # ------------------------------------------------------------------ worker threads

    def _worker(self, work: queue.Queue[object]) -> None:
        while (item := work.get()) is not _STOP:
            try:
                if self._inbox.run(item):
                    continue
                match item:
                    case (str(name), Incoming() as event):
                        self._methods.run(name, event, self._link)
            except Exception:
                log.exception("%s: handler failed", self.module_id)
