"""``ModuleClient``: what a module uses to talk to the edge hub (docs/hub.md), over MQTT 5.

Threads: paho's network thread only enqueues events (``outpost/wire/adapters/paho_link.py``); one event
thread owns the client's state (outbox, receipts, acks, twin, method calls); user handlers run
on two worker threads, one for inputs and desired-property changes (in arrival order) and one
for direct methods, so a slow handler never stalls the connection and a handler may call
``send``, ``report`` or ``invoke_method`` itself.

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
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outpost.backoff import Backoff
from outpost.sdk.errors import (
    ConnectError,
    MethodTimeoutError,
    NotAuthorizedError,
    OutboxFullError,
    SdkError,
    SdkTimeoutError,
)
from outpost.sdk.messages import InputMessage
from outpost.wire import batch as batches
from outpost.wire import topics
from outpost.wire.adapters.paho_link import (
    NOT_AUTHORIZED,
    Connected,
    Disconnected,
    Incoming,
    LinkSettings,
    PahoLink,
    Published,
    Subscribed,
)
from outpost.wire.message import new_id, split_properties
from outpost.wire.patch import merge_patch

__all__ = ["InputHandler", "MethodHandler", "ModuleClient", "TwinHandler"]

log = logging.getLogger(__name__)

InputHandler = Callable[[InputMessage], None]
TwinHandler = Callable[[dict[str, Any]], None]
#: ``handler(payload) -> (status, payload)``; payloads are JSON values (None when empty).
MethodHandler = Callable[[Any], tuple[int, Any]]

JSON = "application/json"
STATUS_PROPERTY = "status"  # user property of a method response carrying the status code
_MAX_RESEND = 600.0
_WINDOW = 1000  # output PUBLISHes handed to paho and not yet acknowledged, when not batching
_BATCH_WINDOW = 4  # the same when batching: what queues up behind them goes out as batches
_SEEN = 10_000  # handled input ids remembered for duplicate detection
#: PUBACK reason codes after which re-sending the same message cannot succeed.
_REFUSED = {0x83, NOT_AUTHORIZED, 0x90, 0x95, 0x99}


@dataclass
class _Entry:
    id: str
    output: str
    topic: str
    payload: bytes
    user_properties: tuple[tuple[str, str], ...]
    content_type: str | None
    token: int | None = None  # awaiting the broker's PUBACK
    stored_at: float | None = None  # broker accepted it at (monotonic); awaiting the hub's receipt
    resends: int = 0  # times re-sent for want of a receipt: the next wait is ``Backoff.delay(resends + 1)``


@dataclass
class _Call:
    done: threading.Event = field(default_factory=threading.Event)
    status: int = 0
    payload: Any = None
    error: SdkError | None = None


@dataclass(frozen=True)
class _Handled:
    """The input worker finished a message: acknowledge it (if the connection is the same one)."""

    key: str  # INPUT/ID: what the hub's ack matching and our duplicate check use
    token: int  # the PUBLISH to PUBACK (QoS 1 single deliveries; 0 for batched ones, which are QoS 0)
    qos: int
    generation: int


_STOP = object()


def _check_name(what: str, name: str) -> None:
    if not name or any(c in name for c in "/+#") or name != name.strip():
        raise ValueError(f"{what} {name!r} must be non-empty and contain no '/', '+', '#' or edge spaces")


def _encode(payload: Any) -> bytes:
    return b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()


def _decode(body: bytes) -> Any:
    return json.loads(body) if body.strip() else None


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
    ) -> None:
        """``username`` defaults to the module id (docs/hub.md); ``ca_file`` enables TLS;
        ``max_batch`` caps the messages per batch PUBLISH (1: no batches, either way)."""
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
        self._resend_backoff = Backoff(first=resend_after, cap=_MAX_RESEND)
        self._ack_interval = ack_interval
        self._max_batch = max_batch
        self._cond = threading.Condition(threading.RLock())
        self._link: PahoLink | None = None
        self._events: queue.Queue[object] = queue.Queue()
        self._inputs_q: queue.Queue[object] = queue.Queue()
        self._methods_q: queue.Queue[object] = queue.Queue()
        self._threads: list[threading.Thread] = []
        # state owned by the event thread (read elsewhere under _cond)
        self._connected = False
        self._ready = False
        self._closing = False
        self._generation = 0
        self._connect_error: Connected | None = None
        self._connect_sub = -2  # SUBACK token of the subscriptions made on (re)connect
        self._outbox: dict[str, _Entry] = {}
        # Flow control: at most a window of output PUBLISHes handed to paho and not yet PUBACKed
        # (token -> the message ids it carries); the rest wait here in send order (paho's own queue
        # is keyed by 16-bit packet ids and must not overflow).
        self._inflight: dict[int, list[str]] = {}
        self._waiting: deque[str] = deque()
        self._tokens: dict[int, tuple[str, Any]] = {}
        self._subacks: dict[int, tuple[int, ...]] = {}
        self._input_handlers: dict[str, InputHandler] = {}
        self._method_handlers: dict[str, MethodHandler] = {}
        self._twin_handlers: list[TwinHandler] = []
        self._desired: dict[str, Any] | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._in_progress: set[str] = set()
        self._acks: list[str] = []
        self._acks_since = 0.0
        self._calls: dict[bytes, _Call] = {}
        self._invoker = False
        #: counters, for diagnostics and tests
        self.duplicates = 0
        self.resent = 0
        self.rejected = 0
        self.batches_sent = 0  # batch PUBLISHes of outputs
        self.batches_received = 0  # batch PUBLISHes of inputs

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
            self._link = PahoLink(self._settings, self._events.put)
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
                    self._cond.wait_for(lambda: not self._in_progress, max(0.0, min(2.0, deadline - time.monotonic())))
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

    def _require_link(self) -> PahoLink:
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
        entry = _Entry(
            id=message_id,
            output=output,
            topic=topics.output_topic(self.device_id, self.module_id, output),
            payload=body,
            user_properties=tuple(pairs),
            content_type=content_type,
        )
        link = self._require_link()
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._outbox) < self._max_outbox, self._send_timeout):
                raise OutboxFullError(
                    f"outbox full ({self._max_outbox} messages unreceipted for {self._send_timeout:g} s): "
                    "is the hub running and receipting?"
                )
            self._outbox[message_id] = entry
            self._waiting.append(message_id)
            self._release_waiting(link)
        return message_id

    def _release_waiting(self, link: PahoLink) -> None:
        """Hand waiting outputs to paho, in send order, while the window has room: one PUBLISH
        per message when only one waits (or batches are off), batch PUBLISHes otherwise."""
        window = _WINDOW if self._max_batch == 1 else _BATCH_WINDOW
        while self._waiting and len(self._inflight) < window:
            run: list[_Entry] = []
            size = 0
            while self._waiting and len(run) < self._max_batch:
                entry = self._outbox.get(self._waiting[0])
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

    def _publish_run(self, link: PahoLink, run: list[_Entry]) -> None:
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
            self._input_handlers[name] = handler
            if self._link is not None and self._connected:
                self._link.subscribe([topics.input_topic(self.device_id, self.module_id, name)])

    def on_method(self, name: str, handler: MethodHandler) -> None:
        """Answer direct method ``name`` with ``handler(payload) -> (status, payload)``."""
        _check_name("method", name)
        with self._cond:
            self._method_handlers[name] = handler

    def on_desired_change(self, handler: TwinHandler) -> None:
        """Call ``handler(patch)`` for each desired-properties patch, and with the full document
        when a reconnect brings a newer version than the one known."""
        with self._cond:
            self._twin_handlers.append(handler)

    # ------------------------------------------------------------------ twin

    def twin(self, timeout: float = 5.0) -> dict[str, Any]:
        """The full desired properties (with ``$version``), waiting up to ``timeout`` for the hub's first copy."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._desired is not None, timeout):
                raise SdkTimeoutError(f"no desired properties from the hub within {timeout:g} s")
            copy: dict[str, Any] = json.loads(json.dumps(self._desired))  # the caller may change it
            return copy

    def report(self, patch: Mapping[str, Any]) -> None:
        """Publish a reported-properties patch (QoS 1; queued while disconnected)."""
        link = self._require_link()
        link.publish(topics.reported(self.device_id, self.module_id), _encode(dict(patch)), content_type=JSON)

    # ------------------------------------------------------------------ direct methods (caller side)

    def _response_filter(self) -> str:
        return topics.method_responses(self.device_id, self.module_id)

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
            if not self._invoker:
                self._invoker = True
                if self._connected:
                    token = link.subscribe([self._response_filter()])
                    self._cond.wait_for(lambda: token in self._subacks, timeout)
                    self._subacks.pop(token, None)
            correlation = uuid.uuid4().bytes
            call = _Call()
            self._calls[correlation] = call
            token = link.publish(
                topics.method_request(self.device_id, target_module, method),
                _encode(payload),
                content_type=JSON,
                response_topic=topics.method_response(self.device_id, target_module, self.module_id, correlation.hex()),
                correlation_data=correlation,
                expiry=max(1, math.ceil(deadline - time.monotonic())),
            )
            self._tokens[token] = ("call", correlation)
        try:
            if not call.done.wait(max(0.0, deadline - time.monotonic())):
                raise MethodTimeoutError(target_module, method, timeout)
        finally:
            with self._cond:
                self._calls.pop(correlation, None)
        if call.error is not None:
            raise call.error
        return call.status, call.payload

    # ------------------------------------------------------------------ event thread

    def _event_loop(self) -> None:
        next_scan = time.monotonic() + 0.5
        while True:
            with self._cond:
                wait = next_scan - time.monotonic()
                if self._acks:
                    wait = min(wait, self._acks_since + self._ack_interval - time.monotonic())
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
                    idle = isinstance(event, _Handled) and not self._in_progress
                    if self._acks and (idle or now >= self._acks_since + self._ack_interval or len(self._acks) >= 256):
                        self._flush_acks()
                    if now >= next_scan:
                        next_scan = now + 0.5
                        self._resend_due(now)
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
            case _Handled():
                self._on_handled(event)

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
        wanted += [topics.input_topic(d, m, name) for name in self._input_handlers]
        wanted.append(topics.batch_inputs(d, m))
        if self._invoker:
            wanted.append(self._response_filter())
        self._connect_sub = link.subscribe(wanted)
        announce = [batches.READS_BATCHES] if self._max_batch > 1 else []
        link.publish(topics.status(d, m), b"online", retain=True, user_properties=announce)
        # Messages the broker accepted before but the hub never receipted: the broker may have
        # lost them (crash before its autosave). Messages still awaiting a PUBACK are re-sent by paho.
        self._resend([entry for entry in self._outbox.values() if entry.stored_at is not None], link)
        log.info("%s connected to the hub (session present: %s)", m, event.session_present)

    def _on_published(self, event: Published) -> None:
        ids = self._inflight.pop(event.token, None)
        if ids is not None:
            self._on_output_acked(event, ids)
            return
        kind, key = self._tokens.pop(event.token, ("", None))
        if kind == "call" and not event.ok:
            call = self._calls.get(key)
            if call is not None:
                call.error = (
                    NotAuthorizedError(f"{self._settings.username!r} may not call direct methods: {event.reason}")
                    if event.code == NOT_AUTHORIZED
                    else SdkError(f"the broker refused the method call: {event.reason}")
                )
                call.done.set()

    def _on_output_acked(self, event: Published, ids: list[str]) -> None:
        """The broker's PUBACK for an output PUBLISH (one message or a batch)."""
        entries = [e for key in ids if (e := self._outbox.get(key)) is not None and e.token == event.token]
        for entry in entries:
            entry.token = None
        if len(ids) > 1 and event.code == NOT_AUTHORIZED:
            # A broker whose ACL predates batch PUBLISHes: send these, and all later ones, singly.
            log.warning("%s: the broker refused a batch PUBLISH (%s); sending singly", self.module_id, event.reason)
            self._max_batch = 1
            for entry in reversed(entries):
                self._waiting.appendleft(entry.id)
        elif event.code in _REFUSED:
            for entry in entries:
                del self._outbox[entry.id]
                self.rejected += 1
                log.error("the broker refused message %s on %s: %s", entry.id, entry.topic, event.reason)
        else:
            now = time.monotonic()
            for entry in entries:
                entry.stored_at = now
        if self._link is not None:
            self._release_waiting(self._link)

    def _resend_due(self, now: float) -> None:
        link = self._link
        if link is None or not self._connected:
            return
        wait = self._resend_backoff.delay
        due = [e for e in self._outbox.values() if e.stored_at is not None and now - e.stored_at >= wait(e.resends + 1)]
        for entry in due:
            entry.resends += 1
        self._resend(due, link)

    def _resend(self, entries: list[_Entry], link: PahoLink) -> None:
        """Queue accepted-but-unreceipted outputs again, ahead of new ones, through the window."""
        for entry in reversed(entries):
            entry.stored_at = None
            self._waiting.appendleft(entry.id)
        self.resent += len(entries)
        self._release_waiting(link)

    def _flush_acks(self) -> None:
        link = self._link
        if not self._acks or link is None:
            return
        token = link.publish(topics.acks(self.device_id, self.module_id), _encode(self._acks), content_type=JSON)
        self._tokens[token] = ("ack", None)
        self._acks = []

    def _ack_later(self, message_id: str) -> None:
        if not self._acks:
            self._acks_since = time.monotonic()
        self._acks.append(message_id)

    def _on_incoming(self, event: Incoming) -> None:
        link = self._link
        if link is None:
            return
        parsed = topics.parse(event.topic)
        if isinstance(parsed, topics.ModuleInput) and self._mine(parsed):
            framed = batches.Framed(parsed.input, event.user_properties, event.content_type, event.payload)
            self._on_input_message(link, framed, event.token, event.qos)
            return
        link.ack(event.token, event.qos)
        if isinstance(parsed, topics.BatchInputs) and self._mine(parsed):
            self._on_input_batch(link, event.payload)
            return
        channel = parsed.channel if isinstance(parsed, topics.ModuleTopic) and self._mine(parsed) else None
        if channel is topics.ModuleChannel.RECEIPTS:
            self._on_receipt(event.payload)
        elif channel is topics.ModuleChannel.DESIRED:
            self._on_desired(event.payload, full=True)
        elif channel is topics.ModuleChannel.DESIRED_PATCH:
            self._on_desired(event.payload, full=False)
        elif isinstance(parsed, topics.MethodRequest) and self._mine(parsed):
            self._methods_q.put((parsed.method, event))
        elif event.correlation_data is not None and event.correlation_data in self._calls:
            call = self._calls[event.correlation_data]
            status = dict(event.user_properties).get(STATUS_PROPERTY, "0")
            try:
                call.status, call.payload = int(status), _decode(event.payload)
            except ValueError as exc:
                call.error = SdkError(f"malformed method response: {exc}")
            call.done.set()

    def _mine(self, topic: topics.ModuleInput | topics.BatchInputs | topics.ModuleTopic | topics.MethodRequest) -> bool:
        return topic.device == self.device_id and topic.module == self.module_id

    def _on_receipt(self, payload: bytes) -> None:
        try:
            ids = json.loads(payload)
        except ValueError:
            log.warning("ignoring a malformed receipt: %r", payload[:200])
            return
        for message_id in ids if isinstance(ids, list) else []:
            self._outbox.pop(str(message_id), None)

    def _on_desired(self, payload: bytes, *, full: bool) -> None:
        try:
            doc = json.loads(payload) if payload else {}
        except ValueError:
            log.warning("ignoring malformed desired properties: %r", payload[:200])
            return
        if not isinstance(doc, dict):
            return
        current = self._desired
        version = doc.get("$version")
        known = None if current is None else current.get("$version")
        if full:
            self._desired = doc
            if current is not None and version != known:
                self._inputs_q.put(("twin", doc))
        elif current is not None and isinstance(version, int) and isinstance(known, int) and version <= known:
            return  # already part of the full document we hold
        else:
            self._desired = merge_patch(current or {}, doc)
            self._inputs_q.put(("twin", doc))

    def _on_input_batch(self, link: PahoLink, payload: bytes) -> None:
        try:
            items = batches.decode(payload)
        except batches.BatchError as exc:
            log.warning("%s: ignoring an unreadable batch of inputs (the hub sends it again): %s", self.module_id, exc)
            return
        self.batches_received += 1
        for item in items:  # batched deliveries travel at QoS 0: nothing to PUBACK per message
            self._on_input_message(link, item, 0, 0)

    def _on_input_message(self, link: PahoLink, item: batches.Framed, token: int, qos: int) -> None:
        if self._closing:
            return  # not acknowledged: the broker (QoS 1) or the hub delivers it again
        input_name = item.name
        app, system = split_properties(item.user_properties)
        if item.content_type and "contentType" not in system:
            system["contentType"] = item.content_type
        message_id = system.get("messageId", "")
        # Per input: the same message routed to two inputs is two deliveries, each acked on its own.
        key = f"{input_name}/{message_id}" if message_id else ""
        if key and (key in self._seen or key in self._in_progress):
            self.duplicates += 1
            link.ack(token, qos)
            if key in self._seen:
                self._ack_later(key)  # the hub missed our ack: say it again
            return
        if input_name not in self._input_handlers:
            log.warning("%s: no handler for input %r; the hub will deliver it again", self.module_id, input_name)
            link.ack(token, qos)
            return
        if key:
            self._in_progress.add(key)
        message = InputMessage(message_id, input_name, item.body, app, system)
        self._inputs_q.put(("input", message, token, qos, self._generation))

    def _on_handled(self, done: _Handled) -> None:
        link = self._link
        if link is not None and done.generation == self._generation:
            link.ack(done.token, done.qos)  # after a reconnect the broker redelivers; the duplicate is acked
        if done.key:
            self._in_progress.discard(done.key)
            self._seen[done.key] = None
            while len(self._seen) > _SEEN:
                self._seen.popitem(last=False)
            self._ack_later(done.key)

    # ------------------------------------------------------------------ worker threads

    def _worker(self, work: queue.Queue[object]) -> None:
        while (item := work.get()) is not _STOP:
            try:
                match item:
                    case ("input", InputMessage() as message, int(token), int(qos), int(generation)):
                        self._run_input(message, token, qos, generation)
                    case ("twin", dict(doc)):
                        for handler in list(self._twin_handlers):
                            handler(dict(doc))
                    case (str(name), Incoming() as event):
                        self._run_method(name, event)
            except Exception:
                log.exception("%s: handler failed", self.module_id)

    def _run_input(self, message: InputMessage, token: int, qos: int, generation: int) -> None:
        handler = self._input_handlers.get(message.input_name)
        try:
            if handler is not None:
                handler(message)
        except Exception:
            log.exception("%s: input %r handler failed on message %s", self.module_id, message.input_name, message.id)
        finally:
            key = f"{message.input_name}/{message.id}" if message.id else ""
            self._events.put(_Handled(key, token, qos, generation))

    def _run_method(self, name: str, event: Incoming) -> None:
        handler = self._method_handlers.get(name)
        if handler is None:
            status, result = 501, {"message": f"method {name!r} is not registered by module {self.module_id!r}"}
        else:
            try:
                status, result = handler(_decode(event.payload))
            except Exception as exc:
                log.exception("%s: method %r failed", self.module_id, name)
                status, result = 500, {"message": f"{type(exc).__name__}: {exc}"}
        link = self._link
        if event.response_topic is None or link is None:
            log.warning("%s: method %r request had no response topic; not answered", self.module_id, name)
            return
        with contextlib.suppress(OSError):
            link.publish(
                event.response_topic,
                _encode(result),
                user_properties=[(STATUS_PROPERTY, str(int(status)))],
                content_type=JSON,
                correlation_data=event.correlation_data,
            )
